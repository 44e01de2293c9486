"""The tell rule: what Optuna is told when a sweep trial ends, the same in every mode.

Optuna's samplers learn from trial states. TPE (`_split_trials`) ranks COMPLETE trials by their
value and PRUNED trials separately, by how far they got and their last intermediate value;
FAIL trials are ignored. Ray's `OptunaSearch` tells COMPLETE whenever the last result holds the
metric, so a trial that ASHA stopped at epoch 3 would enter TPE as finished with its epoch-3
score. Here the outcome decides instead:

- `ok` (trained to its end) with a finite value -> COMPLETE with that value;
- `pruned` (stopped by the scheduler, or by the trainer's report) -> PRUNED; its intermediate
  values (one per reported epoch) were reported as the epochs came in;
- `diverged`, `invalid`, `error`, or `ok` without a finite value -> FAIL.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from sweeps.resume.searcher import load_searcher, save_searcher
from sweeps.resume.study import restore_study, snapshot, trial_by_number
from sweeps.space.study import tag_ray_trial
from sweeps.trainable.report import TIME_ATTR, trial_outcome

__all__ = ["TellingOptunaSearch", "state_of", "tell"]

log = logging.getLogger("mersweep.search")


def state_of(outcome: str, value: Any) -> TrialState:
    """The Optuna state of a trial with this outcome (see the module docstring)."""
    if outcome == "ok":
        finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return TrialState.COMPLETE if finite else TrialState.FAIL
    if outcome == "pruned":
        return TrialState.PRUNED
    return TrialState.FAIL


def tell(study: optuna.Study, trial: optuna.Trial, outcome: str, value: Any) -> TrialState:
    """Tell `study` how `trial` ended; returns the state told."""
    state = state_of(outcome, value)
    if state == TrialState.COMPLETE:
        study.tell(trial, float(value))
    else:
        study.tell(trial, state=state)
    return state


class TellingOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch with the tell rule, on the sweep's stored study.

    `study`: the sweep's study (`sweeps.space.study`; None: a study in memory, for tests). Each
    Optuna trial records the Ray trial id that runs it. The checkpoint Ray saves carries the
    study's history, so that `--resume` puts the stored study back to what this searcher knows
    (`sweeps.resume.study`).
    """

    def __init__(
        self,
        *,
        space: Any,
        metric: str,
        mode: str,
        sampler: optuna.samplers.BaseSampler | None = None,
        study: optuna.Study | None = None,
    ) -> None:
        self._given_study = study
        self._errored: set[str] = set()  # told FAIL for an error: Ray reruns them on --resume
        super().__init__(space=space, metric=metric, mode=mode, sampler=study.sampler if study else sampler)
        self._given_study = None  # held by _ot_study from here on

    def _setup_study(self, mode: str | list) -> None:
        if self._given_study is None:
            super()._setup_study(mode)
        else:
            self._ot_study = self._given_study

    def suggest(self, trial_id: str) -> dict | None:
        new = trial_id not in self._ot_trials
        config = super().suggest(trial_id)
        if new and trial_id in self._ot_trials:
            tag_ray_trial(self._ot_trials[trial_id], trial_id)
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        outcome = trial_outcome(result, errored=error)
        value = (result or {}).get(self.metric)
        trial = self._ot_trials[trial_id]
        try:
            if outcome == "pruned":
                self._report_last_epoch(trial, result or {})
            tell(self._ot_study, trial, outcome, value)
        except Exception as exc:  # Optuna refuses e.g. a second tell; never fail the sweep for it
            log.warning("optuna: could not record trial %s (%s): %s", trial_id, outcome, exc)
        self._completed_trials.add(trial_id)
        if error:
            self._errored.add(trial_id)

    def save(self, checkpoint_path: str) -> None:
        save_searcher(self, checkpoint_path, snapshot(self._ot_study))

    def restore(self, checkpoint_path: str) -> None:
        history = load_searcher(self, checkpoint_path)
        if history is None:
            return
        # Ray reruns the trials it had not finished, and those that errored (resume_errored).
        live = {t for t in self._ot_trials if t not in self._completed_trials} | self._errored
        numbers = {t: self._ot_trials[t].number for t in self._ot_trials}
        self._ot_study = restore_study(self._ot_study, history, rerun={numbers[t] for t in live})
        # Finished trials keep their old handles: they are never told again, only their numbers read.
        self._ot_trials.update({t: trial_by_number(self._ot_study, numbers[t]) for t in live})
        self._completed_trials -= self._errored
        self._errored = set()

    def _report_last_epoch(self, trial: optuna.Trial, result: dict) -> None:
        """Report the epoch the scheduler stopped the trial at as an intermediate value.

        Ray passes a result the scheduler answered STOP to the searcher's `on_trial_complete`
        only, never to `on_trial_result`, so without this the epoch at which ASHA cut a trial
        (the one it was judged on) would be missing from the study.
        """
        value, step = result.get(self.metric), result.get(TIME_ATTR)
        if not isinstance(value, (int, float)) or not isinstance(step, int) or not math.isfinite(value):
            return
        if step not in self._ot_study._storage.get_trial(trial._trial_id).intermediate_values:
            trial.report(float(value), step)

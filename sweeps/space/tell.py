"""The tell rule: what Optuna is told when a sweep trial ends, the same in every mode.

Optuna's samplers learn from trial states. TPE (`_split_trials`) ranks COMPLETE trials by their
value and PRUNED trials separately, by how far they got and their last intermediate value;
FAIL trials are ignored. Ray's `OptunaSearch` tells COMPLETE whenever the last result holds the
metric, so a trial that ASHA stopped at epoch 3 would enter TPE as finished with its epoch-3
score (and changing that would mean reaching into its private attributes), so the searcher here
is our own, on Ray's public `Searcher` and Optuna's ask/tell. The outcome decides:

- `ok` (trained to its end) with a finite value -> COMPLETE with that value;
- `pruned` (stopped by the scheduler, or by the trainer's report) -> PRUNED; its intermediate
  values (one per reported epoch) were reported as the epochs came in;
- `diverged`, `invalid`, `error`, or `ok` without a finite value -> FAIL.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

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


class TellingOptunaSearch(Searcher):
    """One trial per Ray trial from an Optuna study, told by the tell rule (Ray's `OptunaSearch`, on
    public APIs only).

    What Ray's OptunaSearch does for a define-by-run space, kept: `suggest` asks the study and runs
    the space on the trial, every result's metric becomes an intermediate value at its
    `training_iteration`, and the searcher's checkpoint carries the asked trials. What differs:
    the tell rule above, and each Optuna trial records the Ray trial id that runs it.

    `study`: the sweep's study (`sweeps.space.study`; None: a study in memory with `sampler`, for
    tests). The checkpoint Ray saves carries the study's history, so that `--resume` puts the
    stored study back to what this searcher knows (`sweeps.resume.study`).
    """

    def __init__(
        self,
        *,
        space: Callable[[optuna.Trial], dict[str, Any] | None],
        metric: str,
        mode: str,
        sampler: optuna.samplers.BaseSampler | None = None,
        study: optuna.Study | None = None,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self.space = space
        direction = "maximize" if mode == "max" else "minimize"
        # NopPruner: Ray's schedulers stop trials, never Optuna (as in Ray's OptunaSearch).
        self.study = study or optuna.create_study(
            direction=direction, sampler=sampler, pruner=optuna.pruners.NopPruner()
        )
        self._asked: dict[str, optuna.Trial] = {}  # ray trial id -> its Optuna trial
        self._told: set[str] = set()  # ray trial ids whose Optuna trial has been told
        self._steps: dict[str, int] = {}  # ray trial id -> last step reported as an intermediate value
        self._errored: set[str] = set()  # told FAIL for an error: Ray reruns them on --resume

    # -- Ray Tune's Searcher interface ---------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if trial_id not in self._asked:
            trial = self.study.ask()
            tag_ray_trial(trial, trial_id)
            self._asked[trial_id] = trial
        trial = self._asked[trial_id]
        fixed = self.space(trial) or {}  # suggests every active param on the trial
        return {**trial.params, **fixed}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """The epoch's metric becomes the trial's intermediate value at that epoch."""
        if trial_id in self._told or trial_id not in self._asked:
            return
        self._report(trial_id, result, finite=False)  # a diverged epoch's NaN too, as Ray's OptunaSearch

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._told or trial_id not in self._asked:
            return
        outcome = trial_outcome(result, errored=error)
        value = (result or {}).get(self.metric)
        trial = self._asked[trial_id]
        try:
            if outcome == "pruned":
                # Ray hands a result the scheduler answered STOP to `on_trial_complete` only, never
                # to `on_trial_result`: without this the epoch ASHA cut the trial at (the one it
                # was judged on) would be missing from the study.
                self._report(trial_id, result or {}, finite=True)
            tell(self.study, trial, outcome, value)
        except Exception as exc:  # Optuna refuses e.g. a second tell; never fail the sweep for it
            log.warning("optuna: could not record trial %s (%s): %s", trial_id, outcome, exc)
        self._told.add(trial_id)
        self._steps.pop(trial_id, None)
        if error:
            self._errored.add(trial_id)

    # -- checkpoint (--resume) ------------------------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        save_searcher(self, checkpoint_path, snapshot(self.study))

    def restore(self, checkpoint_path: str) -> None:
        history = load_searcher(self, checkpoint_path)
        if history is None:
            return
        # Ray reruns the trials it had not finished, and those that errored (resume_errored).
        live = {t for t in self._asked if t not in self._told} | self._errored
        numbers = {t: self._asked[t].number for t in self._asked}
        self.study = restore_study(self.study, history, rerun={numbers[t] for t in live})
        # Finished trials keep their old handles: they are never told again, only their numbers read.
        self._asked.update({t: trial_by_number(self.study, numbers[t]) for t in live})
        self._told -= self._errored
        for t in live:  # a rerun starts its intermediate values afresh (restore_study dropped them)
            self._steps.pop(t, None)
        self._errored = set()

    def _report(self, trial_id: str, result: dict, *, finite: bool) -> None:
        """`result`'s metric as the intermediate value at its epoch, unless that epoch was reported."""
        value, step = result.get(self.metric), result.get(TIME_ATTR)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not isinstance(step, int):
            return
        if step > self._steps.get(trial_id, 0) and (math.isfinite(value) or not finite):
            self._asked[trial_id].report(float(value), step)
            self._steps[trial_id] = step

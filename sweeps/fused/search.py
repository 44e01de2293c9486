"""`PopulationSearcher`: one Optuna study, handed to Ray Tune K trials at a time (fused mode).

In fused mode (`execution: {mode: fused, population: K}`) one Ray trial trains K members as one
stacked model (`sweeps.fused.trial`). Each member is still its own Optuna trial: the
searcher asks the study K times per Ray trial (ask/tell in batches) and tells each member's
trial its own outcome. The Ray trial's config carries the members:

    {"__members": [params_1, ..., params_K],     # each: sampled values by dotted field
     "__member_numbers": [optuna numbers],
     "__rungs": [[scores at rung 0], ...]}       # what earlier members recorded at each rung

and its results carry each member's values under `m<i>/` (`m3/val/weighted_f1`), so the
driver's callbacks log one MLflow child run per member (trial id `<ray trial id>-m<i>`).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import optuna
from ray.tune.search import Searcher

from sweeps.fused.members import (
    MEMBERS_KEY,
    NUMBERS_KEY,
    RUNGS_KEY,
    RUNGS_RESULT,
    member_outcome,
    member_result,
    member_trial_id,
)
from sweeps.resume.searcher import load_searcher, save_searcher
from sweeps.resume.study import restore_study, snapshot, trial_by_number
from sweeps.space import SearchSpace
from sweeps.space.study import tag_ray_trial
from sweeps.space.tell import tell
from sweeps.trainable.report import FINAL_KEY

log = logging.getLogger("mersweep.sweep")


def population_sizes(num_samples: int, population: int) -> list[int]:
    """Members per Ray trial: K each, the last one smaller, so that they add up to `num_samples`."""
    full, rest = divmod(num_samples, population)
    return [population] * full + ([rest] if rest else [])


class PopulationSearcher(Searcher):
    """Suggests populations of `population` members from one Optuna study; tells every member.

    Outcomes told to Optuna: ok -> COMPLETE with its final metric; pruned (early stopping inside
    the population) -> PRUNED, whose value Optuna takes from the member's last reported epoch;
    diverged, invalid, or the whole Ray trial failing -> FAIL. Saved and restored with the Tuner
    (`--resume`): the study, the asked trials and the rung records travel in the checkpoint.
    """

    def __init__(
        self,
        space: SearchSpace,
        *,
        sampler: optuna.samplers.BaseSampler,
        metric: str,
        mode: str,
        num_samples: int,
        population: int,
        study: optuna.Study | None = None,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self.space = space
        # The sweep's stored study (sweeps.space.study); in memory without one (tests).
        direction = "maximize" if mode == "max" else "minimize"
        self.study = study or optuna.create_study(direction=direction, sampler=sampler)
        self._sizes = population_sizes(num_samples, population)
        self._issued = 0  # populations suggested so far
        self._asked: dict[str, list[optuna.Trial]] = {}  # ray trial id -> its members' Optuna trials
        self._steps: dict[tuple[str, int], int] = {}  # (ray trial id, member) -> last step reported to Optuna
        self._rungs: list[list[float]] = []  # scores members of ended populations recorded, per rung

    @property
    def num_populations(self) -> int:
        """Ray trials the sweep runs (the Tuner's num_samples)."""
        return len(self._sizes)

    # -- Ray Tune's Searcher interface ---------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._issued >= len(self._sizes):
            return Searcher.FINISHED
        size = self._sizes[self._issued]
        self._issued += 1
        trials, members = [], []
        for i in range(size):  # one at a time: TPE's constant liar sees the members asked before
            trial = self.study.ask()
            tag_ray_trial(trial, member_trial_id(trial_id, i))  # the member's MLflow trial id
            fixed = self.space.define_by_run(trial) or {}
            trials.append(trial)
            members.append({**trial.params, **fixed})
        self._asked[trial_id] = trials
        rungs = [list(r) for r in self._rungs]
        return {MEMBERS_KEY: members, NUMBERS_KEY: [t.number for t in trials], RUNGS_KEY: rungs}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Each member's epoch values become its Optuna trial's intermediate values (as OptunaSearch does)."""
        for i, trial in enumerate(self._asked.get(trial_id, [])):
            values = member_result(result, i)
            step, value = values.get("iteration"), values.get(self.metric)
            if _number(step) and _number(value) and step > self._steps.get((trial_id, i), 0):
                trial.report(float(value), step=int(step))
                self._steps[trial_id, i] = int(step)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trials = self._asked.pop(trial_id, None)
        if trials is None:
            return
        final = result if result and result.get(FINAL_KEY) and not error else None
        for i, trial in enumerate(trials):
            last_step = self._steps.pop((trial_id, i), 0)
            values = member_result(final, i)
            outcome = member_outcome(result, i, errored=error)
            step, value = values.get("iteration"), values.get(self.metric)
            if outcome == "pruned" and _number(value) and math.isfinite(value) and _number(step) and step > last_step:
                trial.report(float(value), step=int(step))  # its last epoch had not reached on_trial_result
            tell(self.study, trial, outcome, value)
        if final is not None:
            self._add_rungs(final.get(RUNGS_RESULT))

    # -- checkpoint (--resume) ------------------------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        save_searcher(self, checkpoint_path, snapshot(self.study))

    def restore(self, checkpoint_path: str) -> None:
        """Our state as Ray saved it; the stored study put back to match (`sweeps.resume.study`).

        Populations still in `_asked` had not ended: Ray reruns them from scratch.
        """
        history = load_searcher(self, checkpoint_path)
        if history is None:
            return
        rerun = {t.number for trials in self._asked.values() for t in trials}
        self.study = restore_study(self.study, history, rerun=rerun)
        self._asked = {rid: [trial_by_number(self.study, t.number) for t in ts] for rid, ts in self._asked.items()}
        self._steps = {k: v for k, v in self._steps.items() if k[0] not in self._asked}

    # -- internals -------------------------------------------------------------------------------
    def _add_rungs(self, text: Any) -> None:
        try:
            rungs = json.loads(text) if isinstance(text, str) else []
        except ValueError:
            log.warning("fused population: unreadable rung records %r ignored", text)
            return
        for k, scores in enumerate(rungs):
            while len(self._rungs) <= k:
                self._rungs.append([])
            self._rungs[k].extend(float(s) for s in scores)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)

"""ASHA-style early stopping of the members of a fused population (see `sweeps.fused.trial`).

Ray's ASHA stops whole Ray trials; in fused mode a Ray trial is a population of members that
stop on their own, so the population applies the same rule to each member itself. It follows
Ray's `ASHAScheduler` (one bracket) step for step, so a fused sweep prunes as a trial sweep would:

- rungs at `grace_period * reduction_factor**k` reported epochs, up to `max_t`;
- a member reaching a rung is compared with the values recorded there before it (members of
  earlier populations, which the searcher hands down in the trial config, and members of this
  population that got there first) and stopped when below their top `1 / reduction_factor`
  (the `(1 - 1/rf)` percentile, as Ray computes it); then its value is recorded there;
- a member reaching `max_t` reported epochs stops there without being recorded.

Values are scores (the metric, negated for mode min), so "higher is better" everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["RungSchedule", "RungStopper"]


@dataclass(frozen=True)
class RungSchedule:
    """Where members are compared (`milestones`, in reported epochs) and where they end (`max_t`)."""

    milestones: tuple[float, ...] = ()
    reduction_factor: float = 3.0
    max_t: int | None = None
    mode: str = "max"

    @classmethod
    def asha(cls, *, grace_period: int, reduction_factor: float, max_t: int, mode: str) -> RungSchedule:
        """The rungs of Ray's ASHAScheduler with one bracket (same count, same spacing)."""
        count = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
        milestones = tuple(grace_period * reduction_factor**k for k in range(count))
        return cls(milestones=milestones, reduction_factor=reduction_factor, max_t=max_t, mode=mode)

    @classmethod
    def none(cls, *, mode: str) -> RungSchedule:
        """No early stopping: every member trains to its end."""
        return cls(mode=mode)

    def score(self, value: float) -> float:
        return value if self.mode == "max" else -value


class RungStopper:
    """Decides, report by report, whether a member stops; collects what this population recorded."""

    def __init__(self, schedule: RungSchedule, records: Sequence[Sequence[float]] = ()) -> None:
        self.schedule = schedule
        n = len(schedule.milestones)
        given = [list(map(float, r)) for r in records][:n]
        self._recorded = given + [[] for _ in range(n - len(given))]
        self.new: list[list[float]] = [[] for _ in range(n)]  # this population's records, for the searcher
        self._passed: set[tuple[int, int]] = set()  # (member, rung) already decided

    def should_stop(self, member: int, iteration: int, value: float | None) -> bool:
        """True when `member`, having reported `iteration` epochs with `value`, stops here."""
        s = self.schedule
        if s.max_t is not None and iteration >= s.max_t:
            return True
        if value is None or not math.isfinite(value):
            return False  # a diverged member ends by itself
        # Highest rung reached and not yet decided for this member (Ray walks rungs top down).
        for rung in reversed(range(len(s.milestones))):
            if iteration < s.milestones[rung]:
                continue
            if (member, rung) in self._passed:
                return False
            self._passed.add((member, rung))
            score = s.score(value)
            recorded = self._recorded[rung]
            stop = bool(recorded) and score < float(np.nanpercentile(recorded, (1 - 1 / s.reduction_factor) * 100))
            recorded.append(score)
            self.new[rung].append(score)
            return stop
        return False

"""The injected reporting channel between the trainer and whoever runs it.

The trainer calls `Reporter.epoch(metrics)` once per fine-tuning epoch. The callback it
wraps is the caller's: Ray Tune's `tune.report` in a sweep, a progress printer on the CLI,
a list append in tests. A callback returning True asks the trainer to stop (pruning).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

ReportFn = Callable[[Mapping[str, Any]], "bool | None"]


class TrialStopped(Exception):
    """Raised inside the trainer when the report callback asks it to stop (pruned)."""


class Diverged(Exception):
    """Raised inside the trainer when a loss becomes NaN/inf."""


class Reporter:
    """Counts reported epochs across stages and folds and relays stop requests."""

    def __init__(self, report: ReportFn | None) -> None:
        self._report = report
        self.iteration = 0

    def epoch(self, metrics: Mapping[str, Any]) -> None:
        self.iteration += 1
        if self._report is None:
            return
        if self._report({**metrics, "iteration": self.iteration}):
            raise TrialStopped(f"stopped by the caller after {self.iteration} reported epochs")


def check_finite(value: float, *, where: str) -> None:
    """Turn a NaN/inf loss into a Diverged failure with a reason naming where it happened."""
    if not math.isfinite(value):
        raise Diverged(f"non-finite loss ({value}) during {where}")

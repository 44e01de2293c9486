"""The problems a replayed sweep runs on: a recorded task table, and MF-Hartmann6.

Each answers a proposed configuration with its per-epoch values, the final value its trial would
report, its status, what it is (a table row, a point) and whether that final value reaches the
target: what `benchmarks.curves.loop.replay` needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.curves.table import CurveTable, Lookup

METRIC = "val/weighted_f1"
TOLERANCE = 0.01  # the target: within 0.01 val F1 of the best configuration the task's table holds
FAIL_VALUE = 0.0  # what a diverged trial reports for a max metric (sweeps.trainable.trial.TrialSettings)


@dataclass(eq=False)
class TableProblem:
    """A recorded task: a point's nearest recorded configuration answers for it."""

    table: CurveTable
    tolerance: float = TOLERANCE
    metric: str = METRIC
    mode: str = "max"
    lookup: Lookup = field(init=False)
    finals: np.ndarray = field(init=False)  # (n,) what each row's trial reports at its end
    target: float = field(init=False)

    def __post_init__(self) -> None:
        self.lookup = Lookup(self.table)
        self.finals = self.table.final()
        self.target = float(self.finals.max()) - self.tolerance

    @property
    def epochs(self) -> int:
        return self.table.epochs

    @property
    def good(self) -> np.ndarray:
        """(n,) rows whose final value reaches the target."""
        return self.finals >= self.target

    def trial(self, config: Mapping[str, Any], seed: int) -> tuple[Sequence[float], float, str, Any, bool]:
        row = self.lookup.nearest(config)
        curve = self.table.curves["val_f1"][row]  # (E,)
        ended = ~np.isfinite(curve)
        if ended.any():  # the recipe stops a diverged trial at the epoch it diverged and reports a failure
            return [float(v) for v in curve[: int(np.argmax(ended))]], FAIL_VALUE, "diverged", row, False
        final = float(self.finals[row])
        return [float(v) for v in curve], final, "ok", row, final >= self.target


@dataclass(eq=False)
class HartmannProblem:
    """MF-Hartmann6 as `search_mf` runs it: a trial observes f(x, t/E) + noise per epoch t; minimised."""

    epochs: int
    target_regret: float
    metric: str = "loss"
    mode: str = "min"

    def trial(self, config: Mapping[str, Any], seed: int) -> tuple[Sequence[float], float, str, Any, bool]:
        from benchmarks.mf_hartmann import DIM, F_STAR, curve, mf_hartmann6

        x = np.array([config[f"x{i}"] for i in range(DIM)])
        observed = curve(x, epochs=self.epochs, seed=seed)
        regret = float(mf_hartmann6(x)) - F_STAR
        return [float(v) for v in observed], float(observed[-1]), "ok", regret, regret <= self.target_regret


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (nan with fewer than 3 pairs)."""
    if len(a) < 3:
        return math.nan
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)

"""The recorded chunks read back as one table per task, and the lookup a replayed trial uses.

A replayed sweep proposes points anywhere in the space; the table holds a sample of it. A point is
answered by its nearest recorded configuration: the same categorical values where the table has
one (their mismatches cost more than any continuous distance), then the smallest Euclidean
distance with every numeric parameter scaled to [0, 1] over its range (log-scaled where the space
samples it on a log scale). This is how tabular benchmarks with a continuous space are replayed;
what it cannot show is any structure finer than the table's sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.curves.tasks import DATA_DIR, SPACE, TASKS

MISMATCH = 10.0  # distance of one categorical mismatch: more than any continuous distance (<= sqrt(params))


@dataclass(frozen=True, eq=False)
class CurveTable:
    """One task's recorded configurations: parameters, whole curves and seconds, in config order."""

    task: str
    index: np.ndarray  # (n,) configuration numbers in the sample
    params: Mapping[str, np.ndarray]  # dotted name -> (n,) float (NaN inactive) or str ('' inactive)
    curves: Mapping[str, np.ndarray]  # curve name -> (n, E) float32
    seconds: np.ndarray  # (n,)

    @property
    def n(self) -> int:
        return int(self.index.shape[0])

    @property
    def epochs(self) -> int:
        return int(self.curves["val_f1"].shape[1])

    def final(self) -> np.ndarray:
        """(n,) the val F1 a trial that trained to its end reports: its best epoch's (the recipe restores it)."""
        return np.max(np.nan_to_num(self.curves["val_f1"], nan=-np.inf), axis=1)

    def at_best(self, name: str) -> np.ndarray:
        """(n,) curve `name` at each configuration's best validation epoch (the model the recipe keeps)."""
        best = np.argmax(np.nan_to_num(self.curves["val_f1"], nan=-np.inf), axis=1)  # (n,)
        return self.curves[name][np.arange(self.n), best]

    def subset(self, rows: np.ndarray) -> CurveTable:
        """The table restricted to `rows` (e.g. the tiny table of the smoke test)."""
        return CurveTable(
            self.task,
            self.index[rows],
            {k: v[rows] for k, v in self.params.items()},
            {k: v[rows] for k, v in self.curves.items()},
            self.seconds[rows],
        )


def load_table(task: str, folder: Path = DATA_DIR) -> CurveTable:
    """Every finished chunk of `task` under `folder`, concatenated; ValueError when there is none."""
    paths = sorted((folder / task).glob("chunk-*[0-9].npz"))
    if not paths:
        raise ValueError(f"no recorded chunks of task {task} under {folder}")
    parts: dict[str, list[np.ndarray]] = {}
    for path in paths:
        with np.load(path) as z:
            for k in z.files:
                parts.setdefault(k, []).append(z[k])
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return CurveTable(
        task=task,
        index=cat["config_index"],
        params={k.split(":", 1)[1]: v for k, v in cat.items() if k.startswith("param:")},
        curves={k.split(":", 1)[1]: v for k, v in cat.items() if k.startswith("curve:")},
        seconds=cat["seconds"],
    )


def recorded_tasks(folder: Path = DATA_DIR) -> list[str]:
    """The tasks with at least one chunk under `folder`, in `TASKS` order."""
    return [t for t in TASKS if any((folder / t).glob("chunk-*[0-9].npz"))]


class Lookup:
    """Nearest recorded configuration of a proposed point (module docstring)."""

    def __init__(self, table: CurveTable) -> None:
        from sweeps.space import load_space

        self.table = table
        self._numeric: list[tuple[str, np.ndarray, float, float, bool]] = []  # name, column, low, high, log
        self._categorical: list[tuple[str, np.ndarray]] = []
        for p in load_space(SPACE).params:
            column = table.params[p.name]
            if p.kind == "categorical":
                self._categorical.append((p.name, column.astype(str)))
            elif p.kind in ("float", "int"):
                log = bool(p.log)
                self._numeric.append((p.name, column.astype(np.float64), float(p.low), float(p.high), log))
        self._scaled = np.stack([self._scale(c, lo, hi, log) for _, c, lo, hi, log in self._numeric], axis=1)  # (n, P)

    @staticmethod
    def _scale(x: Any, low: float, high: float, log: bool) -> Any:
        if log:
            return (np.log(x) - math.log(low)) / (math.log(high) - math.log(low))
        return (np.asarray(x, dtype=np.float64) - low) / (high - low)

    def nearest(self, point: Mapping[str, Any]) -> int:
        """Row of the recorded configuration nearest to `point` (dotted name -> value)."""
        cost = np.zeros(self.table.n)  # (n,)
        for name, column in self._categorical:
            cost += MISMATCH * (column != str(point.get(name, "")))
        sq = np.zeros(self.table.n)
        for j, (name, column, low, high, log) in enumerate(self._numeric):
            given = point.get(name)
            if given is None:  # an inactive conditional: it matches rows where it is inactive too
                sq += np.where(np.isnan(column), 0.0, 1.0)
                continue
            mine = self._scale(float(given), low, high, log)
            sq += np.where(np.isnan(column), 1.0, (self._scaled[:, j] - mine) ** 2)
        return int(np.argmin(cost + np.sqrt(sq)))

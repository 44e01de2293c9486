"""What a run's scores are: metrics from head logits, the missing-rate metric names, and fold means.

Pure functions of logits and labels: the recipe scores every epoch, the final model at each
test-time missing rate, the final model on the held-out test split, and the folds of a run with
them; `missing_eval` reads the names back.

Names are `<split>/<metric>`: `val/` for the validation rows of a fold (they pick epochs, and a
sweep's `metric` picks configurations with them), `test/` for the held-out test split, scored
once per fold by the fold's final model and never used to pick anything.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mer_core import metrics, voting
from mer_core.train.result import FoldResult

__all__ = ["GRID_METRICS", "SPLITS", "aggregate", "metric_name", "score_logits", "test_counterpart"]

GRID_METRICS = ("weighted_f1", "accuracy", "f1_fusion")  # per test-time missing rate; the first two voted


SPLITS = ("val", "test")  # the prefixes of scored metrics: validation rows, held-out test split


def metric_name(rate: float, metric: str = "weighted_f1", *, split: str = "val") -> str:
    """`<split>/<metric>_missing_<rate>` (MLflow refuses `@` and `=` in metric names)."""
    return f"{split}/{metric}_missing_{rate:g}"


def test_counterpart(name: str) -> str:
    """`val/<x>` -> `test/<x>`: the held-out score of a validation metric (`test/<x>` stays)."""
    split, sep, rest = name.partition("/")
    if not sep or split not in SPLITS:
        raise ValueError(f"metric {name!r} is not <split>/<name> with split in {SPLITS}")
    return f"test/{rest}"


def score_logits(
    logits: dict[str, np.ndarray],
    y: np.ndarray,
    weights: dict[str, float],
    *,
    space: str,
    class_names: tuple[str, ...],
    split: str = "val",
) -> dict[str, float]:
    """`<split>/...` metrics of the voted ensemble and of each head, from head -> (n, C) logits."""
    scores = voting.soft_vote(logits, weights, space=space)  # (n, C)
    report = metrics.classification_report(y, scores.argmax(1), class_names)
    out = {f"{split}/{k}": float(v) for k, v in report.items()}
    target = torch.as_tensor(y, dtype=torch.long)
    head_ce = [F.cross_entropy(torch.as_tensor(v), target).item() for v in logits.values()]
    out[f"{split}/loss"] = float(np.mean(head_ce))
    n_classes = len(class_names)
    for head, v in logits.items():
        out[f"{split}/f1_{head}"] = metrics.weighted_f1(y, v.argmax(1), n_classes)
    return out


def aggregate(folds: list[FoldResult]) -> dict[str, float]:
    """Fold means (and `<name>_std`) of every numeric metric, plus pseudo-label totals."""
    if not folds:
        return {}
    keys = [k for k, v in folds[0].metrics.items() if isinstance(v, (int, float))]
    out: dict[str, float] = {}
    for key in keys:
        values = np.array([f.metrics[key] for f in folds if key in f.metrics], dtype=float)
        out[key] = float(values.mean())
        if len(folds) > 1:
            out[f"{key}_std"] = float(values.std(ddof=1))
    last_rounds = [f.pseudo[-1] for f in folds if f.pseudo]
    if last_rounds:
        out["pseudo/count"] = float(np.mean([r["n"] for r in last_rounds]))
        accs = [r["accuracy"] for r in last_rounds if np.isfinite(r.get("accuracy", float("nan")))]
        if accs:
            out["pseudo/accuracy"] = float(np.mean(accs))
    return out

"""Classification metrics as pure numpy functions of one confusion matrix.

Every metric equals scikit-learn's with `labels=range(C)` and `zero_division=0`
(MER2024's metric is `f1_score(average="weighted")`), but is computed from a single
`np.bincount`, because calling sklearn per epoch and per trial is slow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["accuracy", "classification_report", "confusion_matrix", "macro_f1", "per_class_f1", "weighted_f1"]


def _as_labels(y: np.ndarray, n_classes: int, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool or arr.size == 0):
        raise ValueError(f"{name} must be a 1-D integer array; got shape {arr.shape}, dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(f"{name} values must lie in [0, {n_classes}); got [{arr.min()}, {arr.max()}]")
    return arr


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) int64 counts; rows are true classes, columns predicted classes."""
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1; got {n_classes}")
    t = _as_labels(y_true, n_classes, "y_true")
    p = _as_labels(y_pred, n_classes, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    flat = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)  # (C*C,)
    return flat.reshape(n_classes, n_classes)


def _f1_from_cm(cm: np.ndarray) -> np.ndarray:
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (support + predicted); 0 where that is 0/0,
    # which is sklearn's zero_division=0 (also for classes absent from y_true and y_pred).
    tp = np.diag(cm).astype(np.float64)  # (C,)
    denom = cm.sum(axis=1) + cm.sum(axis=0)  # (C,) support + predicted
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def per_class_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(C,) F1 of each class (0 where undefined)."""
    return _f1_from_cm(confusion_matrix(y_true, y_pred, n_classes))


def _weighted(cm: np.ndarray) -> float:
    support = cm.sum(axis=1)  # (C,)
    total = support.sum()
    return float((_f1_from_cm(cm) * support).sum() / total) if total > 0 else 0.0


def _accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else 0.0


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Support-weighted mean of the per-class F1 (MER2024's metric)."""
    return _weighted(confusion_matrix(y_true, y_pred, n_classes))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of the per-class F1 over all C classes (absent classes count as 0)."""
    return float(per_class_f1(y_true, y_pred, n_classes).mean())


def accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Share of correct predictions (0 for empty input)."""
    return _accuracy(confusion_matrix(y_true, y_pred, n_classes))


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """`weighted_f1`, `macro_f1`, `accuracy` and `f1/<class>` from one confusion matrix."""
    cm = confusion_matrix(y_true, y_pred, len(class_names))
    f1 = _f1_from_cm(cm)
    report = {"weighted_f1": _weighted(cm), "macro_f1": float(f1.mean()), "accuracy": _accuracy(cm)}
    report.update({f"f1/{name}": float(f1[k]) for k, name in enumerate(class_names)})
    return report

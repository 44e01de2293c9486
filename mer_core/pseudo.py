"""Self-training helpers: per-class thresholds, pseudo-label selection, oversampling.

Pure numpy; randomness only through an explicit `np.random.Generator`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mer_core.configs.schema import SelfTrainingConfig
from mer_core.errors import ConfigError

__all__ = ["class_thresholds", "oversample", "pseudo_label_report", "select_pseudo_labels"]


def class_thresholds(cfg: SelfTrainingConfig, class_names: Sequence[str], class_counts: np.ndarray) -> np.ndarray:
    """Confidence threshold of each class.

    A class is dominant when its share of the labelled samples is at least
    `cfg.dominant_share` (None: 1/C); dominant classes get `cfg.dominant_threshold`,
    the others `cfg.minority_threshold`. `cfg.class_thresholds` overrides by class name.

    Args:
        cfg: self-training config.
        class_names: the C class names, in label order.
        class_counts: (C,) labelled samples per class.

    Returns:
        (C,) float64 thresholds.

    Raises:
        ConfigError: an override names no class (field `self_training.class_thresholds.<name>`).
    """
    names = tuple(class_names)
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.shape != (len(names),):
        raise ValueError(f"class_counts must have shape ({len(names)},); got {counts.shape}")
    total = counts.sum()
    share = counts / total if total > 0 else np.zeros_like(counts)  # (C,)
    dominant_share = cfg.dominant_share if cfg.dominant_share is not None else 1.0 / len(names)
    # Tolerance so that a perfectly balanced set (share == 1/C up to rounding) counts as dominant.
    dominant = share >= dominant_share - 1e-12
    thresholds = np.where(dominant, cfg.dominant_threshold, cfg.minority_threshold).astype(np.float64)
    for name, value in cfg.class_thresholds.items():
        if name not in names:
            field = f"self_training.class_thresholds.{name}"
            raise ConfigError(field, f"one of {', '.join(names)}", name, "unknown class")
        thresholds[names.index(name)] = float(value)
    return thresholds


def select_pseudo_labels(
    probs: np.ndarray, thresholds: np.ndarray, *, max_pseudo: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples whose top probability reaches the threshold of their predicted class.

    Args:
        probs: (N, C) class probabilities (e.g. `voting.vote_probs`).
        thresholds: (C,) per-class thresholds.
        max_pseudo: keep at most this many, the most confident first (ties: lower index).

    Returns:
        (idx (K,), labels (K,), conf (K,)), ordered by ascending sample index.
    """
    probs = np.asarray(probs)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if probs.ndim != 2 or thresholds.shape != (probs.shape[1],):
        raise ValueError(f"probs must be (N, C) and thresholds (C,); got {probs.shape} and {thresholds.shape}")
    labels = probs.argmax(axis=1)  # (N,)
    conf = probs[np.arange(probs.shape[0]), labels].astype(np.float64)  # (N,)
    idx = np.flatnonzero(conf >= thresholds[labels])  # (K,)
    if max_pseudo is not None and idx.size > max_pseudo:
        order = np.argsort(-conf[idx], kind="stable")[: max(int(max_pseudo), 0)]
        idx = np.sort(idx[order])
    return idx.astype(np.int64), labels[idx].astype(np.int64), conf[idx]


def oversample(labels: np.ndarray, *, target: int, rng: np.random.Generator) -> np.ndarray:
    """Indices that bring every class up to `target` samples.

    Each class keeps all its samples and, when it has fewer than `target`, gets
    `target − n_c` extra draws with replacement from its own samples. Classes above
    `target` keep all their samples (no undersampling: no data is thrown away); classes
    with no sample stay empty; rows with label < 0 (unlabelled) are never returned.

    Args:
        labels: (N,) int labels.
        target: samples per class after oversampling (>= 1).
        rng: source of the draws.

    Returns:
        (K,) int64 indices into `labels`, grouped by class in ascending order (originals
        first); shuffle when batching.
    """
    if target < 1:
        raise ValueError(f"target must be >= 1; got {target}")
    labels = np.asarray(labels)
    parts = []
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)  # (n_c,)
        parts.append(members)
        if members.size < target:
            parts.append(rng.choice(members, size=target - members.size, replace=True))
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def pseudo_label_report(
    labels: np.ndarray, true_labels: np.ndarray | None, class_names: Sequence[str]
) -> dict[str, float]:
    """Counts per class and, where ground truth is known (>= 0), accuracy of the pseudo-labels.

    Args:
        labels: (K,) pseudo-labels.
        true_labels: (K,) ground truth, -1 where unknown; None when never known.
        class_names: the C class names.

    Returns:
        `n`, `count/<class>` and, when `true_labels` is given, `n_known`, `accuracy` and
        `accuracy/<class>` (per pseudo-label class; NaN where no truth is known).
    """
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=len(class_names)) if labels.size else np.zeros(len(class_names), int)
    report: dict[str, float] = {"n": float(labels.size)}
    report.update({f"count/{name}": float(counts[k]) for k, name in enumerate(class_names)})
    if true_labels is None:
        return report
    true_labels = np.asarray(true_labels, dtype=np.int64)
    if true_labels.shape != labels.shape:
        raise ValueError(f"true_labels must match labels' shape {labels.shape}; got {true_labels.shape}")
    known = true_labels >= 0
    correct = (labels == true_labels) & known
    report["n_known"] = float(known.sum())
    report["accuracy"] = float(correct.sum() / known.sum()) if known.any() else float("nan")
    for k, name in enumerate(class_names):
        rows = known & (labels == k)
        report[f"accuracy/{name}"] = float(correct[rows].mean()) if rows.any() else float("nan")
    return report

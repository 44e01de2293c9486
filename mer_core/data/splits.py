"""Deterministic stratified train/validation splits of the labelled samples.

MERTools evaluates MER2024 with 5-fold CV on the train set, so `folds > 1` is the default;
`folds == 1` is one stratified hold-out. Unlabelled samples never enter a split: they are
the self-training pool.
"""

from __future__ import annotations

import logging

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from mer_core.data.featureset import FeatureSet, Split
from mer_core.errors import DataError

log = logging.getLogger(__name__)


def make_splits(fs: FeatureSet, *, folds: int, val_fraction: float, seed: int) -> list[Split]:
    """Stratified k-fold (or one stratified hold-out) over the labelled samples.

    Args:
        fs: The dataset; only rows with label >= 0 are split.
        folds: Number of folds; 1 means a single split with `val_fraction` in validation.
        val_fraction: Validation share when `folds == 1`.
        seed: Seed of the shuffle, so the same seed gives the same folds.

    Returns:
        `folds` (or 1) Splits whose indices point into `fs` (sorted, int64).

    Raises:
        DataError: A class has too few labelled samples for the folds, or the labelled set is
            too small for the requested validation share.
    """
    check_splittable(fs, folds=folds, val_fraction=val_fraction)
    idx = fs.labelled_idx  # (L,)
    y = fs.labels[idx]  # (L,)
    for c in np.flatnonzero(np.bincount(y, minlength=fs.n_classes) == 0).tolist():
        # A class absent from the labelled set is legal (e.g. a fixed class list), but worth a note.
        log.warning("%s: class %r has no labelled samples; it will never be validated", fs.name, fs.class_names[c])
    if folds > 1:
        skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        return [_split(idx, tr, va) for tr, va in skf.split(np.zeros(idx.size), y)]
    pos = np.arange(idx.size)
    n_val = _n_val(idx.size, val_fraction)
    tr, va = train_test_split(pos, test_size=n_val, stratify=y, random_state=seed, shuffle=True)
    return [_split(idx, tr, va)]


def check_splittable(fs: FeatureSet, *, folds: int, val_fraction: float) -> None:
    """Raises the DataError `make_splits` would raise, without splitting or logging.

    Callers run it before anything is trained or written (the train CLI, a sweep's preparation),
    so data too small for `data.folds` / `data.val_fraction` is bad input, not N failed trials.
    """
    y = fs.labels[fs.labelled_idx]  # (L,)
    _check_class_sizes(fs, y, need=max(folds, 2), what=f"data.folds={folds}" if folds > 1 else "a train/val split")
    if folds > 1:
        return
    n_classes = int(np.unique(y).size)
    n_val = _n_val(y.size, val_fraction)
    if n_val < n_classes or y.size - n_val < n_classes:
        raise DataError(
            f"data.val_fraction={val_fraction}: {n_val} validation and {y.size - n_val} training samples "
            f"cannot both hold all {n_classes} classes of the {y.size} labelled samples; change data.val_fraction"
        )


def _n_val(n_labelled: int, val_fraction: float) -> int:
    return int(np.ceil(val_fraction * n_labelled))


def _split(idx: np.ndarray, train_pos: np.ndarray, val_pos: np.ndarray) -> Split:
    return Split(train=np.sort(idx[train_pos]).astype(np.int64), val=np.sort(idx[val_pos]).astype(np.int64))


def _check_class_sizes(fs: FeatureSet, y: np.ndarray, *, need: int, what: str) -> None:
    counts = np.bincount(y, minlength=fs.n_classes)  # (C,)
    if y.size == 0:
        raise DataError(f"{fs.name}: no labelled samples to split")
    for c, count in enumerate(counts.tolist()):
        if 0 < count < need:
            raise DataError(
                f"{fs.name}: class {fs.class_names[c]!r} has {count} labelled sample(s), too few for {what} "
                f"(needs >= {need}); lower data.folds, raise data.labelled_fraction or add samples"
            )

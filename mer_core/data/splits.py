"""Deterministic stratified splits: the held-out test split, then train/validation folds.

`hold_out_test` runs first, inside `load_data` and before any label is hidden: it moves a
stratified share of the labelled samples into `FeatureSet.test`, so the folds below never see them.
MERTools evaluates MER2024 with 5-fold CV on the train set, so `folds > 1` is the default;
`folds == 1` is one stratified hold-out. Unlabelled samples never enter a split: they are
the self-training pool. Plain numpy (no scikit-learn): this module is imported by every trial
worker and CLI, and scikit-learn's import alone cost about a second of CPU in each.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from mer_core.data.featureset import FeatureSet, Split
from mer_core.errors import DataError

log = logging.getLogger(__name__)

_TEST_STREAM = 0x7E57  # the test draw's own stream of `data.seed`, apart from the folds' draws


def hold_out_test(fs: FeatureSet, fraction: float, *, seed: int) -> FeatureSet:
    """Moves a stratified `fraction` of the labelled samples into `fs.test`.

    Args:
        fs: The source's FeatureSet (before label hiding, so every labelled sample can be drawn).
        fraction: Share of the labelled samples held out, in (0, 1).
        seed: `data.seed`; the same seed holds out the same samples.

    Returns:
        The remaining rows (same order) with the held-out rows (same order) as `test`.

    Raises:
        DataError: The test split, or what is left, would be too small to hold every class.
    """
    idx = fs.labelled_idx  # (L,)
    n_test = int(np.ceil(fraction * idx.size - 1e-9))  # 0.2 of 2000 is 400, not 401 from rounding error
    n_classes = int(np.unique(fs.labels[idx]).size)
    if n_test < n_classes or idx.size - n_test < n_classes:
        # A stratified test split that cannot hold every class would score some classes never.
        raise DataError(
            f"data.test_fraction={fraction}: {n_test} test and {idx.size - n_test} other labelled samples cannot "
            f"both hold all {n_classes} classes of the {idx.size} labelled samples of {fs.name}; "
            "change data.test_fraction"
        )
    stream = int(np.random.SeedSequence([seed, _TEST_STREAM]).generate_state(1)[0])
    _, test_pos = stratified_holdout(fs.labels[idx], n_test, seed=stream)
    return with_test_rows(fs, np.sort(idx[test_pos]))


def with_test_rows(fs: FeatureSet, test_idx: np.ndarray) -> FeatureSet:
    """`fs` without the rows `test_idx` (labelled), which become its `test` split."""
    keep = np.ones(fs.n_samples, dtype=bool)
    keep[test_idx] = False
    main, test = fs.take(keep), fs.take(test_idx)
    missing = [c for c, n in zip(fs.class_names, test.class_counts().tolist(), strict=True) if n == 0]
    if missing:
        log.warning("%s: classes %s have no test sample; the test scores never see them", fs.name, missing)
    return dataclasses.replace(main, test=dataclasses.replace(test, true_labels=None, test=None))


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
        fold = stratified_kfold_ids(y, folds, seed=seed)  # (L,)
        return [_split(idx, np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(folds)]
    train, val = stratified_holdout(y, _n_val(idx.size, val_fraction), seed=seed)  # positions into idx
    return [_split(idx, train, val)]


# The two splitters below draw exactly what scikit-learn's StratifiedKFold(shuffle=True) and
# train_test_split(stratify=y) draw for the same seed (tests/test_data_splits.py checks it), so
# folds stay those of earlier mersweep versions, which used scikit-learn itself.


def stratified_kfold_ids(labels: np.ndarray, k: int, *, seed: int) -> np.ndarray:
    """(N,) fold id in [0, k) per row, stratified by label.

    A class's rows are allocated to folds round-robin over the label-sorted rows (fold sizes,
    and a class's count in any two folds, differ by at most one), then shuffled within the class.
    """
    y = np.asarray(labels)
    rng = np.random.RandomState(seed)  # the legacy generator: scikit-learn's draws, seed for seed
    _, first, inverse = np.unique(y, return_index=True, return_inverse=True)
    _, by_appearance = np.unique(first, return_inverse=True)
    y_enc = by_appearance[inverse]  # (N,) classes numbered in order of first appearance
    y_sorted = np.sort(y_enc)
    allocation = np.stack([np.bincount(y_sorted[f::k], minlength=first.size) for f in range(k)])  # (k, C)
    fold = np.empty(y.shape[0], dtype=np.int64)
    for c in range(first.size):
        ids = np.repeat(np.arange(k), allocation[:, c])
        rng.shuffle(ids)
        fold[y_enc == c] = ids
    return fold


def stratified_holdout(labels: np.ndarray, n_val: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) positions: `n_val` validation rows, each class's share as near its overall one
    as whole rows allow (ties between classes broken at random)."""
    y = np.asarray(labels)
    rng = np.random.RandomState(seed)
    _, y_idx, counts = np.unique(y, return_inverse=True, return_counts=True)
    rows_of = np.split(np.argsort(y_idx, kind="stable"), np.cumsum(counts)[:-1])
    n_train = _apportion(counts, y.shape[0] - n_val, rng)  # (C,)
    n_val_c = _apportion(counts - n_train, n_val, rng)  # (C,)
    train, val = [], []
    for rows, n, t in zip(rows_of, n_train, n_val_c, strict=True):
        shuffled = rows[rng.permutation(rows.shape[0])]
        train.append(shuffled[:n])
        val.append(shuffled[n : n + t])
    return np.concatenate(train), np.concatenate(val)


def _apportion(counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Rows per class out of `n_draws`, proportional to `counts`: floors first, then the largest
    remainders, ties among equal remainders drawn at random."""
    exact = counts / counts.sum() * n_draws  # (C,)
    out = np.floor(exact)
    missing = int(n_draws - out.sum())
    remainder = exact - out
    for value in np.sort(np.unique(remainder))[::-1]:
        if missing <= 0:
            break
        (tied,) = np.where(remainder == value)
        take = min(tied.shape[0], missing)
        out[rng.choice(tied, size=take, replace=False)] += 1
        missing -= take
    return out.astype(np.int64)


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

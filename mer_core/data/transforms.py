"""Post-processing that `load_data` applies to every source, in a fixed order.

1. `hide_labels`: keep a stratified share of the labelled samples labelled; the rest join
   the unlabelled pool (their truth is kept in `true_labels` for pseudo-label accuracy).
2. `cap_unlabelled`: a seeded subsample of the pool (the rest is dropped).
3. `standardize`: z-score each modality over its present samples (the test split, held out
   before step 1 by `mer_core.data.splits.hold_out_test`, is scaled with the same statistics).

Every random choice takes an explicit numpy Generator; nothing touches the global RNG.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from mer_core.data.featureset import FeatureSet

STD_FLOOR = 1e-6  # constant features (e.g. UCI `mor` binary columns) must not divide by ~0
_ROWS_PER_CHUNK = 4096  # temporaries on (4096, D) blocks keep the extra memory small


def hide_labels(fs: FeatureSet, fraction: float, rng: np.random.Generator) -> FeatureSet:
    """Moves all but a stratified `fraction` of the labelled samples to the unlabelled pool.

    Args:
        fs: The source's FeatureSet.
        fraction: Share of each class's labelled samples that stays labelled (at least one per class).
        rng: Generator for the choice of which samples stay labelled.

    Returns:
        A FeatureSet whose hidden samples have label -1 and their true label in `true_labels`.
    """
    if fraction >= 1.0:
        return fs
    labels = fs.labels.copy()  # (N,)
    # Unknown truth stays -1; labelled samples' truth is their label.
    truth = np.where(fs.labels >= 0, fs.labels, -1) if fs.true_labels is None else fs.true_labels.copy()
    for c in range(fs.n_classes):
        members = np.flatnonzero(fs.labels == c)
        if members.size == 0:
            continue
        keep = max(1, round(fraction * members.size))  # never erase a class from the labelled set
        hidden = rng.permutation(members)[keep:]
        labels[hidden] = -1
        truth[hidden] = c
    return dataclasses.replace(fs, labels=labels, true_labels=truth.astype(np.int64))


def cap_unlabelled(fs: FeatureSet, max_unlabelled: int, rng: np.random.Generator) -> FeatureSet:
    """Keeps all labelled samples and a seeded subsample of at most `max_unlabelled` pool samples.

    Args:
        fs: A FeatureSet.
        max_unlabelled: The largest pool to keep.
        rng: Generator for the subsample.

    Returns:
        `fs` itself when the pool is already small enough, else a copy without the dropped rows
        (original order preserved).
    """
    pool = fs.unlabelled_idx
    if pool.size <= max_unlabelled:
        return fs
    kept_pool = rng.choice(pool, size=max_unlabelled, replace=False)
    keep = np.sort(np.concatenate([fs.labelled_idx, kept_pool]))  # (K,)
    return fs.take(keep)


def standardize(fs: FeatureSet) -> FeatureSet:
    """Z-scores each modality with the mean and std of its present rows; absent rows stay 0.

    No labels are used, so using the unlabelled pool and validation rows leaks nothing
    about the targets. The held-out test split (`fs.test`) is scaled with the main rows'
    statistics and never contributes to them: a model meets test rows as it would new data.
    Arrays are updated in place when writable (the loaders return fresh arrays, and a
    full-size MER2024 text modality is ~2.5 GB, so a copy would hurt).

    Args:
        fs: A FeatureSet whose arrays load_data owns.

    Returns:
        A FeatureSet with standardized float32 features (its test split too).
    """
    features, test_features = {}, {}
    for j, (m, x) in enumerate(fs.features.items()):
        present = fs.mask[:, j]  # (N,)
        mean, std = _masked_mean_std(x, present)
        inv_std = (1.0 / std).astype(np.float32)  # (D_m,): a multiply is cheaper than a divide per element
        features[m] = _scale(x, present, mean, inv_std)
        if fs.test is not None:
            test_features[m] = _scale(fs.test.features[m], fs.test.mask[:, j], mean, inv_std)
    test = None if fs.test is None else dataclasses.replace(fs.test, features=test_features)
    return dataclasses.replace(fs, features=features, test=test)


def _scale(x: np.ndarray, present: np.ndarray, mean: np.ndarray, inv_std: np.ndarray) -> np.ndarray:
    """(N, D) `(x - mean) * inv_std` on present rows, zeros on absent ones; in place when writable."""
    out = x if x.flags.writeable else x.copy()  # (N, D)
    for start in range(0, out.shape[0], _ROWS_PER_CHUNK):
        block = out[start : start + _ROWS_PER_CHUNK]  # (B, D) view
        block -= mean
        block *= inv_std
        block[~present[start : start + _ROWS_PER_CHUNK]] = 0.0
    return out


def _masked_mean_std(x: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(D,) float32 mean and floored std over present rows, accumulated in float64 by chunks."""
    n = int(present.sum())
    if n == 0:
        return np.zeros(x.shape[1], dtype=np.float32), np.ones(x.shape[1], dtype=np.float32)
    total = np.zeros(x.shape[1], dtype=np.float64)  # (D,)
    for block in _present_blocks(x, present):
        total += block.sum(axis=0, dtype=np.float64)
    mean = (total / n).astype(np.float32)  # (D,)
    # Second pass around the mean: sum of squares minus square of sums loses digits in float32 data.
    sq = np.zeros(x.shape[1], dtype=np.float64)  # (D,)
    for block in _present_blocks(x, present):
        centred = block - mean  # (b, D) float32: centred values keep their precision
        centred *= centred
        sq += centred.sum(axis=0, dtype=np.float64)
    std = np.maximum(np.sqrt(sq / n), STD_FLOOR)
    return mean, std.astype(np.float32)


def _present_blocks(x: np.ndarray, present: np.ndarray) -> Iterator[np.ndarray]:
    """Row blocks of x restricted to present rows; fully present blocks are views, not copies."""
    for start in range(0, x.shape[0], _ROWS_PER_CHUNK):
        keep = present[start : start + _ROWS_PER_CHUNK]  # (B,)
        block = x[start : start + _ROWS_PER_CHUNK]  # (B, D) view
        yield block if keep.all() else block[keep]

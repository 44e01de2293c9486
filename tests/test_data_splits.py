"""make_splits: deterministic, stratified, covering the labelled set, clear errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mer_core.configs.schema import DataConfig
from mer_core.data import load_data, make_splits
from mer_core.data.splits import stratified_holdout, stratified_kfold_ids
from mer_core.errors import DataError


@pytest.fixture
def fs(tiny_data_cfg: DataConfig):
    return load_data(
        dataclasses.replace(tiny_data_cfg, synthetic=dataclasses.replace(tiny_data_cfg.synthetic, n_labelled=300))
    )


def _as_lists(splits):
    return [(s.train.tolist(), s.val.tolist()) for s in splits]


@pytest.mark.parametrize("folds", [1, 5])
def test_splits_are_deterministic_by_seed(fs, folds: int) -> None:
    a = make_splits(fs, folds=folds, val_fraction=0.2, seed=0)
    b = make_splits(fs, folds=folds, val_fraction=0.2, seed=0)
    c = make_splits(fs, folds=folds, val_fraction=0.2, seed=1)
    assert _as_lists(a) == _as_lists(b)
    assert _as_lists(a) != _as_lists(c)


def test_kfold_partitions_labelled_set_with_stratification(fs) -> None:
    splits = make_splits(fs, folds=5, val_fraction=0.2, seed=0)
    assert len(splits) == 5
    all_val = np.concatenate([s.val for s in splits])
    np.testing.assert_array_equal(np.sort(all_val), fs.labelled_idx)  # each labelled sample validated once
    overall = fs.class_counts() / fs.labelled_idx.size
    for s in splits:
        assert not set(s.train.tolist()) & set(s.val.tolist())
        assert (fs.labels[s.train] >= 0).all() and (fs.labels[s.val] >= 0).all()
        assert s.train.dtype == np.int64 and s.val.dtype == np.int64
        share = np.bincount(fs.labels[s.val], minlength=fs.n_classes) / s.val.size
        np.testing.assert_allclose(share, overall, atol=0.03)


def test_single_split_has_val_fraction_and_strata(fs) -> None:
    (split,) = make_splits(fs, folds=1, val_fraction=0.25, seed=3)
    assert split.val.size == int(np.ceil(0.25 * fs.labelled_idx.size))
    assert split.train.size + split.val.size == fs.labelled_idx.size
    share = np.bincount(fs.labels[split.val], minlength=fs.n_classes) / split.val.size
    np.testing.assert_allclose(share, fs.class_counts() / fs.labelled_idx.size, atol=0.03)


def test_too_few_samples_for_folds_names_the_class(fs) -> None:
    smallest = int(np.argmin(fs.class_counts()))
    count = int(fs.class_counts()[smallest])
    with pytest.raises(DataError, match=rf"class '{fs.class_names[smallest]}' has {count} labelled"):
        make_splits(fs, folds=count + 1, val_fraction=0.2, seed=0)


def test_val_fraction_too_small_for_all_classes(fs) -> None:
    with pytest.raises(DataError, match=r"data\.val_fraction"):
        make_splits(fs, folds=1, val_fraction=0.001, seed=0)


@pytest.mark.parametrize("case", range(40))
def test_folds_are_scikit_learns_for_the_same_seed(case: int) -> None:
    """The numpy splitters draw what StratifiedKFold / train_test_split(stratify=...) draw, so a
    seed gives the folds it gave when mersweep called scikit-learn itself."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    rng = np.random.default_rng(case)
    n_classes, k, seed = int(rng.integers(2, 8)), int(rng.integers(2, 6)), int(rng.integers(0, 10_000))
    y = np.concatenate([np.repeat(np.arange(n_classes), k), rng.integers(0, n_classes, size=int(rng.integers(0, 200)))])
    y = rng.permutation(y)  # (N,) every class has >= k rows
    want = np.empty(y.size, dtype=np.int64)
    for f, (_, val) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(y.size), y)):
        want[val] = f
    np.testing.assert_array_equal(stratified_kfold_ids(y, k, seed=seed), want)
    n_val = int(rng.integers(n_classes, y.size - n_classes + 1))
    train, val = train_test_split(np.arange(y.size), test_size=n_val, stratify=y, random_state=seed, shuffle=True)
    got_train, got_val = stratified_holdout(y, n_val, seed=seed)
    np.testing.assert_array_equal(np.sort(got_train), np.sort(train))
    np.testing.assert_array_equal(np.sort(got_val), np.sort(val))

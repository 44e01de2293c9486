"""make_splits: deterministic, stratified, covering the labelled set, clear errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mer_core.configs.schema import DataConfig
from mer_core.data import load_data, make_splits
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

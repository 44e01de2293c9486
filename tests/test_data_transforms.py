"""load_data post-processing: labelled_fraction, max_unlabelled, standardize, seeds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mer_core.configs.schema import DataConfig
from mer_core.data import FeatureSet, load_data
from mer_core.data.transforms import STD_FLOOR, standardize


def test_labelled_fraction_is_stratified_and_keeps_truth(tiny_data_cfg: DataConfig) -> None:
    full = load_data(tiny_data_cfg)
    part = load_data(dataclasses.replace(tiny_data_cfg, labelled_fraction=0.25))
    kept = part.class_counts() / full.class_counts()  # (C,)
    assert (part.class_counts() >= 1).all()
    np.testing.assert_allclose(kept, 0.25, atol=0.2)
    # The synthetic truth of every sample survives, hidden or not.
    np.testing.assert_array_equal(part.true_labels, full.true_labels)
    assert set(part.labelled_idx.tolist()) <= set(full.labelled_idx.tolist())


def test_labelled_fraction_depends_on_seed(tiny_data_cfg: DataConfig) -> None:
    a = load_data(dataclasses.replace(tiny_data_cfg, labelled_fraction=0.5))
    b = load_data(dataclasses.replace(tiny_data_cfg, labelled_fraction=0.5))
    c = load_data(dataclasses.replace(tiny_data_cfg, labelled_fraction=0.5, seed=1))
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)


@pytest.mark.parametrize("cap", [0, 37, 10_000])
def test_max_unlabelled_keeps_labelled_and_caps_pool(tiny_data_cfg: DataConfig, cap: int) -> None:
    full = load_data(tiny_data_cfg)
    capped = load_data(dataclasses.replace(tiny_data_cfg, max_unlabelled=cap))
    assert capped.unlabelled_idx.size == min(cap, full.unlabelled_idx.size)
    assert capped.labelled_idx.size == full.labelled_idx.size
    assert set(capped.sample_ids) <= set(full.sample_ids)
    # Original order is preserved, so ids stay sorted the way the source emitted them.
    order = [full.sample_ids.index(s) for s in capped.sample_ids]
    assert order == sorted(order)


def test_max_unlabelled_after_labelled_fraction(tiny_data_cfg: DataConfig) -> None:
    fs = load_data(dataclasses.replace(tiny_data_cfg, labelled_fraction=0.5, max_unlabelled=10))
    assert fs.unlabelled_idx.size == 10
    assert fs.true_labels is not None and fs.true_labels.shape == (fs.n_samples,)


def test_standardize_floors_constant_features_and_keeps_masked_rows_zero() -> None:
    x = np.array([[1.0, 5.0], [3.0, 5.0], [0.0, 0.0], [2.0, 5.0]], dtype=np.float32)  # (4, 2); row 2 absent
    fs = FeatureSet(
        name="t",
        features={"only": x.copy()},
        labels=np.array([0, 1, 0, -1], dtype=np.int64),
        mask=np.array([[True], [True], [False], [True]]),
        class_names=("a", "b"),
        sample_ids=("s0", "s1", "s2", "s3"),
    )
    out = standardize(fs).features["only"]
    np.testing.assert_allclose(out[:, 0], [-np.sqrt(1.5), np.sqrt(1.5), 0.0, 0.0], rtol=1e-5)
    np.testing.assert_array_equal(out[:, 1], 0.0)  # constant column: (5 - 5) / floor, no NaN
    assert STD_FLOOR == 1e-6


def test_different_seeds_give_different_features(tiny_data_cfg: DataConfig) -> None:
    a = load_data(tiny_data_cfg)
    b = load_data(dataclasses.replace(tiny_data_cfg, seed=1))
    assert all(not np.allclose(a.features[m], b.features[m]) for m in a.modalities)

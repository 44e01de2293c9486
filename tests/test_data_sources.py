"""Every registered data source: shapes, dtypes, masks, determinism."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from mer_core.configs.fields import FrozenDict
from mer_core.configs.schema import DataConfig, FeaturesConfig, SyntheticConfig
from mer_core.data import SOURCES, FeatureSet, load_data, write_features
from mer_core.errors import ConfigError


def _cfg_for(source: str, tmp_path: Path, tiny: DataConfig) -> DataConfig:
    if source != "features":
        return dataclasses.replace(tiny, source=source)
    written = dataclasses.replace(tiny, synthetic=dataclasses.replace(tiny.synthetic, missing_rate=0.2))
    fs = load_data(dataclasses.replace(written, standardize=False))
    write_features(fs, tmp_path / "feats")
    modalities = FrozenDict({m: m for m in fs.modalities})
    return dataclasses.replace(
        tiny, source="features", features=FeaturesConfig(root=str(tmp_path / "feats"), modalities=modalities)
    )


def _check_contract(fs: FeatureSet) -> None:
    fs.validate()
    assert fs.n_samples > 0 and fs.modalities
    assert fs.mask.shape == (fs.n_samples, len(fs.modalities))
    for j, (m, x) in enumerate(fs.features.items()):
        assert x.dtype == np.float32 and x.shape == (fs.n_samples, fs.dims[m])
        assert np.isfinite(x).all()
        assert not x[~fs.mask[:, j]].any(), f"{m}: masked rows must be zeros"
    assert fs.labels.dtype == np.int64
    assert fs.mask.any(axis=1).all(), "every sample has at least one modality"
    assert (fs.class_counts() > 0).all()


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_source_contract_and_determinism(source: str, tmp_path: Path, tiny_data_cfg: DataConfig) -> None:
    cfg = _cfg_for(source, tmp_path, tiny_data_cfg)
    a, b = load_data(cfg), load_data(cfg)
    _check_contract(a)
    assert a.sample_ids == b.sample_ids
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.mask, b.mask)
    for m in a.modalities:
        np.testing.assert_array_equal(a.features[m], b.features[m])


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_labelled_fraction_on_every_source(source: str, tmp_path: Path, tiny_data_cfg: DataConfig) -> None:
    cfg = dataclasses.replace(_cfg_for(source, tmp_path, tiny_data_cfg), labelled_fraction=0.5)
    fs = load_data(cfg)
    full = load_data(dataclasses.replace(cfg, labelled_fraction=1.0))
    assert fs.labelled_idx.size == pytest.approx(full.labelled_idx.size / 2, abs=fs.n_classes)
    assert fs.true_labels is not None
    hidden = (full.labels >= 0) & (fs.labels < 0)
    np.testing.assert_array_equal(fs.true_labels[hidden], full.labels[hidden])


def test_unknown_source_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"data\.source") as err:
        load_data(DataConfig(source="nope"))  # type: ignore[arg-type]
    for name in SOURCES:
        assert name in str(err.value)


def test_standardize_on_masked_data() -> None:
    cfg = DataConfig(synthetic=SyntheticConfig(n_labelled=120, n_unlabelled=300, missing_rate=0.4), standardize=True)
    fs = load_data(cfg)
    for j, x in enumerate(fs.features.values()):
        present = x[fs.mask[:, j]]  # (n_present, D)
        np.testing.assert_allclose(present.mean(axis=0), 0.0, atol=1e-4)
        np.testing.assert_allclose(present.std(axis=0), 1.0, atol=1e-3)
        assert not x[~fs.mask[:, j]].any()

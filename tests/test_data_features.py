"""`features` source: MERTools layout, writer round trip, packed cache, and every broken-folder error."""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from mer_core.configs.fields import FrozenDict
from mer_core.configs.schema import DataConfig, FeaturesConfig, SyntheticConfig
from mer_core.data import load_data, npyio, write_features
from mer_core.data.mertools import load_features_dir
from mer_core.errors import DataError

MODS = FrozenDict({"audio": "hubert-UTT", "text": "baichuan-UTT"})


def _make_dir(root: Path, *, n: int = 6, dims: tuple[int, int] = (4, 3), csv: str | None = None) -> Path:
    """n samples s0..s{n-1} in two folders; s0-s3 labelled (x, y, x, y)."""
    rng = np.random.default_rng(0)
    for folder, dim in zip(MODS.values(), dims, strict=True):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            np.save(root / folder / f"s{i}.npy", rng.standard_normal(dim).astype(np.float32))
    (root / "train-label.csv").write_text(csv or "name,discrete,valence\ns0,x,1\ns1,y,2\ns2,x,0\ns3,y,0\n")
    return root


def _cfg(root: Path, **kw) -> FeaturesConfig:
    return FeaturesConfig(root=str(root), modalities=MODS, **kw)


def test_round_trip_with_a_missing_modality(tmp_path: Path) -> None:
    syn = SyntheticConfig(
        n_labelled=30, n_unlabelled=20, dims=FrozenDict({"v1": 5, "v2": 3, "v3": 2}), missing_rate=0.3
    )
    classes = ("zeta", "alpha", "mid", "beta", "omega", "gamma")  # not sorted: order must survive
    fs = load_data(DataConfig(synthetic=dataclasses.replace(syn, classes=classes), standardize=False))
    assert not fs.mask.all()
    write_features(fs, tmp_path)
    back, info = load_features_dir(
        FeaturesConfig(root=str(tmp_path), modalities=FrozenDict({m: m for m in fs.modalities}), classes=classes)
    )
    assert not info.cache_hit
    assert back.sample_ids == fs.sample_ids and back.class_names == classes and back.modalities == fs.modalities
    np.testing.assert_array_equal(back.labels, fs.labels)
    np.testing.assert_array_equal(back.mask, fs.mask)
    for m in fs.modalities:
        np.testing.assert_array_equal(back.features[m], fs.features[m])
    labelled_rows = (tmp_path / "train-label.csv").read_text().strip().splitlines()[1:]
    assert len(labelled_rows) == fs.labelled_idx.size  # unlabelled samples are omitted


def test_default_class_list_is_sorted_labels_and_pool_is_unlabelled(tmp_path: Path) -> None:
    fs, _ = load_features_dir(_cfg(_make_dir(tmp_path)))
    assert fs.class_names == ("x", "y")
    assert fs.sample_ids == tuple(f"s{i}" for i in range(6))
    np.testing.assert_array_equal(fs.labels, [0, 1, 0, 1, -1, -1])
    assert fs.true_labels is None and fs.dims == {"audio": 4, "text": 3}


def test_numeric_labels_are_ordered_as_numbers(tmp_path: Path) -> None:
    csv = "name,label\n" + "".join(f"s{i},{lab}\n" for i, lab in enumerate(["10", "2", "1", "2", "10", "1"]))
    fs, _ = load_features_dir(_cfg(_make_dir(tmp_path, csv=csv)))
    assert fs.class_names == ("1", "2", "10")  # as strings: ("1", "10", "2"), so class 1 was label 10
    np.testing.assert_array_equal(fs.labels, [2, 1, 0, 1, 2, 0])


def test_cache_hit_reads_no_feature_file(tmp_path: Path, monkeypatch, caplog) -> None:
    cfg = _cfg(_make_dir(tmp_path))
    first, info = load_features_dir(cfg)
    assert not info.cache_hit and info.cache_entry is not None
    assert info.cache_entry.parent == tmp_path / ".mersweep-cache"

    def refuse(*args, **kwargs):
        raise AssertionError("a feature file was read on a cache hit")

    monkeypatch.setattr(npyio, "read_vector", refuse)
    with caplog.at_level(logging.INFO, logger="mer_core.data"):
        second, info = load_features_dir(cfg)
    assert info.cache_hit and "cache hit" in caplog.text
    np.testing.assert_array_equal(second.features["audio"], first.features["audio"])
    assert second.sample_ids == first.sample_ids and second.class_names == first.class_names


def test_cache_invalidates_when_a_file_or_the_labels_change(tmp_path: Path) -> None:
    root = _make_dir(tmp_path)
    cfg = _cfg(root)
    load_features_dir(cfg)
    target = root / MODS["audio"] / "s2.npy"
    np.save(target, np.full(4, 7.0, dtype=np.float32))
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # same size: mtime must carry it
    fs, info = load_features_dir(cfg)
    assert not info.cache_hit
    np.testing.assert_array_equal(fs.features["audio"][2], 7.0)
    (root / "train-label.csv").write_text("name,label\ns0,y\n")
    fs, info = load_features_dir(cfg)
    assert not info.cache_hit and fs.class_names == ("y",) and fs.labelled_idx.tolist() == [0]
    assert load_features_dir(cfg)[1].cache_hit


def test_unwritable_root_falls_back_to_user_cache(tmp_path: Path, monkeypatch, caplog) -> None:
    from mer_core.data import cache

    root = _make_dir(tmp_path / "data")
    real = cache._writable
    monkeypatch.setattr(cache, "_writable", lambda p: False if p == root / ".mersweep-cache" else real(p))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    _, info = load_features_dir(_cfg(root))
    assert info.cache_entry is not None and info.cache_entry.parent == tmp_path / "xdg" / "mersweep"
    assert "not writable" in caplog.text


def test_leading_unit_axes_squeezed_and_other_extensions_ignored(tmp_path: Path) -> None:
    root = _make_dir(tmp_path)
    np.save(root / MODS["audio"] / "s1.npy", np.ones((1, 4), dtype=np.float64))
    np.savez(root / MODS["audio"] / "s9.npz", x=np.ones(9))  # same-stem files of other types are not samples
    (root / MODS["text"] / "s0.txt").write_text("not a feature")
    fs, _ = load_features_dir(_cfg(root))
    assert "s9" not in fs.sample_ids and fs.n_samples == 6
    np.testing.assert_array_equal(fs.features["audio"][1], 1.0)
    assert fs.features["audio"].dtype == np.float32


@pytest.mark.parametrize("missing", ["mask", "drop", "error"])
def test_missing_modality_policies(tmp_path: Path, caplog, missing: str) -> None:
    root = _make_dir(tmp_path)
    (root / MODS["text"] / "s5.npy").unlink()
    (root / MODS["audio"] / "s4.npy").unlink()
    cfg = _cfg(root, missing=missing)
    if missing == "error":
        with pytest.raises(DataError, match=r"2 samples miss a modality \(audio=1, text=1"):
            load_features_dir(cfg)
        return
    fs, info = load_features_dir(cfg)
    assert "audio=1, text=1" in caplog.text and info.notes
    if missing == "mask":
        assert fs.n_samples == 6 and fs.mask[4].tolist() == [False, True] and fs.mask[5].tolist() == [True, False]
        assert not fs.features["audio"][4].any()
    else:
        assert fs.sample_ids == ("s0", "s1", "s2", "s3") and fs.mask.all()


def test_drop_that_would_leave_no_sample_says_so(tmp_path: Path) -> None:
    root = _make_dir(tmp_path)
    for i in range(6):  # every sample lacks one of the two modalities
        (root / MODS["audio" if i % 2 else "text"] / f"s{i}.npy").unlink()
    with pytest.raises(DataError, match=r"missing=drop drops all 6 samples: none has every modality \(audio=3, text=3"):
        load_features_dir(_cfg(root, missing="drop"))  # was: "modality 'audio': no feature files found"


def test_labels_from_trusted_npz(tmp_path: Path) -> None:
    root = _make_dir(tmp_path)
    corpus = {"s0": {"emo": "happy", "val": 1.0}, "s3": {"emo": "sad", "val": -2.0}}
    np.savez(root / "label-6way.npz", train_corpus=corpus, test1_corpus={})
    cfg = _cfg(root, labels="label-6way.npz", trust_pickle=True)
    fs, _ = load_features_dir(cfg)
    assert fs.class_names == ("happy", "sad")
    np.testing.assert_array_equal(fs.labels, [0, -1, -1, 1, -1, -1])
    with pytest.raises(DataError, match=r"no entry 'nope'.*train_corpus"):
        load_features_dir(dataclasses.replace(cfg, label_split="nope"))


@pytest.mark.parametrize(
    ("header", "sep", "extra"),
    [
        ("names,emotion", ",", ""),
        ("video\temo", "\t", ""),
        ("filename;label", ";", ""),
        ("Sample,Discrete,valence", ",", ",0"),
    ],
)
def test_label_csv_header_variants(tmp_path: Path, header: str, sep: str, extra: str) -> None:
    csv = f"{header}\ns0{sep}x{extra}\ns1{sep}y{extra}\ns2{sep}{extra}\n"  # s2: empty label = unlabelled
    fs, _ = load_features_dir(_cfg(_make_dir(tmp_path, csv=csv)))
    assert fs.labels[:3].tolist() == [0, 1, -1]


def _broken(tmp_path: Path, case: str) -> FeaturesConfig:
    root = _make_dir(tmp_path)
    audio = root / MODS["audio"]
    if case == "missing folder":
        return FeaturesConfig(root=str(root), modalities=FrozenDict({**MODS, "video": "clip-UTT"}))
    if case == "mismatched dims":
        np.save(audio / "s3.npy", np.zeros(5, dtype=np.float32))
    elif case == "nan":
        np.save(audio / "s2.npy", np.array([0, np.nan, 0, 0], dtype=np.float32))
    elif case == "bad shape":
        np.save(audio / "s1.npy", np.zeros((2, 4), dtype=np.float32))
    elif case == "duplicate name":
        (root / "train-label.csv").write_text("name,label\ns0,x\ns1,y\ns0,y\n")
    elif case == "label outside classes":
        return _cfg(root, classes=("x", "z"))
    elif case == "untrusted pickle":
        np.savez(root / "label-6way.npz", train_corpus={"s0": {"emo": "x", "val": 0.0}})
        return _cfg(root, labels="label-6way.npz")
    elif case == "bad header":
        (root / "train-label.csv").write_text("id,target\ns0,x\n")
    elif case == "names do not match":
        (root / "train-label.csv").write_text("name,label\nsample_0.mp4,x\n")
    elif case == "no label file":
        (root / "train-label.csv").unlink()
    elif case == "empty label file":
        (root / "train-label.csv").write_text("")
    elif case == "ragged label file":
        (root / "train-label.csv").write_text("name,label\ns0,x\ns1,y,extra,more\n")
    elif case == "latin-1 label file":
        (root / "train-label.csv").write_bytes("name,label\ns0,h\xe4ppy\n".encode("latin-1"))
    elif case == "pickled feature":
        np.save(audio / "s1.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    return _cfg(root)


@pytest.mark.parametrize(
    ("case", "pattern"),
    [
        ("missing folder", r"modality 'video' not found: .*clip-UTT \(data\.features\.modalities is \{'audio': "),
        ("mismatched dims", r"inconsistent feature dims: .*s0\.npy has 4, .*s3\.npy has 5"),
        ("nan", r"s2\.npy contains NaN or inf"),
        ("bad shape", r"s1\.npy has shape \(2, 4\)"),
        ("duplicate name", r"sample name 's0' appears more than once"),
        ("label outside classes", r"label 'y' \(e\.g\. sample 's1'\) is not in data\.features\.classes; allowed: x, z"),
        ("untrusted pickle", r"set data\.features\.trust_pickle=true"),
        ("bad header", r"cannot find the sample-name and label columns in header \['id', 'target'\]"),
        ("names do not match", r"names do not match: e\.g\. 'sample_0\.mp4'"),
        ("no label file", r"label file not found: .*train-label\.csv"),
        ("empty label file", r"label file .*train-label\.csv is empty"),
        ("ragged label file", r"train-label\.csv: not a readable CSV \(.*line 3"),
        ("latin-1 label file", r"train-label\.csv: not UTF-8 text \(byte 0xe4 .*save it as UTF-8"),
        ("pickled feature", r"feature file .*s1\.npy holds Python objects"),
    ],
)
def test_broken_folders_raise_clear_data_errors(tmp_path: Path, case: str, pattern: str) -> None:
    cfg = _broken(tmp_path, case)
    with pytest.raises(DataError, match=pattern):
        load_features_dir(cfg)
    assert not list((tmp_path / ".mersweep-cache").glob("features-*")), "a failed load must not leave a cache entry"


def test_frame_level_features_are_refused_or_averaged_over_time(tmp_path: Path) -> None:
    root = _make_dir(tmp_path)
    frames = np.arange(12, dtype=np.float32).reshape(3, 4)  # (T, D): MERTools' -FRM features
    np.save(root / MODS["audio"] / "s1.npy", frames)
    np.save(root / MODS["audio"] / "s2.npy", frames[:2])  # another T: only D has to agree
    with pytest.raises(DataError, match=r"s1\.npy has shape \(3, 4\);.*set data\.features\.frames=mean"):
        load_features_dir(_cfg(root))
    fs, info = load_features_dir(_cfg(root, frames="mean"))
    assert not info.cache_hit and fs.dims == {"audio": 4, "text": 3}
    np.testing.assert_allclose(fs.features["audio"][1], frames.mean(axis=0))
    np.testing.assert_allclose(fs.features["audio"][2], frames[:2].mean(axis=0))


def test_float64_beyond_float32_range_is_reported_by_file_without_numpy_warnings(tmp_path: Path) -> None:
    root = _make_dir(tmp_path)
    np.save(root / MODS["audio"] / "s2.npy", np.array([1.0e39, 0.0, 0.0, 0.0]))  # float64: inf as float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning would be extra lines on the CLI's stderr
        with pytest.raises(DataError, match=r"s2\.npy contains NaN or inf values \(or values beyond float32"):
            load_features_dir(_cfg(root))


def test_labelled_sample_without_features_is_dropped_with_a_warning(tmp_path: Path, caplog) -> None:
    root = _make_dir(tmp_path, csv="name,label\ns0,x\nghost,y\n")
    fs, _ = load_features_dir(_cfg(root))
    assert "ghost" not in fs.sample_ids and "dropped 1 labelled samples" in caplog.text
    with pytest.raises(DataError, match="1 labelled samples have no feature file"):
        load_features_dir(_cfg(root, missing="error"))

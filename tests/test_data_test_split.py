"""The held-out test split: drawn before anything else, stratified, seeded, never trained or selected on,
scored once per fold at the end; `features.test_labels`; and the errors for bad values."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from mer_core.configs.fields import FrozenDict
from mer_core.configs.loader import build_config
from mer_core.configs.schema import DataConfig, ExperimentConfig, FeaturesConfig, SyntheticConfig
from mer_core.data import load_data, make_splits, write_features
from mer_core.errors import ConfigError, DataError
from mer_core.train.recipe import HeldOut, train_members, voting_setup
from mer_core.train.scores import score_logits
from mer_core.train.single import SingleExecutor

TINY_TRAIN = {
    "model.hidden_dim": 16,
    "model.ff_dim": 32,
    "model.head_hidden": [16],
    "optim.max_epochs": 2,
    "optim.patience": 1,
    "optim.pretrain_epochs": 1,
    "optim.batch_size": 32,
    "self_training.rounds": 1,
    "self_training.dominant_threshold": 0.0,
    "self_training.minority_threshold": 0.0,
    "self_training.oversample_to": 20,
    "runtime.threads": 1,
    "runtime.device": "cpu",
}


def _data_cfg(tiny: DataConfig, **kw) -> DataConfig:
    syn = dataclasses.replace(tiny.synthetic, n_labelled=200)
    return dataclasses.replace(tiny, synthetic=syn, **{"test_fraction": 0.25, "labelled_fraction": 0.5, **kw})


def test_test_rows_leave_the_dataset_before_labels_hide_stratified_and_seeded(tiny_data_cfg: DataConfig) -> None:
    cfg = _data_cfg(tiny_data_cfg)
    fs = load_data(cfg)
    whole = load_data(dataclasses.replace(cfg, test_fraction=0.0, labelled_fraction=1.0))
    assert fs.test is not None and fs.test.test is None
    assert fs.n_test == 50  # 0.25 of the 200 labelled samples
    assert (fs.test.labels >= 0).all()  # drawn from the labelled samples, before any label was hidden
    assert not set(fs.test.sample_ids) & set(fs.sample_ids)
    assert fs.n_samples + fs.n_test == whole.n_samples
    # Stratified: each class's test count is its share of the labelled samples, to within a row.
    share = whole.class_counts() * 0.25
    assert np.abs(fs.test.class_counts() - share).max() <= 1.0
    # The labelled fraction applies to what is left: half of the 150 remaining labelled rows.
    assert abs(fs.labelled_idx.size - 75) <= fs.n_classes
    again, other = load_data(cfg), load_data(dataclasses.replace(cfg, seed=1))
    assert again.test is not None and other.test is not None
    assert again.test.sample_ids == fs.test.sample_ids
    np.testing.assert_array_equal(again.test.features["alpha"], fs.test.features["alpha"])
    assert other.test.sample_ids != fs.test.sample_ids


def test_no_fold_of_any_seed_indexes_a_test_row(tiny_data_cfg: DataConfig) -> None:
    fs = load_data(_data_cfg(tiny_data_cfg))
    assert fs.test is not None
    held_out = set(fs.test.sample_ids)
    pool = {fs.sample_ids[i] for i in fs.unlabelled_idx.tolist()}
    assert not pool & held_out  # never pseudo-labelled
    for seed in range(4):
        for folds in (1, 3):
            for split in make_splits(fs, folds=folds, val_fraction=0.2, seed=seed):
                rows = np.concatenate([split.train, split.val]).tolist()
                assert not {fs.sample_ids[i] for i in rows} & held_out


def test_standardize_uses_the_main_rows_statistics_only(tiny_data_cfg: DataConfig) -> None:
    cfg = _data_cfg(tiny_data_cfg)
    raw, std = load_data(dataclasses.replace(cfg, standardize=False)), load_data(cfg)
    assert raw.test is not None and std.test is not None
    x = raw.features["beta"]  # (N, D) every row present (missing_rate 0)
    mean, sd = x.mean(0), np.maximum(x.std(0), 1e-6)
    np.testing.assert_allclose(std.test.features["beta"], (raw.test.features["beta"] - mean) / sd, atol=1e-4)
    assert np.abs(std.test.features["beta"].mean(0)).max() > 1e-3  # not re-centred on its own rows


@pytest.mark.parametrize("fraction", [-0.1, 0.51, 1.0])
def test_test_fraction_outside_0_to_half_is_a_config_error(fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"data\.test_fraction"):
        build_config({"data": {"test_fraction": fraction}})


def test_too_small_a_test_split_is_a_data_error(tiny_data_cfg: DataConfig) -> None:
    syn = dataclasses.replace(tiny_data_cfg.synthetic, n_labelled=12)
    with pytest.raises(DataError, match=r"data\.test_fraction=0\.2: 3 test .* all 6 classes"):
        load_data(dataclasses.replace(tiny_data_cfg, synthetic=syn, test_fraction=0.2))


class RecordingExecutor(SingleExecutor):
    """The single executor, recording which rows each step trains on and which data each predict reads."""

    def __init__(self, device: torch.device) -> None:
        super().__init__(device)
        self.trained: set[int] = set()
        self.predicted_on: list[tuple[int, int]] = []  # (id of the DeviceData, rows)

    def step(self, parts, kind):
        for part in parts:
            self.trained.update(part.idx.tolist())
        return super().step(parts, kind)

    def predict(self, members, rows, *, dev=None):
        self.predicted_on += [(id(dev), len(idx)) for idx in rows]
        return super().predict(members, rows, dev=dev)


def _experiment(data: DataConfig, **sets) -> ExperimentConfig:
    cfg = build_config({}, {**TINY_TRAIN, **sets})
    return dataclasses.replace(cfg, data=data)


def test_each_folds_final_model_scores_the_test_rows_once_and_test_metrics_are_fold_means(
    tiny_data_cfg: DataConfig,
) -> None:
    data_cfg = _data_cfg(tiny_data_cfg, folds=2)
    fs = load_data(data_cfg)
    assert fs.test is not None
    cfg = _experiment(data_cfg, **{"missing.eval_rates": [0.0, 0.5]})
    ex = RecordingExecutor(torch.device("cpu"))
    (result,) = train_members([cfg], fs, ex)
    assert result.ok and len(result.folds) == 2
    assert max(ex.trained) < fs.n_samples  # rows of the main data only: test rows are not rows of it
    test_calls = [n for _, n in ex.predicted_on if n == fs.n_test]
    assert len(test_calls) == 2 * (1 + 2)  # per fold: the final model once, then once per eval rate
    for name in ("weighted_f1", "accuracy", "macro_f1", "loss"):
        per_fold = [f.metrics[f"test/{name}"] for f in result.folds]
        assert result.metrics[f"test/{name}"] == pytest.approx(np.mean(per_fold))
        assert f"test/{name}_std" in result.metrics
    assert "test/weighted_f1_missing_0.5" in result.metrics and "test/f1_fusion" in result.metrics
    for fold in result.folds:
        assert all(v.shape == (fs.n_test, fs.n_classes) for v in fold.test_logits.values())
    assert result.test_logits()["fusion"].shape == (2 * fs.n_test, fs.n_classes)
    # The same scorer as validation, on the test labels: recompute one fold's voted F1 from its logits.
    heads = (*fs.modalities, "fusion")
    weights = voting_setup(cfg.voting, heads, cls_heads=cfg.loss.cls_heads)
    again = score_logits(
        result.folds[0].test_logits, fs.test.labels, weights, space=cfg.voting.space, class_names=fs.class_names
    )
    assert again["val/weighted_f1"] == pytest.approx(result.folds[0].metrics["test/weighted_f1"])


def test_no_test_split_reports_no_test_metric(tiny_data_cfg: DataConfig) -> None:
    data_cfg = _data_cfg(tiny_data_cfg, folds=1, test_fraction=0.0)
    fs = load_data(data_cfg)
    assert fs.test is None and HeldOut.of(fs, build_config({}).missing, torch.device("cpu")) is None
    (result,) = train_members([_experiment(data_cfg)], fs, SingleExecutor(torch.device("cpu")))
    assert result.ok and not any(k.startswith("test/") for k in result.metrics)


def test_test_rows_get_the_test_time_missing_rate(tiny_data_cfg: DataConfig) -> None:
    fs = load_data(_data_cfg(tiny_data_cfg))
    cfg = build_config({}, {"missing.test_rate": 0.5, "missing.seed": 3})
    held = HeldOut.of(fs, cfg.missing, torch.device("cpu"))
    assert held is not None and fs.test is not None
    mask = held.dev.mask.numpy()
    assert 0.3 < 1 - mask.mean() < 0.6 and mask.any(axis=1).all()  # about half dropped, one modality kept
    again = HeldOut.of(fs, cfg.missing, torch.device("cpu"))
    assert again is not None and (again.dev.mask.numpy() == mask).all()  # fixed by missing.seed
    # Nested like the validation grid: a higher rate drops a superset of a lower one's pairs.
    low, high = held.at_rate(0.2).mask.numpy(), held.at_rate(0.7).mask.numpy()
    assert (high <= low).all() and (low <= fs.test.mask).all()


# -- `features` source with a separate test label file ---------------------------------------------

MODS = FrozenDict({"voice": "voice-UTT", "face": "face-UTT", "words": "words-UTT"})  # not MER's names


def _features_dir(root: Path) -> DataConfig:
    syn = SyntheticConfig(
        n_labelled=60,
        n_unlabelled=30,
        dims=FrozenDict({"voice": 5, "face": 3, "words": 4}),
        classes=("calm", "joy", "fear", "awe"),
    )
    fs = load_data(DataConfig(synthetic=syn, standardize=False))
    write_features(fs, root)
    for m, folder in MODS.items():
        (root / m).rename(root / folder)
    # The last 20 labelled samples move from train-label.csv to test-label.csv; the pool stays unlabelled.
    lines = (root / "train-label.csv").read_text().strip().splitlines()
    header, rows = lines[0], lines[1:]
    (root / "train-label.csv").write_text("\n".join([header, *rows[:-20]]) + "\n")
    (root / "test-label.csv").write_text("\n".join([header, *rows[-20:]]) + "\n")
    features = FeaturesConfig(root=str(root), modalities=MODS, test_labels="test-label.csv", classes=syn.classes)
    return DataConfig(source="features", features=features, folds=2)


def test_features_test_label_file_names_the_test_split(tmp_path: Path) -> None:
    cfg = _features_dir(tmp_path)
    fs = load_data(cfg)
    assert fs.test is not None and fs.n_test == 20 and fs.modalities == tuple(MODS)
    names = [line.split(",")[0] for line in (tmp_path / "test-label.csv").read_text().strip().splitlines()[1:]]
    assert set(fs.test.sample_ids) == set(names) and not set(names) & set(fs.sample_ids)
    assert fs.labelled_idx.size == 40 and fs.class_names == ("calm", "joy", "fear", "awe")
    labels = dict(line.split(",")[:2] for line in (tmp_path / "test-label.csv").read_text().splitlines()[1:])
    assert [fs.class_names[y] for y in fs.test.labels] == [labels[n] for n in fs.test.sample_ids]
    assert cfg.has_test_split


def test_features_test_labels_errors(tmp_path: Path) -> None:
    cfg = _features_dir(tmp_path)
    with pytest.raises(ConfigError, match=r"data\.test_fraction.*test_labels"):
        build_config(
            {"data": {"source": "features", "test_fraction": 0.2, "features": {"root": "x", "test_labels": "t"}}}
        )
    text = (tmp_path / "test-label.csv").read_text()
    (tmp_path / "test-label.csv").write_text(text + "nobody,joy\n")
    with pytest.raises(DataError, match="no feature file"):
        load_data(cfg)
    train_first = (tmp_path / "train-label.csv").read_text().splitlines()[1]
    (tmp_path / "test-label.csv").write_text(text + train_first + "\n")
    with pytest.raises(DataError, match="also labelled for training"):
        load_data(cfg)
    header, first, *rest = text.strip().splitlines()
    (tmp_path / "test-label.csv").write_text("\n".join([header, first.split(",")[0] + ",rage", *rest]) + "\n")
    with pytest.raises(DataError, match="not one of the classes"):
        load_data(cfg)
    missing = dataclasses.replace(cfg, features=dataclasses.replace(cfg.features, test_labels="absent.csv"))
    with pytest.raises(DataError, match=r"data\.features\.test_labels"):
        load_data(missing)


@pytest.mark.parity
def test_fused_members_report_the_test_scores_of_their_single_runs() -> None:
    from mer_core.configs import with_overrides
    from tests.parity import FP64, assert_same_run, fused_runs, parity_data_cfg, single_run

    data_cfg = parity_data_cfg(folds=2, test_fraction=0.25)
    fs = load_data(data_cfg)
    common = {"self_training.rounds": 0, "optim.pretrain_epochs": 0, "optim.max_epochs": 3, "optim.patience": 3}
    base = _experiment(data_cfg, **common, **FP64, **{"missing.eval_rates": [0.5]})
    cfgs = [with_overrides(base, {"seed": 0}), with_overrides(base, {"seed": 1, "optim.lr": 3e-3})]
    for cfg, member in zip(cfgs, fused_runs(cfgs, fs), strict=True):
        single = single_run(cfg, fs)
        assert "test/weighted_f1" in single.result.metrics and "test/weighted_f1_missing_0.5" in single.result.metrics
        assert not any(k.startswith("test/") for m in single.seen for k in m)  # never reported per epoch
        assert_same_run(single, member)  # every prediction, the test split's too


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["trial", "fused"])
def test_sweep_logs_test_metrics_to_every_child_run_and_prints_them(tmp_path: Path, mode: str, mlflow_uri: str) -> None:
    from mlflow.tracking import MlflowClient

    from tests.sweep_helpers import SMALL_DATA, SMALL_SET, children_of, run_sweep_here, write_sweep

    spec = write_sweep(
        tmp_path,
        "held-out",
        data={**SMALL_DATA, "test_fraction": 0.2},
        set={**SMALL_SET, "optim.max_epochs": 2, "self_training.rounds": 0},
        search={"algorithm": "random", "num_samples": 2, "seed": 0},
        scheduler={"kind": "none"},
        execution={"mode": mode, "population": 2},
    )
    uri = mlflow_uri
    proc = run_sweep_here([str(spec), "--tracking-uri", uri], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = proc.stdout.splitlines()[1]
    assert "val/weighted_f1" in header and "test/weighted_f1" in header  # the summary shows the held-out score
    _, children = children_of(MlflowClient(uri), "held-out")
    assert len(children) == 2
    for child in children:
        metrics = child.data.metrics
        assert {"test/weighted_f1", "test/accuracy", "test/loss", "final/test/weighted_f1"} <= set(metrics)
        # Reported once, at the end: one value in the history, never per epoch.
        assert len(MlflowClient(uri).get_metric_history(child.info.run_id, "test/weighted_f1")) == 1


def test_dry_run_says_what_the_verdicts_report(tmp_path: Path) -> None:
    from tests.sweep_helpers import SMALL_DATA, run_cli_here, write_sweep

    plain = run_cli_here([str(write_sweep(tmp_path, "plain")), "--dry-run"], cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "note: no held-out test split" in plain.stderr and "+ 0 held-out test samples" in plain.stderr
    spec = write_sweep(tmp_path, "held", data={**SMALL_DATA, "test_fraction": 0.25})
    held = run_cli_here([str(spec), "--dry-run"], cwd=tmp_path)
    assert held.returncode == 0, held.stderr
    assert "note: no held-out test split" not in held.stderr and "+ 60 held-out test samples" in held.stderr

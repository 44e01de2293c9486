"""`run` (the recipe with the single executor): stages, folds, reporting, pruning, divergence, determinism."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from mer_core import losses
from mer_core.configs import load_config
from mer_core.data import load_data
from mer_core.data.synthetic import generate_synthetic
from mer_core.data.transforms import standardize
from mer_core.errors import ConfigError, DataError
from mer_core.train import run
from mer_core.train.objective import fresh_net
from mer_core.train.preflight import check_modality_keys, check_trainable

FAST = [
    "data.folds=1",
    "optim.max_epochs=5",
    "optim.patience=3",
    "optim.pretrain_epochs=1",
    "model.ff_dim=64",
    "model.hidden_dim=32",
    "self_training.oversample_to=60",
    "data.synthetic.n_labelled=240",
    "data.synthetic.n_unlabelled=300",
    "data.synthetic.dims={audio: 24, text: 32, video: 16}",
]


def _setup(*extra: str):
    cfg = load_config(None, [*FAST, *extra])
    return cfg, standardize(generate_synthetic(cfg.data.synthetic, seed=cfg.data.seed))


def test_run_reports_every_epoch_and_returns_logits_per_head():
    cfg, data = _setup()
    seen = []
    result = run(cfg, data, report=seen.append)
    assert result.status == "ok"
    assert len(seen) == result.epochs >= 2
    assert [m["iteration"] for m in seen] == list(range(1, len(seen) + 1))
    assert {m["stage"] for m in seen} == {"finetune", "self_training_1"}
    logits = result.val_logits()
    assert set(logits) == {"audio", "text", "video", "fusion"}
    n_val = len(result.val_labels())
    assert all(v.shape == (n_val, data.n_classes) for v in logits.values())
    for key in ("val/weighted_f1", "val/accuracy", "val/macro_f1", "val/loss", "val/f1_fusion"):
        assert result.metrics[key] >= 0.0 or key == "val/loss"


def test_same_seed_same_result_and_other_seed_differs():
    cfg, data = _setup()
    a, b = run(cfg, data), run(cfg, data)
    assert a.metrics == b.metrics
    np.testing.assert_array_equal(a.val_logits()["fusion"], b.val_logits()["fusion"])
    other, _ = _setup("seed=1")
    c = run(other, data)
    assert not np.array_equal(a.val_logits()["fusion"], c.val_logits()["fusion"])


def test_run_leaves_global_rng_untouched():
    cfg, data = _setup("self_training.rounds=0", "optim.max_epochs=1")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run(cfg, data)
    assert torch.equal(torch.rand(3), expected)


def test_kfold_gives_mean_and_std_over_folds():
    cfg, data = _setup("data.folds=3", "self_training.rounds=0", "optim.max_epochs=2")
    result = run(cfg, data)
    assert len(result.folds) == 3
    assert "val/weighted_f1_std" in result.metrics
    f1s = [f.metrics["val/weighted_f1"] for f in result.folds]
    assert math.isclose(result.metrics["val/weighted_f1"], float(np.mean(f1s)))
    # every labelled sample is validated exactly once across the folds
    assert sorted(np.concatenate([f.val_idx for f in result.folds]).tolist()) == sorted(data.labelled_idx.tolist())


def test_report_returning_true_prunes_the_trial():
    cfg, data = _setup()
    result = run(cfg, data, report=lambda m: m["iteration"] >= 2)
    assert result.status == "pruned"
    assert result.epochs == 2
    assert "stopped" in result.failure_reason


def test_nan_loss_ends_the_trial_with_a_reason(monkeypatch):
    cfg, data = _setup("optim.pretrain_epochs=0")
    real = losses.classification_loss
    calls = {"n": 0}

    def exploding(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        return out * float("nan") if calls["n"] > 3 else out

    monkeypatch.setattr(losses, "classification_loss", exploding)
    result = run(cfg, data)
    assert result.status == "diverged"
    assert "non-finite loss" in result.failure_reason and "finetune" in result.failure_reason


def test_self_training_adds_accurate_pseudo_labels_and_fusion_beats_unimodal():
    # MER2024-like default synthetic sizes: enough signal for confident pseudo-labels
    cfg = load_config(
        None,
        [
            "data.folds=1",
            "optim.max_epochs=8",
            "optim.patience=3",
            "optim.pretrain_epochs=1",
            "model.ff_dim=256",
            "self_training.oversample_to=200",
        ],
    )
    data = standardize(generate_synthetic(cfg.data.synthetic, seed=0))
    result = run(cfg, data)
    report = result.folds[0].pseudo[0]
    assert report["n"] > 0
    # thresholds are >= 0.85: accepted pseudo-labels should be right far more often than not
    assert report["accuracy"] >= 0.85
    m = result.metrics
    assert m["val/f1_fusion"] > max(m["val/f1_audio"], m["val/f1_text"], m["val/f1_video"])


@pytest.mark.parametrize("target", ["invariant", "specific"])
def test_contrastive_target_and_noise_term_options_train(target):
    cfg, data = _setup(f"loss.contrastive_target={target}", "loss.w_noise=0.5", "self_training.rounds=0")
    assert run(cfg, data).status == "ok"


def test_bf16_autocast_option_trains_on_cpu():
    cfg, data = _setup("runtime.precision=bf16", "self_training.rounds=0", "optim.max_epochs=2")
    result = run(cfg, data)
    assert result.status == "ok"
    assert result.metrics["val/weighted_f1"] > 1.0 / data.n_classes


def test_fp64_precision_trains_in_float64_end_to_end_in_both_executors():
    """Data, NEE noise, parameters, optimiser state, losses and logits: float64 (the parity tests' ground)."""
    from mer_core import nee
    from mer_core.train.fused import train_population
    from mer_core.train.single import make_optimizer

    fp64 = ["runtime.precision=fp64", "self_training.rounds=1", "optim.max_epochs=2", "loss.w_noise=0.5"]
    cfg, data = _setup(*fp64, "data.test_fraction=0.2")
    data = load_data(cfg.data)
    single = run(cfg, data, keep_model=True)
    (member,) = train_population([cfg], data, keep_model=True)
    for result in (single, member):
        assert result.status == "ok", result.failure_reason
        assert {v.dtype for v in result.model_state.values() if v.is_floating_point()} == {torch.float64}
        logits = (*result.val_logits().values(), *result.test_logits().values())
        assert {v.dtype for v in logits} == {np.dtype(np.float64)}
    assert single.metrics["train/loss"] == pytest.approx(member.metrics["train/loss"], abs=1e-9)
    net = fresh_net(cfg, data.dims, data.n_classes, torch.device("cpu"), 0)
    opt = make_optimizer(net, cfg.optim)
    x = {m: torch.randn(4, d, dtype=torch.float64) for m, d in data.dims.items()}
    loss = net(x, torch.ones(4, len(x), dtype=torch.bool), torch.arange(4), {}, {"cls": 1.0}, kind="finetune",
               present=frozenset({"cls"}))  # fmt: skip
    assert loss.dtype == torch.float64
    loss.backward()
    opt.step()
    assert {s["exp_avg_sq"].dtype for s in opt.state.values()} == {torch.float64}
    schedules = nee.NoiseSchedules.from_config(cfg.nee, data.modalities, dtype=torch.float64)
    noisy = nee.add_noise(x, schedules, cfg.nee, generator=torch.Generator().manual_seed(0))
    assert schedules.packed.dtype == torch.float64 and {v.dtype for v in noisy.values()} == {torch.float64}
    cfg32, _ = _setup("self_training.rounds=0", "optim.max_epochs=1")
    logits32 = run(cfg32, data).val_logits().values()
    assert {v.dtype for v in logits32} == {np.dtype(np.float32)}  # the default is unchanged


def test_fusion_head_alone_option_trains_only_the_fusion_head():
    cfg, data = _setup(
        "loss.cls_heads=fusion",
        "loss.w_modality=0",
        "optim.pretrain_epochs=0",
        "self_training.rounds=0",
        "optim.max_epochs=3",
    )
    result = run(cfg, data)
    assert result.status == "ok"
    # unimodal heads get no gradient: they stay near chance while the fusion head learns
    assert result.metrics["val/f1_fusion"] > max(result.metrics[f"val/f1_{m}"] for m in data.modalities)


# --- preflight: what `run` would raise mid-training is raised before any training ---


@pytest.mark.parametrize(
    ("extra", "error", "pattern"),
    [
        (["data.folds=20"], DataError, r"too few for data\.folds=20"),
        (["data.val_fraction=0.01"], DataError, r"data\.val_fraction=0\.01"),
        (["self_training.class_thresholds.joyful=0.9"], ConfigError, r"class_thresholds\.joyful: unknown class"),
        (["model.fusion=nope"], ConfigError, r"model\.fusion: unknown fusion"),
    ],
)
def test_check_trainable_raises_before_training(extra, error, pattern):
    cfg, data = _setup(*extra)
    with pytest.raises(error, match=pattern):
        check_trainable(cfg, data)


@pytest.mark.parametrize(
    ("keep", "found"), [((0,), "every labelled sample is of class"), ((), "no sample is labelled")]
)
def test_check_trainable_needs_two_labelled_classes(keep, found):
    cfg, data = _setup()
    labels = np.where(np.isin(data.labels, keep), data.labels, -1)  # (N,) only the kept classes stay labelled
    with pytest.raises(DataError, match=f"{found}.*at least 2 classes"):
        check_trainable(cfg, dataclasses.replace(data, labels=labels))


def test_an_unusable_modality_name_names_the_map_that_gave_it():
    cfg, _ = _setup("data.synthetic.dims={fusion: 4, text: 3}")
    data = standardize(generate_synthetic(cfg.data.synthetic, seed=0))
    with pytest.raises(ConfigError, match=r"^data\.synthetic\.dims\.fusion: unusable modality name"):
        check_trainable(cfg, data)  # was the field "modality name"


def test_check_trainable_passes_a_trainable_config():
    check_trainable(*_setup())


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"nee.timesteps.speech": 5}, "nee.timesteps.speech"),
        ({"missing.train_rates.speech": 0.1}, "missing.train_rates.speech"),
        ({"voting.weights": {"audio": 1.0, "speech": 1.0}}, "voting.weights.speech"),
    ],
)
def test_modality_keyed_fields_must_name_a_modality_of_the_data(fields, named):
    _, data = _setup()
    with pytest.raises(ConfigError, match=rf"^set\.{named}: names no modality of .*allowed: audio, text, video"):
        check_modality_keys(fields, data, prefix="set.")
    check_modality_keys({"nee.timesteps.audio": 5, "voting.weights.fusion": 1.0, "optim.lr": 0.1}, data)

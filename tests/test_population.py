"""Fused population training: each member equals its own single run, and members stop on their own.

The key check (`test_member_matches_its_single_run_in_finetuning`): K configs that differ in
every per-member field train as one stacked model, and each member's per-epoch reports and
final results equal `mer_core.train.run` of its config alone (`tests.parity.assert_same_run`:
losses and logits at a float tolerance, predictions equal except at near ties). The single run
is the reference: same seeds, same batches, same NEE draws, same optimiser.

Runs are kept short and oversampling off (duplicated rows make the InfoNCE gradients cancel to
rounding noise, which Adam then amplifies into full-size steps).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mer_core.configs import ExperimentConfig, with_overrides
from mer_core.data import load_data
from mer_core.errors import ConfigError
from mer_core.models import FUSIONS, HEADS, build_model
from mer_core.train import predict, run
from mer_core.train.device_data import DeviceData
from mer_core.train.fused import group_by_shape, train_population
from tests.parity import ATOL, assert_same_run

SMALL = {
    "data.folds": 1,
    "model.hidden_dim": 16,
    "model.ff_dim": 32,
    "model.head_hidden": [32, 16],
    "optim.max_epochs": 4,
    "optim.patience": 3,
    "optim.pretrain_epochs": 0,
    "self_training.rounds": 0,
    "runtime.threads": 1,
    "runtime.device": "cpu",
}


@pytest.fixture
def base(tiny_data_cfg) -> ExperimentConfig:
    return with_overrides(ExperimentConfig(data=tiny_data_cfg), SMALL)


@pytest.fixture
def data(base):
    return load_data(base.data)


def _variants(base: ExperimentConfig, *overrides: dict) -> list[ExperimentConfig]:
    return [with_overrides(base, o) for o in overrides]


def _fused(cfgs, data, **kwargs):
    seen: dict[int, list[dict]] = {i: [] for i in range(len(cfgs))}
    results = train_population(cfgs, data, report=lambda i, m: seen[i].append(dict(m)), **kwargs)
    return results, seen


def _single(cfg, data, **kwargs):
    seen: list[dict] = []
    return run(cfg, data, report=seen.append, **kwargs), seen


def test_member_matches_its_single_run_in_finetuning(base, data):
    cfgs = _variants(
        base,
        {"seed": 0},
        {"seed": 2, "optim.lr": 3e-2, "optim.weight_decay": 1e-4, "optim.patience": 1, "optim.grad_clip": None},
        {"seed": 1, "loss.w_modality": 0.0, "loss.w_cls": 0.5, "voting.weights": {"fusion": 2.0}},
        {"seed": 3, "loss.temperature_init": 0.5, "loss.learnable_temperature": False, "voting.space": "prob"},
    )
    results, seen = _fused(cfgs, data)
    epochs = set()
    for i, cfg in enumerate(cfgs):
        single, single_seen = _single(cfg, data)
        assert_same_run(single, single_seen, results[i], seen[i], cfg=cfg)
        np.testing.assert_allclose(results[i].val_logits()["fusion"], single.val_logits()["fusion"], atol=1e-3)
        epochs.add(results[i].epochs)
    assert len(epochs) > 1  # patience 1 stopped one member early while the others went on


def test_pretraining_noise_and_self_training_match_single_runs(base, data):
    common = {
        "optim.pretrain_epochs": 1,
        "optim.max_epochs": 3,
        "self_training.rounds": 1,
        "self_training.oversample": False,
        "self_training.dominant_threshold": 0.3,
        "self_training.minority_threshold": 0.3,
    }
    cfgs = _variants(
        with_overrides(base, common),
        {"seed": 0, "loss.w_noise": 0.5},
        {"seed": 1, "loss.w_noise": 0.3, "nee.noise": "impulse", "nee.timesteps": {"alpha": 20}, "nee.beta_end": 0.3},
        {"seed": 2, "self_training.rounds": 2, "loss.pretrain_w_noise": 0.0, "nee.schedule": "linear"},
    )
    results, seen = _fused(cfgs, data)
    for i, cfg in enumerate(cfgs):
        single, single_seen = _single(cfg, data)
        assert_same_run(single, single_seen, results[i], seen[i], cfg=cfg)
        got, want = results[i].folds[0].pseudo, single.folds[0].pseudo
        assert [r["n"] for r in got] == [r["n"] for r in want] and len(want) == cfg.self_training.rounds


def test_kfold_members_match_single_runs(base, data):
    cfgs = _variants(base, {"seed": 0, "data.folds": 3, "optim.max_epochs": 2}, {"seed": 5, "data.folds": 3,
                     "optim.max_epochs": 2, "optim.lr": 2e-3})  # fmt: skip
    results, seen = _fused(cfgs, data)
    for i, cfg in enumerate(cfgs):
        single, single_seen = _single(cfg, data)
        assert_same_run(single, single_seen, results[i], seen[i], cfg=cfg)
        assert len(results[i].folds) == 3 and "val/weighted_f1_std" in results[i].metrics


STRUCTURES = [
    *({"model.fusion": name} for name in FUSIONS),
    *({"model.head": name} for name in HEADS),
    {"model.head_batchnorm": False},
    {"model.fusion_input": "both", "loss.contrastive_target": "invariant"},
    {"model.fusion_input": "invariant", "loss.w_noise": 0.2},
    {"loss.cls_heads": "fusion", "loss.label_smoothing": 0.1},
    {"model.layers": 0},
    {"model.layers": 2},
]


@pytest.mark.slow
@pytest.mark.parametrize("structure", STRUCTURES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_every_registered_structure_fuses_exactly(base, structure):
    """Every fusion operator and head (and the structural switches) under vmap, with missing modalities.

    Compares the continuous metrics: with 24 validation rows a float-level logit difference can
    flip one near-tie argmax, which moves F1 by far more than the rounding that caused it.
    """
    cfg = with_overrides(base, {**structure, "optim.max_epochs": 2, "data.synthetic.missing_rate": 0.2})
    data = load_data(cfg.data)
    cfgs = _variants(cfg, {"seed": 0}, {"seed": 1, "optim.lr": 3e-3})
    results, seen = _fused(cfgs, data)
    single, single_seen = _single(cfgs[1], data)  # one member is enough here: the others test the rest
    assert results[1].status == single.status == "ok" and results[0].ok
    for got, want in zip(seen[1], single_seen, strict=True):
        assert got["val/loss"] == pytest.approx(want["val/loss"], abs=ATOL)
        assert got["train/loss"] == pytest.approx(want["train/loss"], abs=ATOL)
    np.testing.assert_allclose(results[1].val_logits()["fusion"], single.val_logits()["fusion"], atol=1e-3)


def test_report_prunes_one_member_and_the_others_go_on(base, data):
    cfgs = _variants(base, {"seed": 0}, {"seed": 1}, {"seed": 2})

    def stop_member_1_at_2(index, metrics):
        return index == 1 and metrics["iteration"] == 2

    results = train_population(cfgs, data, report=stop_member_1_at_2)
    assert [r.status for r in results] == ["ok", "pruned", "ok"]
    single_pruned = run(cfgs[1], data, report=lambda m: m["iteration"] == 2)
    assert results[1].epochs == single_pruned.epochs == 2
    assert results[1].failure_reason == single_pruned.failure_reason
    assert results[1].metrics == single_pruned.metrics == {}  # the only fold never finished
    for i in (0, 2):
        assert results[i].metrics["val/loss"] == pytest.approx(run(cfgs[i], data).metrics["val/loss"], abs=ATOL)


def test_a_diverging_member_fails_alone(base, data):
    exploding = {"seed": 1, "optim.lr": 10.0, "optim.weight_decay": 1.0}  # AdamW: weights x(1 - 10) per step
    cfgs = _variants(with_overrides(base, {"optim.optimizer": "adamw"}), {"seed": 0}, exploding)
    results, seen = _fused(cfgs, data)
    assert results[1].status == "diverged"
    assert "non-finite loss" in results[1].failure_reason and "fold 0" in results[1].failure_reason
    assert run(cfgs[1], data).failure_reason == results[1].failure_reason
    single, single_seen = _single(cfgs[0], data)
    assert_same_run(single, single_seen, results[0], seen[0], cfg=cfgs[0])


def test_dropout_rates_are_per_member_and_a_zero_rate_stays_exact(base, data):
    cfgs = _variants(base, {"seed": 0}, {"seed": 1, "model.dropout": 0.3}, {"seed": 2, "model.dropout": 0.1})
    results, seen = _fused(cfgs, data)
    single, single_seen = _single(cfgs[0], data)
    assert_same_run(single, single_seen, results[0], seen[0], cfg=cfgs[0])
    for i in (1, 2):
        assert results[i].ok and math.isfinite(results[i].metrics["val/loss"])
    again = train_population(cfgs, data)  # dropout draws come from the configs' seeds: reproducible
    assert [r.metrics for r in again] == [r.metrics for r in results]


def test_keep_model_state_loads_into_the_single_model(base, data):
    cfgs = _variants(base, {"seed": 0}, {"seed": 1, "optim.lr": 2e-3})
    results = train_population(cfgs, data, keep_model=True)
    model = build_model(cfgs[1].model, data.dims, data.n_classes)
    model.load_state_dict(results[1].model_state)
    val_idx = results[1].folds[0].val_idx
    logits = predict(model, DeviceData.from_featureset(data, torch.device("cpu")), val_idx, batch_size=256)
    np.testing.assert_allclose(logits["fusion"], results[1].val_logits()["fusion"], atol=1e-5)


def test_population_leaves_the_global_rng_untouched(base, data):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_population(_variants(base, {"optim.max_epochs": 1}), data)
    assert torch.equal(torch.rand(3), expected)
    assert train_population([], data) == []


def test_group_by_shape_splits_on_shape_fields_only(base):
    cfgs = _variants(
        base,
        {"model.hidden_dim": 16, "optim.lr": 1e-3, "model.dropout": 0.0},
        {"model.hidden_dim": 32},
        {"model.hidden_dim": 16, "optim.lr": 5e-3, "model.dropout": 0.2, "seed": 7, "nee.timesteps": {"beta": 30}},
        {"model.hidden_dim": 16, "model.fusion": "gated"},
        {"model.hidden_dim": 16, "model.head_dropout": 0.1},
    )
    assert group_by_shape(cfgs) == [[0, 2], [1], [3], [4]]
    assert group_by_shape([]) == []


def test_schedule_fields_must_agree_and_the_error_names_them(base):
    cfgs = _variants(base, {}, {"optim.batch_size": 64, "optim.max_epochs": 7})
    with pytest.raises(ConfigError, match=r"optim\.batch_size, optim\.max_epochs: differs between members") as err:
        group_by_shape(cfgs)
    assert "32, 64" in str(err.value) and "\n" not in str(err.value)


def test_train_population_refuses_configs_of_two_shapes(base, data):
    cfgs = _variants(base, {}, {"model.hidden_dim": 32})
    with pytest.raises(ConfigError, match=r"model\.hidden_dim: members need different modules.*group_by_shape"):
        train_population(cfgs, data)

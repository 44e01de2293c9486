"""Fused population training: each member equals its own single run, and members stop on their own.

The key check (`test_member_matches_its_single_run_in_finetuning`): K configs that differ in
every per-member field train as one stacked model, and each member's per-epoch reports, every
prediction and its final results equal `mer_core.train.run` of its config alone
(`tests.parity.assert_same_run`: in float64, losses and logits at a tolerance no machine can
exceed, discrete metrics exactly where no prediction is near a tie). The single run is the
reference: same seeds, same batches, same NEE draws, same optimiser.

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
from tests.parity import FP64, LOGIT_RTOL, LOSS_ATOL, assert_same_run, fused_runs, parity_data_cfg, single_run

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
def parity() -> ExperimentConfig:
    """SMALL in float64 on the parity data (tests.parity): the base of every member-vs-single-run check."""
    return with_overrides(ExperimentConfig(data=parity_data_cfg()), {**SMALL, **FP64})


@pytest.fixture
def data(base):
    return load_data(base.data)


@pytest.fixture
def parity_data(parity):
    return load_data(parity.data)


def _variants(base: ExperimentConfig, *overrides: dict) -> list[ExperimentConfig]:
    return [with_overrides(base, o) for o in overrides]


def _match_single_runs(cfgs: list[ExperimentConfig], data, members=None) -> list:
    """Trains `cfgs` as one population; each member in `members` (default all) must equal its single run."""
    runs = fused_runs(cfgs, data)
    for i in range(len(cfgs)) if members is None else members:
        assert_same_run(single_run(cfgs[i], data), runs[i])
    return runs


@pytest.mark.parity
def test_member_matches_its_single_run_in_finetuning(parity, parity_data):
    cfgs = _variants(
        parity,
        {"seed": 0},
        # lr 0.1 overshoots in its third epoch, so patience 1 stops it while the others go on
        {"seed": 2, "optim.lr": 1e-1, "optim.weight_decay": 1e-4, "optim.patience": 1, "optim.grad_clip": None},
        {"seed": 1, "loss.w_modality": 0.0, "loss.w_cls": 0.5, "voting.weights": {"fusion": 2.0}},
        {"seed": 3, "loss.temperature_init": 0.5, "loss.learnable_temperature": False, "voting.space": "prob"},
    )
    runs = _match_single_runs(cfgs, parity_data)
    assert len({r.result.epochs for r in runs}) > 1  # patience 1 stopped one member early while the others went on


@pytest.mark.parity
def test_pretraining_noise_and_self_training_match_single_runs(parity, parity_data):
    common = {
        "optim.pretrain_epochs": 1,
        "optim.max_epochs": 3,
        "self_training.rounds": 1,
        "self_training.oversample": False,
        "self_training.dominant_threshold": 0.3,
        "self_training.minority_threshold": 0.3,
    }
    cfgs = _variants(
        with_overrides(parity, common),
        {"seed": 0, "loss.w_noise": 0.5},
        {"seed": 1, "loss.w_noise": 0.3, "nee.noise": "impulse", "nee.timesteps": {"alpha": 20}, "nee.beta_end": 0.3},
        {"seed": 2, "self_training.rounds": 2, "loss.pretrain_w_noise": 0.0, "nee.schedule": "linear"},
    )
    runs = _match_single_runs(cfgs, parity_data)
    for r, cfg in zip(runs, cfgs, strict=True):
        pseudo = r.result.folds[0].pseudo  # equal to the single run's (assert_same_run)
        assert len(pseudo) == cfg.self_training.rounds and all(p["n"] > 0 for p in pseudo)


@pytest.mark.parity
def test_kfold_members_match_single_runs(parity):
    kfold = with_overrides(parity, {"data.folds": 3, "optim.max_epochs": 2})
    runs = _match_single_runs(_variants(kfold, {"seed": 0}, {"seed": 5, "optim.lr": 2e-3}), load_data(kfold.data))
    for r in runs:
        assert len(r.result.folds) == 3 and "val/weighted_f1_std" in r.result.metrics


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
def test_every_registered_structure_fuses_exactly(parity, structure):
    """Every fusion operator and head (and the structural switches) under vmap, with missing modalities."""
    cfg = with_overrides(parity, {**structure, "optim.max_epochs": 2})
    data = load_data(parity_data_cfg(missing_rate=0.2))
    # One member is enough here: the others test the rest.
    _match_single_runs(_variants(cfg, {"seed": 0}, {"seed": 1, "optim.lr": 3e-3}), data, members=[1])


@pytest.mark.parity
def test_report_prunes_one_member_and_the_others_go_on(parity, parity_data):
    cfgs = _variants(parity, {"seed": 0}, {"seed": 1}, {"seed": 2})

    def stop_member_1_at_2(index, metrics):
        return index == 1 and metrics["iteration"] == 2

    results = train_population(cfgs, parity_data, report=stop_member_1_at_2)
    assert [r.status for r in results] == ["ok", "pruned", "ok"]
    single_pruned = run(cfgs[1], parity_data, report=lambda m: m["iteration"] == 2)
    assert results[1].epochs == single_pruned.epochs == 2
    assert results[1].failure_reason == single_pruned.failure_reason
    assert results[1].metrics == single_pruned.metrics == {}  # the only fold never finished
    for i in (0, 2):  # the others run on as if alone (losses: a continuous quantity)
        alone = run(cfgs[i], parity_data).metrics["val/loss"]
        assert results[i].metrics["val/loss"] == pytest.approx(alone, abs=LOSS_ATOL)


@pytest.mark.parity
def test_a_diverging_member_fails_alone(parity, parity_data):
    # AdamW with lr 10 multiplies every weight by (1 - 10 * weight_decay) per step: float64 overflows within an epoch.
    exploding = {"seed": 1, "optim.lr": 10.0, "optim.weight_decay": 1e30}
    cfgs = _variants(with_overrides(parity, {"optim.optimizer": "adamw"}), {"seed": 0}, exploding)
    runs = _match_single_runs(cfgs, parity_data, members=[0])
    assert runs[1].result.status == "diverged"
    reason = runs[1].result.failure_reason
    assert "non-finite loss" in reason and "fold 0" in reason
    assert run(cfgs[1], parity_data).failure_reason == reason


@pytest.mark.parity
def test_dropout_rates_are_per_member_and_a_zero_rate_stays_exact(parity, parity_data):
    cfgs = _variants(parity, {"seed": 0}, {"seed": 1, "model.dropout": 0.3}, {"seed": 2, "model.dropout": 0.1})
    runs = _match_single_runs(cfgs, parity_data, members=[0])
    for r in runs[1:]:
        assert r.result.ok and math.isfinite(r.result.metrics["val/loss"])
    again = train_population(cfgs, parity_data)  # dropout draws come from the configs' seeds: reproducible
    assert [r.metrics for r in again] == [r.result.metrics for r in runs]


@pytest.mark.parity
def test_keep_model_state_loads_into_the_single_model(parity, parity_data):
    cfgs = _variants(parity, {"seed": 0}, {"seed": 1, "optim.lr": 2e-3})
    results = train_population(cfgs, parity_data, keep_model=True)
    model = build_model(cfgs[1].model, parity_data.dims, parity_data.n_classes).double()
    model.load_state_dict(results[1].model_state)
    val_idx = results[1].folds[0].val_idx
    dev = DeviceData.from_featureset(parity_data, torch.device("cpu"), dtype=torch.float64)
    logits = predict(model, dev, val_idx, batch_size=256)
    want = results[1].val_logits()["fusion"]
    np.testing.assert_allclose(logits["fusion"], want, rtol=0, atol=LOGIT_RTOL * max(1.0, np.abs(want).max()))


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

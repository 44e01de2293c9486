"""Fused ablations: the seeds of one variant train as one population, each member equal to its single run.

An ablation seed sets `seed` and `data.seed`, so the members of one variant's population have
different folds of the same data. The parity tests train such populations and compare every
member with `mer_core.train.run` of its config alone (`tests.parity.assert_same_run`), with
k-fold and hold-out splits, pre-training, self-training and test-time missing rates. The sweep
tests drive the ablation searcher's batches (real Optuna, no Ray) and, marked slow, run a fused
ablation through `run_sweep.py` against MLflow and `python -m analysis compare`.
"""

from __future__ import annotations

import numpy as np
import pytest

from mer_core.configs import ExperimentConfig, with_overrides
from mer_core.data import load_data
from mer_core.errors import ConfigError
from mer_core.train import run
from mer_core.train.fused import group_by_shape, train_population
from tests.parity import assert_same_run

SMALL = {
    "model.hidden_dim": 16,
    "model.ff_dim": 32,
    "model.head_hidden": [32, 16],
    "optim.max_epochs": 3,
    "optim.patience": 2,
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


def _seeds(cfg: ExperimentConfig, seeds: list[int]) -> list[ExperimentConfig]:
    """What an ablation makes of one variant's seeds: `seed` and `data.seed` both set (ablation_overrides)."""
    return [with_overrides(cfg, {"seed": s, "data.seed": s}) for s in seeds]


def _check_members_equal_single_runs(cfgs: list[ExperimentConfig], data) -> list:
    seen: dict[int, list[dict]] = {i: [] for i in range(len(cfgs))}
    results = train_population(cfgs, data, report=lambda i, m: seen[i].append(dict(m)))
    for i, cfg in enumerate(cfgs):
        single_seen: list[dict] = []
        single = run(cfg, data, report=single_seen.append)
        assert_same_run(single, single_seen, results[i], seen[i])
        for got, want in zip(results[i].folds, single.folds, strict=True):
            np.testing.assert_array_equal(got.val_idx, want.val_idx)  # the member's own folds
    return results


def test_seeds_with_their_own_kfold_splits_match_their_single_runs(base, data):
    cfgs = _seeds(base, [0, 1, 2])
    results = _check_members_equal_single_runs(cfgs, data)
    vals = [set(r.folds[0].val_idx.tolist()) for r in results]
    assert vals[0] != vals[1] and vals[1] != vals[2]  # the folds really differ between members
    assert all(len(r.folds) == 3 for r in results)


def test_holdout_splits_pretraining_and_self_training_match_single_runs(base, data):
    variant = with_overrides(
        base,
        {
            "data.folds": 1,
            "optim.pretrain_epochs": 1,
            "self_training.rounds": 1,
            "self_training.oversample": False,
            "self_training.dominant_threshold": 0.3,
            "self_training.minority_threshold": 0.3,
            "missing.eval_rates": [0.5],
        },
    )
    results = _check_members_equal_single_runs(_seeds(variant, [3, 4]), data)
    assert all(r.folds[0].pseudo for r in results)


def test_a_protocol_that_drops_pairs_keeps_each_data_seed_in_its_own_population(base, data):
    """With missing-rate drops the fold mask depends on the validation rows: one data.seed per population."""
    dropping = with_overrides(base, {"missing.train_rate": 0.3, "missing.test_rate": 0.5})
    cfgs = [*_seeds(dropping, [0, 1]), with_overrides(dropping, {"seed": 7, "data.seed": 0})]
    assert group_by_shape(cfgs) == [[0, 2], [1]]
    assert group_by_shape(_seeds(base, [0, 1, 2])) == [[0, 1, 2]]  # no drops: every seed in one
    with pytest.raises(ConfigError, match=r"data\.seed"):
        train_population(cfgs, data)

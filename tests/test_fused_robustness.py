"""Fused members train the robustness arms exactly as their single runs do.

The missing-modality protocol (train- and test-time drops, the missing-rate scores), the
negative-information term and label-guided fusion are run by the recipe and the objective that
both executors share; these tests hold each member to its single run (`tests.parity`, in float64), and check
that the arm really changes what a member trains (a silently ignored field would not).
A fused sweep that sets a refused field (`missing.impute: retrieval`) exits 2 naming it.
"""

from __future__ import annotations

import pytest

from mer_core.configs import ExperimentConfig, with_overrides
from mer_core.data import load_data
from mer_core.train import run
from mer_core.train.missing_eval import metric_name
from tests.parity import FP64, parity_data_cfg
from tests.sweep_helpers import run_cli_here, write_sweep
from tests.test_population import SMALL, _match_single_runs, _variants


def _base(*, missing_rate: float) -> ExperimentConfig:
    return with_overrides(ExperimentConfig(data=parity_data_cfg(missing_rate=missing_rate)), {**SMALL, **FP64})


@pytest.mark.parity
def test_missing_protocol_and_missing_rate_scores_match_single_runs():
    cfg = with_overrides(
        _base(missing_rate=0.1),
        {
            "missing.train_rate": 0.3,
            "missing.test_rate": 0.2,
            "missing.seed": 3,
            "optim.max_epochs": 3,
        },
    )
    data = load_data(cfg.data)
    cfgs = _variants(
        cfg,
        {"seed": 0, "missing.eval_rates": [0.0, 0.5]},  # test-time rates are per member
        {"seed": 1, "optim.lr": 3e-3, "missing.eval_rates": [0.7]},
    )
    results = [r.result for r in _match_single_runs(cfgs, data)]
    assert metric_name(0.5) in results[0].metrics and metric_name(0.7) in results[1].metrics
    assert metric_name(0.7) not in results[0].metrics
    # The protocol is trained, not ignored: without the drops the same member trains differently.
    plain = run(with_overrides(cfgs[0], {"missing.train_rate": 0.0, "missing.test_rate": 0.0}), data)
    assert plain.metrics["train/loss"] != pytest.approx(results[0].metrics["train/loss"], abs=1e-3)


@pytest.mark.parity
def test_negative_removal_members_match_single_runs():
    cfg = with_overrides(_base(missing_rate=0.2), {"loss.neg_alpha": 0.2, "loss.neg_beta": 0.05, "optim.max_epochs": 3})
    data = load_data(cfg.data)
    cfgs = _variants(
        cfg,
        {"seed": 0, "loss.w_noise": 0.3},  # draws NEE noise, then the negative views, from one generator
        {"seed": 1, "loss.w_noise": 0.0, "optim.lr": 3e-3},  # draws only the negative views
    )
    results = [r.result for r in _match_single_runs(cfgs, data)]
    plain = run(with_overrides(cfgs[1], {"loss.neg_alpha": 0.0, "loss.neg_beta": 0.0}), data)
    assert plain.metrics["train/loss"] != pytest.approx(results[1].metrics["train/loss"], abs=1e-3)


@pytest.mark.parity
def test_label_guided_fusion_members_match_single_runs():
    cfg = with_overrides(_base(missing_rate=0.2), {"model.fusion": "label_guided", "optim.max_epochs": 2})
    data = load_data(cfg.data)
    _match_single_runs(_variants(cfg, {"seed": 0}, {"seed": 1, "optim.lr": 3e-3, "model.dropout": 0.0}), data)


@pytest.mark.slow
def test_a_fused_sweep_that_sets_retrieval_imputation_exits_2_naming_the_field(tmp_path):
    spec = write_sweep(tmp_path, "fused-retrieval", execution={"mode": "fused", "population": 2})
    proc = run_cli_here([str(spec), "--set", "missing.impute=retrieval", "--dry-run"], cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and "missing.impute" in lines[0] and "retrieval" in lines[0], lines
    assert not (tmp_path / "runs").exists()

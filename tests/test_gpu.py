"""The device path: fused populations and the single trainer, on the CPU and on CUDA.

Every test runs once per device: `cpu` always (so CI, which has no GPU, keeps these honest), and
`cuda` wherever a GPU is visible (`pytest tests/test_gpu.py` on a lent machine), skipped elsewhere.
Parity checks run in float64 (`tests.parity`): cuBLAS batched and single GEMMs round differently
from each other as CPU kernels do, and in float64 that difference stays far below the tolerance.
"""

from __future__ import annotations

import math

import pytest
import torch

from mer_core.configs import ExperimentConfig, with_overrides
from mer_core.data import load_data
from mer_core.train import run
from mer_core.train.fused import train_population
from tests.parity import FP64, assert_same_run, fused_runs, parity_data_cfg, single_run
from tests.test_population import SMALL

CUDA = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))


@pytest.fixture(params=["cpu", CUDA])
def device(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def base(tiny_data_cfg, device: str) -> ExperimentConfig:
    """float32 (or bf16) on small data: the tests that check training runs, not parity."""
    return with_overrides(ExperimentConfig(data=tiny_data_cfg), {**SMALL, "runtime.device": device})


@pytest.fixture
def data(base):
    return load_data(base.data)


@pytest.fixture
def parity(device: str) -> ExperimentConfig:
    return with_overrides(ExperimentConfig(data=parity_data_cfg()), {**SMALL, **FP64, "runtime.device": device})


@pytest.fixture
def parity_data(parity):
    return load_data(parity.data)


@pytest.mark.parity
def test_fused_members_match_single_runs_on_the_device(parity, parity_data):
    cfgs = [
        with_overrides(parity, {"seed": 0}),
        # Not lr 3e-2 with w_modality 0 in one member: the specific encoders' last LayerNorm bias then
        # feeds BatchNorm-normalised heads only, its true gradient is 0, and Adam moves it by lr / eps
        # (3e6) times its rounding noise per step: a parity test of noise, not of fused training.
        with_overrides(parity, {"seed": 1, "optim.lr": 3e-2}),
        with_overrides(parity, {"seed": 2, "loss.w_modality": 0.0, "optim.weight_decay": 1e-4, "voting.space": "prob"}),
    ]
    for member, cfg in zip(fused_runs(cfgs, parity_data), cfgs, strict=True):
        assert_same_run(single_run(cfg, parity_data), member)


# bf16 on the CPU is emulated (slow steps, mostly backward): every stage runs, on few batches. The
# self-training round oversamples to 80 rows per class, not the recipe's 1000 (25 s of CPU here).
BF16_STAGES = {"optim.pretrain_epochs": 1, "self_training.rounds": 1, "self_training.oversample_to": 80}


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_bf16_population_and_single_run_train_to_finite_scores(base, data):
    bf16 = with_overrides(base, {"runtime.precision": "bf16", "optim.batch_size": 64, **BF16_STAGES})
    cfgs = [with_overrides(bf16, {"seed": s}) for s in (0, 1)]
    results = train_population(cfgs, data)
    single = run(cfgs[0], data)
    for result in (*results, single):
        assert result.status == "ok", result.failure_reason
        assert math.isfinite(result.metrics["val/weighted_f1"]) and result.metrics["val/weighted_f1"] > 0.0
    # bf16 keeps about 3 significant digits: the member and its single run agree loosely, not exactly.
    assert results[0].metrics["val/weighted_f1"] == pytest.approx(single.metrics["val/weighted_f1"], abs=0.1)


# -- step capture (runtime.capture): CUDA graphs exist only on CUDA; tests/test_step_kernels.py
# checks the same paths on the CPU with the executors' python replay.
NO_DROPOUT = {"model.dropout": 0.0, "model.head_dropout": 0.0}  # graph replays draw dropout masks differently


@pytest.mark.parity
@pytest.mark.parametrize("device", [CUDA])
def test_captured_single_run_matches_the_uncaptured_one(parity, parity_data):
    stages = {**NO_DROPOUT, "optim.pretrain_epochs": 1, "loss.pretrain_w_noise": 1.0, "self_training.rounds": 1}
    cfg = with_overrides(parity, stages)
    captured = single_run(with_overrides(cfg, {"runtime.capture": "always"}), parity_data)
    assert_same_run(single_run(with_overrides(cfg, {"runtime.capture": "never"}), parity_data), captured)


@pytest.mark.parity
@pytest.mark.parametrize("device", [CUDA])
def test_captured_population_matches_uncaptured_single_runs(parity, parity_data):
    cfg = with_overrides(parity, NO_DROPOUT)
    cfgs = [
        with_overrides(cfg, {"seed": 0, "runtime.capture": "always"}),
        with_overrides(cfg, {"seed": 1, "optim.lr": 3e-3, "loss.w_modality": 0.5, "runtime.capture": "always"}),
    ]
    for member, cfg_ in zip(fused_runs(cfgs, parity_data), cfgs, strict=True):
        assert_same_run(single_run(with_overrides(cfg_, {"runtime.capture": "never"}), parity_data), member)


@pytest.mark.parametrize("device", [CUDA])
def test_captured_bf16_steps_train_to_finite_scores(base, data):
    bf16 = with_overrides(base, {"runtime.precision": "bf16", "runtime.capture": "always", "optim.pretrain_epochs": 1})
    results = train_population([with_overrides(bf16, {"seed": s}) for s in (0, 1)], data)
    single = run(bf16, data)
    for result in (*results, single):
        assert result.status == "ok", result.failure_reason
        assert math.isfinite(result.metrics["val/weighted_f1"]) and result.metrics["val/weighted_f1"] > 0.0


@pytest.mark.parametrize("device", [CUDA])
def test_an_uncaptured_step_never_waits_for_the_device(base, data):
    """`torch.cuda.set_sync_debug_mode("error")` raises on any synchronising call inside a step
    (the first step of a stage builds its cached tensors and is left out)."""
    from mer_core.train.recipe import train_members
    from mer_core.train.single import SingleExecutor

    class Strict(SingleExecutor):
        calls = 0

        def begin_stage(self, members, kind):
            super().begin_stage(members, kind)
            self.calls = 0

        def step(self, parts, kind):
            self.calls += 1
            if self.calls == 1:
                return super().step(parts, kind)
            torch.cuda.set_sync_debug_mode("error")
            try:
                return super().step(parts, kind)
            finally:
                torch.cuda.set_sync_debug_mode("default")

    cfg = with_overrides(base, {"runtime.capture": "never", "optim.pretrain_epochs": 1, "loss.pretrain_w_noise": 1.0})
    (result,) = train_members([cfg], data, Strict(torch.device("cuda")))
    assert result.status == "ok", result.failure_reason

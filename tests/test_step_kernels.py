"""The training step: losses stay on the device, divergence is read once per epoch, capture replays.

CUDA graphs need a GPU (tests/test_gpu.py captures for real there). On the CPU the executors run
their captured path with `replay="python"`: each key's first step function is kept and re-invoked
on the static input copies, so a step that read a per-step value from anywhere but its
arguments would replay a stale one, and these runs would differ from the eager ones. The runs are
compared in float64 (`tests.parity`), so no machine can turn rounding into a different verdict.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from mer_core.configs import ExperimentConfig, load_config, with_overrides
from mer_core.data import load_data
from mer_core.errors import ConfigError
from mer_core.train import run
from mer_core.train.capture import StepGraphs, resolve_capture
from mer_core.train.fused import FusedExecutor
from mer_core.train.plan import LossKind
from mer_core.train.recipe import Part
from mer_core.train.single import SingleExecutor
from tests.parity import FP64, assert_same_run, fused_runs, parity_data_cfg, runs_with, single_run
from tests.test_population import SMALL

# Pre-training with the noise term, a self-training round, and batches of 24 over 180 training
# rows plus a pool: every stage, and epochs whose last batch is shorter.
STAGES = {
    "optim.pretrain_epochs": 2,
    "optim.pretrain_batch_size": 64,
    "loss.pretrain_w_noise": 1.0,
    "self_training.rounds": 1,
    "self_training.oversample": False,
    "optim.batch_size": 24,
}


@pytest.fixture
def base() -> ExperimentConfig:
    return with_overrides(ExperimentConfig(data=parity_data_cfg()), {**SMALL, **STAGES, **FP64})


@pytest.fixture
def data(base):
    return load_data(base.data)


class _Recording(SingleExecutor):
    """The single executor, noting what its steps hand back to the recipe."""

    returned: set[type]

    def step(self, parts: Sequence[Part], kind: LossKind) -> list[torch.Tensor]:
        out = super().step(parts, kind)
        self.returned.update(type(v) for v in out)
        assert all(v.dim() == 0 for v in out)
        return out


@pytest.mark.parity
def test_steps_hand_back_device_tensors_and_the_run_is_unchanged(base, data):
    ex = _Recording(torch.device("cpu"))
    ex.returned = set()
    (recorded,) = runs_with([base], data, ex)
    assert ex.returned == {torch.Tensor}  # no float: nothing read back inside a step
    assert_same_run(single_run(base, data), recorded)


@pytest.mark.parity
def test_captured_single_run_equals_the_eager_one(base, data):
    cfg = with_overrides(base, {"model.dropout": 0.0, "model.head_dropout": 0.0})
    ex = SingleExecutor(torch.device("cpu"), capture=True, replay="python")
    (captured,) = runs_with([cfg], data, ex)
    assert len(ex._members[0].graphs) >= 1  # the last stage replayed at least one captured step
    assert_same_run(single_run(cfg, data), captured)


@pytest.mark.parity
def test_captured_population_equals_the_eager_one(base, data):
    cfgs = [
        with_overrides(base, {"seed": 0}),
        with_overrides(base, {"seed": 1, "optim.lr": 3e-3, "loss.w_modality": 0.5, "self_training.rounds": 0}),
    ]
    ex = FusedExecutor(cfgs, torch.device("cpu"), capture=True, replay="python")
    captured = runs_with(cfgs, data, ex)
    assert len(ex.graphs) >= 1
    for eager, got in zip(fused_runs(cfgs, data), captured, strict=True):
        assert_same_run(eager, got)


def test_graphs_are_keyed_by_batch_size_so_the_short_last_batch_keeps_its_rows():
    graphs = StepGraphs(True, replay="python", warmup=1)
    calls = []

    def step(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return x.sum()

    for size in (4, 4, 4, 3, 3, 4):
        x = torch.arange(size, dtype=torch.float32) + len(calls)
        assert graphs.run(("finetune", size), step, x).item() == x.sum().item()
    assert len(graphs) == 2 and calls == [4, 4, 4, 3, 3, 4]


@pytest.mark.parity
def test_a_diverging_member_stops_at_the_end_of_its_epoch_and_its_sibling_is_unaffected(base, data):
    """A member whose loss turns NaN keeps stepping until its epoch ends (no per-step check); its
    NaN rows must not reach its sibling, which trains as it does beside a sane partner and as its
    single run does (before the divergence beside a partner, after it alone in a one-member vmap)."""
    sane = with_overrides(base, {"optim.pretrain_epochs": 0, "self_training.rounds": 0, "optim.optimizer": "adamw"})
    # AdamW with lr 10 multiplies every weight by (1 - 10 * weight_decay) per step: float64 overflows
    # within a few steps, well inside the first epoch's 8 (tests/test_divergence.py does it in float32).
    exploding = with_overrides(sane, {"seed": 1, "optim.lr": 10.0, "optim.weight_decay": 1e30})
    runs = fused_runs([sane, exploding], data)
    assert runs[1].result.status == "diverged" and runs[0].result.status == "ok"
    reason = runs[1].result.failure_reason
    assert reason.startswith("non-finite loss (") and "during finetune (fold 0, epoch 1)" in reason
    calm = fused_runs([sane, with_overrides(sane, {"seed": 1})], data)
    assert_same_run(calm[0], runs[0])
    assert_same_run(single_run(sane, data), runs[0])


def test_capture_always_is_refused_where_it_cannot_run(base):
    with pytest.raises(ConfigError, match=r"runtime\.capture: cannot be honoured on the CPU.*given: 'always'"):
        load_config(None, ["runtime.capture=always", "runtime.device=cpu"])
    cuda = torch.device("cuda")  # resolve_capture only reads the device's type
    assert resolve_capture(base, torch.device("cpu")) is False
    assert resolve_capture(base, cuda) is True
    for overrides, reason in (
        ({"missing.impute": "mean"}, "missing.impute: mean"),
        ({"runtime.compile": True}, "runtime.compile"),
    ):
        cfg = with_overrides(base, {**overrides, "runtime.device": "auto"})
        assert resolve_capture(cfg, cuda) is False  # auto steps aside
        with pytest.raises(ConfigError, match=rf"runtime\.capture: .*{reason}.*given: 'always'"):
            resolve_capture(with_overrides(cfg, {"runtime.capture": "always"}), cuda)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_capture_always_with_device_auto_is_refused_without_cuda(base, data):
    cfg = with_overrides(base, {"runtime.device": "auto", "runtime.capture": "always"})
    with pytest.raises(ConfigError, match=r"runtime\.capture: cannot be honoured.*CUDA graphs need a CUDA device"):
        run(cfg, data)

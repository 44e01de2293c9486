"""The host cost of a fused step does not grow with the number of members.

On a GPU a small model's step is bound by what the host launches, so a fused population only
pays if one step of K members launches what one step of 2 launches: no Python loop over members,
no per-member scalar or `.item()`, no host sync inside an epoch. torch.profiler counts the
operators each step dispatches from Python (top-level `aten::` calls; what an operator runs
inside itself, such as `zero_` choosing memset or `fill_` by size, is the kernel's business) on
the CPU, where the count is the same as on CUDA and needs no GPU.

Members differ in everything per member that the step handles (lr, weight decay, clipping,
loss weights, the seed), so a per-member branch would show. Steps that draw NEE noise
(`loss.pretrain_w_noise` > 0, `loss.w_noise` > 0, negative views) still draw each member's noise
from its own generator, which keeps every member's draws equal to its single run's: those stages
are left out here (the recipe's fine-tuning draws nothing).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from mer_core.configs import ExperimentConfig, with_overrides
from mer_core.data import load_data
from mer_core.train.fused import FusedExecutor
from mer_core.train.plan import LossKind
from mer_core.train.recipe import Part, train_members
from tests.test_population import SMALL

PROFILED = 3  # steps profiled per stage kind (the first builds cached tensors and is left out)
STAGES = {
    "optim.pretrain_epochs": 1,
    "loss.pretrain_w_noise": 0.0,
    "optim.max_epochs": 1,
    "optim.patience": 5,
    "optim.batch_size": 16,
    "optim.pretrain_batch_size": 32,
}


class _Counting(FusedExecutor):
    """The fused executor, counting the top-level operators each step dispatches."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.counts: list[tuple[LossKind, int, Counter]] = []
        self.seen: Counter = Counter()

    def step(self, parts: Sequence[Part], kind: LossKind) -> torch.Tensor:
        self.seen[kind] += 1
        if self.seen[kind] > PROFILED:  # profiling is slow: the first few steps of each stage show it
            return super().step(parts, kind)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            out = super().step(parts, kind)
        top = Counter(
            e.name
            for e in prof.events()
            if e.name.startswith("aten::") and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))
        )
        self.counts.append((kind, int(parts[0].idx.shape[0]), top))
        return out


def _members(base: ExperimentConfig, k: int) -> list[ExperimentConfig]:
    return [
        with_overrides(
            base,
            {
                "seed": i,
                "optim.lr": 1e-3 * (1 + i % 5),
                "optim.weight_decay": 1e-4 * (i % 3),
                "optim.grad_clip": None if i % 4 == 3 else 1.0 + i,
                "loss.w_modality": 0.25 * (i % 4),
            },
        )
        for i in range(k)
    ]


def _steady_counts(k: int, base: ExperimentConfig, data) -> dict[tuple[LossKind, int], Counter]:
    """Operators per step after each stage's first step (which builds the step's cached tensors)."""
    ex = _Counting(_members(base, k), torch.device("cpu"))
    train_members(_members(base, k), data, ex)
    out: dict[tuple[LossKind, int], Counter] = {}
    first: set[LossKind] = set()
    for kind, size, top in ex.counts:
        if kind not in first:
            first.add(kind)
            continue
        seen = out.setdefault((kind, size), top)
        assert seen == top, f"two {kind} steps of batch {size} at K={k} dispatched different operators"
    return out


@pytest.fixture
def base(tiny_data_cfg) -> ExperimentConfig:
    return with_overrides(ExperimentConfig(data=tiny_data_cfg), {**SMALL, **STAGES})


def test_a_fused_step_dispatches_the_same_operators_for_2_and_16_members(base):
    data = load_data(base.data)
    two, sixteen = _steady_counts(2, base, data), _steady_counts(16, base, data)
    assert {kind for kind, _ in two} == {"pretrain", "finetune"}
    assert two.keys() == sixteen.keys()
    for key in two:
        extra = (sixteen[key] - two[key]) + (two[key] - sixteen[key])
        assert not extra, f"{key}: operators whose count depends on K: {dict(extra)}"
    for top in two.values():
        assert top["aten::item"] == 0 and top["aten::_local_scalar_dense"] == 0  # nothing read back

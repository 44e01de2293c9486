"""Per-member optimiser over the rows of a population: the single run's update, row by row.

Each member steps with `torch.optim`'s own functional update (`adam` / `sgd`, fused where the
single run's `make_optimizer` gets fused) with its own lr, weight decay and gradient clipping
(`clip_grad_norm_`'s arithmetic: per-parameter norms, their norm, one scale). A member updates
exactly the parameters its single run would: those that get a gradient in that stage (`active`,
from `probe.active_parameters`); the others keep their values and optimiser state, as
parameters whose `.grad` is None do in `torch.optim`.

The update is elementwise, so adjacent active parameters are merged into one span of the row
and each member's update is one fused call over a handful of spans instead of ~100 tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.optim.adam import adam
from torch.optim.sgd import sgd

from mer_core.configs.schema import OptimConfig
from mer_core.train.fused.stack import Population

__all__ = ["MemberOptimizer"]

Span = tuple[int, int]  # columns [start, end) of a flat row


def _fused_supported(device: torch.device) -> bool:
    # The single run's make_optimizer tries fused Adam and falls back to foreach on RuntimeError.
    probe = torch.zeros(1, device=device, requires_grad=True)
    try:
        torch.optim.Adam([probe], fused=True)
    except RuntimeError:
        return False
    return True


def _spans(indices: Sequence[int], offsets: Sequence[int], sizes: Sequence[int]) -> list[Span]:
    spans: list[Span] = []
    for i in indices:
        start, end = offsets[i], offsets[i] + sizes[i]
        if spans and spans[-1][1] == start:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


class MemberOptimizer:
    """Optimiser state of every member; `reset` starts a stage (the single run builds a new optimiser)."""

    def __init__(self, pop: Population, optims: Sequence[OptimConfig], active: Sequence[Sequence[bool]]) -> None:
        """Builds the state.

        Args:
            pop: the population whose `flat` rows are updated.
            optims: each member's optim config (the type is shared; lr, weight decay, clip are not).
            active: per member (row), per layout parameter: does the single run update it.
        """
        self.pop = pop
        self.optims = list(optims)
        self.kind = self.optims[0].optimizer
        self.fused = self.kind != "sgd" and _fused_supported(pop.flat.device)
        sizes = pop.layout.sizes
        self._offsets = [sum(sizes[:i]) for i in range(len(sizes))]
        self._is_model = [n.startswith("model.") for n in pop.layout.names]
        self.active: list[list[int]] = [[] for _ in self.optims]
        self.groups: list[tuple[list[Span], list[Span]]] = [([], []) for _ in self.optims]
        for k, act in enumerate(active):
            self.set_active(k, act)
        self.exp_avg = torch.zeros_like(pop.flat)  # (K, P); the momentum for SGD
        self.exp_avg_sq = torch.zeros_like(pop.flat) if self.kind != "sgd" else None
        self._step_device = pop.flat.device if self.fused else torch.device("cpu")
        self.steps: list[dict[Span, Tensor]] = [{} for _ in self.optims]

    def set_active(self, k: int, active: Sequence[bool]) -> None:
        """Which parameters member `k` updates from now on (pre-training and fine-tuning differ)."""
        self.active[k] = [i for i, a in enumerate(active) if a]
        sizes = self.pop.layout.sizes
        model = _spans([i for i in self.active[k] if self._is_model[i]], self._offsets, sizes)
        temps = _spans([i for i in self.active[k] if not self._is_model[i]], self._offsets, sizes)
        self.groups[k] = (model, temps)

    @torch.no_grad()
    def reset(self, rows: Sequence[int]) -> None:
        """Fresh state for `rows` (zero moments, step 0), as a newly built optimiser has."""
        for k in rows:
            self.exp_avg[k].zero_()
            if self.exp_avg_sq is not None:
                self.exp_avg_sq[k].zero_()
            self.steps[k] = {}

    @torch.no_grad()
    def step(self, k: int, grad: Tensor) -> None:
        """Clip and apply one update to member `k` from its (P,) gradient row."""
        cfg = self.optims[k]
        model, temps = self.groups[k]
        if cfg.grad_clip is not None:
            per_param = grad.split(self.pop.layout.sizes)
            norm = torch.nn.utils.get_total_norm([per_param[i] for i in self.active[k]])
            coef = torch.clamp(cfg.grad_clip / (norm + 1e-6), max=1.0)
            torch._foreach_mul_([grad[a:b] for a, b in model + temps], coef)
        for spans, decay in ((model, cfg.weight_decay), (temps, 0.0)):
            if spans:
                self._update(k, spans, self.pop.flat[k], grad, lr=cfg.lr, weight_decay=decay)

    def _update(self, k: int, spans: list[Span], p: Tensor, g: Tensor, *, lr: float, weight_decay: float) -> None:
        params, grads = [p[a:b] for a, b in spans], [g[a:b] for a, b in spans]
        m = [self.exp_avg[k, a:b] for a, b in spans]
        if self.kind == "sgd":
            # momentum 0.9, foreach, as make_optimizer; zero buffers give buf = grad on the first step
            sgd(params, grads, m, foreach=True, weight_decay=weight_decay, momentum=0.9, lr=lr,
                dampening=0.0, nesterov=False, maximize=False)  # fmt: skip
            return
        assert self.exp_avg_sq is not None
        steps = self.steps[k]
        for span in spans:
            if span not in steps:
                steps[span] = torch.zeros((), device=self._step_device)
        adam(
            params,
            grads,
            m,
            [self.exp_avg_sq[k, a:b] for a, b in spans],
            [],
            [steps[s] for s in spans],
            foreach=None if self.fused else True,
            fused=True if self.fused else None,
            decoupled_weight_decay=self.kind == "adamw",
            amsgrad=False,
            beta1=0.9,
            beta2=0.999,
            lr=lr,
            weight_decay=weight_decay,
            eps=1e-8,
            maximize=False,
        )

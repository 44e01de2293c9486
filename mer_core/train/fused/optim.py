"""Per-member optimiser over the rows of a population: every member's update in one pass.

Each member keeps its single run's optimiser: Adam / AdamW / SGD (momentum 0.9) with its own
lr, weight decay and gradient clipping, a fresh state per stage, and updates only the parameters
its single run updates in that stage (those that get a gradient: `active`, from
`probe.active_parameters`); the others keep their values and state, as parameters whose `.grad`
is None do in `torch.optim`. Temperatures get no weight decay (`make_optimizer`'s groups).

All of it is arithmetic on the (K, P) rows with per-row settings held as device tensors: the
update of K members is the same handful of kernels as the update of one, with no Python loop
over members and nothing read back to the host (a host-side loop or scalar per member made the
step's host cost grow with K and bound a fused step on a GPU). The formulas are `torch.optim`'s
(`_single_tensor_adam`, `_single_tensor_sgd`; bias corrections in float64 as its Python scalars
are, clipping as `clip_grad_norm_`'s min(1, clip / (norm + 1e-6))), so a member follows its
single run up to float rounding (the row norm sums in another order than per-parameter norms).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mer_core.configs.schema import OptimConfig
from mer_core.train.fused.stack import Population

__all__ = ["MemberOptimizer"]

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8  # make_optimizer's (torch.optim's defaults)
MOMENTUM = 0.9  # make_optimizer's SGD


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
        self.kind = optims[0].optimizer
        flat = pop.flat
        device = flat.device
        self._sizes = torch.tensor(pop.layout.sizes, device=device)  # (n_params,)
        model = torch.tensor([n.startswith("model.") for n in pop.layout.names], device=device)
        self._model_cols = model.repeat_interleave(self._sizes)  # (P,) bool: columns of model.* parameters
        self.active = torch.zeros_like(flat, dtype=torch.bool)  # (K, P)
        for k, act in enumerate(active):
            self.set_active(k, act)
        # Per-row settings as (K, 1) columns; the lr stays float64 like torch.optim's Python scalars.
        self.lr = torch.tensor([[o.lr] for o in optims], dtype=torch.float64, device=device)  # (K, 1)
        self.weight_decay = torch.tensor([[o.weight_decay] for o in optims], dtype=torch.float64, device=device)
        clips = [o.grad_clip for o in optims]
        self.clip = torch.tensor([[c if c is not None else 0.0] for c in clips], dtype=torch.float64, device=device)
        self.clipped = torch.tensor([[c is not None] for c in clips], device=device)  # (K, 1) bool
        self.exp_avg = torch.zeros_like(flat)  # (K, P); the momentum buffer for SGD
        self.exp_avg_sq = torch.zeros_like(flat) if self.kind != "sgd" else None  # (K, P)
        self.steps = torch.zeros(flat.shape[0], 1, dtype=torch.float64, device=device)  # (K, 1) per-row step count

    def set_active(self, k: int, active: Sequence[bool]) -> None:
        """Which parameters member `k` updates from now on (pre-training and fine-tuning differ)."""
        flags = torch.tensor(list(active), dtype=torch.bool, device=self.active.device)  # (n_params,)
        self.active[k] = flags.repeat_interleave(self._sizes)

    @torch.no_grad()
    def reset(self, rows: Sequence[int]) -> None:
        """Fresh state for `rows` (zero moments, step 0), as a newly built optimiser has."""
        index = torch.as_tensor(list(rows), dtype=torch.long, device=self.exp_avg.device)
        for state in (self.exp_avg, self.exp_avg_sq, self.steps):
            if state is not None:
                state.index_fill_(0, index, 0)

    @torch.no_grad()
    def step(self, index: Tensor | None, grad: Tensor) -> None:
        """Clip and apply one update to the rows `index` (None: every row, in order) from their (Ka, P) gradients.

        `grad` is scaled in place by the clipping (it is the step's gradient buffer).
        """
        rows = _Rows(index)
        p, m = rows.take(self.pop.flat), rows.take(self.exp_avg)  # (Ka, P) each
        active = rows.take(self.active)  # (Ka, P)
        model_cols = self._model_cols.unsqueeze(0)  # (1, P)
        # clip_grad_norm_: one norm over every updated parameter, scale by min(1, clip / (norm + 1e-6))
        norm = torch.linalg.vector_norm(torch.where(active, grad, 0.0), dim=1, keepdim=True)  # (Ka, 1)
        coef = torch.clamp(rows.take(self.clip).to(norm.dtype) / (norm + 1e-6), max=1.0)  # (Ka, 1)
        grad.mul_(torch.where(rows.take(self.clipped), coef, 1.0))
        lr, wd = rows.take(self.lr), rows.take(self.weight_decay)  # (Ka, 1) float64 each
        # Settings meet the rows in the rows' dtype, as torch.optim's Python scalars meet a parameter's
        # (float32 rows round them; float64 rows, runtime.precision fp64, keep them whole).
        dtype = p.dtype
        decay = wd.to(dtype) * model_cols  # (Ka, P): temperatures are not decayed
        steps = rows.take(self.steps) + 1  # (Ka, 1) float64
        if self.kind == "sgd":
            g = grad + decay * p
            new_m = m * MOMENTUM + g  # zero buffers: the first step's buffer is the gradient, as torch's clone
            new_p = p - lr.to(dtype) * new_m
            self._store(rows, active, p, new_p, m, new_m)
        else:
            assert self.exp_avg_sq is not None
            v = rows.take(self.exp_avg_sq)
            if self.kind == "adamw":
                factor = (1 - lr * wd).to(dtype)  # (Ka, 1): 1 - lr*wd in float64, as torch's Python scalar
                p_in, g = torch.where(model_cols, p * factor, p), grad  # decoupled decay first (AdamW)
            else:
                p_in, g = p, grad + decay * p  # Adam's L2 term joins the gradient
            new_m = m.lerp(g, 1 - BETA1)
            new_v = v * BETA2 + (1 - BETA2) * g * g
            step_size = (lr / (1 - BETA1**steps)).to(dtype)  # (Ka, 1)
            bc2_sqrt = ((1 - BETA2**steps) ** 0.5).to(dtype)  # (Ka, 1)
            new_p = p_in - step_size * (new_m / (new_v.sqrt() / bc2_sqrt + EPS))
            self._store(rows, active, p, new_p, m, new_m, v, new_v)
        rows.put(self.steps, steps)

    def _store(self, rows: _Rows, active: Tensor, *pairs: Tensor) -> None:
        """Write each (old, new) pair back where the member updates, keeping `old` elsewhere."""
        targets = [self.pop.flat, self.exp_avg, self.exp_avg_sq]
        for target, old, new in zip(targets, pairs[0::2], pairs[1::2], strict=False):
            assert target is not None
            rows.put(target, torch.where(active, new.to(old.dtype), old))


class _Rows:
    """The rows one update touches: every row in order (views, in-place writes) or a gathered subset."""

    def __init__(self, index: Tensor | None) -> None:
        self.index = index

    def take(self, t: Tensor) -> Tensor:
        return t if self.index is None else t.index_select(0, self.index)

    def put(self, t: Tensor, value: Tensor) -> None:
        if self.index is None:
            t.copy_(value)
        else:
            t.index_copy_(0, self.index, value)

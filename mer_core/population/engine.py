"""One fused optimisation step and fused prediction over the rows of a population.

A step takes each participating member's own batch (its own shuffled order, from its own
generator), runs every member's forward and loss in one `vmap` over `functional_call`, and one
backward for all. Members whose batch sizes differ in a step (last batches, self-training sets
of different sizes) run in one vmap per batch size; the gradients still land in one (K, P) tensor.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call, vmap

from mer_core import nee
from mer_core.configs.schema import ExperimentConfig
from mer_core.data.featureset import FeatureSet
from mer_core.population.net import stage_weights
from mer_core.population.optim import MemberOptimizer
from mer_core.population.stack import Population
from mer_core.train.device_data import DeviceData, batches
from mer_core.train.result import FoldResult

__all__ = ["Member", "PopContext", "fused_step", "predict"]

MemberReport = Callable[[int, Mapping[str, Any]], "bool | None"]


@dataclass(eq=False)
class Member:
    """One member's runtime state: outcome across folds, and its generators within a fold."""

    index: int  # position in the caller's config list (what `report` receives)
    cfg: ExperimentConfig
    status: str = "ok"
    reason: str = ""
    iteration: int = 0  # reported epochs, as `Reporter.iteration`
    folds: list[FoldResult] = field(default_factory=list)
    model_state: dict[str, Tensor] | None = None
    row: int = -1  # row in this fold's population
    seed: int = 0  # this fold's seed (cfg.seed * 1009 + fold)
    batch_gen: torch.Generator | None = None
    noise_gen: torch.Generator | None = None
    schedules: nee.NoiseSchedules | None = None
    voting_weights: dict[str, float] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.status == "ok"

    def fail(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason


@dataclass(eq=False)
class PopContext:
    """Everything the stages of one fold share."""

    pop: Population
    opt: MemberOptimizer
    dev: DeviceData
    data: FeatureSet
    markers: dict[str, float]  # dropout field -> marker rate in the template (fields whose rates differ)
    autocast_dtype: torch.dtype | None
    fold: int
    report: MemberReport | None
    batch_size: int  # optim.batch_size (shared)

    _tensors: dict[tuple, tuple] = field(default_factory=dict)  # (stage, rows) -> member_tensors()

    def autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.dev.mask.device.type, dtype=self.autocast_dtype)

    def member_tensors(self, members: Sequence[Member], stage: str):
        """Loss weights (floats per member, and (Ka,) tensors) and dropout rates of `members`.

        Cached per member set: the same members step together for a whole epoch, and on a GPU
        building these tensors every step would cost a host-to-device copy each.
        """
        key = (stage, tuple(m.row for m in members))
        if key not in self._tensors:
            device = self.dev.mask.device
            weights = [stage_weights(m.cfg, stage) for m in members]
            w = {k: torch.tensor([wm[k] for wm in weights], device=device) for k in ("cls", "modality", "noise")}
            rates = {}
            for dotted, marker in self.markers.items():
                section, name = dotted.split(".")
                values = [float(getattr(getattr(m.cfg, section), name)) for m in members]
                rates[marker] = torch.tensor(values, device=device)  # (Ka,)
            self._tensors[key] = (weights, w, rates)
        return self._tensors[key]


def _noisy(x: dict[str, Tensor], members: Sequence[Member], weights: Sequence[dict[str, float]]):
    """Per member, NEE noise from its own generator in its single run's order; None if nobody needs it."""
    if not any(w["noise"] > 0 for w in weights):
        return None
    per_member = []
    for j, (m, w) in enumerate(zip(members, weights, strict=True)):
        xj = {mod: v[j] for mod, v in x.items()}  # m -> (B, D_m)
        per_member.append(nee.add_noise(xj, m.schedules, m.cfg.nee, generator=m.noise_gen) if w["noise"] > 0 else xj)
    return {mod: torch.stack([p[mod] for p in per_member]) for mod in x}  # m -> (Ka, B, D_m)


def _group_losses(
    ctx: PopContext, parts: Sequence[tuple[Member, Tensor, Tensor | None]], stage: str, first: int
) -> tuple[Tensor, Tensor]:
    """(Ka,) losses of members that share a batch size, in one vmap, and the (Ka, P) buffer of their gradients."""
    members = [m for m, _, _ in parts]
    index = ctx.pop.rows_index([m.row for m in members])
    idx = torch.stack([i for _, i, _ in parts])  # (Ka, B)
    ka, b = idx.shape
    x = {mod: f.index_select(0, idx.reshape(-1)).view(ka, b, -1) for mod, f in ctx.dev.features.items()}
    mask = ctx.dev.mask.index_select(0, idx.reshape(-1)).view(ka, b, -1)  # (Ka, B, M)
    y = torch.stack([t for _, _, t in parts]) if stage == "finetune" else None  # (Ka, B)
    weights, w, rates = ctx.member_tensors(members, stage)
    noisy = _noisy(x, members, weights)
    contrastive = any(wm["modality"] > 0 or wm["noise"] > 0 for wm in weights)
    params, grad = ctx.pop.trainable(index, first)
    buffers = ctx.pop.buffers_of(index)

    def member_loss(p, bufs, xm, mk, ym, nz, wm, rt):
        kwargs = {"stage": stage, "contrastive": contrastive}
        return functional_call(ctx.pop.net, (p, bufs), (xm, mk, ym, nz, wm, rt), kwargs)

    dims = (0, 0, 0, 0, None if y is None else 0, None if noisy is None else 0, 0, 0)
    with ctx.autocast():
        out = vmap(member_loss, in_dims=dims, randomness="different")(params, buffers, x, mask, y, noisy, w, rates)
    ctx.pop.write_buffers(index, buffers)
    return out.float(), grad  # (Ka,), (Ka, P)


def fused_step(ctx: PopContext, parts: Sequence[tuple[Member, Tensor, Tensor | None]], stage: str) -> list[float]:
    """One optimisation step of every member in `parts` on its own batch.

    Args:
        ctx: the fold's context.
        parts: (member, dataset indices (B,), labels (B,) or None) per participating member.
        stage: `pretrain` or `finetune`.

    Returns:
        Each member's loss (as the single run's `float(loss)`), in the order of `parts`. A member
        with a non-finite loss is not updated (the single run raises before its step).
    """
    by_size: dict[int, list[int]] = {}
    for j, (_, i, _) in enumerate(parts):
        by_size.setdefault(int(i.shape[0]), []).append(j)
    groups, first = [], 0
    for js in by_size.values():
        losses, grad = _group_losses(ctx, [parts[j] for j in js], stage, first)
        groups.append((js, losses, grad))
        first += len(js)
    values = torch.cat([losses.detach() for _, losses, _ in groups]).tolist()  # one sync, like float(loss)
    out, finite, pos = [0.0] * len(parts), [], 0
    for js, losses, grad in groups:
        for local, j in enumerate(js):
            out[j] = values[pos + local]
            if math.isfinite(out[j]):
                finite.append((losses[local], parts[j][0].row, local, grad))
        pos += len(js)
    if finite:
        with warnings.catch_warnings():
            # The leaves and their gradient buffers are strided views of the flat rows (by design).
            warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
            torch.stack([loss for loss, *_ in finite]).sum().backward()
        for _, row, local, grad in finite:
            ctx.opt.step(row, grad[local])
    return out


@torch.no_grad()
def predict(ctx: PopContext, members: Sequence[Member], idx: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Each member's head logits on `idx` (eval mode, chunks as `mer_core.train.steps.predict`)."""
    net, device = ctx.pop.net, ctx.dev.mask.device
    index = ctx.pop.rows_index([m.row for m in members])
    params, buffers = ctx.pop.params(index), ctx.pop.buffers_of(index)
    rows = torch.as_tensor(idx, dtype=torch.long, device=device)  # (n,)

    def member_logits(p, bufs, x, mask):
        return functional_call(net, (p, bufs), (x, mask), {"stage": "predict"})

    was_training = net.training
    net.eval()
    chunks: list[tuple[Tensor, ...]] = []
    for pos in batches(len(idx), max(max(256, ctx.batch_size), 2), generator=None, device=device):
        x, mask = ctx.dev.take(rows[pos])  # shared by every member
        chunks.append(vmap(member_logits, in_dims=(0, 0, None, None), randomness="different")(params, buffers, x, mask))
    net.train(was_training)
    heads = net.model.head_names
    if not chunks:
        return [{h: np.zeros((0, 0), np.float32) for h in heads} for _ in members]
    logits = [torch.cat([c[h] for c in chunks], dim=1).float().cpu().numpy() for h in range(len(heads))]  # (Ka, n, C)
    return [{h: logits[i][j] for i, h in enumerate(heads)} for j in range(len(members))]

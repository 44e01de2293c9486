"""The single-trial executor: each config owns its `TrainNet` and its `torch.optim` optimiser.

`run` trains one config with it; the recipe (`mer_core.train.recipe`) decides everything else.
Given several members it steps them one after another, each on its own module: a reference for
the fused executor that shares the recipe's every decision.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mer_core.configs.schema import ExperimentConfig, OptimConfig
from mer_core.missing import build_imputer
from mer_core.missing.impute import Imputer
from mer_core.models import MRCCL
from mer_core.train.device_data import DeviceData, batches
from mer_core.train.objective import TrainNet, draw, fresh_net
from mer_core.train.plan import LossKind, StageTerms, stage_terms
from mer_core.train.recipe import Fold, Member, Part

__all__ = ["SingleExecutor", "make_optimizer", "optimizer_step", "predict"]


def make_optimizer(net: TrainNet, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam/AdamW/SGD over `net`; temperatures get no weight decay (decaying log-temperatures has no meaning)."""
    groups = [
        {"params": [p for p in net.model.parameters() if p.requires_grad], "weight_decay": cfg.weight_decay},
        {"params": [p for p in net.temps.parameters() if p.requires_grad], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    # fused: one kernel for the whole update (CPU and CUDA). At MER2024 dims the update of the
    # text encoder's 5120-wide layers dominated a CPU step; fused Adam halves the epoch time
    # (benchmarks/RESULTS.md, epoch). foreach is the fallback where fused is not supported.
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, foreach=True)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    try:
        return cls(groups, lr=cfg.lr, fused=True)
    except RuntimeError:
        return cls(groups, lr=cfg.lr, foreach=True)


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, *, grad_clip: float | None) -> None:
    """zero_grad, backward, gradient-norm clipping over every optimised parameter, step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        params = [p for g in opt.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()


@torch.no_grad()
def predict(model: MRCCL, data: DeviceData, idx: np.ndarray, *, batch_size: int) -> dict[str, np.ndarray]:
    """head -> (len(idx), C) float32 logits, in eval mode, in the order of `idx`."""
    was_training = model.training
    model.eval()
    device = data.mask.device
    index = torch.as_tensor(idx, dtype=torch.long, device=device)  # (n,)
    chunks: dict[str, list[torch.Tensor]] = {h: [] for h in model.head_names}
    for pos in batches(len(idx), max(batch_size, 2), generator=None, device=device):
        x, mask = data.take(index[pos])
        out = model(x, mask)
        for h, logit in out.logits.items():
            chunks[h].append(logit.float())  # (B, C)
    model.train(was_training)
    return {h: torch.cat(c).cpu().numpy() if c else np.zeros((0, 0), np.float32) for h, c in chunks.items()}


@dataclass(eq=False)
class _Trainee:
    """One member's module, its (possibly compiled) loss call, optimiser and imputer."""

    net: TrainNet
    loss: Any  # `net` or `torch.compile(net)`
    imputer: Imputer
    opt: torch.optim.Optimizer | None = None


class SingleExecutor:
    """Steps each member on its own module (see the module docstring)."""

    def __init__(self, device: torch.device, *, precision: str = "fp32", compile_model: bool = False) -> None:
        self.device = device
        self.autocast_dtype = torch.bfloat16 if precision == "bf16" else None
        self.compile_model = compile_model
        self._members: dict[int, _Trainee] = {}
        self._terms: dict[tuple[int, LossKind], StageTerms] = {}
        self._fold: Fold | None = None

    @classmethod
    def for_config(cls, cfg: ExperimentConfig, device: torch.device) -> SingleExecutor:
        return cls(device, precision=cfg.runtime.precision, compile_model=cfg.runtime.compile)

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _new_net(self, m: Member, seed: int) -> tuple[TrainNet, Any]:
        data = self.fold.data
        net = fresh_net(m.cfg, data.dims, data.n_classes, self.device, seed)
        return net, torch.compile(net) if self.compile_model else net

    @property
    def fold(self) -> Fold:
        if self._fold is None:
            raise RuntimeError("begin_fold() first")
        return self._fold

    def begin_fold(self, members: Sequence[Member], fold: Fold) -> None:
        self._fold = fold
        self._members = {}
        for m in members:
            net, loss = self._new_net(m, m.seeds.init)
            imputer = build_imputer(m.cfg.missing, fold.dev, fold.split_of(m).train)
            self._members[m.index] = _Trainee(net, loss, imputer)
            for kind in ("pretrain", "finetune"):
                self._terms[(m.index, kind)] = stage_terms(m.cfg, kind)

    def begin_stage(self, members: Sequence[Member], kind: LossKind) -> None:
        for m in members:
            t = self._members[m.index]
            t.opt = make_optimizer(t.net, m.cfg.optim)
            t.net.train()

    def step(self, parts: Sequence[Part], kind: LossKind) -> list[float]:
        values = []
        for part in parts:
            m, t = part.member, self._members[part.member.index]
            terms = self._terms[(m.index, kind)]
            x, mask = self.fold.dev.take(part.idx)  # m -> (B, D_m), (B, M)
            assert m.schedules is not None and m.noise_gen is not None and t.opt is not None
            draws = draw(x, mask, terms, cfg=m.cfg, schedules=m.schedules, generator=m.noise_gen)
            with self._autocast():
                loss = t.loss(x, mask, part.y, draws.as_dict(), terms.weights, kind=kind, present=terms.present)
            value = float(loss.detach())  # one sync per step: the recipe checks it before the update
            if np.isfinite(value):
                optimizer_step(t.opt, loss, grad_clip=m.cfg.optim.grad_clip)
            values.append(value)
        return values

    def predict(
        self, members: Sequence[Member], rows: Sequence[np.ndarray], *, dev: DeviceData | None = None
    ) -> list[dict[str, np.ndarray]]:
        source = self.fold.dev if dev is None else dev
        return [
            predict(self._members[m.index].net.model, source, idx, batch_size=max(256, m.cfg.optim.batch_size))
            for m, idx in zip(members, rows, strict=True)
        ]

    def snapshot(self, member: Member) -> dict[str, torch.Tensor]:
        return copy.deepcopy(self._members[member.index].net.model.state_dict())

    def restore(self, member: Member, snapshot: dict[str, torch.Tensor]) -> None:
        self._members[member.index].net.model.load_state_dict(snapshot)

    def reinit(self, member: Member, seed: int) -> None:
        t = self._members[member.index]
        t.net, t.loss = self._new_net(member, seed)

    def refresh_imputers(self, members: Sequence[Member]) -> None:
        for m in members:
            t = self._members[m.index]
            t.imputer.refresh(t.net.model)

    def model_state(self, member: Member) -> dict[str, torch.Tensor]:
        return {n: v.detach().cpu() for n, v in self._members[member.index].net.model.state_dict().items()}

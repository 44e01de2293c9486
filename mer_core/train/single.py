"""The single-trial executor: each config owns its `TrainNet` and its `torch.optim` optimiser.

`run` trains one config with it; the recipe (`mer_core.train.recipe`) decides everything else.
Given several members it steps them one after another, each on its own module: a reference for
the fused executor that shares the recipe's every decision.

A step launches few kernels and never waits for the device: the optimiser is fused Adam (one
kernel per parameter group), gradient clipping is multi-tensor (`foreach`), gradients are set to
None instead of zero-filled, and the loss comes back as a device tensor that the recipe reads
once per epoch. With `runtime.capture` the whole step (`StepFn`) is one CUDA graph
(`mer_core.train.capture`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mer_core.configs.schema import ExperimentConfig, OptimConfig
from mer_core.missing import build_imputer
from mer_core.missing.impute import Imputer
from mer_core.models import MRCCL
from mer_core.train.capture import Replay, StepGraphs, resolve_capture
from mer_core.train.device_data import DeviceData, batches
from mer_core.train.objective import TrainNet, draw, fresh_net
from mer_core.train.plan import LossKind, StageTerms, stage_terms
from mer_core.train.precision import autocast_dtype, widened
from mer_core.train.recipe import Fold, Member, Part

__all__ = ["SingleExecutor", "StepFn", "make_optimizer", "optimizer_step", "predict"]


def make_optimizer(net: TrainNet, cfg: OptimConfig, *, capturable: bool = False) -> torch.optim.Optimizer:
    """Adam/AdamW/SGD over `net`; temperatures get no weight decay (decaying log-temperatures has no meaning).

    `capturable` keeps Adam's step counter on the device, which a CUDA-graph captured step needs.
    """
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
        return cls(groups, lr=cfg.lr, fused=True, capturable=capturable)
    except RuntimeError:
        return cls(groups, lr=cfg.lr, foreach=True, capturable=capturable)


def optimizer_step(
    opt: torch.optim.Optimizer, loss: Tensor, *, grad_clip: float | None, params: Sequence[Tensor] | None = None
) -> None:
    """Gradients set to None, backward, gradient-norm clipping over every optimised parameter, step.

    Nothing here reads a value back to the host: clipping scales by min(1, clip / norm) on the
    device (`foreach`: one kernel per dtype for the norms, one for the scaling).

    Args:
        params: the optimiser's parameters (pass them to skip collecting the list every step).
    """
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        if params is None:
            params = [p for g in opt.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)  # foreach on CPU and CUDA
    opt.step()


@dataclass(eq=False)
class StepFn:
    """One member's training step in one stage: loss, backward, clipping, update.

    Returns the detached 0-d loss (on the device, not read back). Everything that changes between
    steps arrives as an argument, so the step can be captured as a CUDA graph (`capture`).
    """

    loss: Any  # a TrainNet or torch.compile of it
    opt: torch.optim.Optimizer
    terms: StageTerms
    kind: LossKind
    grad_clip: float | None
    autocast_dtype: torch.dtype | None
    device_type: str
    capturing: bool = False  # autocast's weight cache must be off inside a CUDA graph
    params: list[Tensor] = field(init=False)

    def __post_init__(self) -> None:
        self.params = [p for g in self.opt.param_groups for p in g["params"]]

    def __call__(self, x: dict[str, Tensor], mask: Tensor, y: Tensor | None, draws: dict[str, Any]) -> Tensor:
        """x: m -> (B, D_m); mask: (B, M); y: (B,) or None; draws: `Draws.as_dict()`."""
        if self.autocast_dtype is None:
            ctx: Any = nullcontext()
        else:
            ctx = torch.autocast(self.device_type, dtype=self.autocast_dtype, cache_enabled=not self.capturing)
        with ctx:
            loss = self.loss(x, mask, y, draws, self.terms.weights, kind=self.kind, present=self.terms.present)
        optimizer_step(self.opt, loss, grad_clip=self.grad_clip, params=self.params)
        return loss.detach()


@torch.no_grad()
def predict(model: MRCCL, data: DeviceData, idx: np.ndarray, *, batch_size: int) -> dict[str, np.ndarray]:
    """head -> (len(idx), C) logits (float32; float64 for an fp64 model), in eval mode, in the order of `idx`."""
    was_training = model.training
    model.eval()
    device = data.mask.device
    index = torch.as_tensor(idx, dtype=torch.long, device=device)  # (n,)
    chunks: dict[str, list[torch.Tensor]] = {h: [] for h in model.head_names}
    for pos in batches(len(idx), max(batch_size, 2), generator=None, device=device):
        x, mask = data.take(index[pos])
        out = model(x, mask)
        for h, logit in out.logits.items():
            chunks[h].append(widened(logit))  # (B, C)
    model.train(was_training)
    return {h: torch.cat(c).cpu().numpy() if c else np.zeros((0, 0), np.float32) for h, c in chunks.items()}


@dataclass(eq=False)
class _Trainee:
    """One member's module, its (possibly compiled) loss call, optimiser, imputer and captured steps."""

    net: TrainNet
    loss: Any  # `net` or `torch.compile(net)`
    imputer: Imputer
    graphs: StepGraphs
    opt: torch.optim.Optimizer | None = None
    steps: dict[LossKind, StepFn] = field(default_factory=dict)  # this stage's step, per kind


class SingleExecutor:
    """Steps each member on its own module (see the module docstring)."""

    def __init__(
        self,
        device: torch.device,
        *,
        precision: str = "fp32",
        compile_model: bool = False,
        capture: bool = False,
        replay: Replay = "cuda",
    ) -> None:
        """Args:
        capture: capture each step (`for_config`: `capture.resolve_capture` decides it).
        replay: `python` replays captured steps on the CPU (the capture tests' stand-in).
        """
        self.device = device
        self.autocast_dtype = autocast_dtype(precision)
        self.compile_model = compile_model
        self.capture, self.replay = capture, replay
        self._members: dict[int, _Trainee] = {}
        self._terms: dict[tuple[int, LossKind], StageTerms] = {}
        self._fold: Fold | None = None

    @classmethod
    def for_config(cls, cfg: ExperimentConfig, device: torch.device) -> SingleExecutor:
        return cls(
            device,
            precision=cfg.runtime.precision,
            compile_model=cfg.runtime.compile,
            capture=resolve_capture(cfg, device),
        )

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
            graphs = StepGraphs(self.capture, replay=self.replay)
            self._members[m.index] = _Trainee(net, loss, imputer, graphs)
            for kind in ("pretrain", "finetune"):
                self._terms[(m.index, kind)] = stage_terms(m.cfg, kind)

    def begin_stage(self, members: Sequence[Member], kind: LossKind) -> None:
        for m in members:
            t = self._members[m.index]
            t.opt = make_optimizer(t.net, m.cfg.optim, capturable=self.capture and self.replay == "cuda")
            t.graphs.clear()  # the graphs recorded the previous optimiser's state
            t.steps = {}
            t.net.train()

    def _step_fn(self, m: Member, t: _Trainee, kind: LossKind) -> StepFn:
        if kind not in t.steps:
            assert t.opt is not None
            t.steps[kind] = StepFn(
                t.loss,
                t.opt,
                self._terms[(m.index, kind)],
                kind,
                m.cfg.optim.grad_clip,
                self.autocast_dtype,
                self.device.type,
                capturing=self.capture,
            )
        return t.steps[kind]

    def step(self, parts: Sequence[Part], kind: LossKind) -> Tensor:
        values = []
        for part in parts:
            m, t = part.member, self._members[part.member.index]
            terms = self._terms[(m.index, kind)]
            x, mask = self.fold.dev.take(part.idx)  # m -> (B, D_m), (B, M)
            assert m.schedules is not None and m.noise_gen is not None
            draws = draw(x, mask, terms, cfg=m.cfg, schedules=m.schedules, generator=m.noise_gen)
            key = (kind, int(part.idx.shape[0]))  # one graph per batch size: the last batch keeps its rows
            values.append(t.graphs.run(key, self._step_fn(m, t, kind), x, mask, part.y, draws.as_dict()))
        return torch.stack(values)  # (n,)

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
        t.graphs.clear()  # they recorded the old module (a new stage builds its optimiser next)
        t.steps = {}

    def refresh_imputers(self, members: Sequence[Member]) -> None:
        for m in members:
            t = self._members[m.index]
            t.imputer.refresh(t.net.model)

    def model_state(self, member: Member) -> dict[str, torch.Tensor]:
        return {n: v.detach().cpu() for n, v in self._members[member.index].net.model.state_dict().items()}

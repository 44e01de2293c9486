"""Epoch loops: contrastive pre-training and fine-tuning with early stopping on val weighted F1."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mer_core import metrics, voting
from mer_core.configs.schema import OptimConfig, VotingConfig
from mer_core.missing.impute import Imputer
from mer_core.train.device_data import DeviceData, batches
from mer_core.train.reporting import Reporter, check_finite
from mer_core.train.steps import StepContext, finetune_loss, predict, pretrain_loss


@dataclass(frozen=True, eq=False)
class FitContext:
    """Per-fold runtime pieces shared by every stage."""

    step: StepContext
    data: DeviceData
    optim: OptimConfig
    voting_weights: dict[str, float]
    voting_space: str
    class_names: tuple[str, ...]
    batch_generator: torch.Generator  # CPU generator for shuffling
    autocast_dtype: torch.dtype | None  # bf16 autocast when asked for
    fold: int
    imputer: Imputer | None = None  # missing.impute: re-encodes its stored states whenever the weights change

    def refresh_imputer(self) -> None:
        if self.imputer is not None:
            self.imputer.refresh(self.step.model)

    def autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.data.mask.device.type, dtype=self.autocast_dtype)


def make_optimizer(params: Iterable[torch.nn.Parameter], temps: Iterable[torch.nn.Parameter], cfg: OptimConfig):
    """Adam/AdamW/SGD; temperatures get no weight decay (decaying log-temperatures has no meaning)."""
    groups = [
        {"params": [p for p in params if p.requires_grad], "weight_decay": cfg.weight_decay},
        {"params": [p for p in temps if p.requires_grad], "weight_decay": 0.0},
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


def _step(ctx: FitContext, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if ctx.optim.grad_clip is not None:
        params = [p for g in opt.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, ctx.optim.grad_clip)
    opt.step()


def pretrain(ctx: FitContext, idx: np.ndarray, *, epochs: int, opt: torch.optim.Optimizer) -> list[float]:
    """Stage 1 over `idx` (labelled train + unlabelled pool); returns the mean loss per epoch."""
    device = ctx.data.mask.device
    index = torch.as_tensor(idx, dtype=torch.long, device=device)  # (n,)
    history = []
    ctx.step.model.train()
    for epoch in range(epochs):
        total, count = 0.0, 0
        for pos in batches(len(idx), ctx.optim.pretrain_batch_size, generator=ctx.batch_generator, device=device):
            x, mask = ctx.data.take(index[pos])
            with ctx.autocast():
                loss, _ = pretrain_loss(ctx.step, x, mask)
            value = float(loss.detach())
            check_finite(value, where=f"pre-training (fold {ctx.fold}, epoch {epoch + 1})")
            _step(ctx, opt, loss)
            total, count = total + value * len(pos), count + len(pos)
        history.append(total / max(count, 1))
    return history


def evaluate(ctx: FitContext, idx: np.ndarray, y: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Validation metrics of the voted ensemble and of each head, plus the raw head logits."""
    logits = predict(ctx.step.model, ctx.data, idx, batch_size=max(256, ctx.optim.batch_size))
    return score_logits(logits, y, ctx.voting_weights, space=ctx.voting_space, class_names=ctx.class_names), logits


def score_logits(
    logits: dict[str, np.ndarray], y: np.ndarray, weights: dict[str, float], *, space: str, class_names: tuple[str, ...]
) -> dict[str, float]:
    """`evaluate`'s metrics from head logits (shared with the fused population trainer)."""
    scores = voting.soft_vote(logits, weights, space=space)  # (n, C)
    report = metrics.classification_report(y, scores.argmax(1), class_names)
    out = {f"val/{k}": float(v) for k, v in report.items()}
    target = torch.as_tensor(y, dtype=torch.long)
    head_ce = [F.cross_entropy(torch.as_tensor(v), target).item() for v in logits.values()]
    out["val/loss"] = float(np.mean(head_ce))
    n_classes = len(class_names)
    for head, v in logits.items():
        out[f"val/f1_{head}"] = metrics.weighted_f1(y, v.argmax(1), n_classes)
    return out


@dataclass
class FitOutcome:
    metrics: dict[str, float]
    logits: dict[str, np.ndarray]
    epochs: int


def finetune(
    ctx: FitContext,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    *,
    reporter: Reporter,
    stage: str,
) -> FitOutcome:
    """Stage 2 (and each self-training round): supervised epochs, early stopping on val weighted F1.

    The model ends holding its best-epoch weights.
    """
    model, device = ctx.step.model, ctx.data.mask.device
    train_idx = torch.as_tensor(train[0], dtype=torch.long, device=device)  # (n,)
    train_y = torch.as_tensor(train[1], dtype=torch.long, device=device)  # (n,)
    opt = make_optimizer(model.parameters(), ctx.step.temps.parameters(), ctx.optim)
    best: FitOutcome | None = None
    best_state, since_best = None, 0
    ctx.refresh_imputer()
    for epoch in range(1, ctx.optim.max_epochs + 1):
        model.train()
        total, count = 0.0, 0
        for pos in batches(len(train_idx), ctx.optim.batch_size, generator=ctx.batch_generator, device=device):
            x, mask = ctx.data.take(train_idx[pos])
            with ctx.autocast():
                loss, _ = finetune_loss(ctx.step, x, mask, train_y[pos])
            value = float(loss.detach())
            check_finite(value, where=f"{stage} (fold {ctx.fold}, epoch {epoch})")
            _step(ctx, opt, loss)
            total, count = total + value * len(pos), count + len(pos)
        ctx.refresh_imputer()
        found, logits = evaluate(ctx, *val)
        found["train/loss"] = total / max(count, 1)
        if best is None or found["val/weighted_f1"] > best.metrics["val/weighted_f1"]:
            best = FitOutcome(found, logits, epoch)
            best_state, since_best = copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
        reporter.epoch({**found, "stage": stage, "fold": ctx.fold, "epoch": epoch})
        if since_best >= ctx.optim.patience:
            break
    assert best is not None and best_state is not None  # max_epochs >= 1 is validated by the config
    model.load_state_dict(best_state)
    ctx.refresh_imputer()
    return best


def voting_setup(cfg: VotingConfig, head_names: tuple[str, ...], *, cls_heads: str = "all") -> dict[str, float]:
    """Resolved per-head voting weights (heads the map does not name get the default).

    With `loss.cls_heads: fusion` only the fusion head is trained; the untrained unimodal heads
    would vote noise, so the fusion head alone decides.
    """
    if cls_heads == "fusion":
        return {h: 1.0 if h == "fusion" else 0.0 for h in head_names}
    weights, _unmatched = voting.resolve_weights(cfg, head_names)
    return weights

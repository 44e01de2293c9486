"""The epoch loops of `mer_core.train.fit` for a population: members step in lockstep, stop on their own.

Per member, everything the single run does per epoch happens in the same order: one
`randperm` of its own batch generator, its batches, the validation metrics, the best-epoch
snapshot, the report (which may prune it), early stopping on its own patience. A member that
stops gets its best state back and leaves the step loop; the others go on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mer_core.population.engine import Member, PopContext, fused_step, predict
from mer_core.population.stack import Snapshot
from mer_core.train.device_data import batches
from mer_core.train.fit import FitOutcome, score_logits
from mer_core.train.reporting import Diverged, check_finite

__all__ = ["evaluate", "finetune_stage", "pretrain_stage"]


def _epoch(ctx: PopContext, members: list[Member], sets, batch_size: int, stage: str, where: str) -> dict[int, float]:
    """One epoch of every member in `members` over its own (indices, labels) set; returns train/loss.

    Members whose loss turns non-finite are marked diverged and removed from `members`.
    """
    device = ctx.dev.mask.device
    plans = {
        m.index: list(batches(len(sets[m.index][0]), batch_size, generator=m.batch_gen, device=device)) for m in members
    }
    totals = {m.index: [0.0, 0] for m in members}
    for j in range(max((len(p) for p in plans.values()), default=0)):
        live = [m for m in members if j < len(plans[m.index])]
        if not live:
            break
        parts = []
        for m in live:
            pos = plans[m.index][j]
            idx, y = sets[m.index]
            parts.append((m, idx[pos], None if y is None else y[pos]))
        for m, value in zip(live, fused_step(ctx, parts, stage), strict=True):
            try:
                check_finite(value, where=where)
            except Diverged as err:
                m.fail("diverged", str(err))
                members.remove(m)
                continue
            n = len(plans[m.index][j])
            totals[m.index][0] += value * n
            totals[m.index][1] += n
    return {k: total / max(count, 1) for k, (total, count) in totals.items()}


def _device_sets(ctx: PopContext, sets: dict[int, tuple[np.ndarray, np.ndarray | None]]):
    device = ctx.dev.mask.device
    return {
        k: (
            torch.as_tensor(idx, dtype=torch.long, device=device),
            None if y is None else torch.as_tensor(y, dtype=torch.long, device=device),
        )
        for k, (idx, y) in sets.items()
    }


def pretrain_stage(ctx: PopContext, members: Sequence[Member], idx: np.ndarray, *, epochs: int) -> None:
    """Stage 1 (contrastive, labels unused) over `idx` for every member, as `fit.pretrain`."""
    running = list(members)
    ctx.opt.reset([m.row for m in running])
    sets = _device_sets(ctx, {m.index: (idx, None) for m in running})
    ctx.pop.net.train()
    batch_size = members[0].cfg.optim.pretrain_batch_size  # shared: a schedule field
    for epoch in range(epochs):
        where = f"pre-training (fold {ctx.fold}, epoch {epoch + 1})"
        _epoch(ctx, running, sets, batch_size, "pretrain", where)


def evaluate(ctx: PopContext, members: Sequence[Member], idx: np.ndarray, y: np.ndarray):
    """Each member's `fit.evaluate` result: (metrics, head logits)."""
    names = ctx.data.class_names
    return [
        (score_logits(logits, y, m.voting_weights, space=m.cfg.voting.space, class_names=names), logits)
        for m, logits in zip(members, predict(ctx, members, idx), strict=True)
    ]


def finetune_stage(
    ctx: PopContext,
    members: Sequence[Member],
    train: dict[int, tuple[np.ndarray, np.ndarray]],
    val: tuple[np.ndarray, np.ndarray],
    *,
    stage: str,
) -> dict[int, FitOutcome]:
    """`fit.finetune` for every member (its own train set): returns the best outcome per surviving member.

    Members pruned by the report or diverged are marked on the member and get no outcome.
    """
    running = list(members)
    ctx.opt.reset([m.row for m in running])
    sets = _device_sets(ctx, train)
    best: dict[int, FitOutcome] = {}
    snaps: dict[int, Snapshot] = {}
    since: dict[int, int] = {m.index: 0 for m in running}
    for epoch in range(1, members[0].cfg.optim.max_epochs + 1):  # max_epochs is shared: a schedule field
        ctx.pop.net.train()
        where = f"{stage} (fold {ctx.fold}, epoch {epoch})"
        train_loss = _epoch(ctx, running, sets, ctx.batch_size, "finetune", where)
        if not running:
            break
        for m, (found, logits) in zip(list(running), evaluate(ctx, running, *val), strict=True):
            found["train/loss"] = train_loss[m.index]
            if m.index not in best or found["val/weighted_f1"] > best[m.index].metrics["val/weighted_f1"]:
                best[m.index] = FitOutcome(found, logits, epoch)
                snaps[m.index], since[m.index] = ctx.pop.snapshot(m.row), 0
            else:
                since[m.index] += 1
            pruned = _report(ctx, m, {**found, "stage": stage, "fold": ctx.fold, "epoch": epoch})
            if pruned or since[m.index] >= m.cfg.optim.patience:
                running.remove(m)
    survivors = [m for m in members if m.alive]
    for m in survivors:
        ctx.pop.restore(m.row, snaps[m.index])
    return {m.index: best[m.index] for m in survivors}


def _report(ctx: PopContext, m: Member, metrics: dict) -> bool:
    """`Reporter.epoch` for one member; True when the caller pruned it."""
    m.iteration += 1
    if ctx.report is None:
        return False
    if ctx.report(m.index, {**metrics, "iteration": m.iteration}):
        m.fail("pruned", f"stopped by the caller after {m.iteration} reported epochs")
        return True
    return False

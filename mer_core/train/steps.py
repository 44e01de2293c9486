"""Per-batch losses of the two stages and batched prediction.

Pre-training needs no labels (modality + noise contrastive terms); fine-tuning adds the
mean cross-entropy over the heads. As in the reference code, NEE enters through the noise
contrastive term only: the clean forward pass is what the heads classify.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mer_core import losses, nee, negative
from mer_core.configs.schema import LossConfig, NEEConfig
from mer_core.models import MRCCL
from mer_core.train.device_data import DeviceData, batches


@dataclass(frozen=True, eq=False)
class StepContext:
    """Everything a loss step needs besides the batch; built once per fold."""

    model: MRCCL
    temps: losses.Temperatures
    schedules: nee.NoiseSchedules
    loss_cfg: LossConfig
    nee_cfg: NEEConfig
    generator: torch.Generator  # noise draws (on the data's device)

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.model.modalities


def _contrastive_terms(
    ctx: StepContext, x: dict[str, torch.Tensor], mask: torch.Tensor, out, *, w_noise: float
) -> dict[str, torch.Tensor]:
    """Modality (6 terms for 3 modalities) and, when weighted, noise (3 terms) contrastive losses."""
    target = out.specific if ctx.loss_cfg.contrastive_target == "specific" else out.invariant
    terms = {"modality": losses.modality_contrastive(target, out.ovr, mask, ctx.modalities, ctx.temps)}
    if w_noise > 0 and ctx.nee_cfg.enabled:
        noisy = nee.add_noise(x, ctx.schedules, ctx.nee_cfg, generator=ctx.generator)  # m -> (B, D_m)
        spec_noisy = ctx.model.encode_specific(noisy)  # m -> (B, H)
        terms["noise"] = losses.noise_contrastive(out.specific, spec_noisy, mask, ctx.modalities, ctx.temps)
    return terms


def pretrain_loss(ctx: StepContext, x: dict[str, torch.Tensor], mask: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Stage 1: label-free contrastive objective on labelled + unlabelled samples."""
    cfg = ctx.loss_cfg
    out = ctx.model(x, mask)
    terms = _contrastive_terms(ctx, x, mask, out, w_noise=cfg.pretrain_w_noise)
    total = cfg.pretrain_w_modality * terms["modality"]
    if "noise" in terms:
        total = total + cfg.pretrain_w_noise * terms["noise"]
    return total, terms


def finetune_loss(
    ctx: StepContext, x: dict[str, torch.Tensor], mask: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, dict]:
    """Stage 2: w_cls * mean CE over heads + w_modality * modality (+ w_noise * noise) (+ negative removal)."""
    cfg = ctx.loss_cfg
    out = ctx.model(x, mask)
    logits = out.logits if cfg.cls_heads == "all" else {"fusion": out.logits["fusion"]}
    terms = {"cls": losses.classification_loss(logits, y, label_smoothing=cfg.label_smoothing)}
    if cfg.w_modality > 0 or cfg.w_noise > 0:
        terms.update(_contrastive_terms(ctx, x, mask, out, w_noise=cfg.w_noise))
    total = cfg.w_cls * terms["cls"]
    if "modality" in terms and cfg.w_modality > 0:
        total = total + cfg.w_modality * terms["modality"]
    if "noise" in terms:
        total = total + cfg.w_noise * terms["noise"]
    if cfg.neg_alpha > 0 or cfg.neg_beta > 0:  # negative-information removal, already weighted by alpha, beta
        terms["negative"] = negative.negative_views_term(
            ctx.model,
            x,
            mask,
            out.specific,
            out.invariant,
            loss_cfg=cfg,
            nee_cfg=ctx.nee_cfg,
            schedules=ctx.schedules,
            generator=ctx.generator,
        )
        total = total + terms["negative"]
    return total, terms


@torch.no_grad()
def predict(
    model: MRCCL, data: DeviceData, idx: np.ndarray, *, batch_size: int, autocast: torch.autocast | None = None
) -> dict[str, np.ndarray]:
    """head -> (len(idx), C) float32 logits, in eval mode, in the order of `idx`."""
    was_training = model.training
    model.eval()
    device = data.mask.device
    index = torch.as_tensor(idx, dtype=torch.long, device=device)  # (n,)
    chunks: dict[str, list[torch.Tensor]] = {h: [] for h in model.head_names}
    for pos in batches(len(idx), max(batch_size, 2), generator=None, device=device):
        x, mask = data.take(index[pos])
        if autocast is not None:
            with autocast:
                out = model(x, mask)
        else:
            out = model(x, mask)
        for h, logit in out.logits.items():
            chunks[h].append(logit.float())  # (B, C)
    model.train(was_training)
    return {h: torch.cat(c).cpu().numpy() if c else np.zeros((0, 0), np.float32) for h, c in chunks.items()}

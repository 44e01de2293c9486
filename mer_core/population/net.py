"""One population member as a module: MR-CCL plus its temperatures behind one loss-returning forward.

`torch.func.functional_call` swaps a member's parameters into this module and `vmap` maps it
over members. The losses are those of `mer_core.train.steps` (same pure functions, same order
of terms) with the per-member loss weights as 0-d tensors instead of Python floats, so a
term a member does not use is switched off with `torch.where` instead of a Python branch.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext

import torch
from torch import Tensor, nn

from mer_core import losses
from mer_core.configs.schema import ExperimentConfig, LossConfig
from mer_core.models import MRCCL
from mer_core.population.contrastive import modality_contrastive, noise_contrastive
from mer_core.population.dropout import MemberDropout

__all__ = ["MemberNet", "stage_weights"]


class MemberNet(nn.Module):
    """MR-CCL and its temperatures; `forward` returns one member's loss (or its logits).

    Only template-level loss settings live here (`contrastive_target`, `cls_heads`,
    `label_smoothing`: equal within a population); per-member weights arrive as tensors.
    """

    def __init__(self, model: MRCCL, temps: losses.Temperatures, loss_cfg: LossConfig) -> None:
        super().__init__()
        self.model = model
        self.temps = temps
        self.contrastive_target = loss_cfg.contrastive_target
        self.cls_heads = loss_cfg.cls_heads
        self.label_smoothing = loss_cfg.label_smoothing

    def forward(
        self,
        x: Mapping[str, Tensor],
        mask: Tensor,
        y: Tensor | None = None,
        noisy: Mapping[str, Tensor] | None = None,
        weights: Mapping[str, Tensor] | None = None,
        rates: Mapping[float, Tensor] | None = None,
        *,
        stage: str,
        contrastive: bool = True,
    ) -> Tensor | tuple[Tensor, ...]:
        """One member's loss (stage `pretrain`/`finetune`) or its head logits (stage `predict`).

        Args:
            x: modality -> (B, D_m) features.
            mask: (B, M) presence.
            y: (B,) labels (finetune).
            noisy: modality -> (B, D_m) NEE-noised features, drawn outside vmap from the
                member's own generator; None when no member of the step weighs the noise term.
            weights: `cls`, `modality`, `noise` -> 0-d weight (0 = term off for this member).
            rates: marker dropout rate -> this member's rate (see `dropout.MemberDropout`).
            stage: `pretrain`, `finetune` or `predict`.
            contrastive: whether any member of the step weighs a contrastive term (finetune).

        Returns:
            0-d loss, or the logits of every head (a tuple in `model.head_names` order).
        """
        with MemberDropout(rates) if rates else nullcontext():
            out = self.model(x, mask)
            if stage == "predict":
                return tuple(out.logits[h] for h in self.model.head_names)  # each (B, C)
            if weights is None:
                raise ValueError(f"stage {stage!r} needs the members' loss weights")
            if stage == "pretrain":
                modality, noise = self._contrastive(x, mask, out, noisy)
                total = weights["modality"] * modality  # the single run always adds it in pre-training
            else:
                logits = out.logits if self.cls_heads == "all" else {"fusion": out.logits["fusion"]}
                cls = losses.classification_loss(logits, y, label_smoothing=self.label_smoothing)
                total = weights["cls"] * cls
                noise = None
                if contrastive:
                    modality, noise = self._contrastive(x, mask, out, noisy)
                    total = total + _weighted(weights["modality"], modality)
            if noise is not None:
                total = total + _weighted(weights["noise"], noise)
            return total

    def _contrastive(self, x, mask, out, noisy) -> tuple[Tensor, Tensor | None]:
        mods = self.model.modalities
        target = out.specific if self.contrastive_target == "specific" else out.invariant
        modality = modality_contrastive(target, out.ovr, mask, mods, self.temps)
        if noisy is None:
            return modality, None
        spec_noisy = self.model.encode_specific(noisy)  # m -> (B, H)
        return modality, noise_contrastive(out.specific, spec_noisy, mask, mods, self.temps)


def _weighted(weight: Tensor, term: Tensor) -> Tensor:
    # A member that does not use the term gets exactly 0 (not 0 * term: a NaN there must not leak).
    return torch.where(weight > 0, weight * term, torch.zeros_like(term))


def stage_weights(cfg: ExperimentConfig, stage: str) -> dict[str, float]:
    """A member's effective loss weights in a stage; 0 means the single run leaves the term out.

    Mirrors `mer_core.train.steps`: the noise term exists only with a positive weight and NEE
    enabled; in fine-tuning the contrastive terms exist only when a contrastive weight is positive.
    """
    loss = cfg.loss
    if stage == "pretrain":
        noise = loss.pretrain_w_noise if cfg.nee.enabled else 0.0
        return {"cls": 0.0, "modality": loss.pretrain_w_modality, "noise": noise}
    noise = loss.w_noise if cfg.nee.enabled else 0.0
    return {"cls": loss.w_cls, "modality": loss.w_modality, "noise": noise}

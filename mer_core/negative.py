"""Negative-information removal (the MECAM idea): separate a sample's representation from its corrupted views.

MECAM ("Contrastive-Based Removal of Negative Information in Multimodal Emotion Analysis") calls
noise and corrupted data (missing text, dropped frames, blur) "negative information" and removes
it with contrastive learning, weighted by alpha and beta (0.2/0.1 and 0.05 in its settings). It
gives no formula, so this module defines one; what it computes:

Representation. r = the fusion operator's output, the input of the fusion head (`MRCCL.fuse`),
L2-normalised: z = r / |r|. It is the one representation in which both kinds of corruption exist
for a sample (a missing modality changes the fused vector, not the other modalities' s_m).

Views of a batch of B samples (fine-tuning only, see `negative_views_term`):
- noise view c^noise_j: the fused representation of NEE-noised inputs (`nee.add_noise`, the same
  schedules and noise kind as NEE, whether or not the NEE term is on), with the data's mask;
- missing view c^miss_j: the fused representation with one present modality of sample j dropped
  from the mask (chosen uniformly, from the step's generator); only samples with >= 2 present
  modalities have one.

Term, for a view kind with corrupted set {c_j}:

    L = mean_i log(1 + sum_j exp((cos(z_i, c_j) - 1) / tau))
      = mean_i -log( exp(1/tau) / (exp(1/tau) + sum_j exp(cos(z_i, c_j) / tau)) )

i.e. InfoNCE whose positive is the clean representation itself (self-similarity 1: a clean
augmentation with no perturbation; with dropout off, which is the default, a second clean pass
would be this very vector, so we do not spend one) and whose negatives are the corrupted views of
*every* sample of the batch, the sample's own among them. The total is
alpha * L_noise + beta * L_missing; each part is computed only when its weight is positive.

Why this form.
- Corrupted views share what the corruption adds, independently of the sample: noise energy,
  an absent block. Contrasting each clean representation against all corrupted views of the
  batch pushes clean representations away from that shared component, i.e. removes the negative
  information from them, and stops the corrupted views from pulling them (the issue's wording).
- The other *clean* samples are not negatives, unlike SimCLR: cross-entropy gathers clean samples
  of a class together, and a uniformity force on them would fight it.
- Nothing is pulled together: the gradient moves both the clean representation and its corrupted
  views apart (both branches share the encoders). The term is bounded below by 0, decreasing in
  every cos(z_i, c_j), smooth (softplus-like) and scale-free (cosines), so alpha and beta compare
  with the other weights. tau (`loss.neg_temperature`, default 0.1) sets how much the closest
  corrupted views dominate.
- Only fine-tuning adds it (MECAM trains supervised; `loss.neg_*` are fine-tuning weights).
  It is independent of `w_noise`, NEE's noise term, which *pulls* s_m towards its noised view: the
  two can be combined, and the ablation tells which direction helps.
- Rows that cannot form a view (no modality; a single modality for the missing view) are neither
  anchors nor negatives.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from mer_core.configs.schema import LossConfig
from mer_core.models import MRCCL

__all__ = [
    "draw_for_missing_view",
    "drop_one_modality",
    "negative_removal_loss",
    "negative_views_term",
    "separation_loss",
]


def separation_loss(anchor: Tensor, corrupted: Tensor, *, temperature: float, valid: Tensor | None = None) -> Tensor:
    """mean_i log(1 + sum_j exp((cos(anchor_i, corrupted_j) - 1) / temperature)) over valid rows.

    Args:
        anchor: (B, D) clean representations.
        corrupted: (B, D) corrupted views (row j is a view of sample j).
        temperature: tau > 0.
        valid: optional (B,) bool; False rows are neither anchors nor negatives.

    Returns:
        Scalar; 0 (still attached to the graph) when no row is valid.
    """
    zero = 0.0 * (anchor.sum() + corrupted.sum())
    if anchor.shape[0] == 0:
        return zero
    valid = torch.ones(anchor.shape[0], dtype=torch.bool, device=anchor.device) if valid is None else valid.bool()
    sims = F.normalize(anchor, dim=-1) @ F.normalize(corrupted, dim=-1).T  # (B, B)
    logits = (sims - 1.0) / temperature  # (B, B): positive logit (cos = 1) shifted to 0
    # finfo.min, not -inf: exp underflows to exactly 0 without inf arithmetic in the backward.
    logits = logits.masked_fill(~valid[None, :], torch.finfo(logits.dtype).min)  # (B, B)
    positive = torch.zeros_like(logits[:, :1])  # (B, 1)
    per_row = torch.logsumexp(torch.cat([positive, logits], dim=1), dim=1)  # (B,)
    n = valid.sum()
    loss = torch.where(valid, per_row, torch.zeros_like(per_row)).sum() / n.clamp(min=1)
    return torch.where(n > 0, loss, zero)


def negative_removal_loss(
    clean: Tensor,
    noise_view: Tensor | None,
    missing_view: Tensor | None,
    *,
    alpha: float,
    beta: float,
    temperature: float,
    noise_valid: Tensor | None = None,
    missing_valid: Tensor | None = None,
) -> Tensor:
    """alpha * separation(clean, noise_view) + beta * separation(clean, missing_view).

    A part with weight 0 is not computed (its view may be None).

    Args:
        clean: (B, D) clean representations.
        noise_view: (B, D) noise-corrupted views, or None when alpha == 0.
        missing_view: (B, D) missing-modality views, or None when beta == 0.
        alpha: weight of the noise part.
        beta: weight of the missing part.
        temperature: tau of both parts.
        noise_valid: (B,) rows usable in the noise part (None = all).
        missing_valid: (B,) rows usable in the missing part (None = all).

    Returns:
        Scalar; exactly 0 (attached to `clean`) when alpha == beta == 0.
    """
    total = 0.0 * clean.sum()
    if alpha > 0:
        if noise_view is None:
            raise ValueError("alpha > 0 needs the noise view")
        total = total + alpha * separation_loss(clean, noise_view, temperature=temperature, valid=noise_valid)
    if beta > 0:
        if missing_view is None:
            raise ValueError("beta > 0 needs the missing-modality view")
        total = total + beta * separation_loss(clean, missing_view, temperature=temperature, valid=missing_valid)
    return total


def drop_one_modality(mask: Tensor, draws: Tensor) -> tuple[Tensor, Tensor]:
    """Removes one uniformly chosen present modality from each sample that has at least two.

    Args:
        mask: (B, M) bool presence.
        draws: (B, M) uniform [0, 1) draws (`draw_for_missing_view`), drawn by the trainer before
            the forward pass so that a fused population (under `vmap`) draws what a single run does.

    Returns:
        The (B, M) view mask and the (B,) rows that have a view (>= 2 present modalities).
    """
    mask = mask.to(torch.bool)
    pick = draws.masked_fill(~mask, -1.0).argmax(dim=-1)  # (B,) a present modality, uniformly
    valid = mask.sum(dim=-1) >= 2  # (B,)
    drop = F.one_hot(pick, mask.shape[-1]).bool() & valid[:, None]  # (B, M)
    return mask & ~drop, valid


def draw_for_missing_view(mask: Tensor, generator: torch.Generator) -> Tensor:
    """The (B, M) uniform draws `drop_one_modality` chooses with, from the step's generator."""
    return torch.rand(mask.shape, generator=generator, device=mask.device)  # (B, M)


def negative_views_term(
    model: MRCCL,
    mask: Tensor,
    specific: Mapping[str, Tensor],
    invariant: Mapping[str, Tensor],
    *,
    loss_cfg: LossConfig,
    noisy: Mapping[str, Tensor] | None,
    drop_draws: Tensor | None,
) -> Tensor:
    """The weighted negative-removal term of one fine-tuning batch (see the module docstring).

    Args:
        model: the model being trained.
        mask: (B, M) the batch's presence (the data's, not an imputed one).
        specific: modality -> s_m (B, H) of the clean forward pass.
        invariant: modality -> i_m (B, H) of the clean forward pass.
        loss_cfg: `loss` section (neg_alpha, neg_beta, neg_temperature).
        noisy: modality -> (B, D_m) NEE-noised inputs of the noise view (`nee.add_noise` with the
            NEE schedules and noise kind); needed when neg_alpha > 0.
        drop_draws: (B, M) draws of `draw_for_missing_view`; needed when neg_beta > 0.
    """
    mask = mask.to(torch.bool)
    clean = model.fuse(specific, invariant, mask)  # (B, F)
    noise_view = noise_valid = missing_view = missing_valid = None
    if loss_cfg.neg_alpha > 0:
        if noisy is None:
            raise ValueError("loss.neg_alpha > 0 needs the noised inputs of the noise view")
        spec_noisy = model.encode_specific(noisy)  # m -> (B, H); missing rows are masked by the fusion
        noise_view = model.fuse(spec_noisy, model.encode_invariant(spec_noisy), mask)  # (B, F)
        noise_valid = mask.any(dim=-1)  # (B,)
    if loss_cfg.neg_beta > 0:
        if drop_draws is None:
            raise ValueError("loss.neg_beta > 0 needs the draws of the missing-modality view")
        view_mask, missing_valid = drop_one_modality(mask, drop_draws)  # (B, M), (B,)
        missing_view = model.fuse(specific, invariant, view_mask)  # (B, F)
    return negative_removal_loss(
        clean,
        noise_view,
        missing_view,
        alpha=loss_cfg.neg_alpha,
        beta=loss_cfg.neg_beta,
        temperature=loss_cfg.neg_temperature,
        noise_valid=noise_valid,
        missing_valid=missing_valid,
    )

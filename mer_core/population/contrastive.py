"""`losses.modality_contrastive` / `losses.noise_contrastive` with their InfoNCE terms stacked.

The single run calls `losses.info_nce` once per term (15 pair + 6 one-vs-rest terms for six
modalities), a few dozen small kernels per term; inside a member's vmapped forward each op
also pays functorch's per-op cost, and `F.cross_entropy` runs as a decomposition with a one-hot
matrix. Here the terms of one width are stacked (T, B, D) and one masked InfoNCE computes all
of them. Same terms, same rows, same temperatures, same mean over the terms with >= 2 usable
rows: the value equals the single-run functions up to float rounding (tests/test_population.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mer_core.losses import TempFn

__all__ = ["modality_contrastive", "noise_contrastive"]


def _present(mask: Tensor | None, n_mod: int, like: Tensor) -> Tensor:
    if mask is None:
        return torch.ones(like.shape[0], n_mod, dtype=torch.bool, device=like.device)  # (B, M)
    return mask.to(torch.bool)


def _info_nce(z_i: Tensor, z_j: Tensor, tau: Tensor, valid: Tensor) -> Tensor:
    """`losses.info_nce(z_i[t], z_j[t], tau[t], valid=valid[t])` for every term t at once.

    Args:
        z_i: (T, B, D) first views.
        z_j: (T, B, D) second views.
        tau: (T,) temperatures.
        valid: (T, B) rows usable as anchors and negatives.

    Returns:
        (T,) losses; 0 for a term with fewer than 2 valid rows.

    The same symmetric, masked InfoNCE, written as CE_i = logsumexp(row i) - logit_ii: one
    masked matrix serves both directions (an entry counts only when its row and its column are
    valid), where `F.cross_entropy` under vmap runs a decomposition with a one-hot matrix per call.
    """
    if z_i.shape[1] < 2:
        return torch.zeros(z_i.shape[0], dtype=z_i.dtype, device=z_i.device)
    zi = F.normalize(z_i, dim=-1) / tau[:, None, None]  # (T, B, D); scaling D columns, not B x B logits
    zj = F.normalize(z_j, dim=-1)  # (T, B, D)
    logits = zi @ zj.transpose(1, 2)  # (T, B, B)
    both = valid[:, :, None] & valid[:, None, :]  # (T, B, B)
    masked = logits.masked_fill(~both, torch.finfo(logits.dtype).min)  # (T, B, B)
    diag = logits.diagonal(dim1=1, dim2=2)  # (T, B)
    ce = (masked.logsumexp(dim=2) - diag) + (masked.logsumexp(dim=1) - diag)  # (T, B) both directions
    n = valid.sum(dim=1)  # (T,)
    loss = 0.5 * torch.where(valid, ce, torch.zeros_like(ce)).sum(dim=1) / n.clamp(min=1)  # (T,)
    return torch.where(n >= 2, loss, torch.zeros_like(loss))


def _terms(z_i: list[Tensor], z_j: list[Tensor], taus: list[Tensor], rows: list[Tensor]) -> tuple[Tensor, Tensor]:
    """(T,) InfoNCE values and (T,) usable-row counts of T same-width terms."""
    valid = torch.stack(rows)  # (T, B)
    values = _info_nce(torch.stack(z_i), torch.stack(z_j), torch.stack(taus), valid)  # (T,)
    return values, valid.sum(dim=1)


def _mean(values: Tensor, counts: Tensor) -> Tensor:
    # losses._mean_terms: the mean over terms with at least two usable rows (0 when none has).
    ok = (counts >= 2).to(values.dtype)  # (T,)
    return (values * ok).sum() / ok.sum().clamp(min=1)


def modality_contrastive(
    feats: Mapping[str, Tensor],
    ovr: Mapping[str, Tensor],
    mask: Tensor | None,
    modalities: Sequence[str],
    temps: TempFn,
) -> Tensor:
    """`losses.modality_contrastive`: mean of the pair and one-vs-rest InfoNCE terms (same arguments)."""
    mods = tuple(modalities)
    first = feats[mods[0]]
    present = _present(mask, len(mods), first)  # (B, M)
    if len(mods) < 2:
        return 0.0 * first.sum()
    pairs = list(itertools.combinations(enumerate(mods), 2))
    values, counts = _terms(
        [feats[a] for (_, a), _ in pairs],
        [feats[b] for _, (_, b) in pairs],
        [temps(f"pair:{a}|{b}") for (_, a), (_, b) in pairs],
        [present[:, ia] & present[:, ib] for (ia, _), (ib, _) in pairs],
    )
    everyone = present.all(dim=1)  # (B,) one-vs-rest involves every modality
    rest = [torch.cat([feats[o] for o in mods if o != m], dim=-1) for m in mods]  # each (B, (M-1)H)
    ovr_values, ovr_counts = _terms(
        [ovr[m] for m in mods], rest, [temps(f"ovr:{m}") for m in mods], [everyone] * len(mods)
    )
    return _mean(torch.cat([values, ovr_values]), torch.cat([counts, ovr_counts]))


def noise_contrastive(
    feats: Mapping[str, Tensor],
    feats_noisy: Mapping[str, Tensor],
    mask: Tensor | None,
    modalities: Sequence[str],
    temps: TempFn,
) -> Tensor:
    """`losses.noise_contrastive`: mean over modalities of InfoNCE(s_m, noised s_m) (same arguments)."""
    mods = tuple(modalities)
    present = _present(mask, len(mods), feats[mods[0]])  # (B, M)
    values, counts = _terms(
        [feats[m] for m in mods],
        [feats_noisy[m] for m in mods],
        [temps(f"noise:{m}") for m in mods],
        [present[:, k] for k in range(len(mods))],
    )
    return _mean(values, counts)

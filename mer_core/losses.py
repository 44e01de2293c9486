"""MR-CCL losses as pure functions: InfoNCE terms and classification.

Contrastive form. We implement the standard symmetric (CLIP-style) InfoNCE: both batches are
L2-normalised, logits = z_i @ z_j.T / τ, and cross-entropy with the diagonal as the positive is
taken in both directions and averaged. The MER2024-SEMI reference code uses the raw dot product,
divides by the temperature twice and takes a diagonal of a concatenated similarity matrix; that
quirk is not reproduced and there is no `reference` variant.

Missing modalities. A term uses only the rows where every modality it involves is present. The
row selection is done with masks inside the tensors (never boolean indexing): the same value as
selecting the rows, but no host sync, and usable under `torch.func.vmap`. Terms with fewer than
two usable rows are left out of the mean of their group.

One implementation for every trainer. The terms of one width are stacked (T, B, D) and one
masked InfoNCE computes all of them (`info_nce_stacked`): the single-trial trainer and the fused
population trainer (which runs this under `vmap`) call the very same functions. A per-term loop
would cost a few dozen small kernels per term (21 terms for six modalities), and under `vmap`
each op also pays functorch's per-op cost.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mer_core.configs.schema import LossConfig

__all__ = [
    "Temperatures",
    "classification_loss",
    "contrastive_term_names",
    "info_nce",
    "info_nce_stacked",
    "modality_contrastive",
    "noise_contrastive",
]

TAU_MIN, TAU_MAX = 1e-2, 1e2


def info_nce_stacked(z_i: Tensor, z_j: Tensor, tau: Tensor, valid: Tensor) -> Tensor:
    """Symmetric masked InfoNCE of T same-width terms at once.

    Args:
        z_i: (T, B, D) first views (row k of z_i[t] is the positive of row k of z_j[t]).
        z_j: (T, B, D) second views.
        tau: (T,) temperatures.
        valid: (T, B) bool rows usable as anchors and negatives; False rows count exactly as if
            they had been removed from both batches.

    Returns:
        (T,) losses; 0 for a term with fewer than 2 valid rows.

    Written as CE_i = logsumexp(row i) - logit_ii: one masked matrix serves both directions (an
    entry counts only when its row and its column are valid), where `F.cross_entropy` under vmap
    runs a decomposition with a one-hot matrix per call.
    """
    if z_i.shape[1] < 2:
        return 0.0 * (z_i.sum(dim=(1, 2)) + z_j.sum(dim=(1, 2)))  # (T,) zeros, still attached to the graph
    zi = F.normalize(z_i, dim=-1) / tau[:, None, None]  # (T, B, D); scaling D columns, not B x B logits
    zj = F.normalize(z_j, dim=-1)  # (T, B, D)
    logits = zi @ zj.transpose(1, 2)  # (T, B, B)
    both = valid[:, :, None] & valid[:, None, :]  # (T, B, B)
    # finfo.min, not -inf: exp underflows to exactly 0 without inf arithmetic in the backward.
    masked = logits.masked_fill(~both, torch.finfo(logits.dtype).min)  # (T, B, B)
    diag = logits.diagonal(dim1=1, dim2=2)  # (T, B)
    ce = (masked.logsumexp(dim=2) - diag) + (masked.logsumexp(dim=1) - diag)  # (T, B) both directions
    n = valid.sum(dim=1)  # (T,) stays a tensor: no host sync
    loss = 0.5 * torch.where(valid, ce, torch.zeros_like(ce)).sum(dim=1) / n.clamp(min=1)  # (T,)
    return torch.where(n >= 2, loss, torch.zeros_like(loss))


def info_nce(z_i: Tensor, z_j: Tensor, temperature: Tensor, *, valid: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE between paired batches (row k of z_i is the positive of row k of z_j).

    Args:
        z_i: (B, D) first view.
        z_j: (B, D) second view.
        temperature: scalar tensor τ > 0.
        valid: optional (B,) bool; False rows are excluded as anchors and as negatives,
            exactly as if they had been removed from both batches.

    Returns:
        Scalar loss; 0 (still attached to the graph) when fewer than 2 rows are usable.
    """
    rows = torch.ones(z_i.shape[0], dtype=torch.bool, device=z_i.device) if valid is None else valid.to(torch.bool)
    tau = torch.as_tensor(temperature, dtype=z_i.dtype, device=z_i.device).reshape(1)  # (1,)
    return info_nce_stacked(z_i[None], z_j[None], tau, rows[None])[0]


def contrastive_term_names(modalities: Sequence[str]) -> tuple[str, ...]:
    """Names of the contrastive terms, one temperature each.

    Pair terms `pair:a|b` for each unordered pair, one-vs-rest terms `ovr:m` (only when
    M >= 2) and noise terms `noise:m`. For M = 3 these are the reference's 9 terms.
    """
    mods = tuple(modalities)
    if len(set(mods)) != len(mods) or not mods:
        raise ValueError(f"modalities must be non-empty and unique; got {mods}")
    pairs = tuple(f"pair:{a}|{b}" for a, b in itertools.combinations(mods, 2))
    ovr = tuple(f"ovr:{m}" for m in mods) if len(mods) >= 2 else ()
    return pairs + ovr + tuple(f"noise:{m}" for m in mods)


class Temperatures(nn.Module):
    """One learnable log-temperature per named term, stored as a single (K,) parameter.

    A single vector (rather than a ParameterDict) keeps arbitrary modality names legal
    as keys and stacks cleanly for `torch.func` populations.
    """

    def __init__(self, names: Sequence[str], *, init: float = 1.0, learnable: bool = True) -> None:
        super().__init__()
        self.names = tuple(names)
        self._index = {n: k for k, n in enumerate(self.names)}
        self.log_tau = nn.Parameter(torch.full((len(self.names),), math.log(init)), requires_grad=learnable)

    @classmethod
    def from_config(cls, cfg: LossConfig, modalities: Sequence[str]) -> Temperatures:
        """Temperatures of every term of `contrastive_term_names(modalities)`."""
        return cls(contrastive_term_names(modalities), init=cfg.temperature_init, learnable=cfg.learnable_temperature)

    def forward(self, name: str) -> Tensor:
        """τ of one term: exp(log τ) clamped to [1e-2, 1e2] so the logits stay bounded."""
        if name not in self._index:
            raise KeyError(f"no temperature {name!r}; known: {', '.join(self.names)}")
        return self.log_tau[self._index[name]].exp().clamp(TAU_MIN, TAU_MAX)

    get = forward

    def as_dict(self) -> dict[str, float]:
        """Current τ per term, for logging."""
        with torch.no_grad():
            taus = self.log_tau.exp().clamp(TAU_MIN, TAU_MAX).tolist()
        return dict(zip(self.names, taus, strict=True))


TempFn = Callable[[str], Tensor]


def _present(mask: Tensor | None, modalities: Sequence[str], batch: int, device: torch.device) -> Tensor:
    if mask is None:
        return torch.ones(batch, len(modalities), dtype=torch.bool, device=device)  # (B, M)
    if mask.shape[-2:] != (batch, len(modalities)):
        raise ValueError(f"mask must be (B, M) = ({batch}, {len(modalities)}); got {tuple(mask.shape)}")
    return mask.to(torch.bool)


def _terms(z_i: list[Tensor], z_j: list[Tensor], taus: list[Tensor], rows: list[Tensor]) -> tuple[Tensor, Tensor]:
    """(T,) InfoNCE values and (T,) usable-row counts of T same-width terms."""
    valid = torch.stack(rows)  # (T, B)
    values = info_nce_stacked(torch.stack(z_i), torch.stack(z_j), torch.stack(taus), valid)  # (T,)
    return values, valid.sum(dim=1)


def _mean_terms(values: Tensor, counts: Tensor) -> Tensor:
    """Mean of the terms whose usable-row count is >= 2 (0 when none is)."""
    ok = (counts >= 2).to(values.dtype)  # (T,)
    return (values * ok).sum() / ok.sum().clamp(min=1)


def modality_contrastive(
    feats: Mapping[str, Tensor],
    ovr: Mapping[str, Tensor],
    mask: Tensor | None,
    modalities: Sequence[str],
    temps: TempFn,
) -> Tensor:
    """Mean of the pair and one-vs-rest InfoNCE terms.

    Args:
        feats: modality -> (B, H) features (s_m, or i_m when the target is invariant).
        ovr: modality -> (B, (M-1)H) one-vs-rest projections c_m.
        mask: (B, M) bool presence, columns in `modalities` order; None = all present.
        modalities: names, in column order of `mask` and concatenation order of `ovr` targets.
        temps: term name -> τ (a `Temperatures`).

    Returns:
        Scalar: the mean over terms with >= 2 usable rows; 0 for M == 1.
    """
    mods = tuple(modalities)
    first = feats[mods[0]]
    if len(mods) < 2:
        return 0.0 * first.sum()
    present = _present(mask, mods, first.shape[0], first.device)  # (B, M)
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
    return _mean_terms(torch.cat([values, ovr_values]), torch.cat([counts, ovr_counts]))


def noise_contrastive(
    feats: Mapping[str, Tensor],
    feats_noisy: Mapping[str, Tensor],
    mask: Tensor | None,
    modalities: Sequence[str],
    temps: TempFn,
) -> Tensor:
    """Mean over modalities of InfoNCE(s_m, s_m of the noised input) on rows where m is present.

    Args:
        feats: modality -> (B, H) features of the clean input.
        feats_noisy: modality -> (B, H) features of the NEE-noised input.
        mask: (B, M) bool presence, columns in `modalities` order; None = all present.
        modalities: names in column order of `mask`.
        temps: term name -> τ (uses `noise:m`).
    """
    mods = tuple(modalities)
    first = feats[mods[0]]
    present = _present(mask, mods, first.shape[0], first.device)  # (B, M)
    values, counts = _terms(
        [feats[m] for m in mods],
        [feats_noisy[m] for m in mods],
        [temps(f"noise:{m}") for m in mods],
        [present[:, k] for k in range(len(mods))],
    )
    return _mean_terms(values, counts)


def classification_loss(
    logits: Mapping[str, Tensor],
    labels: Tensor,
    *,
    label_smoothing: float = 0.0,
    weights: Tensor | None = None,
) -> Tensor:
    """Mean over heads of the (optionally sample-weighted) cross-entropy.

    Rows with label < 0 (unlabelled, the FeatureSet convention) are ignored. With
    `weights` (B,), each head's loss is Σ w·CE / Σ w over the labelled rows.

    Args:
        logits: head -> (B, C) logits.
        labels: (B,) int class indices.
        label_smoothing: as in `F.cross_entropy`.
        weights: optional (B,) non-negative per-sample weights (e.g. pseudo-label confidence).
    """
    if not logits:
        raise ValueError("classification_loss needs at least one head")
    labelled = labels >= 0  # (B,)
    # At least float32 (bf16 logits under autocast), float64 for float64 logits.
    dtype = torch.promote_types(next(iter(logits.values())).dtype, torch.float32)
    w = labelled.to(dtype) if weights is None else weights.to(dtype) * labelled  # (B,)
    denom = w.sum().clamp(min=torch.finfo(dtype).tiny)
    target = labels.clamp(min=0)  # (B,) ignored rows get class 0 as a stand-in, weighted out below
    per_head = []
    for head_logits in logits.values():
        ce = F.cross_entropy(head_logits, target, reduction="none", label_smoothing=label_smoothing)  # (B,)
        per_head.append((ce.to(dtype) * w).sum() / denom)
    return torch.stack(per_head).mean()

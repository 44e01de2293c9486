"""MR-CCL losses as pure functions: InfoNCE terms, classification, and their weighted sum.

Contrastive form. We implement the standard symmetric (CLIP-style) InfoNCE: both batches are
L2-normalised, logits = z_i @ z_j.T / τ, and cross-entropy with the diagonal as the positive is
taken in both directions and averaged. The MER2024-SEMI reference code uses the raw dot product,
divides by the temperature twice and takes a diagonal of a concatenated similarity matrix; that
quirk is not reproduced and there is no `reference` variant.

Missing modalities. A term uses only the rows where every modality it involves is present. The
row selection is done with masks inside the tensors (never boolean indexing): the same value as
selecting the rows, but no host sync, and usable under `torch.func.vmap`. Terms with fewer than
two usable rows are left out of the mean of their group.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mer_core.configs.schema import LossConfig

__all__ = [
    "LossTerms",
    "Temperatures",
    "classification_loss",
    "combine",
    "contrastive_term_names",
    "info_nce",
    "modality_contrastive",
    "noise_contrastive",
    "stage_weights",
]

TAU_MIN, TAU_MAX = 1e-2, 1e2


def _masked_ce(logits: Tensor, valid: Tensor) -> Tensor:
    """Per-row CE with the diagonal as target, over valid columns only; invalid rows give 0."""
    keep = valid[None, :]  # (1, B)
    # finfo.min, not -inf: exp underflows to exactly 0 without inf arithmetic in the backward.
    masked = logits.masked_fill(~keep, torch.finfo(logits.dtype).min)  # (B, B)
    # Invalid rows: all-zero logits give a finite CE that `where` then discards.
    masked = torch.where(valid[:, None], masked, torch.zeros_like(masked))  # (B, B)
    target = torch.arange(logits.shape[0], device=logits.device)  # (B,)
    ce = F.cross_entropy(masked, target, reduction="none")  # (B,)
    return torch.where(valid, ce, torch.zeros_like(ce))  # (B,)


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
    zero = 0.0 * (z_i.sum() + z_j.sum())  # keeps backward() valid when the term is empty
    if z_i.shape[0] < 2:
        return zero
    zi = F.normalize(z_i, dim=-1)  # (B, D)
    zj = F.normalize(z_j, dim=-1)  # (B, D)
    logits = zi @ zj.T / temperature  # (B, B)
    if valid is None:
        target = torch.arange(logits.shape[0], device=logits.device)  # (B,)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    valid = valid.to(torch.bool)
    n = valid.sum()  # stays a tensor: no host sync
    total = _masked_ce(logits, valid).sum() + _masked_ce(logits.T, valid).sum()
    loss = 0.5 * total / n.clamp(min=1)
    return torch.where(n >= 2, loss, zero)


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
    if mask.shape != (batch, len(modalities)):
        raise ValueError(f"mask must be (B, M) = ({batch}, {len(modalities)}); got {tuple(mask.shape)}")
    return mask.to(torch.bool)


def _mean_terms(terms: list[tuple[Tensor, Tensor]], like: Tensor) -> Tensor:
    """Mean of the terms whose usable-row count is >= 2 (0 when none is)."""
    if not terms:
        return 0.0 * like
    losses = torch.stack([t for t, _ in terms])  # (K,)
    ok = torch.stack([n >= 2 for _, n in terms]).to(losses.dtype)  # (K,)
    return (losses * ok).sum() / ok.sum().clamp(min=1)


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
    present = _present(mask, mods, first.shape[0], first.device)  # (B, M)
    terms: list[tuple[Tensor, Tensor]] = []
    for (ia, a), (ib, b) in itertools.combinations(enumerate(mods), 2):
        rows = present[:, ia] & present[:, ib]  # (B,)
        terms.append((info_nce(feats[a], feats[b], temps(f"pair:{a}|{b}"), valid=rows), rows.sum()))
    if len(mods) >= 2:
        rows = present.all(dim=1)  # (B,) one-vs-rest involves every modality
        for m in mods:
            rest = torch.cat([feats[o] for o in mods if o != m], dim=-1)  # (B, (M-1)H)
            terms.append((info_nce(ovr[m], rest, temps(f"ovr:{m}"), valid=rows), rows.sum()))
    return _mean_terms(terms, first.sum())


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
    terms = [
        (info_nce(feats[m], feats_noisy[m], temps(f"noise:{m}"), valid=present[:, k]), present[:, k].sum())
        for k, m in enumerate(mods)
    ]
    return _mean_terms(terms, first.sum())


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
    w = labelled.to(torch.float32) if weights is None else weights.to(torch.float32) * labelled  # (B,)
    denom = w.sum().clamp(min=torch.finfo(torch.float32).tiny)
    target = labels.clamp(min=0)  # (B,) ignored rows get class 0 as a stand-in, weighted out below
    per_head = []
    for head_logits in logits.values():
        ce = F.cross_entropy(head_logits, target, reduction="none", label_smoothing=label_smoothing)  # (B,)
        per_head.append((ce.float() * w).sum() / denom)
    return torch.stack(per_head).mean()


@dataclass(frozen=True)
class LossTerms:
    """The loss terms of one step; None = not computed in this stage."""

    cls: Tensor | None = None
    modality: Tensor | None = None
    noise: Tensor | None = None


def stage_weights(cfg: LossConfig, stage: Literal["pretrain", "finetune"]) -> dict[str, float]:
    """Weights of each `LossTerms` field in a stage (pre-training has no classification)."""
    if stage == "pretrain":
        return {"cls": 0.0, "modality": cfg.pretrain_w_modality, "noise": cfg.pretrain_w_noise}
    if stage == "finetune":
        return {"cls": cfg.w_cls, "modality": cfg.w_modality, "noise": cfg.w_noise}
    raise ValueError(f"stage must be 'pretrain' or 'finetune'; got {stage!r}")


def combine(
    terms: LossTerms, weights: Mapping[str, float], *, sync: bool = True
) -> tuple[Tensor, dict[str, float] | dict[str, Tensor]]:
    """Weighted sum of the terms, plus detached values for logging.

    Terms with weight 0 are skipped (not multiplied, so a NaN there cannot leak in).

    Args:
        terms: the computed terms.
        weights: field name (`cls`, `modality`, `noise`) -> weight; missing names weigh 0.
        sync: True returns floats (`loss/<term>`, `loss/total`); False returns detached
            0-d tensors, which avoids one device sync per value when logging in batches.

    Returns:
        (total, logs).

    Raises:
        ValueError: an unknown weight name, or a positive weight on a term that is None.
    """
    names = [f.name for f in fields(LossTerms)]
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"unknown loss terms {unknown}; known: {names}")
    total: Tensor | None = None
    logs: dict[str, Tensor] = {}
    for name in names:
        w, value = float(weights.get(name, 0.0)), getattr(terms, name)
        if w == 0.0:
            continue
        if value is None:
            raise ValueError(f"loss term {name!r} has weight {w} but was not computed")
        total = w * value if total is None else total + w * value
        logs[f"loss/{name}"] = value.detach()
    if total is None:
        raise ValueError("every loss weight is 0: nothing to optimise")
    logs["loss/total"] = total.detach()
    if sync:
        return total, {k: float(v) for k, v in logs.items()}
    return total, logs

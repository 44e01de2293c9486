"""Fusion operators for the fusion head, in the `FUSIONS` registry ("which fusion" is a sweepable categorical).

Every operator is built as `cls(modalities, dim, *, rank=..., dropout=...)`, has an
`out_dim` attribute, and maps named (B, dim) features plus a (B, M) presence mask to
(B, out_dim). A missing modality (mask False) never contributes: its feature is
replaced before use (`torch.where`, so even NaN/inf in a missing row cannot leak and
its gradient is exactly zero). Adding an operator = one subclass + `@FUSIONS.register`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mer_core.registry import Registry

FUSIONS: Registry[type[FusionOp]] = Registry("fusion")


class FusionOp(nn.Module, abc.ABC):
    """Base class: stores the modality order and stacks/masks the inputs.

    Attributes:
        modalities: Modality names, in the order of the mask's columns.
        dim: Width of each modality's feature.
        out_dim: Width of the fused output.
    """

    out_dim: int

    def __init__(self, modalities: tuple[str, ...], dim: int, *, rank: int = 4, dropout: float = 0.0) -> None:
        """Builds the operator.

        Args:
            modalities: Modality names; the mask's columns follow this order.
            dim: Width H of each modality's feature.
            rank: Rank of low-rank operators (ignored by the others).
            dropout: Dropout inside operators with learned internals (ignored by the others).
        """
        super().__init__()
        if not modalities:
            raise ValueError("a fusion operator needs at least one modality")
        self.modalities = tuple(modalities)
        self.dim = dim

    @classmethod
    def build(
        cls, modalities: tuple[str, ...], dim: int, *, rank: int = 4, dropout: float = 0.0, n_classes: int = 1
    ) -> FusionOp:
        """Builds the operator inside a model: like the constructor, plus what the model knows.

        Operators that need the class count (label-guided fusion) override this; the others ignore it.

        Args:
            modalities: Modality names; the mask's columns follow this order.
            dim: Width H of each modality's feature.
            rank: Rank of low-rank operators.
            dropout: Dropout inside operators with learned internals.
            n_classes: Number of classes of the model's heads.
        """
        return cls(modalities, dim, rank=rank, dropout=dropout)

    @abc.abstractmethod
    def forward(self, feats: Mapping[str, Tensor], mask: Tensor) -> Tensor:
        """Fuses the modalities (each registered operator defines it).

        Args:
            feats: Modality name -> (B, dim); extra keys are ignored.
            mask: (B, M) bool, True = present; columns follow `modalities`.

        Returns:
            (B, out_dim).
        """

    def _stack(self, feats: Mapping[str, Tensor], mask: Tensor) -> tuple[Tensor, Tensor]:
        """Stacks features to (B, M, H) with missing rows zeroed; returns them and the (B, M, 1) mask."""
        x = torch.stack([feats[m] for m in self.modalities], dim=1)  # (B, M, H)
        present = mask.to(torch.bool).unsqueeze(-1)  # (B, M, 1)
        return torch.where(present, x, 0.0), present  # (B, M, H), (B, M, 1)


@FUSIONS.register("concat")
class ConcatFusion(FusionOp):
    """Concatenation (the MR-CCL reference): missing modalities are zero blocks. Out: M*H."""

    def __init__(self, modalities: tuple[str, ...], dim: int, *, rank: int = 4, dropout: float = 0.0) -> None:
        super().__init__(modalities, dim, rank=rank, dropout=dropout)
        self.out_dim = len(self.modalities) * dim

    def forward(self, feats: Mapping[str, Tensor], mask: Tensor) -> Tensor:
        x, _ = self._stack(feats, mask)  # (B, M, H)
        return x.flatten(1)  # (B, M*H)


@FUSIONS.register("sum")
class SumFusion(FusionOp):
    """Sum over the present modalities. Out: H."""

    def __init__(self, modalities: tuple[str, ...], dim: int, *, rank: int = 4, dropout: float = 0.0) -> None:
        super().__init__(modalities, dim, rank=rank, dropout=dropout)
        self.out_dim = dim

    def forward(self, feats: Mapping[str, Tensor], mask: Tensor) -> Tensor:
        x, _ = self._stack(feats, mask)  # (B, M, H)
        return x.sum(dim=1)  # (B, H)


@FUSIONS.register("max")
class MaxFusion(FusionOp):
    """Elementwise max over the present modalities; a sample with none present gets zeros. Out: H."""

    def __init__(self, modalities: tuple[str, ...], dim: int, *, rank: int = 4, dropout: float = 0.0) -> None:
        super().__init__(modalities, dim, rank=rank, dropout=dropout)
        self.out_dim = dim

    def forward(self, feats: Mapping[str, Tensor], mask: Tensor) -> Tensor:
        x = torch.stack([feats[m] for m in self.modalities], dim=1)  # (B, M, H)
        present = mask.to(torch.bool).unsqueeze(-1)  # (B, M, 1)
        best = torch.where(present, x, float("-inf")).amax(dim=1)  # (B, H)
        return torch.where(present.any(dim=1), best, 0.0)  # (B, H)


@FUSIONS.register("gated")
class GatedFusion(FusionOp):
    """Gated sum: each modality's feature times a sigmoid gate computed from that feature. Out: H."""

    def __init__(self, modalities: tuple[str, ...], dim: int, *, rank: int = 4, dropout: float = 0.0) -> None:
        super().__init__(modalities, dim, rank=rank, dropout=dropout)
        self.out_dim = dim
        self.gates = nn.ModuleDict({m: nn.Linear(dim, dim) for m in self.modalities})

    def forward(self, feats: Mapping[str, Tensor], mask: Tensor) -> Tensor:
        x, _ = self._stack(feats, mask)  # (B, M, H); missing rows are zero, so gate * 0 = 0
        gates = [self.gates[m](x[:, i]) for i, m in enumerate(self.modalities)]  # M x (B, H)
        return (torch.sigmoid(torch.stack(gates, dim=1)) * x).sum(dim=1)  # (B, H)


@FUSIONS.register("attention")
class AttentionFusion(FusionOp):
    """Attention over modalities: a shared MLP scores each feature, masked softmax, weighted sum. Out: H."""

    def __init__(self, modalities: tuple[str, ...], dim: int, *, rank: int = 4, dropout: float = 0.0) -> None:
        super().__init__(modalities, dim, rank=rank, dropout=dropout)
        self.out_dim = dim
        hidden = max(1, dim // 2)
        # With one modality the softmax is constantly 1: a scorer would be dead weight (no gradient).
        self.scorer = (
            nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Dropout(dropout), nn.Linear(hidden, 1))
            if len(self.modalities) > 1
            else None
        )

    def forward(self, feats: Mapping[str, Tensor], mask: Tensor) -> Tensor:
        x, present = self._stack(feats, mask)  # (B, M, H), (B, M, 1)
        if self.scorer is None:
            return x.sum(dim=1)  # (B, H): the single (masked) feature
        scores = self.scorer(x)  # (B, M, 1)
        # A finite fill (not -inf) keeps an all-missing row finite (uniform softmax, then zeroed
        # below); -inf would give NaN there, whose gradient poisons the batch even when masked.
        scores = scores.masked_fill(~present, torch.finfo(scores.dtype).min)  # (B, M, 1)
        weights = torch.softmax(scores, dim=1) * present  # (B, M, 1)
        return (weights * x).sum(dim=1)  # (B, H)


@FUSIONS.register("tensor_lowrank")
class LowRankTensorFusion(FusionOp):
    """Low-rank multimodal tensor fusion (LMF, Liu et al. 2018). Out: H.

    Each modality's feature gets a constant 1 appended, is projected by `rank`
    modality-specific factors, the projections are multiplied elementwise across
    modalities and summed over the rank. A missing modality is treated as a zero
    feature, so its contribution is the factor of the constant-only vector.
    """

    def __init__(self, modalities: tuple[str, ...], dim: int, *, rank: int = 4, dropout: float = 0.0) -> None:
        super().__init__(modalities, dim, rank=rank, dropout=dropout)
        self.out_dim = dim
        self.rank = rank
        n = len(self.modalities)
        # std 1/sqrt(dim+1) keeps each projection O(1), so the product over modalities neither
        # vanishes nor explodes with M (LMF's xavier init shrinks the output geometrically in M).
        self.factors = nn.Parameter(torch.randn(n, rank, dim + 1, dim) / math.sqrt(dim + 1))  # (M, r, H+1, H)
        self.rank_weights = nn.Parameter(torch.full((rank,), 1.0 / math.sqrt(rank)))  # (r,)
        self.bias = nn.Parameter(torch.zeros(dim))  # (H,)

    def forward(self, feats: Mapping[str, Tensor], mask: Tensor) -> Tensor:
        x, _ = self._stack(feats, mask)  # (B, M, H)
        z = torch.cat([x.new_ones(*x.shape[:2], 1), x], dim=-1)  # (B, M, H+1)
        proj = torch.einsum("bmd,mrdo->mrbo", z, self.factors)  # (M, r, B, H)
        fused = proj.prod(dim=0)  # (r, B, H)
        return torch.einsum("rbo,r->bo", fused, self.rank_weights) + self.bias  # (B, H)


__all__ = [
    "FUSIONS",
    "AttentionFusion",
    "ConcatFusion",
    "FusionOp",
    "GatedFusion",
    "LowRankTensorFusion",
    "MaxFusion",
    "SumFusion",
]

"""Label-guided fusion (`model.fusion: label_guided`), after LE-MER (Wang et al., Interspeech 2023).

LE-MER lets learned label embeddings attend over a modality's tokens and fuses modalities by
label-guided cross-attention "from the perspective of emotional space". With utterance-level
features each modality is one token, so here the C label embeddings are the queries of a
multi-head attention whose keys and values are the M modality features:

    q_c = W_q l_c,  k_m = W_k x_m,  v_m = W_v x_m            (per head, width H / heads)
    a_cm = softmax_m(q_c . k_m / sqrt(d)) over the *present* modalities
    z_c = l_c + W_o concat_heads( sum_m a_cm v_m )            (C, H) per sample
    out = flatten(z)                                          (C*H,) -> the fusion head

so each class gathers its own view of the modalities (a label can rely on audio, another on
text), and the fusion head reads all C views. The residual on l_c keeps the label identity in z_c.
A missing modality gets exactly zero attention weight (masked before the softmax, then multiplied
by the mask, so an all-missing sample yields z_c = l_c + W_o's bias and no NaN). With a single
modality the softmax is constantly 1, so W_q and W_k would get no gradient: they are not built and
z_c = l_c + W_o W_v x.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from mer_core.models.encoders import largest_divisor
from mer_core.models.fusion import FUSIONS, FusionOp

__all__ = ["LabelGuidedFusion"]

MAX_HEADS = 4
DEFAULT_CLASSES = 6  # MER2024's six emotions; a model passes its own class count through `build`


@FUSIONS.register("label_guided")
class LabelGuidedFusion(FusionOp):
    """Learned label embeddings (C, H) attend over the modality features. Out: C*H."""

    def __init__(
        self,
        modalities: tuple[str, ...],
        dim: int,
        *,
        rank: int = 4,
        dropout: float = 0.0,
        n_classes: int = DEFAULT_CLASSES,
    ) -> None:
        """Builds the operator.

        Args:
            modalities: Modality names; the mask's columns follow this order.
            dim: Width H of each modality's feature.
            rank: Ignored.
            dropout: Dropout on the attended features before the residual.
            n_classes: Number of label embeddings (the model's class count).
        """
        super().__init__(modalities, dim, rank=rank, dropout=dropout)
        if n_classes < 1:
            raise ValueError(f"label-guided fusion needs n_classes >= 1, got {n_classes}")
        self.n_heads = largest_divisor(dim, MAX_HEADS)
        self.out_dim = n_classes * dim
        self.labels = nn.Parameter(torch.randn(n_classes, dim))  # (C, H)
        multi = len(self.modalities) > 1
        self.q_proj = nn.Linear(dim, dim) if multi else None
        self.k_proj = nn.Linear(dim, dim) if multi else None
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    @classmethod
    def build(
        cls, modalities: tuple[str, ...], dim: int, *, rank: int = 4, dropout: float = 0.0, n_classes: int = 1
    ) -> LabelGuidedFusion:
        """One label embedding per class of the model."""
        return cls(modalities, dim, rank=rank, dropout=dropout, n_classes=n_classes)

    def forward(self, feats: Mapping[str, Tensor], mask: Tensor) -> Tensor:
        x, present = self._stack(feats, mask)  # (B, M, H), (B, M, 1)
        b, n_mod, dim = x.shape
        h, d = self.n_heads, dim // self.n_heads
        v = self.v_proj(x).view(b, n_mod, h, d).transpose(1, 2)  # (B, h, M, d)
        weights = self._weights(x, present)  # (B, h, C, M)
        attended = (weights @ v).transpose(1, 2).reshape(b, -1, dim)  # (B, C, H)
        z = self.labels + self.drop(self.out_proj(attended))  # (B, C, H)
        return z.flatten(1)  # (B, C*H)

    def _weights(self, x: Tensor, present: Tensor) -> Tensor:
        """Attention of each label over the present modalities: (B, heads, C, M), zero on missing ones."""
        b, n_mod, dim = x.shape
        h, d = self.n_heads, dim // self.n_heads
        keep = present.squeeze(-1)[:, None, None, :]  # (B, 1, 1, M)
        n_classes = self.labels.shape[0]
        if self.q_proj is None or self.k_proj is None:
            return keep.to(x.dtype).expand(b, h, n_classes, n_mod)  # one modality: weight 1 where present
        q = self.q_proj(self.labels).view(n_classes, h, d).transpose(0, 1)  # (h, C, d)
        k = self.k_proj(x).view(b, n_mod, h, d).transpose(1, 2)  # (B, h, M, d)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)  # (B, h, C, M)
        # finfo.min, not -inf: an all-missing sample gets a finite uniform softmax, zeroed just below.
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)  # (B, h, C, M)
        return torch.softmax(scores, dim=-1) * keep  # (B, h, C, M)

"""Encoders of MR-CCL: per-modality specificity encoders and the shared invariant MLP.

MER2024 features are utterance-level (one vector per modality), i.e. sequences of
length 1. Self-attention over a single key is exactly `out_proj(v_proj(x))` (the
softmax over one key is 1), so `FastEncoderLayer` skips Q, K and the softmax there;
with text features of width 5120 that halves the attention cost of the largest layer.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def largest_divisor(n: int, cap: int) -> int:
    """The largest divisor of `n` that is at most `cap` (>= 1), e.g. (47, 8) -> 1, (768, 8) -> 8.

    Used for the head count, so any feature width works with any configured `nhead`.
    """
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


class FastEncoderLayer(nn.Module):
    """Drop-in for a post-norm, ReLU, batch-first `nn.TransformerEncoderLayer`.

    Parameter names and shapes are identical to `nn.TransformerEncoderLayer`
    (`self_attn.in_proj_weight` (3D, D), `self_attn.in_proj_bias`, `self_attn.out_proj.*`,
    `linear1`, `linear2`, `norm1`, `norm2`) and they are created in the same order, so
    state dicts load both ways and the same seed gives the same weights.

    For T == 1 only the V slice of `in_proj` is used. The Q/K rows then get a zero
    gradient, as they do in the full layer (the softmax over one key is constant), so
    training is unchanged; weight decay still acts on them in both. For T > 1 the held
    `nn.MultiheadAttention` runs the full attention.
    """

    def __init__(self, d_model: int, nhead: int, *, dim_feedforward: int = 2048, dropout: float = 0.1) -> None:
        """Builds the layer.

        Args:
            d_model: Feature width D (must be divisible by `nhead`).
            nhead: Attention heads.
            dim_feedforward: Hidden width of the feed-forward block.
            dropout: Dropout on attention weights, residual branches and the feed-forward block.
        """
        super().__init__()
        # Same construction order as nn.TransformerEncoderLayer (same RNG draws per seed).
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=1e-5)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-5)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """Same signature and result as `nn.TransformerEncoderLayer.forward` (batch_first).

        Args:
            src: (B, T, D).
            src_mask: Attention mask (T, T); unused when T == 1.
            src_key_padding_mask: (B, T), True = padding; unused when T == 1 (a single
                padded key has no defined attention anyway).
            is_causal: Hint that `src_mask` is causal.

        Returns:
            (B, T, D).
        """
        x = src  # (B, T, D)
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))  # (B, T, D)
        x = self.norm2(x + self._ff_block(x))  # (B, T, D)
        return x

    def _sa_block(self, x: Tensor, attn_mask: Tensor | None, padding_mask: Tensor | None, is_causal: bool) -> Tensor:
        if x.shape[1] != 1:
            out = self.self_attn(
                x, x, x, attn_mask=attn_mask, key_padding_mask=padding_mask, need_weights=False, is_causal=is_causal
            )[0]  # (B, T, D)
            return self.dropout1(out)  # (B, T, D)
        attn = self.self_attn
        d = attn.embed_dim
        w, b = attn.in_proj_weight, attn.in_proj_bias  # (3D, D), (3D,)
        # Slicing the weight (a view) avoids computing Q and K at all.
        v = F.linear(x, w[2 * d :], None if b is None else b[2 * d :])  # (B, 1, D)
        if self.training and attn.dropout > 0.0:
            # The full layer drops entries of the attention matrix; with one key that zeroes
            # (or scales by 1/(1-p)) a whole head's value vector per sample. Same distribution here.
            h = attn.num_heads
            keep = F.dropout(v.new_ones(v.shape[0], 1, h, 1), attn.dropout)  # (B, 1, h, 1)
            v = (v.unflatten(-1, (h, d // h)) * keep).flatten(-2)  # (B, 1, D)
        return self.dropout1(attn.out_proj(v))  # (B, 1, D)

    def _ff_block(self, x: Tensor) -> Tensor:
        return self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x)))))  # (B, T, D)


class SpecificEncoder(nn.Module):
    """Specificity encoder of one modality: Transformer layers over the sequence, then Linear(D -> H).

    Accepts utterance-level (B, D) input (a length-1 sequence) or frame-level (B, T, D)
    input, which is mean-pooled over the valid frames after the layers.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        *,
        layers: int,
        nhead: int,
        ff_dim: int,
        dropout: float,
        shortcut: bool = True,
    ) -> None:
        """Builds the encoder.

        Args:
            in_dim: Feature width D_m.
            hidden_dim: Output width H.
            layers: Transformer layers; 0 = just the Linear.
            nhead: Upper bound on heads; the largest divisor of D_m not above it is used.
            ff_dim: Feed-forward width of each layer.
            dropout: Dropout inside the layers.
            shortcut: Use `FastEncoderLayer` (else plain `nn.TransformerEncoderLayer`).
        """
        super().__init__()
        heads = largest_divisor(in_dim, nhead)
        # Named `layers` like nn.TransformerEncoder's ModuleList, so its checkpoints' keys match.
        self.layers = nn.ModuleList(
            FastEncoderLayer(in_dim, heads, dim_feedforward=ff_dim, dropout=dropout)
            if shortcut
            else nn.TransformerEncoderLayer(
                in_dim, heads, dim_feedforward=ff_dim, dropout=dropout, activation="relu", batch_first=True
            )
            for _ in range(layers)
        )
        self.proj = nn.Linear(in_dim, hidden_dim)

    def forward(self, x: Tensor, *, padding_mask: Tensor | None = None) -> Tensor:
        """Encodes one modality.

        Args:
            x: (B, D) utterance-level or (B, T, D) frame-level features.
            padding_mask: (B, T) bool, True = padded frame (frame-level input only).

        Returns:
            s_m: (B, H).
        """
        if x.dim() == 2:
            if not self.layers:
                return self.proj(x)  # (B, H)
            x = x.unsqueeze(1)  # (B, 1, D)
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=padding_mask)  # (B, T, D)
        if padding_mask is None:
            pooled = x.mean(dim=1)  # (B, D)
        else:
            keep = (~padding_mask).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
            pooled = (x * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)  # (B, D)
        return self.proj(pooled)  # (B, H)


class InvariantEncoder(nn.Module):
    """The modality-invariant MLP shared by all modalities: (Linear(H,H) -> Dropout -> LeakyReLU) x 2."""

    def __init__(self, hidden_dim: int, *, dropout: float, slope: float) -> None:
        """Builds the MLP.

        Args:
            hidden_dim: H (input and output width).
            dropout: Dropout after each Linear.
            slope: Negative slope of the LeakyReLUs.
        """
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim),
            nn.Dropout(dropout),
            nn.LeakyReLU(slope),
            nn.Linear(hidden_dim, hidden_dim),
            nn.Dropout(dropout),
            nn.LeakyReLU(slope),
        )

    def forward(self, s: Tensor) -> Tensor:
        """Maps (..., H) specific features to (..., H) invariant features."""
        return self.net(s)  # (..., H)


__all__ = ["FastEncoderLayer", "InvariantEncoder", "SpecificEncoder", "largest_divisor"]

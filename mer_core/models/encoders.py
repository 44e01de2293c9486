"""Encoders of MR-CCL: per-modality specificity encoders and the shared invariant MLP.

MER2024 features are utterance-level (one vector per modality), i.e. sequences of
length 1. Self-attention over a single key is exactly `out_proj(v_proj(x))` (the
softmax over one key is 1), so `FastEncoderLayer` skips Q, K and the softmax there and
does not even hold the Q/K rows of `in_proj`: at MER2024's dims (text 5120 wide) they were
40% of all parameters, each one zero-filled, clipped and stepped by Adam, with two moments,
every step. `to_reference_state_dict` and `ValueAttention`'s loading keep the
`nn.TransformerEncoderLayer` checkpoint format usable both ways.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def largest_divisor(n: int, cap: int) -> int:
    """The largest divisor of `n` that is at most `cap` (>= 1), e.g. (47, 8) -> 1, (768, 8) -> 8.

    Used for the head count, so any feature width works with any configured `nhead`.
    """
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


class ValueAttention(nn.Module):
    """Self-attention over a length-1 sequence, holding only what it uses: V and the output projection.

    With one key the softmax is 1, so `nn.MultiheadAttention(x, x, x)` equals `out_proj(v_proj(x))`
    and its Q/K rows (2/3 of `in_proj_weight`) can never change the output. They are not held
    here, so they cost no gradient, clipping, optimizer step or Adam moments.

    Checkpoints in `nn.MultiheadAttention`'s format (`in_proj_weight` (3D, D), `in_proj_bias`
    (3D,)) load: their V rows are taken and the Q/K rows dropped. `to_reference_state_dict`
    writes that format back.

    Attributes:
        embed_dim: D.
        num_heads: Heads (only the attention dropout is per head).
        dropout: Dropout rate on the attention weights, as `nn.MultiheadAttention`'s.
        v_proj_weight: (D, D), the V rows of the reference `in_proj_weight`.
        v_proj_bias: (D,), the V entries of the reference `in_proj_bias`.
        out_proj: Linear(D, D).
    """

    def __init__(self, embed_dim: int, num_heads: int, *, dropout: float = 0.0) -> None:
        """Builds the projections with `nn.MultiheadAttention`'s initialisation and RNG draws.

        Args:
            embed_dim: D (must be divisible by `num_heads`).
            num_heads: Heads.
            dropout: Dropout on the attention weights.

        Raises:
            ValueError: `embed_dim` is not divisible by `num_heads`.
        """
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        # Registered before out_proj: parameters come in the reference order (in_proj_*, out_proj.*).
        self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim))  # (D, D)
        self.v_proj_bias = nn.Parameter(torch.empty(embed_dim))  # (D,)
        self.out_proj = nn.Linear(embed_dim, embed_dim)  # draws its default init, as MHA's out_proj does
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        d = self.embed_dim
        # nn.MultiheadAttention draws xavier_uniform_ over the whole (3D, D) in_proj (fan_out 3D sets
        # the bound). Drawing the same tensor and keeping its V rows gives, for a seed, the V weights
        # and the later draws (linear1, linear2, ...) that every stored result was trained from.
        full = torch.empty(3 * d, d, dtype=self.v_proj_weight.dtype, device=self.v_proj_weight.device)  # (3D, D)
        nn.init.xavier_uniform_(full)
        with torch.no_grad():
            self.v_proj_weight.copy_(full[2 * d :])  # (D, D)
        nn.init.zeros_(self.v_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Attention of a length-1 sequence to itself.

        Args:
            x: (B, 1, D).

        Returns:
            (B, 1, D).
        """
        d, h = self.embed_dim, self.num_heads
        v = F.linear(x, self.v_proj_weight, self.v_proj_bias)  # (B, 1, D)
        if self.training and self.dropout > 0.0:
            # The full layer drops entries of the attention matrix; with one key that zeroes
            # (or scales by 1/(1-p)) a whole head's value vector per sample. Same distribution here.
            keep = F.dropout(v.new_ones(v.shape[0], 1, h, 1), self.dropout)  # (B, 1, h, 1)
            v = (v.unflatten(-1, (h, d // h)) * keep).flatten(-2)  # (B, 1, D)
        return self.out_proj(v)  # (B, 1, D)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Checkpoints of the reference format (nn.TransformerEncoderLayer, and every model this
        # project saved before the Q/K rows were dropped): keep in_proj's V rows. `state_dict` is
        # load_state_dict's own copy, so renaming keys in it leaves the caller's dict alone.
        d = self.embed_dim
        for ref, ours, shape in (
            ("in_proj_weight", "v_proj_weight", (3 * d, d)),
            ("in_proj_bias", "v_proj_bias", (3 * d,)),
        ):
            full = state_dict.pop(prefix + ref, None)
            if full is None:
                continue
            if tuple(full.shape) != shape:
                error_msgs.append(
                    f"size mismatch for {prefix + ref}: copying a param with shape {tuple(full.shape)} "
                    f"from checkpoint, the reference shape for embed_dim {d} is {shape}."
                )
                continue
            state_dict.setdefault(prefix + ours, full[2 * d :])  # (D, D) or (D,)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


class FastEncoderLayer(nn.Module):
    """A post-norm, ReLU, batch-first `nn.TransformerEncoderLayer` for length-1 sequences (T == 1).

    Utterance-level features are one vector per modality; attention over one key is
    `out_proj(v_proj(x))` (`ValueAttention`), so the layer holds the value and output
    projections, the feed-forward block and the norms, and nothing the forward never reads.
    Frame-level (T > 1) input needs the real attention: `model.attention_shortcut: false`.

    State dicts: names follow `nn.TransformerEncoderLayer` (`self_attn.out_proj.*`, `linear1`,
    `linear2`, `norm1`, `norm2`) except `self_attn.v_proj_weight` / `self_attn.v_proj_bias`, the
    V rows of its `self_attn.in_proj_weight` / `in_proj_bias`. A reference-format state dict
    loads (Q/K rows dropped); `to_reference_state_dict` converts back. The construction order and
    RNG draws are the reference layer's, so a seed gives its values (the V rows of in_proj).
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
        self.self_attn = ValueAttention(d_model, nhead, dropout=dropout)
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
        """Same signature and result as `nn.TransformerEncoderLayer.forward` (batch_first) for T == 1.

        Args:
            src: (B, 1, D).
            src_mask: Attention mask; unused (one query, one key).
            src_key_padding_mask: (B, 1); unused (a single padded key has no defined attention).
            is_causal: Unused.

        Returns:
            (B, 1, D).

        Raises:
            ValueError: `src` is not a length-1 sequence.
        """
        if src.dim() != 3 or src.shape[1] != 1:
            raise ValueError(
                f"FastEncoderLayer holds no Q/K projections and encodes length-1 sequences (B, 1, D) only, "
                f"got shape {tuple(src.shape)}; set model.attention_shortcut=false for frame-level input"
            )
        x = src  # (B, 1, D)
        x = self.norm1(x + self.dropout1(self.self_attn(x)))  # (B, 1, D)
        x = self.norm2(x + self._ff_block(x))  # (B, 1, D)
        return x

    def _ff_block(self, x: Tensor) -> Tensor:
        return self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(x)))))  # (B, 1, D)


def to_reference_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A state dict with every `FastEncoderLayer` in `nn.TransformerEncoderLayer`'s format.

    Works on any state dict holding such layers: one layer's, a whole `MRCCL`'s (what
    `python -m mer_core.train --save` writes, `TrialResult.model_state`), with or without
    `torch.compile`'s `_orig_mod.` prefix. Each `<p>self_attn.v_proj_weight` (D, D) /
    `v_proj_bias` (D,) becomes `<p>self_attn.in_proj_weight` (3D, D) / `in_proj_bias` (3D,) in
    the same position, its V rows the given values and its Q/K rows zeros. Those Q/K rows were
    never trained nor used: for a length-1 sequence they cannot change the output, so the
    result computes what the `FastEncoderLayer` computed (and for T > 1 it attends uniformly,
    all scores being equal). Other entries are passed through (same tensors, not copies).

    Args:
        state_dict: Name -> tensor, e.g. `model.state_dict()`.

    Returns:
        A new dict in the reference format, loadable into `nn.TransformerEncoderLayer(...,
        batch_first=True)` or an `MRCCL` with `attention_shortcut: false`.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        stem, _, leaf = key.rpartition(".")
        if (
            leaf in ("v_proj_weight", "v_proj_bias")
            and stem.endswith("self_attn")
            and (f"{stem}.in_proj_weight" not in state_dict)
        ):
            qk = value.new_zeros((2 * value.shape[0], *value.shape[1:]))  # (2D, D) or (2D,): never trained
            out[f"{stem}.{leaf.replace('v_proj', 'in_proj')}"] = torch.cat([qk, value])  # (3D, D) or (3D,)
        else:
            out[key] = value
    return out


class SpecificEncoder(nn.Module):
    """Specificity encoder of one modality: Transformer layers over the sequence, then Linear(D -> H).

    Accepts utterance-level (B, D) input (a length-1 sequence) or frame-level (B, T, D)
    input, which is mean-pooled over the valid frames after the layers. Frame-level input with
    layers needs `shortcut=False` (the length-1 layers hold no Q/K and refuse T > 1).
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
            shortcut: Use `FastEncoderLayer` (length-1 input only; else plain `nn.TransformerEncoderLayer`).
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


__all__ = [
    "FastEncoderLayer",
    "InvariantEncoder",
    "SpecificEncoder",
    "ValueAttention",
    "largest_divisor",
    "to_reference_state_dict",
]

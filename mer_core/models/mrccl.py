"""The assembled MR-CCL model: specific + invariant encoders, one-vs-rest projections, fusion, heads.

Nothing here assumes a modality count or names: modalities are the keys of `dims`, in
order, and a missing modality is a False in the (B, M) mask. The model is
device-agnostic (move it with `.to(device)`) and deterministic given `torch.manual_seed`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
from torch import Tensor, nn

from mer_core.configs.schema import ModelConfig
from mer_core.errors import ConfigError
from mer_core.models.encoders import InvariantEncoder, SpecificEncoder
from mer_core.models.fusion import FUSIONS
from mer_core.models.heads import HEADS

FUSION_HEAD = "fusion"

# Fills missing modalities' s_m: (modality -> (B, H), (B, M) mask) -> (filled, mask for fusion).
StateImputer = Callable[[Mapping[str, Tensor], Tensor], tuple[dict[str, Tensor], Tensor]]


class ModelOutput(NamedTuple):
    """Everything the losses and the voting need from one forward pass.

    A NamedTuple (not a dataclass) so it is a pytree for `torch.func`/`vmap` and `torch.compile`.

    Attributes:
        specific: Modality -> s_m (B, H).
        invariant: Modality -> i_m = Inv(s_m) (B, H).
        ovr: Modality -> c_m (B, (M-1)*H), to contrast with the concat of the other
            modalities' features; empty when M == 1.
        logits: Head name (each modality, then "fusion") -> (B, C).
    """

    specific: dict[str, Tensor]
    invariant: dict[str, Tensor]
    ovr: dict[str, Tensor]
    logits: dict[str, Tensor]


class MRCCL(nn.Module):
    """MR-CCL: per-modality specificity encoders, a shared invariant MLP, one-vs-rest
    projections, one unimodal head per modality on s_m and a fusion head.

    Attributes:
        modalities: Modality names (the order of `dims`, and of the mask's columns).
        head_names: `modalities + ("fusion",)`, the keys of `ModelOutput.logits`.
        imputer: None (missing s_m stay the encoding of a zero input, masked out of fusion), or
            what fills missing s_m after the specificity encoders (`mer_core.missing.impute`;
            attached by the trainer, not part of the state dict).
    """

    def __init__(self, cfg: ModelConfig, dims: Mapping[str, int], n_classes: int) -> None:
        """Builds the model; prefer `build_model`.

        Args:
            cfg: The model section of the experiment config.
            dims: Modality name -> input feature width D_m (order = modality order).
            n_classes: Number of classes C.

        Raises:
            ConfigError: Unknown `cfg.fusion` / `cfg.head`, or an unusable modality name.
            ValueError: No modalities, a non-positive width or class count.
        """
        super().__init__()
        # Resolve names first: a bad name fails before any (possibly huge) allocation.
        fusion_cls = FUSIONS.get(cfg.fusion, field="model.fusion")
        head_cls = HEADS.get(cfg.head, field="model.head")
        _check_dims(dims, n_classes)
        self.modalities: tuple[str, ...] = tuple(dims)
        self.head_names: tuple[str, ...] = (*self.modalities, FUSION_HEAD)
        self.fusion_input = cfg.fusion_input
        hid, n_mod = cfg.hidden_dim, len(self.modalities)

        self.specific = nn.ModuleDict(
            {
                m: SpecificEncoder(
                    d,
                    hid,
                    layers=cfg.layers,
                    nhead=cfg.nhead,
                    ff_dim=cfg.ff_dim,
                    dropout=cfg.dropout,
                    shortcut=cfg.attention_shortcut,
                )
                for m, d in dims.items()
            }
        )
        self.invariant = InvariantEncoder(hid, dropout=cfg.dropout, slope=cfg.invariant_slope)
        # One-vs-rest: c_m lives in the space of the concat of the other M-1 features.
        self.ovr = nn.ModuleDict({m: nn.Linear(hid, (n_mod - 1) * hid) for m in self.modalities} if n_mod > 1 else {})
        fusion_dim = 2 * hid if cfg.fusion_input == "both" else hid
        self.fusion = fusion_cls.build(
            self.modalities, fusion_dim, rank=cfg.fusion_rank, dropout=cfg.dropout, n_classes=n_classes
        )
        head_kw = {"hidden": tuple(cfg.head_hidden), "batchnorm": cfg.head_batchnorm, "dropout": cfg.head_dropout}
        heads = {m: head_cls(hid, n_classes, **head_kw) for m in self.modalities}
        heads[FUSION_HEAD] = head_cls(self.fusion.out_dim, n_classes, **head_kw)
        self.heads = nn.ModuleDict(heads)
        self.imputer: StateImputer | None = None

    def encode_specific(self, x: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Specific features s_m; separate so noised inputs go through the same encoders.

        Args:
            x: Modality -> (B, D_m) or (B, T, D_m) features (extra keys are ignored).

        Returns:
            Modality -> s_m (B, H).
        """
        missing = [m for m in self.modalities if m not in x]
        if missing:
            raise ValueError(f"inputs lack modalities {missing}; the model expects {list(self.modalities)}")
        return {m: self.specific[m](x[m]) for m in self.modalities}  # each (B, H)

    def encode_invariant(self, specific: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Invariant features i_m = Inv(s_m), all modalities in one batched call.

        Args:
            specific: Modality -> s_m (B, H).

        Returns:
            Modality -> i_m (B, H).
        """
        stacked = torch.stack([specific[m] for m in self.modalities])  # (M, B, H)
        return dict(zip(self.modalities, self.invariant(stacked).unbind(0), strict=True))  # each (B, H)

    def forward(self, x: Mapping[str, Tensor], mask: Tensor | None = None) -> ModelOutput:
        """Runs the whole model.

        Args:
            x: Modality -> (B, D_m) or (B, T, D_m) features.
            mask: (B, M) bool, True = present, columns in `modalities` order; None = all present.
                Rows of missing modalities are zeroed before encoding and excluded from fusion.

        Returns:
            The specific, invariant and one-vs-rest features and the logits of every head.
        """
        if mask is not None:
            x = self._zero_missing(x, mask)
        specific = self.encode_specific(x)  # each (B, H)
        if mask is None:
            first = specific[self.modalities[0]]  # (B, H)
            mask = torch.ones(first.shape[0], len(self.modalities), dtype=torch.bool, device=first.device)  # (B, M)
        elif self.imputer is not None:
            # Missing s_m are filled here (RAMER); filled pairs count as present for fusion only.
            specific, mask = self.imputer(specific, mask)  # each (B, H); (B, M)
        invariant = self.encode_invariant(specific)  # each (B, H)
        ovr = {m: self.ovr[m](specific[m]) for m in self.ovr}  # each (B, (M-1)*H)
        fused = self.fuse(specific, invariant, mask)  # (B, fusion.out_dim)
        logits = {m: self.heads[m](specific[m]) for m in self.modalities}  # each (B, C)
        logits[FUSION_HEAD] = self.heads[FUSION_HEAD](fused)  # (B, C)
        return ModelOutput(specific=specific, invariant=invariant, ovr=ovr, logits=logits)

    def fuse(self, specific: Mapping[str, Tensor], invariant: Mapping[str, Tensor], mask: Tensor) -> Tensor:
        """The fusion operator's output (the fusion head's input) under the configured fusion input.

        Args:
            specific: Modality -> s_m (B, H).
            invariant: Modality -> i_m (B, H).
            mask: (B, M) bool, True = present.

        Returns:
            (B, fusion.out_dim).
        """
        if self.fusion_input == "specific":
            fusion_in = dict(specific)  # each (B, H)
        elif self.fusion_input == "invariant":
            fusion_in = dict(invariant)  # each (B, H)
        else:
            fusion_in = {m: torch.cat([specific[m], invariant[m]], dim=-1) for m in self.modalities}  # each (B, 2H)
        return self.fusion(fusion_in, mask)  # (B, fusion.out_dim)

    def _zero_missing(self, x: Mapping[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
        if mask.dim() != 2 or mask.shape[1] != len(self.modalities):
            raise ValueError(f"mask must be (B, {len(self.modalities)}), got {tuple(mask.shape)}")
        mask = mask.to(torch.bool)  # (B, M)
        out = {}
        for i, m in enumerate(self.modalities):
            xm = x[m]  # (B, D) or (B, T, D)
            keep = mask[:, i].view(-1, *([1] * (xm.dim() - 1)))  # (B, 1) or (B, 1, 1)
            # where, not multiply: a NaN in a missing row must not survive as NaN * 0.
            out[m] = torch.where(keep, xm, 0.0)  # (B, D) or (B, T, D)
        return out


def build_model(cfg: ModelConfig, dims: Mapping[str, int], n_classes: int) -> MRCCL:
    """Builds MR-CCL for data with the given modality widths.

    Args:
        cfg: The model section of the experiment config.
        dims: Modality name -> input feature width D_m (order = modality order = mask columns).
        n_classes: Number of classes C.

    Returns:
        The model, on the CPU, in train mode.

    Raises:
        ConfigError: Unknown `cfg.fusion` / `cfg.head`, or an unusable modality name.
        ValueError: No modalities, a non-positive width or class count.
    """
    return MRCCL(cfg, dims, n_classes)


def _check_dims(dims: Mapping[str, int], n_classes: int) -> None:
    if not dims:
        raise ValueError("the model needs at least one modality")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    probe = nn.ModuleDict()
    for m, d in dims.items():
        # Names become submodule keys: no dots, no clash with the fusion head or Module attributes.
        if not isinstance(m, str) or not m or "." in m or m == FUSION_HEAD or hasattr(probe, m):
            raise ConfigError(
                "modality name",
                f"a non-empty name without '.', other than {FUSION_HEAD!r} and nn.Module attributes",
                m,
                problem="unusable modality name",
            )
        if int(d) < 1:
            raise ValueError(f"modality {m!r}: feature width must be >= 1, got {d}")

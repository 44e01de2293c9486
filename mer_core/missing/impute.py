"""Imputation of missing modalities' hidden states: `missing.impute: zero | mean | retrieval`.

Where it enters the forward pass. `MRCCL.forward` zeroes a missing modality's input, runs the
specificity encoders (s_m, (B, H) per modality), and then, when an imputer is attached
(`model.imputer`), replaces s_m of every missing (sample, modality) pair by the imputed state and
marks the pair present *for the fusion operator only*. Everything downstream of s_m sees the
filled state: the invariant encoder, the one-vs-rest projections, the unimodal head of m and the
fusion head. The losses keep the data's mask, so no contrastive term ever treats an imputed state
as an observed one. Imputed states are constants (built without gradient from stored states).

- `zero`: nothing is attached; today's behaviour: s_m = encoder(0) feeds the unimodal head and
  the fusion operator masks the modality out.
- `mean`: s_m = the mean of the stored training samples' s_m.
- `retrieval` (RAMER): s_m = the mean or similarity-weighted mean of s_m of the k stored training
  samples most similar to the sample through the modalities it has (`retrieval.StateBank`);
  a sample with no modality at all gets the mean.

What is stored. The labelled training rows of the fold, with the fold's mask (train-time drops
included, so a dropped pair can never be retrieved, and validation rows are never stored), encoded
by the model's current encoders in eval mode. The trainer refreshes the store whenever the weights
change meaningfully: before fine-tuning, after each epoch (before validation), and after the best
epoch's weights are restored. Pre-training runs without an imputer: its contrastive terms use only
observed pairs, so an imputed state could not change them.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from mer_core.configs.schema import MissingConfig
from mer_core.missing.retrieval import StateBank
from mer_core.models.mrccl import MRCCL
from mer_core.registry import Registry

__all__ = ["IMPUTERS", "Imputer", "MeanImputer", "RetrievalImputer", "RowSource", "ZeroImputer", "build_imputer"]

IMPUTERS: Registry[type[Imputer]] = Registry("imputer")
_ENCODE_BATCH = 1024


class RowSource(Protocol):
    """Where stored rows come from (a `DeviceData`): features and mask of the rows `idx`."""

    def take(self, idx: Tensor) -> tuple[dict[str, Tensor], Tensor]: ...


class Imputer(abc.ABC):
    """Fills missing modalities' hidden states from stored training states.

    Args:
        cfg: the `missing` section.
        source: the fold's data (its mask includes the protocol's train-time drops).
        rows: (n,) the rows to store (the fold's labelled training rows).
    """

    def __init__(self, cfg: MissingConfig, source: RowSource, rows: np.ndarray) -> None:
        self.cfg = cfg
        self.source = source
        self.rows = np.asarray(rows, dtype=np.int64)

    def refresh(self, model: MRCCL) -> None:
        """Re-encodes the stored rows with the model's current weights and attaches self to it."""
        states, present = encode_rows(model, self.source, self.rows)  # (n, M, H), (n, M)
        self._rebuild(states, present)
        _unwrap(model).imputer = self

    @abc.abstractmethod
    def _rebuild(self, states: np.ndarray, present: np.ndarray) -> None:
        """Prepares imputation from stored states (n, M, H) and their presence (n, M)."""

    @abc.abstractmethod
    def __call__(self, specific: Mapping[str, Tensor], mask: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Fills missing s_m.

        Args:
            specific: modality -> s_m (B, H), in the model's modality order.
            mask: (B, M) bool presence.

        Returns:
            modality -> (B, H) with missing rows filled, and the (B, M) mask for the fusion
            operator (True where observed or filled).
        """


@IMPUTERS.register("zero")
class ZeroImputer(Imputer):
    """Today's behaviour: attaches nothing, so the model never calls it."""

    def refresh(self, model: MRCCL) -> None:
        _unwrap(model).imputer = None

    def _rebuild(self, states: np.ndarray, present: np.ndarray) -> None:
        return None

    def __call__(self, specific: Mapping[str, Tensor], mask: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        return dict(specific), mask


@IMPUTERS.register("mean")
class MeanImputer(Imputer):
    """s_m of a missing pair = the mean stored s_m (modalities nobody has stay missing)."""

    means: Tensor | None = None  # (M, H) on the model's device
    has_mean: Tensor | None = None  # (M,) bool

    def _rebuild(self, states: np.ndarray, present: np.ndarray) -> None:
        counts = present.sum(axis=0)  # (M,)
        sums = np.einsum("nm,nmh->mh", present.astype(np.float64), states.astype(np.float64))  # (M, H)
        self.means = torch.as_tensor(sums / np.maximum(counts, 1)[:, None], dtype=torch.float32)
        self.has_mean = torch.as_tensor(counts > 0)

    def __call__(self, specific: Mapping[str, Tensor], mask: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        assert self.means is not None and self.has_mean is not None, "refresh() before use"
        mask = mask.to(torch.bool)  # (B, M)
        fill = ~mask & self.has_mean.to(mask.device)  # (B, M)
        out = {}
        for j, (m, s) in enumerate(specific.items()):
            mean = self.means[j].to(device=s.device, dtype=s.dtype)  # (H,)
            out[m] = torch.where(fill[:, j : j + 1], mean, s)  # (B, H)
        return out, mask | fill


@IMPUTERS.register("retrieval")
class RetrievalImputer(MeanImputer):
    """RAMER: s_m of a missing pair = aggregate of the k most similar stored samples' s_m."""

    bank: StateBank | None = None

    def _rebuild(self, states: np.ndarray, present: np.ndarray) -> None:
        super()._rebuild(states, present)
        self.bank = StateBank.build(states, present)

    def __call__(self, specific: Mapping[str, Tensor], mask: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        assert self.bank is not None, "refresh() before use"
        filled, fuse_mask = super().__call__(specific, mask)  # the mean: also the fallback
        mask_np = mask.to(torch.bool).cpu().numpy()  # (B, M)
        queryable = mask_np.any(axis=1)  # (B,) samples with at least one modality to search with
        if mask_np[queryable].all():
            return filled, fuse_mask
        names = list(specific)
        stacked = torch.stack([specific[m] for m in names], dim=1).detach().float().cpu().numpy()  # (B, M, H)
        r = self.cfg.retrieval
        for j, m in enumerate(names):
            rows = np.flatnonzero(~mask_np[:, j] & queryable)
            if rows.size == 0:
                continue
            got = self.bank.fill(stacked[rows], mask_np[rows], j, k=r.k, how=r.aggregation, temperature=r.temperature)
            if got is None:
                continue
            s = filled[m]  # (B, H)
            full = torch.zeros_like(s)  # (B, H)
            sel = torch.zeros(s.shape[0], dtype=torch.bool, device=s.device)  # (B,)
            index = torch.as_tensor(rows, device=s.device)
            full[index] = torch.as_tensor(got, device=s.device, dtype=s.dtype)
            sel[index] = True
            filled[m] = torch.where(sel[:, None], full, s)  # (B, H)
        return filled, fuse_mask


@torch.no_grad()
def encode_rows(model: MRCCL, source: RowSource, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Specific states of `rows` in eval mode, without imputation: (n, M, H) float32 and (n, M) bool."""
    inner = _unwrap(model)
    was_training, attached = model.training, inner.imputer
    model.eval()
    inner.imputer = None
    states, present = [], []
    try:
        index = torch.as_tensor(rows, dtype=torch.long)
        for chunk in index.split(_ENCODE_BATCH):
            x, mask = source.take(chunk.to(_device_of(model)))
            out = model(x, mask)
            states.append(torch.stack([out.specific[m] for m in model.modalities], dim=1).float().cpu())  # (b, M, H)
            present.append(mask.to(torch.bool).cpu())  # (b, M)
    finally:
        model.train(was_training)
        inner.imputer = attached
    if not states:
        n_mod = len(model.modalities)
        return np.zeros((0, n_mod, 1), np.float32), np.zeros((0, n_mod), bool)
    return torch.cat(states).numpy(), torch.cat(present).numpy()


def build_imputer(cfg: MissingConfig, source: RowSource, rows: np.ndarray) -> Imputer:
    """The imputer `cfg.impute` names, storing `rows` of `source` (refresh it before use)."""
    return IMPUTERS.get(cfg.impute, field="missing.impute")(cfg, source, rows)


def _device_of(model: MRCCL) -> torch.device:
    return next(model.parameters()).device


def _unwrap(model: MRCCL) -> MRCCL:
    """The MRCCL inside a `torch.compile` wrapper (the attribute must be set where forward reads it)."""
    return getattr(model, "_orig_mod", model)

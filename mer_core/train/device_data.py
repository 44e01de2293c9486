"""Device placement and index batching: the whole dataset lives on the device once.

Trials index resident tensors with a batch of indices instead of running a per-sample
DataLoader, which on precomputed utterance features would dominate the step time.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from mer_core.configs.schema import RuntimeConfig
from mer_core.data.featureset import FeatureSet
from mer_core.errors import ConfigError


def resolve_device(cfg: RuntimeConfig) -> torch.device:
    """`auto` -> cuda when present, else cpu; asking for cuda without one is a config error."""
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device", "auto, cpu (no CUDA device is visible)", cfg.device, "unavailable")
    return torch.device(cfg.device)


@dataclass(frozen=True, eq=False)
class DeviceData:
    """A FeatureSet's arrays as device tensors (shared read-only by every stage and fold)."""

    features: dict[str, torch.Tensor]  # modality -> (N, D_m) float32 (float64 with runtime.precision fp64)
    mask: torch.Tensor  # (N, M) bool
    modalities: tuple[str, ...]

    @classmethod
    def from_featureset(
        cls, data: FeatureSet, device: torch.device, *, dtype: torch.dtype = torch.float32
    ) -> DeviceData:
        """`data`'s features as `dtype` tensors on `device` (`precision.storage_dtype` of the run)."""
        # torch.from_numpy shares memory with the (possibly object-store backed) float32 arrays on
        # CPU; .to(device, dtype) copies only when the device or the dtype differs.
        with warnings.catch_warnings():
            # Arrays from Ray's object store are read-only; we never write to these tensors.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return cls._from_arrays(data, device, dtype)

    @classmethod
    def _from_arrays(cls, data: FeatureSet, device: torch.device, dtype: torch.dtype) -> DeviceData:
        feats = {
            m: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device=device, dtype=dtype)
            for m, x in data.features.items()
        }  # m -> (N, D_m)
        mask = torch.from_numpy(np.ascontiguousarray(data.mask, dtype=bool)).to(device)
        return cls(features=feats, mask=mask, modalities=data.modalities)

    def take(self, idx: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Features and mask of the rows `idx` (B,)."""
        x = {m: v.index_select(0, idx) for m, v in self.features.items()}  # m -> (B, D_m)
        return x, self.mask.index_select(0, idx)  # (B, M)


def batches(
    n: int, batch_size: int, *, generator: torch.Generator | None, device: torch.device
) -> Iterator[torch.Tensor]:
    """Positions 0..n-1 in (shuffled) batches; a trailing batch of 1 joins the previous one.

    BatchNorm in the heads cannot train on a single sample, so no batch has size 1 unless n == 1.
    """
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    order = order.to(device)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else n
        yield order[start:end]

"""Small hand-made data and model for the missing-modality tests (modalities a, b, c)."""

from __future__ import annotations

import torch

from mer_core.configs import ModelConfig
from mer_core.models import MRCCL, build_model
from mer_core.train.device_data import DeviceData

MODS = ("a", "b", "c")


def small_source(n: int = 40, seed: int = 0) -> tuple[DeviceData, dict[str, int]]:
    """n random samples; modality a always present, b and c missing about 30% of the time."""
    gen = torch.Generator().manual_seed(seed)
    dims = {"a": 6, "b": 5, "c": 4}
    feats = {m: torch.randn(n, d, generator=gen) for m, d in dims.items()}
    mask = torch.rand(n, 3, generator=gen) > 0.3  # (n, M)
    mask[:, 0] = True
    return DeviceData(features=feats, mask=mask, modalities=MODS), dims


def small_model(dims: dict[str, int]) -> MRCCL:
    """A small MR-CCL (3 classes) in eval mode."""
    torch.manual_seed(0)
    small = ModelConfig(hidden_dim=8, ff_dim=16, head_hidden=(8,), nhead=2)
    return build_model(small, dims, 3).eval()

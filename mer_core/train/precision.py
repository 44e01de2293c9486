"""What `runtime.precision` means for a run: the dtype of its tensors and of its arithmetic.

- `fp32` (the default): float32 data, parameters, optimiser state, noise, losses and logits.
- `bf16`: float32 storage, the forward pass under bfloat16 autocast (half the memory traffic on a
  GPU; about 3 significant digits).
- `fp64`: float64 everywhere: the data tensors, NEE noise and its schedules, parameters and
  optimiser state, losses and logits. Two runs whose kernels round differently (a fused member
  and its single run, two CPUs, two thread counts) then agree to about 1e-12 where float32 agrees
  to about 1e-4, because rounding starts 9 orders of magnitude lower. It is for checking such
  parity (the parity tests run in it) and for runs that must repeat on other machines; it is
  about twice as slow on a CPU and far slower on most GPUs.

Both executors and the recipe ask this module, so a precision means the same thing everywhere.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["autocast_dtype", "storage_dtype", "widened"]

_STORAGE = {"fp32": torch.float32, "bf16": torch.float32, "fp64": torch.float64}
_AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp64": None}


def storage_dtype(precision: str) -> torch.dtype:
    """The dtype of the run's data tensors, parameters, optimiser state and noise."""
    return _STORAGE[precision]


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of the forward pass (None: no autocast, everything in `storage_dtype`)."""
    return _AUTOCAST[precision]


def widened(x: Tensor) -> Tensor:
    """`x` in at least float32: bf16 autocast outputs become float32, float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))

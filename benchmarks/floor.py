"""The memory-traffic floor of one training step: what a step cannot beat on a given device.

A small-batch step of MR-CCL is bound by memory traffic, not arithmetic: the weights are read
about three times (forward, the backward's input gradients, its weight gradients), the gradient
is written once, and fused Adam reads parameter, gradient and both moments and writes parameter
and moments back (7 passes). With P fp32 trainable parameters that is about 11 * 4P bytes a step
(activations at batch 32 are a rounding error beside 85 M parameters). Divided by the device's
copy bandwidth, measured in the same run, it is the floor a step's time is reported against.
"""

from __future__ import annotations

import torch

from benchmarks.common import timed

__all__ = ["PASSES", "copy_bandwidth", "step_bytes"]

# weight reads: forward 1 + backward 2; gradient write 1; Adam: read p, g, m, v + write p, m, v = 7
PASSES = 3 + 1 + 7


def step_bytes(n_params: int, *, bytes_per_param: int = 4) -> int:
    """Bytes a step moves at least: `PASSES` passes over P fp32 parameters (bf16 autocast keeps fp32 weights)."""
    return PASSES * n_params * bytes_per_param


def copy_bandwidth(device: torch.device, *, nbytes: int, repeats: int = 5) -> float:
    """Bytes per second of a device-local copy (read plus write counted), the best of `repeats`.

    Args:
        device: where to measure.
        nbytes: size of the copied buffer (large enough to leave the caches: >= 256 MiB on a GPU).
        repeats: timed copies; the fastest is the bandwidth (slower ones met other work).
    """
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)  # (n,)
    dst = torch.empty_like(src)  # (n,)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    dst.copy_(src)  # first touch and allocator warm-up
    best = min(timed(lambda: dst.copy_(src), sync=sync) for _ in range(repeats))
    return 2 * src.numel() * 4 / best

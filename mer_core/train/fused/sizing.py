"""How many members a fused population should have on this device: a short probe and a rule.

`probe_population(cfg, data)` trains one short epoch (no pre-training, no self-training) as a
single trial (K = 1, as trial mode runs it) and as populations of K = 2, 4, 8 members, and
records each K's wall time and, on CUDA, its peak memory; `choose_population(probe, ...)` then
picks the K with the lowest seconds per member among those that fit in the free GPU memory (with
a margin) and the sweep's trial count. A population of one is no population: then trials run one
per process, and on CUDA the probe's memory per trial says how many share a GPU (`gpu_fraction`).

The probe measures the epoch as the recipe runs it (steps, evaluation, early-stopping
bookkeeping), on the sweep's own data and config, so what it ranks is what the sweep will pay.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mer_core.configs import with_overrides
from mer_core.configs.schema import ExperimentConfig
from mer_core.data.featureset import FeatureSet
from mer_core.train.device_data import resolve_device
from mer_core.train.fused.executor import FusedExecutor
from mer_core.train.recipe import train_members
from mer_core.train.single import SingleExecutor

__all__ = ["PROBE_SIZES", "Choice", "Probe", "choose_population", "gpu_fraction", "probe_population"]

PROBE_SIZES = (1, 2, 4, 8)
MEMORY_MARGIN = 0.8  # share of the free GPU memory a sweep may plan to use (allocator slack, other tenants)
MAX_PER_GPU = 8  # trial processes per GPU at most (each holds its own CUDA context and data copy)
SHORT = {"optim.max_epochs": 1, "optim.pretrain_epochs": 0, "self_training.rounds": 0, "missing.eval_rates": []}


@dataclass(frozen=True)
class Probe:
    """What the probe measured: per population size, the epoch's wall seconds and peak bytes (0 on CPU)."""

    device: str
    sizes: tuple[int, ...]
    seconds: tuple[float, ...]
    peak_bytes: tuple[int, ...]
    free_bytes: int | None  # free GPU memory before the probe (None on CPU)

    def per_member(self) -> dict[int, float]:
        return {k: s / k for k, s in zip(self.sizes, self.seconds, strict=True)}

    def member_bytes(self) -> int:
        """Peak memory one more member costs (the slope from the smallest to the largest K), or 0."""
        if len(self.sizes) < 2 or not any(self.peak_bytes):
            return max(self.peak_bytes, default=0)
        return max(0, (self.peak_bytes[-1] - self.peak_bytes[0]) // (self.sizes[-1] - self.sizes[0]))


@dataclass(frozen=True)
class Choice:
    """The packing chosen: population K (1: one trial per process), GPU share per trial, and why."""

    population: int
    gpu: float
    reason: str


def probe_population(cfg: ExperimentConfig, data: FeatureSet, *, sizes: Sequence[int] = PROBE_SIZES) -> Probe:
    """Train one short epoch as a population of each size in `sizes`; time it and its peak memory.

    The first run also warms up what every later one reuses (imports, kernels, the allocator),
    so the smallest size runs twice and the second run counts.
    """
    device = resolve_device(cfg.runtime)
    cuda = device.type == "cuda"
    short = with_overrides(cfg, {**SHORT, "data.folds": 1})
    free = torch.cuda.mem_get_info(device)[0] if cuda else None
    seconds, peaks = [], []
    for i, k in enumerate([sizes[0], *sizes]):
        members = [with_overrides(short, {"seed": cfg.seed + j}) for j in range(k)]
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        # K = 1 is a single trial as trial mode runs it; larger K a fused population.
        ex = SingleExecutor.for_config(members[0], device) if k == 1 else FusedExecutor(members, device)
        train_members(members, data, ex)
        if cuda:
            torch.cuda.synchronize(device)
        if i > 0:
            seconds.append(time.perf_counter() - start)
            peaks.append(int(torch.cuda.max_memory_allocated(device)) if cuda else 0)
    return Probe(device.type, tuple(sizes), tuple(seconds), tuple(peaks), free)


def gpu_fraction(trial_bytes: int, free_bytes: int | None) -> float:
    """GPU share per trial process: 1/n with n trials fitting in the free memory (1 <= n <= MAX_PER_GPU)."""
    if free_bytes is None or trial_bytes <= 0:
        return 1.0 / MAX_PER_GPU
    n = int(MEMORY_MARGIN * free_bytes // trial_bytes)
    return 1.0 / max(1, min(MAX_PER_GPU, n))


def choose_population(probe: Probe, *, num_samples: int) -> Choice:
    """The K with the fewest seconds per member that fits in memory and in the sweep (see the module docstring)."""
    per_member = probe.per_member()
    member = probe.member_bytes()
    fits = [k for k in probe.sizes if k <= num_samples]
    if probe.free_bytes is not None and member > 0:
        fits = [k for k in fits if k * member <= MEMORY_MARGIN * probe.free_bytes] or fits[:1]
    best = min(fits or [1], key=lambda k: (per_member.get(k, math.inf), k))
    timings = ", ".join(f"K={k} {per_member[k]:.3g} s" for k in probe.sizes)
    memory = f"; {member / 2**20:.0f} MiB per member of {probe.free_bytes / 2**20:.0f} MiB free" if member else ""
    why = f"probe on {probe.device}, one short epoch, seconds per member: {timings}{memory}"
    if best > 1:
        return Choice(best, 0.0, f"{why}; fastest per member at K={best}")
    gpu = gpu_fraction(probe.peak_bytes[0], probe.free_bytes) if probe.device == "cuda" else 0.0
    return Choice(1, gpu, f"{why}; fusing does not pay here: one trial per process")

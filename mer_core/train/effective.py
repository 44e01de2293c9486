"""`effective_config`: a config with every choice left to the machine written down.

A config may leave choices to where it runs: `runtime.device: auto` (CUDA when visible),
`runtime.threads: null` (torch's current intra-op thread count, which a sweep sets to the trial's
CPU share), `data.fold_seed: null` (the folds follow `data.seed`). Results depend on all three (the
thread count changes the order of floating-point sums), so the config a run logs or exports is the
effective one: `python -m mer_core.train` given it alone, on the same machine, runs the same thing.
`runtime.precision` is never left open; `runtime.capture: auto` follows from the device.
"""

from __future__ import annotations

import dataclasses

import torch

from mer_core.configs.schema import ExperimentConfig
from mer_core.train.device_data import resolve_device

__all__ = ["effective_config", "pin_threads_and_folds"]


def effective_config(
    cfg: ExperimentConfig, *, threads: int | None = None, device: torch.device | None = None
) -> ExperimentConfig:
    """`cfg` with the device, thread count and fold seed it runs with filled in (a new config).

    Args:
        cfg: the validated config.
        threads: the thread count where `runtime.threads` is null; None: torch's current count
            (`torch.get_num_threads()`, what a run that leaves threads alone gets).
        device: the device where `runtime.device` is auto; None: what `resolve_device` picks here.

    Returns:
        A config equal to `cfg` except that `runtime.device` is cpu or cuda, `runtime.threads` a
        number and `data.fold_seed` a number. A config already explicit comes back equal.

    Raises:
        ConfigError: `runtime.device: cuda` where no CUDA device is visible.
    """
    pinned = pin_threads_and_folds(cfg, threads=threads)
    found = device or resolve_device(pinned.runtime)  # raises for cuda without a visible GPU
    if pinned.runtime.device != "auto":
        return pinned
    return dataclasses.replace(pinned, runtime=dataclasses.replace(pinned.runtime, device=found.type))


def pin_threads_and_folds(cfg: ExperimentConfig, *, threads: int | None = None) -> ExperimentConfig:
    """`cfg` with `runtime.threads` and `data.fold_seed` filled in, `runtime.device` as it is.

    What a sweep's driver knows of a trial before a worker runs it (the trial's CPU share is its
    thread count); `effective_config` adds the device. Arguments as there.
    """
    runtime, data = cfg.runtime, cfg.data
    if runtime.threads is None:
        runtime = dataclasses.replace(runtime, threads=threads if threads is not None else torch.get_num_threads())
    if data.fold_seed is None:
        data = dataclasses.replace(data, fold_seed=data.seed)
    return dataclasses.replace(cfg, runtime=runtime, data=data)

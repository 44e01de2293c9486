"""Benchmarks of mersweep: `python -m benchmarks [NAME ...] [--smoke] [--repeats N]`.

Each benchmark is a function `BenchOptions -> BenchResult` registered in `BENCHMARKS` under its
name by its own module. `MODULES` names the module of every benchmark, and `load(name)` imports
only that one: the trainer-level benchmarks (`epoch`, `gpu`) then run on a bare GPU machine that
has torch and the scientific stack but not Ray, Optuna or MLflow, which the sweep-level ones
import. A new benchmark is one module with `@BENCHMARKS.register("name")` plus one entry below.
"""

from __future__ import annotations

import importlib

from benchmarks.common import BENCHMARKS, BenchFn, BenchOptions, BenchResult, Ratio, Row
from mer_core.errors import ConfigError

__all__ = ["BENCHMARKS", "DEFAULT", "MODULES", "SHARES_RAY", "BenchOptions", "BenchResult", "Ratio", "Row", "load"]

# name -> module under benchmarks/ that registers it
MODULES: dict[str, str] = {
    "epoch": "bench_epoch",
    "fused": "bench_fused",
    "gpu": "bench_gpu",
    "memory": "bench_memory",
    "overhead": "bench_overhead",
    "scale": "bench_scale",
    "search_efficiency": "bench_search_efficiency",
    "search_mf": "bench_search_mf",
    "search_replay": "bench_search_replay",
}

# What `python -m benchmarks` runs without names: all but the GPU check, which needs a CUDA device,
# and the driver-scale benchmark, which starts a multi-node cluster of its own and runs by name.
DEFAULT: tuple[str, ...] = tuple(n for n in MODULES if n not in ("gpu", "scale"))

# Benchmarks whose smoke runs its sweeps in this process, in a Ray session already up, rather than each
# starting Ray of its own: the smoke starts one for all of them (each start and stop is seconds on 2 cores).
# Full runs start one each (`fused` runs `run_sweep.py` as a user does, start-up included).
SHARES_RAY: tuple[str, ...] = ("fused", "memory", "overhead", "search_efficiency", "search_mf")


def load(name: str) -> BenchFn:
    """The benchmark registered as `name`, importing its module (and only its module) first.

    Raises:
        ConfigError: `name` is not a benchmark; the message lists them.
    """
    if name not in MODULES:
        raise ConfigError("NAME", ", ".join(MODULES), name, problem="unknown benchmark")
    importlib.import_module(f"benchmarks.{MODULES[name]}")
    return BENCHMARKS.get(name, field="NAME")

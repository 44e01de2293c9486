"""Benchmarks of mersweep: `python -m benchmarks [NAME ...] [--smoke] [--repeats N]`.

Each benchmark is a function `BenchOptions -> BenchResult` registered in `BENCHMARKS` under its
name; importing its module registers it. A new benchmark (search_efficiency, memory, fused)
is one module with `@BENCHMARKS.register("name")` plus one import line below.
"""

from benchmarks import (
    bench_epoch,
    bench_fused,
    bench_memory,
    bench_overhead,
    bench_search_efficiency,
    bench_search_mf,
    bench_search_replay,
)
from benchmarks.common import BENCHMARKS, BenchOptions, BenchResult, Ratio, Row

__all__ = [
    "BENCHMARKS",
    "BenchOptions",
    "BenchResult",
    "Ratio",
    "Row",
    "bench_epoch",
    "bench_fused",
    "bench_memory",
    "bench_overhead",
    "bench_search_efficiency",
    "bench_search_mf",
    "bench_search_replay",
]

"""`search_replay`: every search arm replayed on recorded learning curves of real data, hundreds of seeds each.

The recorded curve benchmark (`benchmarks/curves/`, `python -m benchmarks.curves.record`) holds
whole per-epoch validation curves of MR-CCL for a fixed sample of `search_spaces/quick.yaml` on
several uci-mfeat tasks. Here each arm (a `search.algorithm` and a `scheduler` section, as a sweep
YAML names them) runs as the engine builds it: `make_sampler`'s seeded sampler inside
`TellingOptunaSearch` (the tell rule), `build_scheduler`'s scheduler; `benchmarks.curves.loop`
drives both with Tune's calls in Tune's order, and a proposed configuration's results are those of
its nearest recorded configuration. MF-Hartmann6 (`search_mf`'s function) runs through the same loop.

A sweep *reaches* the target when a trial that trained to its end reports a final value within
`TOLERANCE` of the best final value in the task's table (MF-Hartmann6: true regret <= 1.5). Cost =
trial-epochs received before that report, cut trials included; ERT = all epochs over all seeds (a
missed seed's whole budget) / seeds that reached it (`benchmarks.ert`).

The default is chosen leave-one-task-out: for each real task, the arm with the smallest worst ERT
ratio over the *other* real tasks is picked and reported on the held-out one.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.bench_search_mf import ASHA, EPOCH_BUDGET, EPOCHS, HYPERBAND, MEDIAN, TARGET_REGRET, Arm
from benchmarks.common import BENCHMARKS, BenchOptions, BenchResult
from benchmarks.curves.loop import Trace, replay
from benchmarks.curves.problems import HartmannProblem, TableProblem

log = logging.getLogger("mersweep.bench")

SEEDS = 100  # per arm and problem
SMOKE_SEEDS = 2
CONCURRENT = 2  # trials at once, as sweeps/quickstart.yaml
BUDGET_FACTOR = 3  # a table sweep's budget: 3x the epochs random search expects to need
MF = "MF-Hartmann6"
SMOKE_DATA = Path(__file__).resolve().parent / "curves" / "smoke_data"

FORECAST = {"kind": "forecast", "grace_period": 1, "margin_sd": 2.0}
NONE = {"kind": "none"}
ARMS: Mapping[str, Arm] = {
    "random, no early stopping": Arm("random", NONE),
    "QMC, no early stopping": Arm("qmc", NONE),
    "TPE, no early stopping": Arm("tpe", NONE),
    "random + ASHA": Arm("random", ASHA),
    "TPE + ASHA": Arm("tpe", ASHA),
    "TPE + ASHA, grace 3": Arm("tpe", {**ASHA, "grace_period": 3}),
    "TPE + ASHA, reduction 2": Arm("tpe", {**ASHA, "reduction_factor": 2}),
    "TPE + Hyperband": Arm("tpe", HYPERBAND),
    "BOHB-style (budget TPE + Hyperband)": Arm("bohb", HYPERBAND),
    "TPE + median": Arm("tpe", {**MEDIAN, "grace_period": 1}),
    "TPE + median, grace 3": Arm("tpe", MEDIAN),
    "random + forecast": Arm("random", FORECAST),
    "TPE + forecast": Arm("tpe", FORECAST),
    "TPE + forecast, margin 1": Arm("tpe", {**FORECAST, "margin_sd": 1.0}),
}
BASELINE = "random, no early stopping"
SMOKE_ARMS = (BASELINE, "TPE + ASHA", "TPE + forecast")


def problems(opts: BenchOptions, folder: Path | None = None) -> dict[str, Any]:
    """Problem name -> problem: every recorded task under `folder` (default: the recording; smoke: its tiny
    copy), then MF-Hartmann6."""
    from benchmarks.curves.table import load_table, recorded_tasks
    from benchmarks.curves.tasks import DATA_DIR

    folder = folder or (SMOKE_DATA if opts.smoke else DATA_DIR)
    out: dict[str, Any] = {task: TableProblem(load_table(task, folder)) for task in recorded_tasks(folder)}
    out[MF] = HartmannProblem(epochs=3 if opts.smoke else EPOCHS, target_regret=2.5 if opts.smoke else TARGET_REGRET)
    return out


def budget_of(problem: Any, *, smoke: bool) -> int:
    """Trial-epochs a sweep may spend: MF-Hartmann6 `search_mf`'s; a table 3x random search's expected need."""
    if isinstance(problem, HartmannProblem):
        return 60 if smoke else EPOCH_BUDGET
    good = max(int(problem.good.sum()), 1)
    return int(BUDGET_FACTOR * problem.epochs * problem.table.n / good)


def make_sweep(arm: str, seed: int, problem: Any) -> tuple[Any, Any]:
    """(searcher, scheduler) a sweep YAML naming `arm` gets on `problem`'s space, seeded by `seed`."""
    from mer_core.configs.fields import from_dict
    from sweeps.execution.tuner import build_scheduler
    from sweeps.space import Param, SearchSpace, load_space, make_sampler
    from sweeps.space.tell import TellingOptunaSearch
    from sweeps.spec import SchedulerConfig

    if isinstance(problem, HartmannProblem):
        from benchmarks.mf_hartmann import DIM

        space = SearchSpace(tuple(Param(f"x{i}", "float", low=0.0, high=1.0) for i in range(DIM)), source="mf")
    else:
        from benchmarks.curves.tasks import SPACE

        space = load_space(SPACE)
    spec = ARMS[arm]
    sampler = make_sampler(spec.algorithm, seed, space=space, n_startup_trials=spec.n_startup)
    searcher = TellingOptunaSearch(space=space.define_by_run, metric=problem.metric, mode=problem.mode, sampler=sampler)
    config = from_dict(SchedulerConfig, spec.scheduler, "scheduler")
    return searcher, build_scheduler(config, max_t=problem.epochs + 1, seed=seed)


_PROBLEMS: dict[str, Any] = {}  # a worker process's problems (set once by its initializer)


def _init(built: dict[str, Any]) -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", module="optuna")
    # Ray's OptunaSearch warns when define-by-run takes long: here that is the sampler itself (TPE at hundreds of
    # trials on a loaded machine), not training done in the wrong place.
    warnings.filterwarnings("ignore", message="Define-by-run function passed")
    _PROBLEMS.update(built)


def _one(job: tuple[str, str, int, int]) -> tuple[str, Trace, float]:
    name, arm, seed, budget = job
    started = time.perf_counter()
    searcher, scheduler = make_sweep(arm, seed, _PROBLEMS[name])
    trace = replay(
        _PROBLEMS[name],
        searcher=searcher,
        scheduler=scheduler,
        arm=arm,
        seed=seed,
        budget=budget,
        concurrent=CONCURRENT,
    )
    return name, trace, time.perf_counter() - started


def run_all(
    built: Mapping[str, Any], arms: Sequence[str], seeds: int, *, smoke: bool, workers: int
) -> dict[str, dict[str, list[Trace]]]:
    """problem -> arm -> traces (seed order) of every sweep; `workers` processes share the jobs."""
    jobs = [
        (name, arm, seed, budget_of(problem, smoke=smoke))
        for seed in range(seeds)
        for name, problem in built.items()
        for arm in arms
    ]
    out: dict[str, dict[str, list[Trace]]] = {name: {arm: [] for arm in arms} for name in built}
    seconds: dict[str, float] = {}
    results = []
    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=_init, initargs=(dict(built),)) as pool:
            for i, done in enumerate(pool.map(_one, jobs, chunksize=4), start=1):
                results.append(done)
                if i % 100 == 0:
                    log.info("search_replay: %d/%d sweeps", i, len(jobs))
    else:
        _init(dict(built))
        results = [_one(job) for job in jobs]
    for name, trace, took in results:
        out[name][trace.arm].append(trace)
        seconds[name] = seconds.get(name, 0.0) + took
    for name, s in seconds.items():
        log.info("search_replay: %s: %d sweeps, %.0f s of worker time", name, len(arms) * seeds, s)
    for by_arm in out.values():
        for traces in by_arm.values():
            traces.sort(key=lambda t: t.seed)
    return out


def default_arm() -> str:
    """The arm that is the engine's default search (the schema's `search` and `scheduler` defaults)."""
    from benchmarks.bench_search_mf import default_arm as matching

    label = matching(ARMS)
    if label is None:
        raise ValueError("no search_replay arm is the engine's default search")
    return label


@BENCHMARKS.register("search_replay")
def bench_search_replay(opts: BenchOptions) -> BenchResult:
    """ERT of every arm on every recorded task, >= 100 seeds each; leave-one-task-out choice of the default,
    which then runs on MF-Hartmann6 beside random search and the current default."""
    from benchmarks.curves.report import choices, result

    seeds = opts.seeds or (SMOKE_SEEDS if opts.smoke else SEEDS)
    arms = SMOKE_ARMS if opts.smoke else tuple(ARMS)
    started = time.perf_counter()
    built = problems(opts)
    real = {name: p for name, p in built.items() if name != MF}
    workers = 1 if opts.smoke else max(1, min(2, os.cpu_count() or 1))
    traces = run_all(real, arms, seeds, smoke=opts.smoke, workers=workers)
    # MF-Hartmann6 costs several times a table's sweep (its budget is 2,700 epochs; `search_mf` runs every arm
    # on it): here only what the goal is about, the chosen arms, beside random search and the current default.
    picked = choices(real, traces, baseline=BASELINE)
    mf_arms = tuple(dict.fromkeys([BASELINE, default_arm() if not opts.smoke else arms[1], *picked.values()]))
    traces.update(run_all({MF: built[MF]}, mf_arms, seeds, smoke=opts.smoke, workers=workers))
    minutes = (time.perf_counter() - started) / 60
    return result(built, traces, seeds=seeds, minutes=minutes, smoke=opts.smoke)

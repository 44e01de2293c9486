"""`overhead`: wall time of the same short trials through plain Optuna, our engine and plain Ray Tune.

(a) plain Optuna in one process: `study.optimize` calling `mer_core.train.run` (torch's default
    threads; (a1) the same with `runtime.threads=1`, the better setting for tiny models on a busy box);
(b) our engine, the `run_sweep.py` path in-process: `load_sweep` -> `prepare` -> `execute`
    (Ray + Optuna + MLflow into a temporary sqlite store), counting `ray.init` and shutdown;
(c) plain Ray Tune defaults: `Tuner` + `OptunaSearch` + default `ASHAScheduler`, default
    resources (1 CPU per trial) and no actor reuse, calling the same training function.
All three use the same tiny data, base config, search space and sampler (TPE, seed 0).
Trials overlap in (b) and (c) (two 1-CPU slots on 2 cores) and TPE proposes from different
histories there, so the configurations, not only the overhead, may differ between arms.
The smoke runs (b) and (c) in its shared Ray session, so there they count no Ray start or stop.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import BENCHMARKS, BenchOptions, BenchResult, CallTimer, Row, ratio, sqlite_store, sweep_here
from mer_core.configs import build_config, to_dict
from mer_core.data import load_data
from mer_core.data.featureset import FeatureSet
from mer_core.train import run

ROOT = Path(__file__).resolve().parents[1]
METRIC = "val/weighted_f1"
N_STARTUP = 6  # as sweeps/quickstart.yaml
SLOTS = 2  # concurrent trials in (b): one per core of the 2-core target
TINY_DATA = {
    "source": "synthetic-mer",
    "seed": 0,
    "folds": 1,
    "synthetic": {"n_labelled": 240, "n_unlabelled": 300, "dims": {"audio": 24, "text": 32, "video": 16}},
}
TINY_SET = {  # about 1 s per trial on one core: the regime where per-trial overhead shows
    "model.ff_dim": 64,
    "optim.max_epochs": 6,
    "optim.patience": 3,
    "optim.pretrain_epochs": 1,
    "self_training.oversample_to": 80,
}
SMOKE_SET = {**TINY_SET, "optim.max_epochs": 2, "self_training.rounds": 0}


@dataclass
class ArmRun:
    """One run of one arm: wall seconds, per-trial compute seconds, and named parts of the wall."""

    wall: float
    compute: list[float]
    parts: dict[str, float] = field(default_factory=dict)
    slots: int = 1  # trials that can run at once


def _sweep_yaml(folder: Path, trials: int, *, smoke: bool) -> Path:
    """The sweep every arm runs: (b) reads it as run_sweep.py would, (a) and (c) take its base config."""
    spec = {
        "name": "bench-overhead",
        "kind": "search",
        "base": str(ROOT / "mer_core/configs/mrccl.yaml"),
        "data": TINY_DATA,
        "set": SMOKE_SET if smoke else TINY_SET,
        "search_space": str(ROOT / "search_spaces/quick.yaml"),
        "search": {"algorithm": "tpe", "num_samples": trials, "seed": 0, "n_startup_trials": N_STARTUP},
        # FIFO: every trial runs to the end, as in (a); ASHA could only make (b) cheaper.
        "scheduler": {"kind": "none"},
        "metric": METRIC,
        "mode": "max",
        "resources": {"cpu": 1, "gpu": 0, "max_concurrent": SLOTS},
    }
    if smoke:
        spec["tracking"] = {"report": False}  # the smoke checks the path; the report is seconds of plotting
    path = folder / "bench-overhead.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def arm_optuna(base: Mapping[str, Any], trials: int, *, threads: int | None = None) -> ArmRun:
    """(a) plain Optuna: one process, trials one after another (`threads`: runtime.threads of every trial)."""
    import optuna
    import torch

    from sweeps.space import load_space, make_sampler

    if threads is not None:
        base = {**base, "runtime": {**base["runtime"], "threads": threads}}
    before = torch.get_num_threads()  # run() sets runtime.threads process-wide; later arms must not inherit it
    start = time.perf_counter()
    space = load_space(ROOT / "search_spaces/quick.yaml")
    data = load_data(build_config(base).data)
    compute: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        begun = time.perf_counter()
        fixed = space.define_by_run(trial) or {}
        result = run(build_config(base, {**trial.params, **fixed}), data)
        compute.append(time.perf_counter() - begun)
        return result.metrics.get(METRIC, 0.0)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = make_sampler("tpe", 0, space=space, n_startup_trials=N_STARTUP)
    try:
        optuna.create_study(direction="maximize", sampler=sampler).optimize(objective, n_trials=trials)
    finally:
        torch.set_num_threads(before)
    return ArmRun(time.perf_counter() - start, compute)


def arm_engine(folder: Path, sweep: Path, *, store_template: Path | None = None) -> ArmRun:
    """(b) our engine, exactly what `python run_sweep.py SWEEP.yaml` runs after argument parsing
    (`store_template`: its MLflow store starts as a copy of that one, see `sqlite_store`)."""
    import ray
    from ray.tune import ExperimentAnalysis

    from sweeps.tracking.tracker import SweepTracker

    shared = ray.is_initialized()  # the smoke's Ray session: neither started nor stopped here
    timer = CallTimer()
    mlflow_calls = ("__init__", "open_parent", "log_parent_artifact_text", "finish_parent", "child")
    mlflow_calls += ("queue_metrics", "flush", "finish_child")
    with timer.patch("ray.init", ray, ("init",)), timer.patch("MLflow (driver)", SweepTracker, mlflow_calls):
        start = time.perf_counter()
        uri = sqlite_store(folder / "mlflow.db", template=store_template)
        ran = sweep_here(sweep, tracking_uri=uri, runs_root=folder / "runs")
        if not shared:
            timer.seconds["ray.shutdown"] = _shutdown_seconds()
        wall = time.perf_counter() - start
    compute = ExperimentAnalysis(str(ran.folder)).dataframe()["time_total_s"].astype(float).tolist()
    return ArmRun(wall, compute, timer.seconds, slots=ran.spec.resources.max_concurrent)


def plain_trainable(config: dict[str, Any], *, data: FeatureSet, base: Mapping[str, Any]) -> None:
    """(c)'s function trainable: the sampled values as overrides, every epoch reported to Tune."""
    from ray import tune

    def report(metrics: Mapping[str, Any]) -> None:
        tune.report({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})

    run(build_config(base, dict(config)), data, report=report)


def arm_plain_tune(folder: Path, base: Mapping[str, Any], trials: int) -> ArmRun:
    """(c) plain Ray Tune with its defaults (only `verbose=0`, as (b), to keep the console quiet)."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from sweeps.space import load_space, make_sampler

    start = time.perf_counter()
    space = load_space(ROOT / "search_spaces/quick.yaml")
    data = load_data(build_config(base).data)
    shared = ray.is_initialized()  # the smoke's Ray session: neither started nor stopped here
    init = time.perf_counter()
    if not shared:
        ray.init(address="local")  # Ray's defaults otherwise, but never a cluster this machine left running
    parts = {"ray.init": time.perf_counter() - init}
    slots = int(ray.cluster_resources().get("CPU", 1))  # default: 1 CPU per trial, as many as fit
    sampler = make_sampler("tpe", 0, space=space, n_startup_trials=N_STARTUP)
    searcher = OptunaSearch(space=space.define_by_run, metric=METRIC, mode="max", sampler=sampler)
    tuner = tune.Tuner(
        tune.with_parameters(plain_trainable, data=data, base=base),
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max", search_alg=searcher, scheduler=ASHAScheduler(), num_samples=trials
        ),
        run_config=tune.RunConfig(name="plain", storage_path=str(folder / "ray"), verbose=0),
    )
    grid = tuner.fit()
    compute = [float((r.metrics or {}).get("time_total_s", 0.0)) for r in grid]
    if not shared:
        parts["ray.shutdown"] = _shutdown_seconds()
    return ArmRun(time.perf_counter() - start, compute, parts, slots=slots)


def _shutdown_seconds() -> float:
    import ray

    start = time.perf_counter()
    ray.shutdown()
    return time.perf_counter() - start


def _base(sweep: Path) -> dict[str, Any]:
    """The experiment config every arm starts from: the engine's own resolution of the sweep."""
    from sweeps.spec import load_sweep

    return to_dict(load_sweep(sweep).base_config())


LABELS = {
    "a": "(a) plain Optuna, one process (torch default threads)",
    "a1": "(a1) plain Optuna, one process, runtime.threads=1",
    "b": "(b) our engine (run_sweep path, MLflow sqlite)",
    "c": "(c) plain Ray Tune defaults (ASHA, no actor reuse)",
}


@BENCHMARKS.register("overhead")
def bench_overhead(opts: BenchOptions) -> BenchResult:
    """Wall time of N short trials: (a) Optuna, (b) our engine, (c) plain Ray Tune; same run."""
    trials = opts.trials or (1 if opts.smoke else 20)
    logging.getLogger("ray").setLevel(logging.WARNING)
    runs: dict[str, list[ArmRun]] = {key: [] for key in LABELS}
    with tempfile.TemporaryDirectory(prefix="mersweep-bench-overhead-") as tmp:
        sweep = _sweep_yaml(Path(tmp), trials, smoke=opts.smoke)
        base = _base(sweep)
        arms = {
            "a": lambda k: arm_optuna(base, trials),
            "a1": lambda k: arm_optuna(base, trials, threads=1),
            "b": lambda k: arm_engine(Path(tmp) / f"b{k}", sweep, store_template=opts.store_template),
            "c": lambda k: arm_plain_tune(Path(tmp) / f"c{k}", base, trials),
        }
        for k in range(opts.repeats):
            order = list(arms)[k % len(arms) :] + list(arms)[: k % len(arms)]  # rotate: no arm always runs first
            for key in order:
                (Path(tmp) / f"{key}{k}").mkdir()
                runs[key].append(arms[key](k))
    return _result(runs, trials, opts)


def _result(runs: dict[str, list[ArmRun]], trials: int, opts: BenchOptions) -> BenchResult:
    rows = {k: Row(LABELS[k], tuple(r.wall for r in v), "s", f"{trials} trials") for k, v in runs.items()}
    res = BenchResult("overhead", f"wall time of {trials} short trials (tiny synthetic data, quick.yaml, TPE seed 0)")
    res.rows = list(rows.values())
    res.ratios = [
        ratio(rows["b"], rows["a"], "engine_vs_optuna", "(b) wall ÷ (a) wall", goal="<= 1.0 on 2 cores"),
        ratio(rows["b"], rows["a1"], "engine_vs_optuna_1thread", "(b) wall ÷ (a1) wall"),
        ratio(rows["c"], rows["a"], "plain_tune_vs_optuna", "(c) wall ÷ (a) wall"),
    ]
    res.notes = _breakdown(runs, trials, opts)
    return res


def _breakdown(runs: dict[str, list[ArmRun]], trials: int, opts: BenchOptions) -> list[str]:
    lines = [
        "Where the wall time goes (medians over repeats). *Trial compute*: the time inside each trial (around "
        "`build_config` + `run` in (a), (a1); Ray's `time_total_s` in (b), (c)). *Overhead per trial* = (wall x "
        "slots - sum of trial compute) / trials, slots = trials that can run at once (1 in (a), (a1)): the "
        "slot-seconds per trial not spent training.",
        "",
        "| arm | wall s | sum trial compute s | mean trial s | ray.init s | ray.shutdown s | MLflow s "
        "| overhead/trial s | trials seen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, arm_runs in runs.items():
        walls = [r.wall for r in arm_runs]
        sums = [sum(r.compute) for r in arm_runs]
        per = [(r.wall * r.slots - sum(r.compute)) / max(len(r.compute), 1) for r in arm_runs]

        def part(name: str, arm_runs: list[ArmRun] = arm_runs) -> str:
            values = [r.parts[name] for r in arm_runs if name in r.parts]
            return f"{statistics.median(values):.2f}" if values else "-"

        med = statistics.median
        mean_trial = med([sum(r.compute) / max(len(r.compute), 1) for r in arm_runs])
        lines.append(
            f"| {LABELS[key]} | {med(walls):.1f} | {med(sums):.1f} | {mean_trial:.2f} | {part('ray.init')} "
            f"| {part('ray.shutdown')} | {part('MLflow (driver)')} | {med(per):.2f} | {len(arm_runs[-1].compute)} |"
        )
    lines += ["", f"Trials per arm: {trials}; repeats: {opts.repeats}; arm order rotated between repeats."]
    return lines

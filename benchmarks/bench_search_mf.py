"""`search_mf`: expected trial-epochs to a target regret on MF-Hartmann6, through the real engine path.

The real-data benchmark (`search_efficiency`) sets its target by one 500-digit validation split,
where one digit moves the F1 by 0.002: its arms differ by less than its noise. This one measures
search where the answer is known: the published multi-fidelity Hartmann6 function
(`benchmarks.mf_hartmann`), each epoch of a trial one fidelity step of a learning curve.

Every sweep runs the engine's own parts: Ray Tune (one `ray.init` for the whole benchmark,
actor reuse), our searcher (`TellingOptunaSearch` over `make_sampler`'s seeded sampler, so the
tell rule decides what Optuna learns) and our scheduler (`build_scheduler`, the code behind
`scheduler.kind`). Only the trainable differs: an instant function that reports the curve of its
configuration epoch by epoch, then a final report, as a mersweep trial does. Nothing is mocked.

A sweep *reaches* the target when a trial that trained to its end has a true (noise-free,
full-fidelity) regret f(x, 1) - f* at or below the target: what the sweep's best configuration
would then be worth. Its cost is every trial-epoch (reported epoch of any trial, cut ones
included) received before that final report, in arrival order. A sweep stops at the hit or when
it has spent the budget; ERT (expected running time, as in COCO) = epochs over all seeds (a
missed seed's whole budget) / seeds that reached the target.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import mf_hartmann
from benchmarks.common import BENCHMARKS, BenchOptions, BenchResult, Ratio, Row, ray_session
from benchmarks.ert import ert_of, ratio, ratio_interval
from benchmarks.mf_hartmann import DIM, F_STAR, curve, mf_hartmann6
from sweeps.spec.schema import STARTUP_TRIALS
from sweeps.trainable.report import FINAL_KEY

log = logging.getLogger("mersweep.bench")

METRIC = "loss"  # minimised
TRUE_KEY = "true_regret"  # in the final report only; never seen by the searcher or the scheduler
EPOCHS = 9  # fidelity steps per trial: z = 1/9 .. 1
TARGET_REGRET = 1.5  # f(x, 1) <= -1.82: random search needs ~93 full trials (1 point in 93 is that good)
EPOCH_BUDGET = 2700  # trial-epochs per sweep: 300 full trials, ~3x random search's expected cost
SEEDS = 20  # per arm: single sweeps' costs are heavy-tailed (one seed in 20 can cost 10x the median)
CONCURRENT = 2  # trials at once, as sweeps/quickstart.yaml
# Random trials before TPE models, unless an arm names another count: the engine's default for 2 trials at a time.
N_STARTUP = max(STARTUP_TRIALS, CONCURRENT)
SMOKE_EPOCHS, SMOKE_BUDGET, SMOKE_TARGET = 3, 60, 2.5


@dataclass(frozen=True)
class Arm:
    """One way to search: a `search.algorithm` and a `scheduler` section, as a sweep YAML names them."""

    algorithm: str
    scheduler: Mapping[str, Any]
    n_startup: int = N_STARTUP


# The scheduler sections the search benchmarks' arms share (search_replay, search_efficiency), so an
# arm of one name is the same search in each of them.
ASHA = {"kind": "asha", "grace_period": 1, "reduction_factor": 3}
HYPERBAND = {**ASHA, "kind": "hyperband"}  # every bracket (sweeps.execution.tuner.hyperband_brackets)
MEDIAN = {"kind": "median", "grace_period": 3}  # the default early stopping, chosen by `search_replay`
ARMS = {
    "random, no early stopping": Arm("random", {"kind": "none"}),
    "random + ASHA": Arm("random", ASHA),
    "QMC + ASHA": Arm("qmc", ASHA),
    "TPE + ASHA": Arm("tpe", ASHA),
    "TPE + Hyperband": Arm("tpe", HYPERBAND),
    "BOHB-style (budget TPE + Hyperband)": Arm("bohb", HYPERBAND),
    "TPE + ASHA, grace 3": Arm("tpe", {**ASHA, "grace_period": 3}),
    "TPE + ASHA, reduction 2": Arm("tpe", {**ASHA, "reduction_factor": 2}),
    "TPE + ASHA, 10 start-up trials": Arm("tpe", ASHA, n_startup=10),
    "TPE + ASHA, 20 start-up trials": Arm("tpe", ASHA, n_startup=20),
    "TPE + median, grace 3": Arm("tpe", MEDIAN),
}
BASELINE = "random, no early stopping"
SMOKE_ARMS = (BASELINE, "TPE + ASHA", "BOHB-style (budget TPE + Hyperband)")


@dataclass
class Trace:
    """What one sweep did, in the order the driver received its results."""

    arm: str
    seed: int
    target: float
    budget: int
    epochs: int = 0  # trial-epochs received so far
    hit_at: float = math.inf  # epochs spent when a finished trial first reached the target
    trials: dict[str, list[Any]] = field(default_factory=dict)  # trial id -> [regret, epochs, finished]
    seconds: float = 0.0  # wall time from its first proposal to its end

    def record(self, trial_id: str, result: Mapping[str, Any]) -> None:
        if self.done:
            return  # results of trials still in flight when the sweep ended count for nothing
        info = self.trials.setdefault(trial_id, [_regret(result["config"]), 0, False])
        if result.get(FINAL_KEY):
            info[2] = True
            if result[TRUE_KEY] <= self.target:
                self.hit_at = float(self.epochs)
        else:
            info[1] += 1
            self.epochs += 1

    @property
    def done(self) -> bool:
        return math.isfinite(self.hit_at) or self.epochs >= self.budget


def _regret(config: Mapping[str, Any]) -> float:
    return float(mf_hartmann6(np.array([config[f"x{i}"] for i in range(DIM)]))) - F_STAR


def _trial(config: dict[str, Any], *, epochs: int) -> None:
    """The trainable: the configuration's learning curve, one report per epoch, then the final report."""
    from ray import tune

    x = np.array([config[f"x{i}"] for i in range(DIM)])
    observed = curve(x, epochs=epochs, seed=config[SEED_KEY])
    for value in observed:
        tune.report({METRIC: float(value)})
    final = {METRIC: float(observed[-1]), FINAL_KEY: 1, "status": "ok", TRUE_KEY: _regret(config)}
    tune.report(final)


SWEEP_KEY, SEED_KEY = "bench.sweep", "bench.seed"  # which queued sweep a trial belongs to, and its seed


@dataclass
class Sweep:
    """One arm at one seed: the engine's searcher and scheduler for it, and what it did."""

    searcher: Any
    scheduler: Any
    trace: Trace


def make_sweep(arm: str, seed: int, *, epochs: int, budget: int, target: float) -> Sweep:
    """The searcher and scheduler a sweep YAML naming `arm` would get, seeded by `seed`."""
    from mer_core.configs.fields import from_dict
    from sweeps.execution.tuner import build_scheduler
    from sweeps.space import Param, SearchSpace, make_sampler
    from sweeps.space.tell import TellingOptunaSearch
    from sweeps.spec import SchedulerConfig

    spec = ARMS[arm]
    space = SearchSpace(tuple(Param(f"x{i}", "float", low=0.0, high=1.0) for i in range(DIM)), source="mf-hartmann6")
    sampler = make_sampler(spec.algorithm, seed, space=space, n_startup_trials=spec.n_startup)
    searcher = TellingOptunaSearch(space=space.define_by_run, metric=METRIC, mode="min", sampler=sampler)
    scheduler = build_scheduler(from_dict(SchedulerConfig, spec.scheduler, "scheduler"), max_t=epochs + 1, seed=seed)
    return Sweep(searcher, scheduler, Trace(arm, seed, target, budget))


def run_queue(sweeps: Sequence[Sweep], *, folder: Path, epochs: int) -> None:
    """Run `sweeps` one after another in one Tune run, each with its own searcher and scheduler.

    One `Tuner.fit` for the whole benchmark: a fit per sweep would start (and import into) fresh
    worker actors every time, ~20 s per sweep on 2 loaded cores against ~2 s of trials. The queue
    only routes: sweep k's trials are proposed by sweep k's searcher, judged by sweep k's scheduler
    and told to sweep k's searcher; a sweep ends at its hit or budget, and the next one starts.
    """
    from ray import tune
    from ray.tune import Callback
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler
    from ray.tune.search import Searcher

    owner: dict[str, int] = {}
    clock = time.perf_counter

    class QueueSearcher(Searcher):
        def __init__(self) -> None:
            super().__init__(metric=METRIC, mode="min")
            self.k = 0
            self.started = clock()

        def suggest(self, trial_id: str) -> dict | None:
            while self.k < len(sweeps) and sweeps[self.k].trace.done:
                trace = sweeps[self.k].trace
                trace.seconds = clock() - self.started
                log.info(
                    "search_mf %d/%d: %s seed %d: %s after %d trial-epochs (%.1f s)",
                    self.k + 1,
                    len(sweeps),
                    trace.arm,
                    trace.seed,
                    "hit" if math.isfinite(trace.hit_at) else "missed",
                    trace.epochs,
                    trace.seconds,
                )
                self.k, self.started = self.k + 1, clock()
            if self.k == len(sweeps):
                return Searcher.FINISHED
            sweep = sweeps[self.k]
            config = sweep.searcher.suggest(trial_id)
            owner[trial_id] = self.k
            return {**config, SWEEP_KEY: self.k, SEED_KEY: sweep.trace.seed}

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            sweeps[owner[trial_id]].searcher.on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            sweeps[owner[trial_id]].searcher.on_trial_complete(trial_id, result, error)

    class QueueScheduler(FIFOScheduler):
        def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
            return all(s.scheduler.set_search_properties(metric, mode, **spec) for s in sweeps)

        def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
            sweeps[owner[trial.trial_id]].scheduler.on_trial_add(tune_controller, trial)

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            sweep = sweeps[owner[trial.trial_id]]
            if sweep.trace.done:
                return TrialScheduler.STOP
            return sweep.scheduler.on_trial_result(tune_controller, trial, result)

        def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
            sweeps[owner[trial.trial_id]].scheduler.on_trial_complete(tune_controller, trial, result)

        def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
            sweeps[owner[trial.trial_id]].scheduler.on_trial_error(tune_controller, trial)

        def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
            sweeps[owner[trial.trial_id]].scheduler.on_trial_remove(tune_controller, trial)

    class Record(Callback):
        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            sweeps[result["config"][SWEEP_KEY]].trace.record(trial.trial_id, result)

    searcher = QueueSearcher()
    tuner = tune.Tuner(
        tune.with_parameters(_trial, epochs=epochs),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="min",
            search_alg=searcher,
            scheduler=QueueScheduler(),
            num_samples=sum(s.trace.budget for s in sweeps),  # every trial reports an epoch: never the limit
            max_concurrent_trials=CONCURRENT,
            reuse_actors=True,
            trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=tune.RunConfig(name="search_mf", storage_path=str(folder), callbacks=[Record()], verbose=0),
    )
    tuner.fit()
    if searcher.k < len(sweeps):
        sweeps[searcher.k].trace.seconds = clock() - searcher.started


@contextlib.contextmanager
def _light_trials() -> Iterator[None]:
    """Per-trial costs that instant trials cannot hide, removed.

    - Tune's per-trial JSON/CSV/TensorBoard files (instant trials would spend their time writing
      them; the results come back through the `Record` callback instead, so silence the analysis
      that looks for those files at the end).
    - The import of the `benchmarks` package in the workers (it imports torch: ~10 s on 2 loaded
      cores): the trainable and the function travel by value.
    """
    import sys

    import cloudpickle

    old = os.environ.get("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    analysis = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = analysis.level
    analysis.setLevel(logging.CRITICAL)
    modules = (mf_hartmann, sys.modules[__name__])
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)
        analysis.setLevel(level)
        if old is None:
            os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
        else:
            os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = old


@BENCHMARKS.register("search_mf")
def bench_search_mf(opts: BenchOptions) -> BenchResult:
    """ERT to a target regret on MF-Hartmann6 for every arm, >= 20 seeds each, through Ray Tune."""
    seeds = opts.seeds or (1 if opts.smoke else SEEDS)
    epochs, budget, target = (
        (SMOKE_EPOCHS, SMOKE_BUDGET, SMOKE_TARGET) if opts.smoke else (EPOCHS, EPOCH_BUDGET, TARGET_REGRET)
    )
    arms = SMOKE_ARMS if opts.smoke else tuple(ARMS)
    logging.getLogger("ray").setLevel(logging.WARNING)
    started = time.perf_counter()
    order = [(arm, seed) for seed in range(seeds) for arm in arms[seed % len(arms) :] + arms[: seed % len(arms)]]
    sweeps = [make_sweep(arm, seed, epochs=epochs, budget=budget, target=target) for arm, seed in order]
    session = ray_session(num_cpus=CONCURRENT, include_dashboard=False, log_to_driver=False, configure_logging=False)
    with tempfile.TemporaryDirectory(prefix="mersweep-bench-mf-") as tmp, _light_trials(), session:
        run_queue(sweeps, folder=Path(tmp), epochs=epochs)
    minutes = (time.perf_counter() - started) / 60
    traces = [s.trace for s in sweeps]
    return _result(traces, arms=arms, seeds=seeds, epochs=epochs, budget=budget, target=target, minutes=minutes)


def ert(traces: Sequence[Trace]) -> float:
    """Expected trial-epochs to the target over sweeps that stop at their hit (`benchmarks.ert`)."""
    return ert_of(seeds_of(traces))


def seeds_of(traces: Sequence[Trace]) -> list[tuple[float, float]]:
    """(epochs to the target, epochs spent) per seed, as `benchmarks.ert` takes them."""
    return [(t.hit_at, float(t.epochs)) for t in traces]


def _result(
    traces: list[Trace],
    *,
    arms: Sequence[str],
    seeds: int,
    epochs: int,
    budget: int,
    target: float,
    minutes: float,
) -> BenchResult:
    by_arm = {arm: [t for t in traces if t.arm == arm] for arm in arms}
    res = BenchResult(
        "search_mf",
        f"expected trial-epochs to regret <= {target} on MF-Hartmann6 ({epochs} epochs per trial, "
        f"{seeds} seeds per arm, Ray Tune + TellingOptunaSearch + our schedulers)",
    )
    erts = {arm: ert(ts) for arm, ts in by_arm.items()}
    for arm, ts in by_arm.items():
        reached = sum(math.isfinite(t.hit_at) for t in ts)
        res.rows.append(
            Row(f"{arm}: epochs to target", tuple(t.hit_at for t in ts), "epochs", f"reached {reached}/{len(ts)}")
        )
    for arm in arms:
        res.rows.append(Row(f"{arm}: ERT", (erts[arm],), "epochs"))
    for arm in arms:
        if arm == BASELINE:
            continue
        lo, hi = ratio_interval(seeds_of(by_arm[arm]), seeds_of(by_arm[BASELINE]))
        value = ratio(erts[arm], erts[BASELINE])
        goal = "<= 0.30x (the default search)" if arm == default_arm() else ""
        res.ratios.append(
            Ratio(
                f"{_key(arm)}_ert_vs_random",
                value,
                f"ERT of {arm} ÷ ERT of random search without early stopping (90% bootstrap interval over seeds "
                f"{lo:.2f} .. {hi:.2f})",
                goal=goal,
            )
        )
    res.notes = _notes(by_arm, epochs=epochs, budget=budget, target=target, minutes=minutes)
    return res


def default_arm(arms: Mapping[str, Arm] = ARMS) -> str | None:
    """The label in `arms` of the engine's default search (SearchConfig's and SchedulerConfig's defaults at
    CONCURRENT trials at a time), if one of them is."""
    from mer_core.configs.fields import from_dict
    from sweeps.spec import SchedulerConfig, SearchConfig
    from sweeps.spec.schema import STARTUP_TRIALS

    search, scheduler = SearchConfig(), SchedulerConfig()
    startup = search.n_startup_trials if search.n_startup_trials is not None else max(STARTUP_TRIALS, CONCURRENT)
    for label, arm in arms.items():
        same_search = arm.algorithm == search.algorithm and arm.n_startup == startup
        if same_search and from_dict(SchedulerConfig, arm.scheduler, "scheduler") == scheduler:
            return label
    return None


def _key(arm: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", arm.lower()).strip("_")


def profile(traces: Sequence[Trace], target: float) -> dict[str, float]:
    """Where an arm's epochs went: medians over seeds of per-sweep shares."""

    def share(t: Trace, pick) -> float:
        chosen = [info for info in t.trials.values() if pick(info)]
        return sum(info[1] for info in chosen) / max(t.epochs, 1)

    good = [sum(info[0] <= target for info in t.trials.values()) / max(len(t.trials), 1) for t in traces]
    cut = [
        sum(not info[2] for info in t.trials.values() if info[0] <= target)
        / max(sum(info[0] <= target for info in t.trials.values()), 1)
        for t in traces
    ]
    return {
        "trials": statistics.median(len(t.trials) for t in traces),
        "epochs per trial": statistics.median(t.epochs / max(len(t.trials), 1) for t in traces),
        "proposals at or below target": statistics.median(good),
        "of those, cut before their end": statistics.median(cut),
        "epochs on cut trials": statistics.median(share(t, lambda i: not i[2]) for t in traces),
    }


def _notes(
    by_arm: Mapping[str, list[Trace]],
    *,
    epochs: int,
    budget: int,
    target: float,
    minutes: float,
) -> list[str]:
    lines = [
        "| arm | trials (median) | epochs per trial | proposals with regret <= target | of those cut | "
        "epochs on cut trials | wall s per sweep (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, ts in by_arm.items():
        p = profile(ts, target)
        lines.append(
            f"| {arm} | {p['trials']:.0f} | {p['epochs per trial']:.2f} | {p['proposals at or below target']:.1%} | "
            f"{p['of those, cut before their end']:.0%} | {p['epochs on cut trials']:.0%} | "
            f"{statistics.median(t.seconds for t in ts):.1f} |"
        )
    paragraphs = [
        f"Function: MF-Hartmann6 (Kandasamy et al. 2017; mfhpo-benchmark-api's `MFHartmann(dim=6)`, "
        f"`benchmarks/mf_hartmann.py`): bias 0.1, observation noise variance 0.05, f* = {F_STAR}. A trial reports "
        f"f(x, t/{epochs}) + noise after each epoch t = 1..{epochs}, then a final report; ASHA's and Hyperband's "
        f"top rung is the longest trial ({epochs + 1} results), as in a sweep. Target: a trial that trained to its "
        f"end with true regret f(x, 1) - f* <= {target} (a random point is that good with probability ~1/93). "
        f"Budget {budget} trial-epochs per sweep; a sweep stops at its first hit. {CONCURRENT} trials at a time, "
        f"sampler seeds 0..S-1 (the same seed also seeds the noise and Hyperband's bracket draws), arm order "
        f"rotated per seed. {sum(len(ts) for ts in by_arm.values())} sweeps took {minutes:.1f} minutes.",
        f"Arms: TPE = the engine's TPE (multivariate, grouped, constant liar, {N_STARTUP} start-up trials unless "
        "named); BOHB-style = `search.algorithm: bohb` (TPE fitted at the largest epoch enough trials reached, "
        "`sweeps/space/budget_tpe.py`) with `scheduler.kind: hyperband`; ASHA and Hyperband: grace 1, reduction 3 "
        "unless named; Hyperband with every bracket (s = 0..3; bracket s first cuts at 3^s epochs); median: Ray's "
        "median stopping rule (a trial's best below the median of the others' running means stops, once 3 others "
        "got that far).",
        "Profile (medians over seeds): how many trials each arm started, how many of its proposals were within "
        "the target (the searcher's part), how many of those the scheduler cut before their end (the scheduler's "
        "part: a cut good trial cannot be the hit), and the share of epochs spent on trials that were cut.",
    ]
    ranked = sorted(by_arm, key=lambda arm: ert(by_arm[arm]))
    paragraphs.append(
        "Ranking by ERT (lowest first): "
        + "; ".join(f"{arm} {ert(by_arm[arm]):.0f}" for arm in ranked)
        + f". The default search (the schema's defaults): {default_arm() or 'none of these arms'}."
    )
    out: list[str] = []
    for p in paragraphs:
        out += ["", p]
    return [*out[1:], "", *lines]

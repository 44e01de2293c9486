"""`search_efficiency`: trial-epochs a sweep spends before it first finds a near-best configuration.

Six arms, each a real sweep through our engine (`load_sweep` -> `prepare` -> `execute`, the
`run_sweep.py` path: Ray Tune, Optuna, ASHA/Hyperband/median stopping, MLflow), repeated over sampler
seeds: TPE + median stopping (the default search, chosen by `search_replay` on recorded curves; this
is its spot check on live sweeps), TPE + ASHA, TPE + Hyperband, BOHB-style (`bohb` + Hyperband), QMC
(scrambled Sobol) + ASHA, and random search without early stopping. Its target is set by one
500-digit validation split, so `search_mf` (`bench_search_mf.py`) measures the same arms where the
optimum is known.

The cost unit is one *trial-epoch*: one reported fine-tuning epoch of one trial. A sweep has
"found" a value when a trial that trained to its end reports it as its final metric (what
`best_config.yaml` would be made of at that moment); ASHA-pruned trials find nothing but their
epochs count. Results are ordered by the driver's clock when Ray handed them over: the MLflow
child runs the engine logs carry that timestamp (ms) per step, so trials running side by side
are counted in the order their epochs ended. Epoch counts do not depend on the machine's speed
or load; which trial ends first among concurrent ones can.

The target is the best final value of any trial of any arm and seed of this run, minus 0.005
(half an F1 point): the best *known* value, not the true optimum of the space.
"""

from __future__ import annotations

import logging
import math
import statistics
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from benchmarks.bench_search_mf import ASHA, HYPERBAND, MEDIAN, bench_search_mf
from benchmarks.bench_search_mf import SEEDS as MF_SEEDS
from benchmarks.common import BENCHMARKS, BenchOptions, BenchResult, Ratio, Row, ray_session, sqlite_store, sweep_here
from benchmarks.ert import ert_of, ratio, ratio_interval

ROOT = Path(__file__).resolve().parents[1]
METRIC = "val/weighted_f1"
TOLERANCE = 0.005  # half an F1 point
LOOSE = 0.01  # a second reading: a single 500-sample validation split is noisy at the 0.005 scale
ENDED = ("ok", "diverged", "invalid")  # statuses whose last result is a final report (not pruned, not errored)

# Real data that ships with the install (sweeps/quickstart.yaml's source), made cheaper and more
# discriminating: three of the six views (Fourier, Zernike, morphological; with all six nearly
# every configuration scores ~0.98 and the search has nothing to find), half the digits labelled
# and no unlabelled pool, half of the labelled ones for validation (500 samples: one sample moves
# the weighted F1 by ~0.002, so a 0.005 tolerance is not below the metric's resolution).
DATA = {
    "source": "uci-mfeat",
    "seed": 0,
    "folds": 1,
    "labelled_fraction": 0.5,
    "val_fraction": 0.5,
    "max_unlabelled": 0,
    "uci": {"views": ["fou", "zer", "mor"]},
}
# Every trial-epoch is the same unit of work: no contrastive pre-training and no self-training
# rounds (their epochs would cost differently from fine-tuning epochs); a smaller feed-forward.
SET = {
    "optim.batch_size": 64,
    "model.ff_dim": 128,
    "optim.max_epochs": 15,
    "optim.patience": 4,
    "optim.pretrain_epochs": 0,
    "self_training.rounds": 0,
}
SMOKE_DATA = {
    "source": "synthetic-mer",
    "seed": 0,
    "folds": 1,
    "synthetic": {"n_labelled": 240, "n_unlabelled": 0, "dims": {"audio": 24, "text": 32, "video": 16}},
}
SMOKE_SET = {**SET, "model.ff_dim": 64, "optim.max_epochs": 2, "optim.patience": 2}
# label -> (algorithm, scheduler, trials as a multiple of `trials`). ASHA spends about half the
# epochs per trial of a full trial here, so ASHA arms get twice the trials: every arm then spends
# about the same trial-epochs, and "not reached in budget" means the same budget for all (the
# median rule from the 3rd epoch cut about a tenth of the epochs on recorded curves: one share).
ARMS = {
    "TPE + median, grace 3": ("tpe", MEDIAN, 1),
    "TPE + ASHA": ("tpe", ASHA, 2),
    "TPE + Hyperband": ("tpe", HYPERBAND, 2),
    "BOHB-style (budget TPE + Hyperband)": ("bohb", HYPERBAND, 2),
    "QMC + ASHA": ("qmc", ASHA, 2),
    "random, no early stopping": ("random", {"kind": "none"}, 1),
}
KEYS = {
    "TPE + median, grace 3": "tpe_median",
    "TPE + Hyperband": "tpe_hyperband",
    "BOHB-style (budget TPE + Hyperband)": "bohb",
}  # ratio names; else the first word
BASELINE = "random, no early stopping"
SMOKE_ARMS = ("TPE + ASHA", BASELINE)  # the smoke run checks the path, not the comparison


def default_arm() -> str | None:
    """The arm that is the engine's default search (the schema's `search.algorithm` and `scheduler`), if one is."""
    from mer_core.configs.fields import from_dict
    from sweeps.spec import SchedulerConfig, SearchConfig

    for label, (algorithm, scheduler, _) in ARMS.items():  # every arm leaves start-up trials at the default
        if algorithm == SearchConfig().algorithm and from_dict(SchedulerConfig, scheduler, "sch") == SchedulerConfig():
            return label
    return None


@dataclass(frozen=True)
class Event:
    """One result of one trial as the driver received it."""

    ms: int  # driver clock when the result arrived
    trial: str
    step: int
    value: float
    final: bool  # the trial's final report (its value is what the sweep found), not an epoch


@dataclass(frozen=True)
class SweepRun:
    """One arm at one sampler seed: its results in arrival order."""

    arm: str
    seed: int
    events: tuple[Event, ...]

    @property
    def epochs(self) -> int:
        """Trial-epochs the whole sweep spent."""
        return sum(not e.final for e in self.events)

    @property
    def best(self) -> float:
        """Best final value the sweep found (-inf if no trial ended)."""
        return max((e.value for e in self.events if e.final), default=-math.inf)


def epochs_to_target(events: Iterable[Event], target: float) -> float:
    """Trial-epochs spent (all trials, in arrival order) when a final value first reaches `target`; inf if never.

    At equal timestamps epochs count before final reports: ties cost the arm, never favour it.
    """
    spent = 0
    for e in sorted(events, key=lambda e: (e.ms, e.final, e.trial, e.step)):
        if not e.final:
            spent += 1
        elif e.value >= target:
            return float(spent)
    return math.inf


def _sweep_yaml(
    folder: Path, *, name: str, algorithm: str, scheduler: Mapping[str, Any], seed: int, trials: int, smoke: bool
) -> Path:
    spec = {
        "name": name,
        "kind": "search",
        "base": str(ROOT / "mer_core/configs/mrccl.yaml"),
        "data": SMOKE_DATA if smoke else DATA,
        "set": SMOKE_SET if smoke else SET,
        "search_space": str(ROOT / "search_spaces/quick.yaml"),
        "search": {"algorithm": algorithm, "num_samples": trials, "seed": seed},  # start-up trials: the default
        "scheduler": {**scheduler, "grace_period": 1} if smoke and scheduler["kind"] != "none" else dict(scheduler),
        "metric": METRIC,
        "mode": "max",
        "resources": {"cpu": 1, "gpu": 0, "max_concurrent": 2},
    }
    if smoke:
        spec["tracking"] = {"report": False}  # the smoke checks the path; the report is seconds of plotting
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_arm(folder: Path, *, arm: str, seed: int, trials: int, smoke: bool, tracking_uri: str) -> SweepRun:
    """One sweep exactly as `python run_sweep.py` runs it (Ray stays up between sweeps); its events from MLflow."""
    from sweeps.resume.state import read_state

    algorithm, scheduler, factor = ARMS[arm]
    name = f"bench-se-{algorithm}-{scheduler['kind']}-s{seed}"  # unique per arm: (algorithm, kind) pairs differ
    path = _sweep_yaml(
        folder, name=name, algorithm=algorithm, scheduler=scheduler, seed=seed, trials=trials * factor, smoke=smoke
    )
    ran = sweep_here(path, tracking_uri=tracking_uri, runs_root=folder / "runs")
    parent = read_state(ran.folder).parent_run_id
    return SweepRun(arm, seed, tuple(_events(tracking_uri, ran.spec.experiment_name(), parent)))


def _events(uri: str, experiment: str, parent: str) -> list[Event]:
    """Every result of every trial of the sweep, from its MLflow child runs."""
    from mlflow import MlflowClient

    from sweeps.tracking.names import PARENT_TAG, STATUS_TAG, TRIAL_TAG

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'", max_results=5000)
    events = []
    for run in runs:
        history = sorted(client.get_metric_history(run.info.run_id, METRIC), key=lambda m: m.step)
        ended = run.data.tags.get(STATUS_TAG) in ENDED
        trial = run.data.tags.get(TRIAL_TAG, run.info.run_id)
        for i, m in enumerate(history):
            events.append(Event(m.timestamp, trial, m.step, m.value, final=ended and i == len(history) - 1))
    return events


@BENCHMARKS.register("search_efficiency")
def bench_search_efficiency(opts: BenchOptions) -> Iterator[BenchResult]:
    """Both search benchmarks: MF-Hartmann6 (`search_mf`, minutes) first, then the real-data sweeps.

    `--seeds` is the real-data benchmark's seed count; MF-Hartmann6 keeps at least its own default (20 seeds),
    which its heavy-tailed costs need.
    """
    mf_seeds = opts.seeds if opts.smoke or opts.seeds is None else max(opts.seeds, MF_SEEDS)
    yield bench_search_mf(replace(opts, seeds=mf_seeds))
    yield bench_search_real(opts)


def bench_search_real(opts: BenchOptions) -> BenchResult:
    """Trial-epochs to within 0.005 weighted F1 of the best known value, per arm, on the bundled real data."""
    trials = opts.trials or (1 if opts.smoke else 24)
    seeds = opts.seeds or (1 if opts.smoke else 5)
    names = SMOKE_ARMS if opts.smoke else tuple(ARMS)  # arm order rotated per seed below
    logging.getLogger("ray").setLevel(logging.WARNING)
    started = time.perf_counter()
    runs: list[SweepRun] = []
    with tempfile.TemporaryDirectory(prefix="mersweep-bench-search-") as tmp:
        uri = sqlite_store(Path(tmp) / "mlflow.db", template=opts.store_template)
        with ray_session(start=False):  # the first sweep's engine starts Ray; the rest run in it
            for seed in range(seeds):
                arms = [a for a in list(ARMS)[seed % len(ARMS) :] + list(ARMS)[: seed % len(ARMS)] if a in names]
                runs += [
                    run_arm(Path(tmp), arm=a, seed=seed, trials=trials, smoke=opts.smoke, tracking_uri=uri)
                    for a in arms
                ]
    return _result(runs, trials=trials, seeds=seeds, smoke=opts.smoke, minutes=(time.perf_counter() - started) / 60)


def _result(runs: list[SweepRun], *, trials: int, seeds: int, smoke: bool, minutes: float) -> BenchResult:
    best = max(r.best for r in runs)
    arms = [arm for arm in ARMS if any(r.arm == arm for r in runs)]
    by_arm = {arm: [r for r in runs if r.arm == arm] for arm in arms}
    res = BenchResult(
        "search_efficiency",
        f"trial-epochs to within {TOLERANCE} weighted F1 of the best known value "
        f"({'tiny synthetic data' if smoke else 'uci-mfeat'}, quick.yaml, {seeds} sampler seeds per arm)",
    )
    for tol, suffix in ((TOLERANCE, ""), (LOOSE, "_loose")):
        to_target = {arm: tuple(epochs_to_target(r.events, best - tol) for r in rs) for arm, rs in by_arm.items()}
        for arm, values in to_target.items():
            reached = f"reached {sum(math.isfinite(v) for v in values)}/{len(values)} in {trials * ARMS[arm][2]} trials"
            res.rows.append(Row(f"{arm}: epochs to within {tol}", values, "epochs", reached))
        seeds_of = {
            arm: [(t, float(r.epochs)) for t, r in zip(to_target[arm], rs, strict=True)] for arm, rs in by_arm.items()
        }
        for arm in arms:
            res.rows.append(Row(f"{arm}: expected epochs (ERT) to within {tol}", (ert_of(seeds_of[arm]),), "epochs"))
        for arm in arms:
            if arm != BASELINE:
                res.ratios.append(_ert_ratio(f"{_key(arm)}_ert_vs_random{suffix}", arm, seeds_of, tol))
                res.ratios.append(_median_ratio(f"{_key(arm)}_vs_random{suffix}", to_target[arm], to_target, arm, tol))
    for arm, rs in by_arm.items():
        res.rows.append(Row(f"{arm}: epochs spent (whole budget)", tuple(float(r.epochs) for r in rs), "epochs"))
        res.rows.append(Row(f"{arm}: best final F1 in budget", tuple(r.best for r in rs), "F1"))
    spent = {arm: statistics.median(r.epochs for r in rs) for arm, rs in by_arm.items()}
    for arm in arms:
        if arm != BASELINE:
            meaning = f"median epochs {arm} spent on its whole budget ({ARMS[arm][2]}x the trials) ÷ random's"
            res.ratios.append(Ratio(f"{_key(arm)}_budget_vs_random", spent[arm] / max(spent[BASELINE], 1.0), meaning))
    res.notes = _notes(runs, best=best, trials=trials, smoke=smoke, minutes=minutes)
    return res


def _key(arm: str) -> str:
    return KEYS.get(arm) or arm.split(" ", 1)[0].lower()


def _median_ratio(
    name: str, num: tuple[float, ...], to_target: Mapping[str, tuple[float, ...]], arm: str, tol: float
) -> Ratio:
    """Median epochs-to-target of `arm` ÷ random's; seeds that never reached the target count as infinite."""
    return Ratio(
        name,
        ratio(statistics.median(num), statistics.median(to_target[BASELINE])),
        f"median trial-epochs to within {tol} of the best known, {arm} ÷ random without early stopping "
        f"(< 1: {arm} needs fewer; "
        "inf: its median seed never reached the target; nan: neither median did)",
    )


def _ert_ratio(name: str, arm: str, seeds: Mapping[str, list[tuple[float, float]]], tol: float) -> Ratio:
    """ERT of `arm` ÷ random's, with a bootstrap interval over seeds; the goal sits on the default search."""
    lo, hi = ratio_interval(seeds[arm], seeds[BASELINE])
    return Ratio(
        name,
        ratio(ert_of(seeds[arm]), ert_of(seeds[BASELINE])),
        f"expected trial-epochs (ERT: epochs over all seeds, failed seeds' whole budgets included, ÷ seeds that "
        f"reached it) to within {tol} of the best known, {arm} ÷ random (< 1: {arm} needs fewer; 0: only {arm} "
        f"reached it; nan: no seed of either did); 90% bootstrap interval over seeds {lo:.2f} .. {hi:.2f}",
        goal="<= 0.30x (the default search)" if arm == default_arm() and tol == TOLERANCE else "",
    )


def profile(runs: list[SweepRun], target: float) -> dict[str, float]:
    """Where an arm's epochs went (medians over seeds): trials, cuts, and how many finished trials were good."""

    def per_trial(run: SweepRun) -> dict[str, tuple[int, float | None]]:
        trials: dict[str, tuple[int, float | None]] = {}
        for e in run.events:
            epochs, final = trials.get(e.trial, (0, None))
            trials[e.trial] = (epochs, e.value) if e.final else (epochs + 1, final)
        return trials

    shares: dict[str, list[float]] = {k: [] for k in ("trials", "epochs", "cut", "cut_epochs", "good")}
    for run in runs:
        trials = per_trial(run)
        finished = [v for _, v in trials.values() if v is not None]
        shares["trials"].append(len(trials))
        shares["epochs"].append(run.epochs / max(len(trials), 1))
        shares["cut"].append(sum(v is None for _, v in trials.values()) / max(len(trials), 1))
        shares["cut_epochs"].append(sum(n for n, v in trials.values() if v is None) / max(run.epochs, 1))
        shares["good"].append(sum(v >= target for v in finished) / max(len(finished), 1))
    return {k: statistics.median(v) for k, v in shares.items()}


def early_vs_final(
    runs: list[SweepRun], target: float, rungs: tuple[int, ...] = (1, 3)
) -> dict[int, tuple[float, float]]:
    """How well an early epoch predicts a trial's final value, from trials that all trained to their end.

    For each rung r: (Spearman rank correlation of the value at epoch r with the final value, over
    every finished trial of `runs`; the share of trials that ended at or above `target` whose epoch-r
    value lies in the bottom 2/3 of all trials' epoch-r values, i.e. the good trials a reduction-3
    rung at epoch r would tend to cut). nan where fewer than 3 trials reached epoch r.
    Meant for the random-search arm: nothing cut its trials, so every curve is whole.
    """
    from scipy.stats import spearmanr

    curves: dict[tuple[int, str], dict[int, float]] = {}
    finals: dict[tuple[int, str], float] = {}
    for run in runs:
        for e in run.events:
            key = (run.seed, e.trial)
            if e.final:
                finals[key] = e.value
            else:
                curves.setdefault(key, {})[e.step] = e.value
    out: dict[int, tuple[float, float]] = {}
    for r in rungs:
        keys = [k for k in finals if r in curves.get(k, {})]
        if len(keys) < 3:
            out[r] = (math.nan, math.nan)
            continue
        early = [curves[k][r] for k in keys]
        rho = float(spearmanr(early, [finals[k] for k in keys]).statistic)
        cut_below = sorted(early)[len(early) // 3 * 2]  # the lowest epoch-r value of the top third
        good = [k for k in keys if finals[k] >= target]
        cut = sum(curves[k][r] < cut_below for k in good) / len(good) if good else math.nan
        out[r] = (rho, cut)
    return out


def _notes(runs: list[SweepRun], *, best: float, trials: int, smoke: bool, minutes: float) -> list[str]:
    from sweeps.spec.schema import STARTUP_TRIALS

    startup = max(STARTUP_TRIALS, 2)  # 2 trials at a time
    holder = max(runs, key=lambda r: r.best)
    data = (
        "a tiny synthetic set"
        if smoke
        else (
            "uci-mfeat (bundled real data) with views fou, zer, mor; 50% labelled, no unlabelled pool, "
            "validation = half of the labelled digits (500)"
        )
    )
    sets = ", ".join(f"{k}={v}" for k, v in (SMOKE_SET if smoke else SET).items())
    paragraphs = [
        f"Best known value = the best final val weighted F1 of any trial of any arm and seed of this run: "
        f"**{best:.4f}** ({holder.arm}, seed {holder.seed}); target = {best - TOLERANCE:.4f} (headline, the issue's "
        f"0.5 F1 points) and {best - LOOSE:.4f} (`_loose` ratios: one validation split of 500 digits is noisy at "
        "the 0.005 scale). It is the best this run saw, not the optimum of the space: a longer run can raise it and "
        "make every arm look slower.",
        f"Data: {data}. Config: mrccl.yaml with {sets} (cheaper than the quickstart: the {len(runs)} sweeps of "
        f"this run took {minutes:.0f} minutes; pre-training and self-training are off so every trial-epoch costs the "
        "same). Space: search_spaces/quick.yaml. 2 trials at a time (1 CPU each), actor reuse, MLflow logging on.",
        f"A trial-epoch = one reported fine-tuning epoch of one trial (Ray's `training_iteration`, minus the final "
        f"report). An arm *reaches* the target when a trial that trained to its end reports a final value >= target; "
        f"the count is every epoch of every trial (cut ones included) reported before that moment, in the "
        f"order the driver received them (MLflow step timestamps). Budget per sweep: {trials} trials for random "
        f"search and the median rule, {trials * ARMS['TPE + ASHA'][2]} for the ASHA and Hyperband arms (ASHA spends "
        "about half the epochs per trial, so every arm spends about the same trial-epochs; see 'epochs spent'). "
        "Seeds that never reach the target within the budget count as infinite, so a median is infinite when fewer "
        "than half of the seeds reached it. "
        "The ERT rows and `_ert_` ratios "
        "(expected running time, as in the COCO platform) do not need half: every epoch the arm spent over all "
        "seeds (a failed seed's whole budget, a successful seed's epochs up to its hit) ÷ the seeds that hit.",
        f"Arms: TPE (multivariate, {startup} random start-up trials, constant liar) + median stopping (grace 3: "
        "from its 3rd result on, a trial whose best value is below the median of the others' running means stops, "
        "once 3 others got that far); TPE + ASHA (grace 1, reduction 3, max_t = the longest trial); TPE + "
        "Hyperband (same, every bracket); BOHB-style (`search.algorithm: bohb`, TPE fitted at one budget) + "
        "Hyperband; QMC (scrambled Sobol) + ASHA; random search, every trial to its end (early stopping inside a "
        "trial by `optim.patience` applies to all arms alike). Sampler seeds 0..S-1; arm order rotated per seed. "
        f"The default search (the schema's defaults): {default_arm() or 'none of these arms'}.",
        f"Profile (medians over seeds, at the headline target {best - TOLERANCE:.4f}): how many trials each arm "
        "started, the epochs it gave each, how many trials the scheduler cut and the share of epochs they took, "
        "and how many of the trials that trained to their end were within the target (the searcher's part).",
    ]
    table = [
        "| arm | trials | epochs per trial | trials cut | epochs on cut trials | finished trials within target |",
        "|---|---|---|---|---|---|",
    ]
    for arm in sorted({r.arm for r in runs}, key=list(ARMS).index):
        p = profile([r for r in runs if r.arm == arm], best - TOLERANCE)
        table.append(
            f"| {arm} | {p['trials']:.0f} | {p['epochs']:.2f} | {p['cut']:.0%} | {p['cut_epochs']:.0%} | "
            f"{p['good']:.1%} |"
        )
    loose = best - LOOSE
    early = early_vs_final([r for r in runs if r.arm == BASELINE], loose)
    table += [
        "",
        f"Early epochs against the end, over random search's trials (every one trained to its end): the rank "
        f"correlation of a trial's val F1 at epoch r with its final value, and the share of its trials that ended "
        f"within the loose target ({loose:.4f}) whose epoch-r value was in the bottom 2/3 at epoch r, where a "
        "reduction-3 rung at r would tend to cut them.",
        "",
        "| epoch r | rank correlation with the final value | good trials in the bottom 2/3 at r |",
        "|---|---|---|",
        *(f"| {r} | {rho:.2f} | {cut:.0%} |" for r, (rho, cut) in early.items()),
    ]
    out = [line for p in paragraphs for line in ("", p)][1:]  # blank lines: separate Markdown paragraphs
    return [*out, "", *table]

"""The recorded-curve replay: table lookup, the Tune-ordered loop, the forecast scheduler, chunk resumption,
and `python -m benchmarks search_replay --smoke` on the tiny recorded subset."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from benchmarks.common import BenchOptions
from benchmarks.curves.loop import replay
from benchmarks.curves.problems import TableProblem
from benchmarks.curves.record import finished
from benchmarks.curves.table import CurveTable, Lookup, load_table
from mer_core.errors import ConfigError
from sweeps.execution.forecast import ForecastStopping
from sweeps.spec import load_sweep
from sweeps.trainable.report import FINAL_KEY, TIME_ATTR

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "search_spaces/quick.yaml"
SMOKE = ROOT / "benchmarks/curves/smoke_data"


def _table(curves: list[list[float]]) -> CurveTable:
    """A table of len(curves) configurations spread along optim.lr, the rest of the space fixed."""
    n = len(curves)
    values = np.asarray(curves, dtype=np.float32)  # (n, E)
    return CurveTable(
        task="toy",
        index=np.arange(n),
        params={
            "optim.lr": np.geomspace(1e-4, 1e-2, n),
            "optim.weight_decay": np.zeros(n),
            "model.hidden_dim": np.full(n, 64.0),
            "model.dropout": np.zeros(n),
            "loss.w_modality": np.ones(n),
            "model.fusion": np.array(["concat"] * n),
            "model.fusion_rank": np.full(n, np.nan),
        },
        curves={"val_f1": values, "test_f1": values},
        seconds=np.ones(n),
    )


def test_lookup_finds_a_recorded_configuration_and_its_nearest_neighbour() -> None:
    table = _table([[0.1, 0.2]] * 5)
    lookup = Lookup(table)
    point = {k: (v[3] if v.dtype.kind == "f" else str(v[3])) for k, v in table.params.items()}
    point.pop("model.fusion_rank")  # inactive for concat
    assert lookup.nearest(point) == 3
    assert lookup.nearest({**point, "optim.lr": float(table.params["optim.lr"][1]) * 1.05}) == 1
    assert lookup.nearest({**point, "model.fusion": "gated"}) in range(5)  # a mismatch still answers


class _Fixed:
    """A searcher proposing table rows 0, 1, 2, ... in order (by their optim.lr), as Ray's Searcher API does."""

    def __init__(self, table: CurveTable) -> None:
        self.table, self.k, self.completed = table, 0, []

    def suggest(self, trial_id: str):
        if self.k >= self.table.n:
            return None
        row = self.k
        self.k += 1
        return {
            k: (float(v[row]) if v.dtype.kind == "f" else str(v[row]))
            for k, v in self.table.params.items()
            if not (v.dtype.kind == "f" and math.isnan(v[row]))
        }

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        self.completed.append((trial_id, bool(result and result.get(FINAL_KEY))))


def test_the_loop_counts_epochs_until_the_first_good_finish_with_trials_side_by_side() -> None:
    from ray.tune.schedulers import FIFOScheduler

    # Rows 0 and 1 run side by side (3 epochs each); row 2 is the only one within 0.01 of the best.
    problem = TableProblem(_table([[0.1, 0.2, 0.3], [0.2, 0.3, 0.4], [0.5, 0.6, 0.9], [0.1, 0.1, 0.1]]))
    searcher = _Fixed(problem.table)
    trace = replay(problem, searcher=searcher, scheduler=FIFOScheduler(), arm="fixed", seed=0, budget=100)
    # Rows 0 and 1: 6 epochs; then rows 2 and 3 side by side: row 2's final report comes after 3 + 3 epochs.
    assert trace.hit_at == 12.0
    assert [info[0] for info in trace.trials] == [0, 1, 2, 3]
    assert searcher.completed[:2] == [("0000_00000", True), ("0000_00001", True)]


def test_a_stopped_trial_is_cut_not_finished_and_its_epochs_count() -> None:
    from ray.tune.schedulers import ASHAScheduler

    problem = TableProblem(_table([[0.5, 0.6, 0.7], [0.1, 0.1, 0.1], [0.2, 0.2, 0.2], [0.6, 0.7, 0.95]]))
    searcher = _Fixed(problem.table)
    asha = ASHAScheduler(time_attr=TIME_ATTR, grace_period=1, reduction_factor=3, max_t=problem.epochs + 1)
    trace = replay(problem, searcher=searcher, scheduler=asha, arm="asha", seed=0, budget=100)
    cut = [info for info in trace.trials if not info[2]]
    assert cut and all(info[1] >= 1 for info in cut)  # cut after its first rung, its epochs counted
    assert math.isfinite(trace.hit_at) and trace.hit_at >= sum(info[1] for info in trace.trials[:-1]) - 3


def _report(scheduler: ForecastStopping, trial: Trial, t: int, value: float, final: bool = False) -> str:
    result = {"val/weighted_f1": value, TIME_ATTR: t, **({FINAL_KEY: 1} if final else {})}
    if final:
        scheduler.on_trial_complete(None, trial, result)
        return TrialScheduler.CONTINUE
    return scheduler.on_trial_result(None, trial, result)


def test_forecast_stops_a_flat_bad_curve_keeps_a_climbing_one_and_waits_for_a_finished_trial() -> None:
    scheduler = ForecastStopping(time_attr=TIME_ATTR, max_t=11, grace_period=1, margin_sd=2.0)
    assert scheduler.set_search_properties("val/weighted_f1", "max")
    first, flat, climbing = (Trial("fn", stub=True, trial_id=i) for i in ("a", "b", "c"))
    for t, v in enumerate([0.5, 0.55, 0.56], start=1):  # nothing has finished: nobody is stopped
        assert _report(scheduler, flat, t, v) == TrialScheduler.CONTINUE
    for t in range(1, 11):
        _report(scheduler, first, t, 0.90 + 0.001 * (t % 2))
    _report(scheduler, first, 11, 0.901, final=True)
    assert _report(scheduler, flat, 4, 0.56) == TrialScheduler.STOP  # 0.56 + small slope cannot reach 0.90
    assert _report(scheduler, climbing, 1, 0.2) == TrialScheduler.CONTINUE  # one value: no slope yet
    assert _report(scheduler, climbing, 2, 0.4) == TrialScheduler.CONTINUE  # +0.2 per epoch could get there
    assert scheduler.noise >= 0.0


def test_forecast_minimises_for_mode_min() -> None:
    scheduler = ForecastStopping(time_attr=TIME_ATTR, max_t=5, grace_period=2, margin_sd=0.0)
    scheduler.set_search_properties("loss", "min")
    done, bad = Trial("fn", stub=True, trial_id="d"), Trial("fn", stub=True, trial_id="b")
    scheduler.on_trial_complete(None, done, {"loss": 0.1, TIME_ATTR: 5, FINAL_KEY: 1})
    assert scheduler.on_trial_result(None, bad, {"loss": 1.0, TIME_ATTR: 1}) == TrialScheduler.CONTINUE  # grace
    assert scheduler.on_trial_result(None, bad, {"loss": 1.0, TIME_ATTR: 2}) == TrialScheduler.STOP


def _sweep(tmp_path: Path, scheduler: str, extra: str = ""):
    path = tmp_path / "sweep.yaml"
    path.write_text(f"name: s\nsearch_space: {QUICK}\nscheduler: {scheduler}\n{extra}")
    return load_sweep(path)


def test_the_yaml_kind_forecast_builds_the_forecast_scheduler(tmp_path) -> None:
    from sweeps.execution.tuner import make_scheduler

    spec = _sweep(tmp_path, "{kind: forecast, grace_period: 2, margin_sd: 1.5}")
    built = make_scheduler(spec, spec.base_config())
    assert isinstance(built, ForecastStopping)
    assert spec.scheduler.margin_sd == 1.5


@pytest.mark.parametrize(
    "scheduler, extra, field",
    [
        ("{kind: forecast, margin_sd: -1}", "", "scheduler.margin_sd"),
        ("{kind: forecast}", "execution: {mode: fused}\n", "scheduler.kind"),
    ],
)
def test_bad_forecast_settings_are_one_line_errors(tmp_path, scheduler, extra, field) -> None:
    with pytest.raises(ConfigError) as info:
        _sweep(tmp_path, scheduler, extra)
    assert str(info.value).startswith(f"{field}:") and "\n" not in str(info.value)


def test_a_chunk_shorter_than_asked_is_not_finished(tmp_path) -> None:
    path = tmp_path / "chunk-0000.npz"
    assert not finished(path, 20)
    np.savez_compressed(path, config_index=np.arange(5))
    assert finished(path, 5) and not finished(path, 20)


def test_search_replay_smoke_runs_on_the_tiny_recorded_subset() -> None:
    from benchmarks.bench_search_replay import SMOKE_ARMS, bench_search_replay

    tasks = sorted(p.name for p in SMOKE.iterdir() if p.is_dir())
    assert len(tasks) >= 2 and all(load_table(t, SMOKE).n > 0 for t in tasks)
    res = bench_search_replay(BenchOptions(smoke=True))
    names = [r.name for r in res.ratios]
    assert [n for n in names if n.startswith("held_out_")] == [f"held_out_{t}" for t in tasks]
    assert any(n.startswith("mf_") for n in names)
    assert all(f"{t}: {arm}: ERT" in {r.label for r in res.rows} for t in tasks for arm in SMOKE_ARMS)
    assert any("Leave one task out" in line for line in res.notes)


def test_the_quickstart_runs_the_default_search_the_replay_chose() -> None:
    """The quickstart, the schema's defaults and the replay's default arm are one search: they cannot drift."""
    from benchmarks.bench_search_replay import ARMS, CONCURRENT, default_arm
    from mer_core.configs.fields import from_dict
    from sweeps.spec import SchedulerConfig

    assert default_arm() == "TPE + median, grace 3"  # chosen on all real tasks (RESULTS.md, `search_replay`)
    arm = ARMS[default_arm()]
    quickstart = load_sweep(ROOT / "sweeps/quickstart.yaml")
    assert quickstart.scheduler == from_dict(SchedulerConfig, arm.scheduler, "scheduler") == SchedulerConfig()
    assert quickstart.search.algorithm == arm.algorithm
    assert (quickstart.resources.max_concurrent, quickstart.startup_trials()) == (CONCURRENT, arm.n_startup)


@pytest.mark.slow
@pytest.mark.parametrize("arm", ["TPE + ASHA", "TPE + forecast", "TPE + median, grace 3"])
def test_the_replay_loop_does_what_ray_tune_does_one_trial_at_a_time(arm) -> None:
    import ray

    from benchmarks.bench_search_replay import make_sweep
    from benchmarks.curves.tune_check import tune_trace
    from tests.ray_here import stop_session

    problem = TableProblem(load_table("mfeat-fzm-50", SMOKE))
    searcher, scheduler = make_sweep(arm, 0, problem)
    loop = replay(problem, searcher=searcher, scheduler=scheduler, arm=arm, seed=0, budget=240, concurrent=1)
    searcher, scheduler = make_sweep(arm, 0, problem)
    stop_session()  # one trial at a time: a Ray of 1 CPU, not this process's shared session, if one is up
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        tuned = tune_trace(problem, searcher=searcher, scheduler=scheduler, arm=arm, seed=0, budget=240)
    finally:
        ray.shutdown()
    # The same proposals (table rows), epochs per trial, ends, cuts, and the same cost to the target.
    assert tuned.trials == loop.trials
    assert (tuned.hit_at, tuned.epochs) == (loop.hit_at, loop.epochs)
    assert any(info[4] for info in loop.trials)  # the scheduler did cut trials: the check is not vacuous


def test_the_held_out_choice_minimises_the_worst_ratio_on_the_other_tasks() -> None:
    from benchmarks.curves.report import choose

    table = {
        "a": {"base": (1.0, 1.0, 1.0), "steady": (0.6, 0.4, 0.9), "spiky": (0.1, 0.05, 0.3)},
        "b": {"base": (1.0, 1.0, 1.0), "steady": (0.7, 0.5, 0.9), "spiky": (2.0, 1.0, 4.0)},
        "c": {"base": (1.0, 1.0, 1.0), "steady": (0.9, 0.5, 1.5), "spiky": (0.2, 0.1, 0.4)},
    }
    assert choose(table, ["a", "b"], "base") == "steady"  # spiky's worst (2.0 on b) is worse
    assert choose(table, ["a", "c"], "base") == "spiky"  # held out b: spiky wins on a and c
    assert choose({"a": {"base": (1, 1, 1), "never": (math.nan, 0, 0), "x": (3.0, 2, 4)}}, ["a"], "base") == "x"

"""Fused mode (`execution: {mode: fused, population: K}`): populations of K members per Ray trial.

Fast tests drive the parts with real components (a real Optuna study, Ray's own ASHA bracket as
the reference of the members' early stopping); the slow one runs a fused sweep through the CLI
and reads back MLflow, the searcher's saved study and best_config.yaml.
"""

from __future__ import annotations

import glob
import json
import pickle
import random
import signal
import time

import optuna
import pytest
import yaml
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from ray.tune.schedulers import TrialScheduler
from ray.tune.schedulers.async_hyperband import _Bracket

from mer_core.configs import ExperimentConfig, load_config, with_overrides
from mer_core.data import load_data
from mer_core.errors import ConfigError
from mer_core.train import TrialResult, run
from sweeps.fused.members import MEMBERS_KEY, NUMBERS_KEY, RUNGS_KEY, RUNGS_RESULT
from sweeps.fused.rungs import RungSchedule, RungStopper
from sweeps.fused.search import PopulationSearcher, population_sizes
from sweeps.fused.trial import PopulationRelay, fused_groups
from sweeps.space import load_space, make_sampler
from sweeps.spec import load_sweep
from sweeps.trainable.report import FINAL_KEY
from sweeps.trainable.trial import TrialSettings
from tests.driver_helpers import Drivers, progress
from tests.sweep_helpers import ROOT, SMALL_SET, children_of, run_sweep_here, write_sweep

METRIC = "val/weighted_f1"
# Only per-member fields, dropout 0: every member of a population shares one stacked model, and a
# member's result equals its config trained alone (tests/test_population.py's tolerance).
MEMBER_SPACE = {
    "params": {
        "optim.lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
        "optim.weight_decay": {"type": "float", "low": 0.0, "high": 1.0e-3},
        "loss.w_modality": {"type": "float", "low": 0.0, "high": 2.0},
    }
}
ATOL = 1e-4  # tests/test_population.py's ATOL: a member vs the same config trained alone


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "member_space.yaml"
    path.write_text(yaml.safe_dump(MEMBER_SPACE))
    return path


def _searcher(space_file, *, num_samples: int, population: int, algorithm: str = "tpe") -> PopulationSearcher:
    space = load_space(space_file)
    sampler = make_sampler(algorithm, 0, space=space, n_startup_trials=3)
    return PopulationSearcher(
        space, sampler=sampler, metric=METRIC, mode="max", num_samples=num_samples, population=population
    )


def _final(statuses: dict[int, tuple[str, float, int]], rungs: list[list[float]] | None = None) -> dict:
    """A population's final result: member -> (status, metric value, reported epochs)."""
    out = {FINAL_KEY: 1, METRIC: 0.0, "status": "ok", RUNGS_RESULT: json.dumps(rungs or [])}
    for i, (status, value, epochs) in statuses.items():
        out.update({f"m{i}/status": status, f"m{i}/{METRIC}": value, f"m{i}/iteration": epochs})
    return out


# -- PopulationSearcher ------------------------------------------------------------------------------
def test_each_suggest_is_a_population_and_the_members_add_up_to_num_samples(space_file):
    searcher = _searcher(space_file, num_samples=10, population=4)
    space = load_space(space_file)
    configs = [searcher.suggest(f"t{i}") for i in range(3)]
    assert searcher.suggest("t3") == "FINISHED" and searcher.num_populations == 3
    assert [len(c[MEMBERS_KEY]) for c in configs] == [4, 4, 2] == population_sizes(10, 4)
    numbers = [n for c in configs for n in c[NUMBERS_KEY]]
    assert numbers == list(range(10)) and len(searcher.study.trials) == 10
    for member in (m for c in configs for m in c[MEMBERS_KEY]):
        space.sample_config_overrides(member)  # every member holds a complete sample of the space
    assert len({json.dumps(m, sort_keys=True) for c in configs for m in c[MEMBERS_KEY]}) == 10


def test_every_member_is_told_its_own_outcome(space_file):
    searcher = _searcher(space_file, num_samples=5, population=5)
    searcher.suggest("t0")
    searcher.on_trial_result("t0", {"m1/iteration": 1, f"m1/{METRIC}": 0.3, "m2/iteration": 1, f"m2/{METRIC}": 0.2})
    searcher.on_trial_result("t0", {"m1/iteration": 2, f"m1/{METRIC}": 0.35})
    final = _final(
        {0: ("ok", 0.8, 6), 1: ("pruned", 0.35, 2), 2: ("pruned", 0.25, 3), 3: ("diverged", 0.0, 1)}, [[0.3, 0.2]]
    )
    final.update({"m4/status": "invalid", "m4/iteration": 0, f"m4/{METRIC}": 0.0})
    searcher.on_trial_complete("t0", final)
    trials = searcher.study.trials
    states = [t.state for t in trials]
    S = optuna.trial.TrialState
    assert states == [S.COMPLETE, S.PRUNED, S.PRUNED, S.FAIL, S.FAIL]
    assert trials[0].value == 0.8
    assert trials[1].value == 0.35 and trials[1].intermediate_values == {1: 0.3, 2: 0.35}
    # Its last epoch (3) never reached on_trial_result: the final result supplies it.
    assert trials[2].value == 0.25 and trials[2].intermediate_values == {1: 0.2, 3: 0.25}


def test_a_failed_population_fails_every_member_and_rungs_reach_the_next_one(space_file):
    searcher = _searcher(space_file, num_samples=9, population=3)
    searcher.suggest("t0")
    searcher.suggest("t1")
    searcher.on_trial_complete("t0", error=True)
    assert [t.state for t in searcher.study.trials[:3]] == [optuna.trial.TrialState.FAIL] * 3
    searcher.on_trial_complete("t1", _final({i: ("ok", 0.5 + i / 10, 4) for i in range(3)}, [[0.5, 0.6], [0.7]]))
    assert searcher.suggest("t2")[RUNGS_KEY] == [[0.5, 0.6], [0.7]]


def test_save_and_restore_continue_the_same_study(space_file, tmp_path):
    searcher = _searcher(space_file, num_samples=7, population=3)
    first = searcher.suggest("t0")
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))
    restored = _searcher(space_file, num_samples=7, population=3)
    restored.restore(str(path))
    restored.on_trial_complete("t0", _final({i: ("ok", 0.1 * i, 2) for i in range(3)}))
    rest = [restored.suggest(f"t{i}") for i in (1, 2)]
    assert restored.suggest("t3") == "FINISHED"
    assert [len(c[MEMBERS_KEY]) for c in (first, *rest)] == [3, 3, 1]
    assert [t.number for t in restored.study.trials] == list(range(7))
    assert [t.value for t in restored.study.trials[:3]] == [0.0, 0.1, 0.2]


# -- ASHA inside a population --------------------------------------------------------------------------
@pytest.mark.parametrize("grace, rf, max_t", [(1, 2.0, 13), (3, 3.0, 31), (2, 1.5, 9)])
def test_members_stop_exactly_where_rays_asha_stops_trials(grace, rf, max_t):
    """Members reporting epoch by epoch, in turn, get Ray's ASHAScheduler decisions (one bracket)."""
    schedule = RungSchedule.asha(grace_period=grace, reduction_factor=rf, max_t=max_t, mode="max")
    bracket = _Bracket(grace, max_t, rf, 0)
    assert list(schedule.milestones) == [m for m, _ in reversed(bracket._rungs)]
    stopper, rng = RungStopper(schedule), random.Random(grace)
    alive, iteration, decisions = set(range(12)), 0, 0
    while alive:
        iteration += 1
        for member in sorted(alive):
            value = rng.random() + iteration / 20
            ray_stops = iteration >= max_t or bracket.on_result(_Trial(member), iteration, value) == TrialScheduler.STOP
            assert stopper.should_stop(member, iteration, value) == ray_stops, (member, iteration)
            decisions += ray_stops
            if ray_stops:
                alive.discard(member)
    assert decisions >= 6  # the early rungs stop some members, the rest end at max_t


def test_rungs_of_earlier_populations_count_and_mode_min_flips_the_order():
    schedule = RungSchedule.asha(grace_period=1, reduction_factor=2.0, max_t=8, mode="min")
    stopper = RungStopper(schedule, records=[[-0.2, -0.4]])  # scores: negated losses
    assert stopper.should_stop(0, 1, 0.5)  # loss 0.5 is worse than the median of 0.2 and 0.4
    assert not stopper.should_stop(1, 1, 0.1)
    assert stopper.new == [[-0.5, -0.1], [], [], []]
    assert not RungStopper(RungSchedule.none(mode="max")).should_stop(0, 1000, 0.0)


class _Trial:
    def __init__(self, member: int) -> None:
        self.trial_id = f"m{member}"


# -- a population's results --------------------------------------------------------------------------
def test_relay_sends_one_result_per_epoch_and_a_final_per_member():
    sent: list[dict] = []
    settings = TrialSettings(base={}, metric=METRIC, mode="max", fixed={})
    relay = PopulationRelay(settings=settings, stopper=RungStopper(RungSchedule.none(mode="max")), send=sent.append)
    report = relay.reporter([0, 2])  # a group of population members 0 and 2
    for epoch, values in enumerate([(0.4, 0.6), (0.5, 0.55)], start=1):
        for local, value in enumerate(values):
            assert not report(local, {METRIC: value, "iteration": epoch, "stage": "finetune", "flag": True})
    relay.reporter([1])(0, {METRIC: 0.9, "iteration": 1})
    relay.flush()
    keys = {METRIC, *(f"m{i}/{k}" for i in (0, 2) for k in (METRIC, "iteration", "stage"))}
    assert set(sent[0]) == keys  # one result for the epoch both members reported; no bools
    assert [r[METRIC] for r in sent] == [0.6, 0.6, 0.9]  # the population's best so far
    ok = TrialResult(status="ok", metrics={METRIC: 0.7}, folds=[], head_names=(), class_names=(), epochs=2)
    pruned = TrialResult(status="pruned", metrics={}, folds=[], head_names=(), class_names=(), epochs=2)
    final = relay.final({0: ok, 2: pruned}, {1: "optim.lr: out of range"})
    assert final[FINAL_KEY] == 1 and final[METRIC] == 0.7 and final["population/size"] == 3
    assert (final["m0/status"], final[f"m0/final/{METRIC}"], final["m0/iteration"]) == ("ok", 0.7, 2)
    assert (final["m2/status"], final[f"m2/{METRIC}"]) == ("pruned", 0.55)  # its last epoch, as ASHA leaves a trial
    assert (final["m1/status"], final[f"m1/{METRIC}"]) == ("invalid", 0.0)


def test_members_group_by_schedule_then_shape():
    base = ExperimentConfig()
    cfgs = {
        0: base,
        1: with_overrides(base, {"optim.lr": 3e-3, "model.dropout": 0.2}),
        2: with_overrides(base, {"model.hidden_dim": 64}),
        3: with_overrides(base, {"optim.batch_size": 64}),  # a schedule field: group_by_shape alone would refuse
        5: with_overrides(base, {"optim.batch_size": 64, "optim.weight_decay": 0.0}),
    }
    assert sorted(fused_groups(cfgs)) == [[0, 1], [2], [3, 5]]


# -- the spec --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"scheduler": {"kind": "median"}}, "scheduler.kind"),
    ],
)
def test_fused_mode_refuses_what_it_cannot_run(tmp_path, overrides, field):
    path = write_sweep(tmp_path, "bad-fused", execution={"mode": "fused", "population": 4}, **overrides)
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert err.value.field == field and "\n" not in str(err.value)


# -- end to end -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_fused_sweep_end_to_end(tmp_path, space_file, mlflow_uri):
    """8 members in 2 populations of 4: MLflow, Optuna and best_config.yaml see 8 trials."""
    spec = write_sweep(
        tmp_path,
        "fused-e2e",
        search_space=str(space_file),
        search={"algorithm": "tpe", "num_samples": 8, "seed": 0, "n_startup_trials": 3},
        # Oversampling off: duplicated rows make InfoNCE's gradients pure rounding noise, which
        # training amplifies past the tolerance of a fused member vs its single run. float64: the
        # best member's F1 is compared with its config trained alone, and in float32 the two runs'
        # rounding (other kernels, another CPU) can flip a near-tied prediction and with it the F1.
        set={**SMALL_SET, "self_training.oversample": False, "runtime.precision": "fp64"},
        execution={"mode": "fused", "population": 4},
    )
    uri = mlflow_uri
    proc = run_sweep_here([str(spec), "--tracking-uri", uri], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "8 trials:" in proc.stdout and "trials 8/8 ended" in proc.stderr

    client = MlflowClient(uri)
    parent, children = children_of(client, "fused-e2e")
    assert len(children) == 8
    trial_ids = sorted(r.data.tags["mersweep.trial_id"] for r in children)
    populations = {t.rsplit("-m", 1)[0] for t in trial_ids}
    assert len(populations) == 2 and {t.rsplit("-m", 1)[1] for t in trial_ids} == {"0", "1", "2", "3"}
    statuses = {}
    for run_ in children:
        tags = run_.data.tags
        statuses[tags["mersweep.trial_id"]] = tags["mersweep.status"]
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert float(run_.data.params["optim.max_epochs"]) == 6 and "optim.lr" in run_.data.params
        assert {"ok": "FINISHED", "pruned": "KILLED"}[tags["mersweep.status"]] == run_.info.status
        history = client.get_metric_history(run_.info.run_id, METRIC)
        assert history and [m.step for m in history] == list(range(1, len(history) + 1))
        artifacts = {a.path for a in client.list_artifacts(run_.info.run_id)}
        assert {"config.yaml", "trial.json"} <= artifacts
        if tags["mersweep.status"] == "ok":
            assert "val_logits.npz" in artifacts and f"final/{METRIC}" in run_.data.metrics
    assert "ok" in statuses.values()

    # Optuna saw 8 trials, each told its member's outcome (the searcher's state Ray saved).
    folder = tmp_path / "runs" / "fused-e2e"
    study_trials = _study(folder).trials
    assert len(study_trials) == 8
    told = sorted(t.state.name.lower().replace("complete", "ok") for t in study_trials)
    assert told == sorted(statuses.values())
    # Each member's Optuna trial and MLflow run name each other (runs/<sweep>/optuna.db holds the study).
    for run_ in children:
        stored = study_trials[int(run_.data.tags["mersweep.optuna_trial"])]
        assert stored.user_attrs["ray_trial_id"] == run_.data.tags["mersweep.trial_id"]
        assert stored.user_attrs["mlflow_run_id"] == run_.info.run_id
    assert (folder / "optuna.db").is_file()

    # best_config.yaml is the best member's, and reproduces its metric when trained alone.
    best = max((r for r in children if r.data.tags["mersweep.status"] == "ok"), key=lambda r: r.data.metrics[METRIC])
    assert parent.data.tags["mersweep.best_run_id"] == best.info.run_id
    cfg = load_config(folder / "best_config.yaml")
    assert cfg.optim.lr == pytest.approx(float(best.data.params["optim.lr"]))
    alone = run(cfg, load_data(cfg.data))
    assert alone.status == "ok"
    assert alone.metrics[METRIC] == pytest.approx(best.data.metrics[METRIC], abs=ATOL)


def _study(folder):
    with open(max(glob.glob(str(folder / "searcher-state-*.pkl"))), "rb") as fh:
        return pickle.load(fh)["study"]


@pytest.mark.slow
def test_ctrl_c_then_resume_ends_with_each_member_once(tmp_path, space_file, mlflow_uri):
    """Stopped during the second population, resumed: 6 members, one Optuna history, one live run each."""
    spec = write_sweep(
        tmp_path,
        "fused-resume",
        search_space=str(space_file),
        search={"algorithm": "tpe", "num_samples": 6, "seed": 0, "n_startup_trials": 3},
        set={**SMALL_SET, "optim.max_epochs": 4, "optim.patience": 4},
        scheduler={"kind": "none"},
        execution={"mode": "fused", "population": 3},
    )
    uri = mlflow_uri
    drivers = Drivers()
    try:
        first = drivers.start([str(spec), "--tracking-uri", uri], tmp_path)
        deadline = time.monotonic() + 240
        while (progress(first.stderr()) or (0, 0))[0] < 3 and first.proc.poll() is None:
            assert time.monotonic() < deadline, first.stderr()[-3000:]
            time.sleep(0.05)
        first.signal_group(signal.SIGINT)
        assert first.proc.wait(120) == 130, first.stderr()[-3000:]
        resumed = drivers.start([str(spec), "--tracking-uri", uri, "--resume"], tmp_path)
        assert resumed.proc.wait(300) == 0, resumed.stderr()[-3000:]
    finally:
        drivers.cleanup()
    client = MlflowClient(uri)
    parent, children = children_of(client, "fused-resume")  # live runs: superseded ones are soft-deleted
    assert parent.info.status == "FINISHED"
    assert len(children) == 6 == len({c.data.tags["mersweep.trial_id"] for c in children})
    assert all(c.info.status == "FINISHED" and c.data.tags["mersweep.status"] == "ok" for c in children)
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, METRIC)]
        assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 2, steps  # one history, no repeats
    everything = client.search_runs([parent.info.experiment_id], run_view_type=ViewType.ALL)
    retired = [r for r in everything if r.info.lifecycle_stage == "deleted"]  # the stopped population's
    assert retired and all(r.data.tags["mersweep.status"] == "superseded" for r in retired)
    study = _study(tmp_path / "runs" / "fused-resume")
    assert sorted(t.number for t in study.trials) == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_the_shipped_fused_sweep_is_fused():
    spec = load_sweep(ROOT / "sweeps/fused_quick.yaml")
    assert (spec.execution.mode, spec.execution.population) == ("fused", 8)

"""Fault injection ($MERSWEEP_FAULTS) and Ray Tune retries, with the real CLI, Ray and MLflow.

The fast tests pin the plan itself: validation, seeded per-(trial, attempt) decisions, raising
at an epoch, hanging. The slow ones run small sweeps whose trials fail on purpose and check what
survives: retries absorb failures (Ray's failure count per trial is exactly what the plan
decided), a trial that keeps failing ends FAILED in MLflow with the exception's last line, and a
trial that hangs forever is ended by the sweep's time budget.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from benchmarks.common import sqlite_store
from mer_core.errors import ConfigError, UserInputError
from sweeps.spec import load_sweep
from sweeps.trainable.faults import (
    FAULTS_ENV,
    FaultInjector,
    FaultPlan,
    InjectedFault,
    fault_runtime_env,
    parse_plan,
    read_log,
    trial_key,
)
from tests.ray_cluster import private_cluster
from tests.sweep_helpers import SMALL_SET, children_of, run_cli, run_cli_here, write_sweep

# Three epochs, no scheduler: every trial that is not hit trains to its end in a few seconds.
FAST_SET = {**SMALL_SET, "optim.max_epochs": 3, "optim.patience": 3}
# Seed 6 hits 2 of the first 4 trials of the seeded random sampler once each (and none more than
# twice), so all of them finish within the default 2 retries. The assertions recompute the
# decisions from the plan, so another space only changes which trials are hit.
RETRY_PLAN = {"p": 0.5, "seed": 6, "at_epoch": 2}
RETRIES = 2


# --- the plan ------------------------------------------------------------------------------------
def test_plan_parses_the_documented_forms():
    assert parse_plan('{"p": 0.3, "seed": 1}') == FaultPlan(p=0.3, seed=1)
    assert parse_plan('{"at_epoch": 2}') == FaultPlan(at_epoch=2)
    assert parse_plan('{"hang_s": 30, "at_epoch": 1}').hang_seconds == 30.0
    assert parse_plan('{"hang_s": "forever"}').hang_seconds == float("inf")
    assert parse_plan(None) is None and parse_plan("  ") is None


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("{not json", ("MERSWEEP_FAULTS:", "not valid JSON", "{not json")),
        ("[0.5]", ("MERSWEEP_FAULTS:", "JSON object", "[0.5]")),
        ('{"p": 1.5}', ("MERSWEEP_FAULTS.p", "<= 1.0", "1.5")),
        ('{"p": true}', ("MERSWEEP_FAULTS.p", "float", "True")),
        ('{"prob": 0.5}', ("MERSWEEP_FAULTS.prob", "unknown key", "at_epoch, hang_s, p, seed")),
        ('{"at_epoch": 0}', ("MERSWEEP_FAULTS.at_epoch", ">= 1", "0")),
        ('{"seed": -1}', ("MERSWEEP_FAULTS.seed", ">= 0", "-1")),
        ('{"hang_s": 0}', ("MERSWEEP_FAULTS.hang_s", "> 0.0", "0")),
        ('{"hang_s": "later"}', ("MERSWEEP_FAULTS.hang_s", "forever", "later")),
    ],
)
def test_bad_plans_name_the_variable_the_allowed_and_the_given(text, names):
    with pytest.raises(UserInputError) as err:
        parse_plan(text)
    message = str(err.value)
    assert "\n" not in message
    for name in names:
        assert name in message, message


def test_decisions_are_seeded_per_trial_and_attempt():
    plan = FaultPlan(p=0.5, seed=3)
    decisions = [plan.strikes(f"trial-{i}", a) for i in range(50) for a in range(4)]
    assert decisions == [FaultPlan(p=0.5, seed=3).strikes(f"trial-{i}", a) for i in range(50) for a in range(4)]
    assert decisions != [FaultPlan(p=0.5, seed=4).strikes(f"trial-{i}", a) for i in range(50) for a in range(4)]
    assert not any(FaultPlan(p=0.0).strikes(f"t{i}", 0) for i in range(100))
    assert all(FaultPlan(p=1.0).strikes(f"t{i}", 0) for i in range(100))


def test_hit_rate_is_p():
    plan = FaultPlan(p=0.3, seed=1)
    rate = sum(plan.strikes(f"trial-{i}", 0) for i in range(4000)) / 4000
    assert abs(rate - 0.3) < 0.03


def test_failures_before_success_stops_at_the_first_miss_or_after_the_retries():
    plan = FaultPlan(p=0.5, seed=0)
    for i in range(40):
        key = f"trial-{i}"
        hits = [plan.strikes(key, a) for a in range(4)]
        expected = next((a for a, hit in enumerate(hits) if not hit), 4)
        assert plan.failures_before_success(key, max_retries=3) == expected
    assert FaultPlan(at_epoch=2).failures_before_success("any", max_retries=0) == 1  # no retry: fails once


def test_trial_key_is_the_config_in_any_key_order():
    assert trial_key({"a": 1, "b": 0.5}) == trial_key({"b": 0.5, "a": 1})
    assert trial_key({"a": 1}) != trial_key({"a": 2})


def test_runtime_env_hands_the_validated_plan_to_workers():
    env = fault_runtime_env({FAULTS_ENV: '{"p": 0.25}'})
    assert parse_plan(env["env_vars"][FAULTS_ENV]) == FaultPlan(p=0.25)
    assert fault_runtime_env({}) is None


# --- the injector ----------------------------------------------------------------------------------
def test_injector_raises_at_the_planned_epoch_and_counts_attempts_on_disk(tmp_path):
    plan = FaultPlan(at_epoch=3)
    for attempt in range(2):
        injector = FaultInjector.begin(plan, key="k", state_dir=tmp_path)
        assert injector.attempt == attempt
        injector.on_epoch()
        injector.on_epoch()  # epochs 1 and 2 report normally
        with pytest.raises(InjectedFault, match=f"epoch 3 \\(attempt {attempt}"):
            injector.on_epoch()
    assert read_log(tmp_path) == [{"attempt": a, "action": "raise", "at_epoch": 3} for a in range(2)]


def test_a_missed_attempt_reports_every_epoch(tmp_path):
    plan = FaultPlan(p=0.0)
    injector = FaultInjector.begin(plan, key="k", state_dir=tmp_path)
    for _ in range(5):
        injector.on_epoch()
    assert read_log(tmp_path)[0]["action"] == "none"


def test_a_short_hang_sleeps_then_training_goes_on(tmp_path):
    injector = FaultInjector.begin(FaultPlan(hang_s=0.3, at_epoch=2), key="k", state_dir=tmp_path)
    started = time.perf_counter()
    injector.on_epoch()
    assert time.perf_counter() - started < 0.2
    injector.on_epoch()  # the hang: returns after hang_s
    injector.on_epoch()
    assert time.perf_counter() - started >= 0.3
    assert read_log(tmp_path)[0]["action"] == "hang"


def test_max_retries_is_a_validated_sweep_field(tmp_path):
    assert load_sweep(write_sweep(tmp_path, "defaults")).resources.max_retries == 2
    spec = write_sweep(tmp_path, "noretry", resources={"cpu": 1, "max_retries": 0})
    assert load_sweep(spec).resources.max_retries == 0
    with pytest.raises(ConfigError, match=r"resources\.max_retries: out of range; allowed: >= 0; given: -1"):
        load_sweep(write_sweep(tmp_path, "negative", resources={"max_retries": -1}))


def test_a_bad_faults_variable_exits_2_before_anything_is_written(tmp_path):
    spec = write_sweep(tmp_path, "badfaults")
    proc = run_cli_here([str(spec)], cwd=tmp_path, env={FAULTS_ENV: '{"p": 2}'})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: MERSWEEP_FAULTS.p"), proc.stderr
    assert "given: 2" in lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


# --- sweeps with faults ----------------------------------------------------------------------------
@dataclass
class FaultySweep:
    """A finished sweep run through the CLI with $MERSWEEP_FAULTS set, read back from Ray and MLflow."""

    proc: object
    folder: Path  # runs/<name>
    trials: list  # Ray's Trial objects (status, num_failures, config)
    client: MlflowClient
    name: str
    seconds: float

    def children(self) -> list:
        return children_of(self.client, self.name)[1]


@pytest.fixture(scope="module")
def ray_head():
    """(cluster, driver env): one 2-CPU Ray node that every sweep below runs on (one Ray start-up)."""
    with private_cluster(head_cpus=2) as started:
        yield started


def run_faulty_sweep(
    ray_head, work: Path, name: str, plan: dict, *, trials: int, retries: int, template: Path, **spec
) -> FaultySweep:
    from ray.tune import ExperimentAnalysis

    path = write_sweep(
        work,
        name,
        set=FAST_SET,
        search={"algorithm": "random", "num_samples": trials, "seed": 0},
        scheduler={"kind": "none"},
        resources={"cpu": 1, "gpu": 0, "max_concurrent": 2, "max_retries": retries},
        **spec,
    )
    uri = sqlite_store(work / "mlflow.db", template=template)
    cluster, env = ray_head
    args = [str(path), "--tracking-uri", uri, "--address", cluster.address]
    started = time.perf_counter()
    proc = run_cli(args, cwd=work, env={**env, FAULTS_ENV: json.dumps(plan)})
    seconds = time.perf_counter() - started
    folder = work / "runs" / name
    ray_trials = ExperimentAnalysis(str(folder)).trials if proc.returncode in (0, 130) else []
    return FaultySweep(proc, folder, ray_trials, MlflowClient(uri), name, seconds)


@pytest.fixture(scope="module")
def retried(ray_head, tmp_path_factory, mlflow_template) -> FaultySweep:
    """4 trials, p = 0.5 per attempt at epoch 2, 2 retries each."""
    work = tmp_path_factory.mktemp("retry")
    sweep = run_faulty_sweep(ray_head, work, "retry", RETRY_PLAN, trials=4, retries=RETRIES, template=mlflow_template)
    assert sweep.proc.returncode == 0, sweep.proc.stderr[-3000:]
    return sweep


@pytest.mark.slow
def test_retries_absorb_the_injected_failures(retried):
    assert len(retried.trials) == 4
    assert {t.status for t in retried.trials} == {"TERMINATED"}, "a trial exhausted its retries: pick another seed"
    injected = sum(t.num_failures for t in retried.trials)
    assert injected >= 1
    assert "trials 4/4 ended: 4 done" in retried.proc.stderr


@pytest.mark.slow
def test_ray_counts_exactly_the_failures_the_plan_decided(retried):
    plan = FaultPlan(**RETRY_PLAN)
    for trial in retried.trials:
        expected = plan.failures_before_success(trial_key(trial.config), max_retries=RETRIES)
        assert trial.num_failures == expected, trial.trial_id
        # The log in the trial's folder shows the same story: `expected` hits, then a clean attempt.
        actions = [entry["action"] for entry in read_log(retried.folder / trial.trial_id)]
        assert actions == ["raise"] * expected + ["none"]


@pytest.mark.slow
def test_a_retried_trial_keeps_one_finished_child_run(retried):
    children = retried.children()
    assert len(children) == 4
    assert {c.data.tags["mersweep.trial_id"] for c in children} == {t.trial_id for t in retried.trials}
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mersweep.status"] == "ok"


@pytest.mark.slow
def test_a_retried_trial_history_has_each_epoch_once(retried):
    retried_ids = {t.trial_id for t in retried.trials if t.num_failures}
    for child in retried.children():
        if child.data.tags["mersweep.trial_id"] in retried_ids:
            steps = [m.step for m in retried.client.get_metric_history(child.info.run_id, "val/weighted_f1")]
            assert len(steps) == len(set(steps)), steps
    # Each failed attempt's run is kept as a soft-deleted, superseded run that names the error.
    from mlflow.entities import ViewType

    exp = retried.client.get_experiment_by_name(retried.name)
    gone = retried.client.search_runs([exp.experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert len(gone) == sum(t.num_failures for t in retried.trials)
    for run in gone:
        assert run.data.tags["mersweep.status"] == "superseded"
        assert "retried" in run.data.tags["mersweep.failure_reason"]


@pytest.mark.slow
def test_a_trial_that_keeps_failing_is_failed_in_mlflow_with_its_reason(ray_head, tmp_path, mlflow_template):
    sweep = run_faulty_sweep(
        ray_head, tmp_path, "doomed", {"at_epoch": 2}, trials=2, retries=0, template=mlflow_template
    )
    assert sweep.proc.returncode == 0, sweep.proc.stderr[-3000:]  # failed trials are results, not a crash
    assert "0 finished, 0 pruned, 2 failed" in sweep.proc.stdout
    assert [(t.status, t.num_failures) for t in sweep.trials] == [("ERROR", 1), ("ERROR", 1)]
    children = sweep.children()
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FAILED"
        assert child.data.tags["mersweep.status"] == "error"
        reason = child.data.tags["mersweep.failure_reason"]
        assert reason == "sweeps.trainable.faults.InjectedFault: injected fault at epoch 2 (attempt 0, MERSWEEP_FAULTS)"
        # Epoch 1 was reported before the fault: the run keeps what the trial did.
        assert len(sweep.client.get_metric_history(child.info.run_id, "val/weighted_f1")) == 1


@pytest.mark.slow
def test_a_trial_hanging_forever_is_ended_by_the_time_budget(ray_head, tmp_path, mlflow_template):
    # Tune has no per-trial wall-clock limit (stop criteria are only checked when a trial
    # reports, which a hung trial never does); the sweep's time_budget_s ends the whole run, Ray
    # kills the hung worker, the open child run is closed as interrupted, and the CLI exits 0.
    # The budget must outlast a trial worker's start-up on a busy machine (measured past 30 s at
    # load 5+ with the other xdist worker running sweeps), or the trial never reaches its hang.
    budget = 45.0
    plan = {"hang_s": "forever"}
    sweep = run_faulty_sweep(
        ray_head, tmp_path, "hung", plan, trials=1, retries=0, template=mlflow_template, time_budget_s=budget
    )
    assert sweep.proc.returncode == 0, sweep.proc.stderr[-3000:]
    assert sweep.seconds < budget + 90  # driver start-up and shutdown, not an endless wait
    (trial,) = sweep.trials
    assert trial.status == "TERMINATED" and trial.num_failures == 0
    assert [e["action"] for e in read_log(sweep.folder / trial.trial_id)] == ["hang"]
    (child,) = sweep.children()
    assert child.info.status == "KILLED"
    assert child.data.tags["mersweep.status"] == "interrupted"
    assert sweep.client.get_metric_history(child.info.run_id, "val/weighted_f1") == []
    # The summary says so too: the budget cut this trial, no scheduler pruned it.
    assert "1 trials: 0 finished, 0 pruned, 1 interrupted, 0 failed" in sweep.proc.stdout, sweep.proc.stdout

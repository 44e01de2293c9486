"""Sweeps on a multi-node Ray cluster: trials spread over the nodes, and a node lost mid-sweep
loses no trial.

`ray.cluster_utils.Cluster` starts a head and two worker nodes (separate raylets and object
stores) on this machine; `run_sweep.py --address` drives a sweep on it, as on a real cluster.
The head has no CPUs and each worker one, so two concurrent one-CPU trials must run on both
workers. Every node shares this machine's IP, so trials report Ray's node id (`node_id`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeps.trainable.faults import FAULTS_ENV, read_log
from tests.ray_cluster import private_cluster
from tests.sweep_helpers import ROOT, SMALL_SET, children_of, cli_env, run_cli, write_sweep

pytestmark = pytest.mark.slow

N_TRIALS = 4
FAST_SET = {**SMALL_SET, "optim.max_epochs": 3, "optim.patience": 3}
# p = 0 injects nothing, but every attempt logs itself in its trial folder: proof that the plan,
# set only in the driver's environment, reached workers on other nodes through the runtime_env.
NO_FAULTS = json.dumps({"p": 0.0})


@pytest.fixture(scope="module")
def cluster():
    """(cluster, driver env): a head with no CPUs and two 1-CPU worker nodes."""
    with private_cluster(head_cpus=0, workers=2) as started:
        yield started


def _spec(work: Path, name: str) -> Path:
    return write_sweep(
        work,
        name,
        set=FAST_SET,
        search={"algorithm": "random", "num_samples": N_TRIALS, "seed": 0},
        scheduler={"kind": "none"},
        resources={"cpu": 1, "gpu": 0, "max_concurrent": 2, "max_retries": 2},
    )


def _args(spec: Path, uri: str, address: str) -> list[str]:
    return [str(spec), "--address", address, "--tracking-uri", uri]


def _node_ids(trial_dir: Path) -> list[str]:
    """The node of every result a trial reported, in order (all attempts)."""
    lines = (trial_dir / "result.json").read_text().splitlines()
    return [row["node_id"] for row in map(json.loads, lines) if "node_id" in row]


def _ray_trials(folder: Path) -> list:
    from ray.tune import ExperimentAnalysis

    return ExperimentAnalysis(str(folder)).trials


def test_trials_run_on_several_nodes(cluster, tmp_path, mlflow_uri):
    started, env = cluster
    # The cluster named by $RAY_ADDRESS, as `ray job submit` runs an entrypoint (the other test uses --address).
    proc = run_cli(
        [str(_spec(tmp_path, "spread")), "--tracking-uri", mlflow_uri],
        cwd=tmp_path,
        env={**env, FAULTS_ENV: NO_FAULTS, "RAY_ADDRESS": started.address},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"trials {N_TRIALS}/{N_TRIALS} ended: {N_TRIALS} done" in proc.stderr
    folder = tmp_path / "runs" / "spread"
    trials = _ray_trials(folder)
    nodes = {n for t in trials for n in _node_ids(folder / t.trial_id)}
    workers = {node.node_id for node in started.worker_nodes}
    assert nodes == workers, (nodes, workers)
    for trial in trials:
        assert [e["action"] for e in read_log(folder / trial.trial_id)] == ["none"]


def test_a_sweep_without_an_address_starts_a_cluster_of_its_own(cluster, tmp_path, mlflow_uri):
    """A cluster `ray start` left on the machine (its address file in Ray's temp dir) is not
    joined unasked: Ray's own default would, with none of the local cluster's settings."""
    started, env = cluster
    search = {"algorithm": "random", "num_samples": 1, "seed": 0}
    spec = write_sweep(tmp_path, "own", set=FAST_SET, search=search, scheduler={"kind": "none"})
    proc = run_cli([str(spec), "--tracking-uri", mlflow_uri], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (trial,) = _ray_trials(tmp_path / "runs" / "own")
    cluster_nodes = {started.head_node.node_id} | {node.node_id for node in started.worker_nodes}
    assert set(_node_ids(tmp_path / "runs" / "own" / trial.trial_id)).isdisjoint(cluster_nodes)


def test_a_node_lost_mid_sweep_loses_no_trial(cluster, tmp_path, mlflow_uri):
    started, env = cluster
    folder = tmp_path / "runs" / "lost"
    with open(tmp_path / "driver.err", "w") as err:
        driver = subprocess.Popen(
            [sys.executable, str(ROOT / "run_sweep.py"), *_args(_spec(tmp_path, "lost"), mlflow_uri, started.address)],
            cwd=tmp_path,
            env=cli_env({**env, FAULTS_ENV: NO_FAULTS}),
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    victim = next(iter(started.worker_nodes))
    try:
        # Both workers are busy once two trials have begun (each logs its attempt on arrival).
        _wait_for(lambda: len(list(folder.glob("*/faults.jsonl"))) >= 2, driver, seconds=240)
        started.remove_node(victim, allow_graceful=False)  # a crash, not a drain
        assert driver.wait(timeout=300) == 0, (tmp_path / "driver.err").read_text()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
        if len(started.worker_nodes) < 2:
            started.add_node(num_cpus=1)  # leave the module's cluster as the other test expects it
    assert f"trials {N_TRIALS}/{N_TRIALS} ended: {N_TRIALS} done" in (tmp_path / "driver.err").read_text()
    trials = _ray_trials(folder)
    assert len(trials) == N_TRIALS and {t.status for t in trials} == {"TERMINATED"}
    lost = [t for t in trials if t.num_failures]
    assert len(lost) == 1, [(t.trial_id, t.num_failures) for t in trials]  # the one trial that was on the node
    assert _node_ids(folder / lost[0].trial_id)[-1] != victim.node_id  # finished elsewhere
    _, children = children_of(MlflowClient(mlflow_uri), "lost")
    assert sorted(c.data.tags["mersweep.trial_id"] for c in children) == sorted(t.trial_id for t in trials)
    assert {(c.info.status, c.data.tags["mersweep.status"]) for c in children} == {("FINISHED", "ok")}


def _wait_for(condition, driver: subprocess.Popen, *, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert driver.poll() is None, "the sweep ended before the node could be removed"
        assert time.monotonic() < deadline, "trials never started on both nodes"
        time.sleep(0.2)

"""The tracking server dies mid-sweep and comes back: the sweep completes and MLflow lost nothing.

The server (MLflow on PostgreSQL, tests/pg_helpers.py) is SIGKILLed as a crashed host would be,
stays away until the sweep has said so and a trial has run from start to end without it (however
long that takes on a busy machine), and restarts on the same port with the same backend store. What MLflow holds
afterwards is compared with what Ray itself wrote for each trial (`runs/<sweep>/<trial>/result.json`).
"""

from __future__ import annotations

import io
import json
import math
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from sweeps.tracking.retry import RetryPolicy, TrackingUnavailable
from sweeps.tracking.tracker import SweepTracker
from tests.pg_helpers import start_mlflow_server, stop_process_group
from tests.sweep_helpers import ROOT, SMALL_SET, children_of, cli_env, driver_lines, write_sweep

N_TRIALS = 6  # 3-10 s each on 2 busy cores: several start and end while the server is away


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """A live server the tests may kill and restart (they leave it running)."""
    live = start_mlflow_server(postgres, tmp_path_factory.mktemp("mlflow_outage"), "outage")
    yield live
    live.stop()


@pytest.mark.slow
def test_the_tracker_keeps_everything_until_the_server_is_back(server):
    out = io.StringIO()
    policy = RetryPolicy(deadline_s=3.0, quiet_s=0.0, first_wait_s=0.1, max_wait_s=1.0)
    tracker = SweepTracker(server.uri, "direct", retry=policy, stream=out)
    tracker.open_parent(sweep="direct", parent_id=None, tags={})
    before = tracker.child("t1", "t1", {"optim.lr": 0.1})
    tracker.queue_metrics(before, {"val/a": 0.5}, step=1)

    server.kill()
    tracker.queue_metrics(before, {"val/a": 0.6}, step=2)
    during = tracker.child("t2", "t2", {"optim.lr": 0.2})  # what a Ray callback does: it must not raise
    assert during == "pending-t2"
    tracker.queue_metrics(during, {"val/a": 0.7}, step=1)
    tracker.finish_child(before, status="FINISHED", tags={"mersweep.status": "ok"})
    tracker.flush()  # waits up to the deadline, then keeps it all
    with pytest.raises(TrackingUnavailable, match=r"operations \(3 metric values\) were not logged"):
        tracker.finish_parent(status="FINISHED", metrics={}, tags={})

    server.start()
    tracker.finish_child(during, status="FINISHED", tags={"mersweep.status": "ok"})
    assert tracker.run_id_of("t2") not in (None, during)
    tracker.finish_parent(status="FINISHED", metrics={"best/val/a": 0.7}, tags={"mersweep.best_trial": "t2"})

    client = MlflowClient(tracking_uri=server.uri)
    parent, children = children_of(client, "direct")
    summary = {k: v for k, v in parent.data.metrics.items() if not k.startswith("tracking/")}
    assert parent.info.status == "FINISHED" and summary == {"best/val/a": 0.7}
    assert parent.data.metrics["tracking/backlog_max"] >= 3  # what waited through the outage was counted
    runs = {c.data.tags["mersweep.trial_id"]: c for c in children}
    assert sorted(runs) == ["t1", "t2"]
    for trial, lr, history in (("t1", "0.1", [(1, 0.5), (2, 0.6)]), ("t2", "0.2", [(1, 0.7)])):
        run = runs[trial]
        assert run.info.status == "FINISHED" and run.data.params == {"optim.lr": lr}
        assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val/a")] == history
    lines = out.getvalue().splitlines()
    assert [_kind(line) for line in lines] == ["unreachable", "gave up", "back"], lines


def _kind(line: str) -> str:
    for kind in ("unreachable", "gave up", "back"):
        if kind in line:
            return kind
    return line


@pytest.mark.slow
def test_a_sweep_survives_a_server_outage_and_loses_no_metric(server, tmp_path):
    spec = write_sweep(
        tmp_path,
        "outage",
        set={**SMALL_SET, "optim.max_epochs": 8, "optim.patience": 8},
        search={"algorithm": "random", "num_samples": N_TRIALS, "seed": 0},
        scheduler={"kind": "none"},  # every trial runs to its end: its full history is known
    )
    client = MlflowClient(tracking_uri=server.uri)
    with open(tmp_path / "stderr.txt", "w+") as err:
        sweep = subprocess.Popen(
            [sys.executable, str(ROOT / "run_sweep.py"), str(spec), "--tracking-uri", server.uri],
            cwd=tmp_path,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # Ray's processes go with it if the test has to stop it
        )
        try:
            _wait_for_a_child_run(client, "outage", sweep)
            server.kill()
            down_at = time.time()
            _wait_for_a_trial_inside_the_outage(tmp_path / "runs" / "outage", tmp_path / "stderr.txt", down_at, sweep)
            server.start()
            up_at = time.time()
            status = sweep.wait(timeout=300)
        finally:
            stop_process_group(sweep, ((signal.SIGINT, 30), (signal.SIGKILL, 10)))
        err.seek(0)
        stderr = err.read()
    assert status == 0, stderr[-3000:]
    assert "Traceback" not in driver_lines(stderr) and "skipped" not in stderr, stderr[-3000:]
    lines = stderr.splitlines()
    assert sum("tracking server" in ln and "unreachable" in ln for ln in lines) == 1, stderr[-3000:]
    assert sum("tracking server" in ln and "is back after" in ln for ln in lines) == 1, stderr[-3000:]

    ray_history = _ray_histories(tmp_path / "runs" / "outage")
    assert len(ray_history) == N_TRIALS
    inside = [t for t, h in ray_history.items() if down_at < _first_time(h) and _last_time(h) + 1 <= up_at]
    assert inside, "no trial ran entirely while the server was away: the outage missed the sweep"
    _assert_mlflow_holds(client, ray_history)


def _wait_for_a_child_run(client: MlflowClient, experiment: str, sweep: subprocess.Popen, timeout: float = 180) -> None:
    """Until the sweep logged its first trial: the outage must hit a sweep that is logging."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert sweep.poll() is None, "the sweep ended before the outage"
        exp = client.get_experiment_by_name(experiment)
        if exp and client.search_runs([exp.experiment_id], filter_string="tags.`mersweep.trial_id` != ''"):
            return
        time.sleep(0.5)
    pytest.fail(f"no child run after {timeout} s")


def _wait_for_a_trial_inside_the_outage(
    folder: Path, stderr: Path, down_at: float, sweep: subprocess.Popen, timeout: float = 600
) -> None:
    """Until the sweep has reported the server unreachable and a trial that Ray started after
    `down_at` has ended (the sweep's line for it), and the clock is a second past its last result
    (Ray's timestamps are whole seconds). Returns early if the sweep ends: the assertions
    afterwards then say what was missed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and sweep.poll() is None:
        said = stderr.read_text()
        ended = set(re.findall(r"\] trial (\S+) (?:done|pruned|failed) ", said))
        try:
            histories = _ray_histories(folder)
        except ValueError:  # a result line half-written
            histories = {}
        inside = [_last_time(h) for t, h in histories.items() if t in ended and h and down_at < _first_time(h)]
        if "unreachable" in said and inside and time.time() >= min(inside) + 1:
            return
        time.sleep(0.5)


def _ray_histories(folder: Path) -> dict[str, list[dict]]:
    """trial id -> the results Ray recorded for it, in order (one per line of result.json)."""
    return {
        path.parent.name: [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for path in folder.glob("*/result.json")
    }


def _first_time(history: list[dict]) -> int:
    return history[0]["timestamp"]


def _last_time(history: list[dict]) -> int:
    return history[-1]["timestamp"]


def _metric_series(history: list[dict]) -> dict[str, list[tuple[int, float]]]:
    """What the MLflow callback logs of each result: the namespaced numbers, at the result's iteration."""
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for row in history:
        for key, value in row.items():
            if "/" in key and isinstance(value, (int, float)) and not isinstance(value, bool):
                series[key].append((row["training_iteration"], float(value)))
        if "fold" in row:  # an epoch's place: its fold, its epoch, its stage (0: fine-tuning, r: round r)
            rnd = float(row["stage"].rsplit("_", 1)[1]) if row["stage"].startswith("self_training_") else 0.0
            for key, value in (("trial/fold", row["fold"]), ("trial/epoch", row["epoch"]), ("trial/round", rnd)):
                series[key].append((row["training_iteration"], float(value)))
    return series


def _same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    return len(a) == len(b) and all(
        sa == sb and (va == vb or (math.isnan(va) and math.isnan(vb))) for (sa, va), (sb, vb) in zip(a, b, strict=True)
    )


def _assert_mlflow_holds(client: MlflowClient, ray_history: dict[str, list[dict]]) -> None:
    parent, children = children_of(client, "outage")
    assert parent.info.status == "FINISHED"
    exp_id = parent.info.experiment_id
    every = client.search_runs([exp_id], run_view_type=ViewType.ALL, max_results=1000)
    assert len(every) == len(ray_history) + 1, "a run was logged twice (deleted duplicates count too)"
    by_trial = {c.data.tags["mersweep.trial_id"]: c for c in children}
    assert sorted(by_trial) == sorted(ray_history)  # exactly one child per trial
    assert parent.data.tags["mersweep.best_run_id"] in {c.info.run_id for c in children}
    for trial, history in ray_history.items():
        run = by_trial[trial]
        assert run.info.status == "FINISHED" and run.data.tags["mersweep.status"] == "ok", trial
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"config.yaml", "val_logits.npz"}
        expected = _metric_series(history)
        assert set(run.data.metrics) == set(expected), trial
        for key, series in expected.items():
            logged = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            assert _same(logged, series), f"{trial} {key}: MLflow {logged} != Ray {series}"

"""End to end: run_sweep.py on a local Ray, MLflow parent/child runs, best_config reproduces."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mer_core.configs import load_config
from mer_core.data import load_data
from mer_core.train import run
from tests.sweep_helpers import SMALL_SET, children_of, run_cli_here, run_sweep_here, write_sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_sweep(search_sweep):
    """The session's 6-trial TPE + ASHA sweep, run through the real CLI (tests/conftest.py):
    (work folder, tracking URI, experiment name, the CLI's stdout, its stderr)."""
    work, uri, name = search_sweep
    return work, uri, name, (work / "cli.stdout").read_text(), (work / "cli.stderr").read_text()


def test_cli_prints_progress_and_top_trials(finished_sweep):
    _, _, _, stdout, stderr = finished_sweep
    assert "trials 6/6 ended" in stderr
    assert "best config:" in stdout
    assert "val/weighted_f1" in stdout.splitlines()[1]


def test_a_sweep_without_the_end_of_sweep_report_says_how_to_write_it(finished_sweep):
    work, _, name, _, stderr = finished_sweep  # write_sweep asks for no report (tracking.report: false)
    line = next(ln for ln in stderr.splitlines() if ln.startswith("report: "))
    assert "not written (tracking.report: false)" in line and "python -m analysis report --sweep-dir" in line
    assert not (work / "runs" / name / "report").exists()


def test_mlflow_holds_one_parent_and_a_child_per_trial(finished_sweep):
    _, uri, name, _, _ = finished_sweep
    client = MlflowClient(uri)
    parent, children = children_of(client, name)
    assert len(children) == 6
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert len({c.data.tags["mersweep.trial_id"] for c in children}) == 6
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"sweep.yaml", "search_space.yaml"}
    assert parent.data.tags["mersweep.best_trial"]
    for child in children:
        assert child.data.params["model.hidden_dim"] in {"32", "64", "128"}
        assert "val/weighted_f1" in child.data.metrics
        history = client.get_metric_history(child.info.run_id, "val/weighted_f1")
        assert len(history) >= 1


def test_asha_prunes_and_finished_trials_have_artifacts(finished_sweep):
    _, uri, name, _, _ = finished_sweep
    client = MlflowClient(uri)
    _, children = children_of(client, name)
    outcomes = [c.data.tags["mersweep.status"] for c in children]
    assert outcomes.count("pruned") >= 1, outcomes
    assert outcomes.count("ok") >= 1, outcomes
    for child in children:
        if child.data.tags["mersweep.status"] == "ok":
            assert child.info.status == "FINISHED"
            names = {a.path for a in client.list_artifacts(child.info.run_id)}
            assert {"config.yaml", "val_logits.npz", "trial.json"} <= names
            assert len(client.get_metric_history(child.info.run_id, "val/weighted_f1")) > 1
        else:
            assert child.info.status == "KILLED"


def test_best_config_reproduces_the_best_trial(finished_sweep):
    work, uri, name, _, _ = finished_sweep
    client = MlflowClient(uri)
    parent, children = children_of(client, name)
    best = next(c for c in children if c.info.run_id == parent.data.tags["mersweep.best_run_id"])
    cfg = load_config(work / "runs" / name / "best_config.yaml")
    result = run(cfg, load_data(cfg.data))
    assert result.status == "ok"
    np.testing.assert_allclose(result.metrics["val/weighted_f1"], best.data.metrics["val/weighted_f1"], atol=1e-6)


def test_dry_run_starts_nothing_and_writes_nothing(tmp_path):
    spec = write_sweep(tmp_path, "dry")
    proc = run_cli_here([str(spec), "--dry-run"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "search space:" in proc.stderr and "optim.lr" in proc.stderr
    assert not (tmp_path / "runs").exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_a_sweep_run_where_ray_is_already_up_leaves_that_session_running(tmp_path, mlflow_uri):
    """The CLI stops the Ray cluster it started, never a session its caller had up before."""
    import ray

    from tests.ray_here import ensure_session

    ensure_session()
    session = ray.get_runtime_context().gcs_address
    spec = write_sweep(
        tmp_path,
        "caller-ray",
        set={**SMALL_SET, "optim.max_epochs": 1, "optim.pretrain_epochs": 0, "self_training.rounds": 0},
        search={"algorithm": "random", "num_samples": 1, "seed": 0},
        scheduler={"kind": "none"},
    )
    proc = run_sweep_here([str(spec), "--tracking-uri", mlflow_uri], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ray.is_initialized() and ray.get_runtime_context().gcs_address == session

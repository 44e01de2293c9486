"""A sweep tracked by a real MLflow tracking server, read back through the MLflow API.

The server runs as `python -m mlflow server` on a PostgreSQL backend store with proxied artifacts,
as on a cluster (README "On a cluster"; tests/pg_helpers.py), and the sweep reaches it only
through `--tracking-uri http://...`.
The MLflow UI nests runs by the `mlflow.parentRunId` tag, so checking that tag through the
server's API is checking what the UI shows.
"""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from mer_core.configs import load_config
from tests.pg_helpers import start_mlflow_server
from tests.sweep_helpers import SMALL_SET, children_of, free_port, run_cli_here, run_sweep_here, write_sweep

N_TRIALS = 3
HEADS = ("audio", "text", "video", "fusion")  # SMALL_DATA's modalities + the fusion head
N_CLASSES = 6  # synthetic-mer's emotions


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """A live tracking server on PostgreSQL (a database of its own), on a free port: its http:// URI."""
    live = start_mlflow_server(postgres, tmp_path_factory.mktemp("mlflow_server"), "served")
    yield live.uri
    live.stop()


@pytest.fixture(scope="module")
def server_sweep(server, tmp_path_factory):
    """A 3-trial sweep (every trial runs to the end) logged to the server."""
    work = tmp_path_factory.mktemp("server_sweep")
    spec = write_sweep(
        work,
        "served",
        set={**SMALL_SET, "optim.max_epochs": 3, "optim.patience": 3},
        search={"algorithm": "random", "num_samples": N_TRIALS, "seed": 0},
        scheduler={"kind": "none"},
    )
    proc = run_sweep_here([str(spec), "--tracking-uri", server], cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, MlflowClient(tracking_uri=server)


@pytest.mark.slow
def test_children_nest_under_one_parent(server_sweep):
    work, client = server_sweep
    parent, children = children_of(client, "served")
    assert len(children) == N_TRIALS
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}  # what the UI nests by
    assert len({c.data.tags["mersweep.trial_id"] for c in children}) == N_TRIALS
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mersweep.best_run_id"] in {c.info.run_id for c in children}
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"sweep.yaml", "search_space.yaml"}
    assert not (work / "mlflow.db").exists() and not (work / "mlruns").exists()  # everything went to the server


@pytest.mark.slow
def test_params_and_metric_histories(server_sweep):
    _, client = server_sweep
    _, children = children_of(client, "served")
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["mersweep.status"] == "ok"
        params = child.data.params
        assert params["model.hidden_dim"] in {"32", "64", "128"}
        assert float(params["optim.lr"]) > 0 and params["data.source"] == "synthetic-mer"
        history = client.get_metric_history(child.info.run_id, "val/weighted_f1")
        steps = [m.step for m in history]
        assert len(steps) > 1 and steps == sorted(set(steps)) and steps[0] == 1
        assert 0.0 <= child.data.metrics["val/weighted_f1"] <= 1.0


@pytest.mark.slow
def test_trial_artifacts_download_from_the_server(server_sweep, tmp_path):
    _, client = server_sweep
    _, children = children_of(client, "served")
    for i, child in enumerate(children):
        run_id = child.info.run_id
        assert {a.path for a in client.list_artifacts(run_id)} >= {"config.yaml", "val_logits.npz", "trial.json"}
        dest = tmp_path / str(i)
        dest.mkdir()
        cfg = load_config(client.download_artifacts(run_id, "config.yaml", str(dest)))
        assert str(cfg.model.hidden_dim) == child.data.params["model.hidden_dim"]
        with np.load(client.download_artifacts(run_id, "val_logits.npz", str(dest))) as npz:
            n_val = len(npz["labels"])
            assert n_val > 0
            for head in HEADS:
                assert npz[f"logits/{head}"].shape == (n_val, N_CLASSES)
                assert np.isfinite(npz[f"logits/{head}"]).all()


@pytest.mark.slow
def test_credentials_in_the_uri_reach_the_server_and_stay_hidden(server, tmp_path):
    spec = write_sweep(tmp_path, "cred")
    uri = server.replace("http://", "http://user:secret@")
    proc = run_cli_here([str(spec), "--tracking-uri", uri, "--dry-run"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "secret" not in proc.stderr + proc.stdout
    assert "http://***@127.0.0.1" in proc.stderr


@pytest.mark.parametrize("userinfo", ["", "user:secret@"], ids=["plain", "credentials"])
def test_unreachable_server_exits_2_and_writes_nothing(userinfo, tmp_path):
    spec = write_sweep(tmp_path, "nowhere")
    uri = f"http://{userinfo}127.0.0.1:{free_port()}"
    proc = run_cli_here([str(spec), "--tracking-uri", uri], cwd=tmp_path)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: tracking.uri"), proc.stderr[-2000:]
    assert "secret" not in proc.stderr + proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nowhere.yaml"]


@pytest.mark.slow
def test_runs_are_stored_in_postgresql(server_sweep, postgres):
    import psycopg2

    conn = psycopg2.connect(postgres.uri("served").replace("+psycopg2", ""))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM runs JOIN experiments USING (experiment_id) WHERE experiments.name = %s",
                ("served",),
            )
            assert cur.fetchone()[0] == N_TRIALS + 1  # the parent and one child per trial
    finally:
        conn.close()

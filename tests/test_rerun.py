"""Every logged config re-runs to its numbers: `python -m mer_core.train` given one alone reproduces
the run that logged it, on the same machine, in the same (single-trial) mode.

A trial's `config.yaml` is the effective config (threads, device and fold seed written out), and
`data.seed` is the dataset draw the sweep loaded, so the re-run trains on the same rows, folds and
thread count. Both runs are the same sequence of operations on the same machine and thread count,
so their metrics are compared for exact equality: a difference means something that shaped the run
is missing from its config. The sweeps leave `runtime.threads` unset (a trial takes its CPU share),
hide half the labels and hold out a test split, so the thread count and `data.seed` both matter.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks.common import sqlite_store
from mer_core.configs import load_config
from sweeps.tracking.names import CONFIG_ARTIFACT, final_metric, mlflow_key
from tests.sweep_helpers import run_analysis, run_program, run_sweep_here, write_sweep

pytestmark = pytest.mark.slow

DATA = {
    "source": "synthetic-mer",
    "seed": 0,
    "folds": 1,
    "test_fraction": 0.2,
    "labelled_fraction": 0.5,
    "synthetic": {"n_labelled": 160, "n_unlabelled": 60, "dims": {"audio": 12, "text": 16, "video": 8}},
}
SET = {  # no runtime.threads: the trial's CPU share decides it, and its config.yaml must say so
    "model.ff_dim": 32,
    "model.hidden_dim": 16,
    "optim.max_epochs": 3,
    "optim.patience": 2,
    "optim.pretrain_epochs": 1,
    "self_training.oversample_to": 40,
}


def _sweep_yaml(folder: Path, name: str, **overrides) -> Path:
    """One random trial on this file's data, no scheduler (`write_sweep` with these sections)."""
    sections = {"search": {"algorithm": "random", "num_samples": 1, "seed": 0}, "scheduler": {"kind": "none"}}
    return write_sweep(folder, name, data=DATA, set=SET, **{**sections, **overrides})


def _run_sweep(folder: Path, name: str, template: Path, **overrides):
    from mlflow.tracking import MlflowClient

    uri = sqlite_store(folder / "mlflow.db", template=template)
    proc = run_sweep_here([str(_sweep_yaml(folder, name, **overrides)), "--tracking-uri", uri], cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert children and all(r.data.tags["mersweep.status"] == "ok" for r in children)
    return folder, uri, client, children


@pytest.fixture(scope="module")
def search(tmp_path_factory, mlflow_template):
    """One finished search trial (random sampler, no early stopping), logged to a sqlite store."""
    return _run_sweep(tmp_path_factory.mktemp("rerun-search"), "rerun-search", mlflow_template)


def _retrain(config: Path, cwd: Path) -> dict[str, float]:
    """`python -m mer_core.train CONFIG --save DIR` as a user runs it; the run's metrics (metrics.json)."""
    out = cwd / f"retrained-{config.stem}"
    proc = run_program(["-m", "mer_core.train"], [str(config), "--quiet", "--save", str(out)], cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics.pop("status") == "ok"
    return metrics


def _assert_same_metrics(retrained: dict[str, float], logged: dict[str, float]) -> None:
    """Every final metric of the re-run equals the logged one (val/ and test/ scores among them)."""
    assert {"val/weighted_f1", "test/weighted_f1", "val/loss"} <= set(retrained)
    mismatched = {
        k: (v, logged.get(mlflow_key(final_metric(k)))) for k, v in retrained.items()
        if logged.get(mlflow_key(final_metric(k))) != v
    }  # fmt: skip
    assert not mismatched, mismatched


def _logged_config(client, run, folder: Path) -> Path:
    return Path(client.download_artifacts(run.info.run_id, CONFIG_ARTIFACT, str(folder)))


def test_a_search_trials_logged_config_re_runs_to_its_logged_metrics(search, tmp_path):
    folder, _, client, children = search
    run = children[0]
    path = _logged_config(client, run, tmp_path)
    cfg = load_config(path)
    # What shaped the trial is written out: its CPU share of threads, the device auto found, the folds.
    assert (cfg.runtime.threads, cfg.runtime.device, cfg.data.fold_seed) == (1, "cpu", 0)
    assert run.data.params["runtime.threads"] == "1" and run.data.params["data.fold_seed"] == "0"
    _assert_same_metrics(_retrain(path, tmp_path), run.data.metrics)
    # best_config.yaml is that trial's own logged config (one trial: the best).
    assert load_config(folder / "runs" / "rerun-search" / "best_config.yaml") == cfg


def test_an_ablation_trials_logged_config_re_runs_to_its_logged_metrics(tmp_path_factory, tmp_path, mlflow_template):
    """Seed 1 of a variant: its folds and init follow seed 1, its data the sweep's `data.seed` 0."""
    ablation = {"reference": "full", "variants": {"full": {}}, "seeds": [1]}
    folder = tmp_path_factory.mktemp("rerun-ablation")
    _, _, client, children = _run_sweep(
        folder, "rerun-ablation", mlflow_template, kind="ablation", search_space=None, ablation=ablation
    )
    (run,) = children
    path = _logged_config(client, run, tmp_path)
    cfg = load_config(path)
    assert (cfg.seed, cfg.data.seed, cfg.data.fold_seed, cfg.runtime.threads) == (1, 0, 1, 1)
    _assert_same_metrics(_retrain(path, tmp_path), run.data.metrics)


def test_export_bests_yaml_re_runs_to_the_numbers_it_states(search, tmp_path):
    """export-best re-seeds the one configuration, writes its YAML and trains it for the registry; the
    YAML's header names the run whose numbers it states, and the YAML alone gives them back."""
    import shutil

    from mlflow.tracking import MlflowClient

    folder, _, _, _ = search
    shutil.copy(folder / "mlflow.db", tmp_path / "mlflow.db")  # the re-seed and the model stay out of the fixture
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "best.yaml"
    args = ["export-best", "--experiment", "rerun-search", "--tracking-uri", uri, "--top", "1", "--seeds", "1"]
    proc = run_analysis([*args, "--out", str(out), "--model-name", "rerun-best"], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "does not give back" not in proc.stderr  # training it for the registry reproduced it too
    text = out.read_text()
    chosen = re.search(r"config of run (\w+) \(seed \d+\), which logged (.*)", text)
    assert chosen is not None, text
    logged = MlflowClient(uri).get_run(chosen.group(1)).data.metrics
    stated = dict(pair.rsplit(" ", 1) for pair in chosen.group(2).split(", "))
    assert set(stated) == {"val/weighted_f1", "test/weighted_f1"}
    assert all(f"{logged[final_metric(m)]:.4f}" == v for m, v in stated.items())
    _assert_same_metrics(_retrain(out, tmp_path), logged)

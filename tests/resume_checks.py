"""What a stopped-and-resumed sweep must look like: Ray, Optuna and MLflow agree on every trial.

Read back through each component's own files and API (Ray's experiment state, the searcher state
Ray restores, MLflow's client), never through mersweep's code.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from tests.sweep_helpers import children_of

METRIC = "val/weighted_f1"
TERMINAL = {"FINISHED", "FAILED", "KILLED"}
ARTIFACTS = {"config.yaml", "val_logits.npz", "trial.json"}


def ray_trials(folder: Path) -> dict[str, object]:
    """Trial id -> trial, from Ray's saved experiment state in `folder` (runs/<sweep>/)."""
    from ray.tune import ExperimentAnalysis

    return {t.trial_id: t for t in ExperimentAnalysis(str(folder)).trials}


def optuna_history(folder: Path) -> tuple[object, dict]:
    """(study, Ray trial id -> Optuna trial) from the newest searcher state Ray saved in `folder`.

    OptunaSearch pickles its attributes (Ray's `OptunaSearch.save`); `_ot_study` and `_ot_trials`
    are what it asks and tells through.
    """
    path = max(folder.glob("searcher-state-*.pkl"))
    with path.open("rb") as f:
        state = pickle.load(f)  # written by the test's own sweep
    return state["_ot_study"], state["_ot_trials"]


def lose_the_outbox(uri: str, experiment: str) -> None:
    """The MLflow state of a crash while the driver's outbox held the tail of two ended trials: one
    run never got its end (still RUNNING), another was never created (its creation still queued)."""
    client = MlflowClient(tracking_uri=uri)
    _, children = children_of(client, experiment)
    left_open, never_created = sorted(children, key=lambda c: c.data.tags["mersweep.trial_id"])[:2]
    client.update_run(left_open.info.run_id, status="RUNNING")
    client.delete_run(never_created.info.run_id)
    gc = [sys.executable, "-m", "mlflow", "gc", "--backend-store-uri", uri, "--tracking-uri", uri]
    done = subprocess.run([*gc, "--run-ids", never_created.info.run_id], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(children_of(client, experiment)[1]) == len(children) - 1


def tear_ray_state(folder: Path) -> list[str]:
    """Empty Ray's experiment-level state files in `folder`, as a driver killed mid-copy leaves them."""
    torn = []
    for pattern in ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl"):
        for path in folder.glob(pattern):
            path.write_bytes(b"")
            torn.append(path.name)
    return torn


def assert_complete(folder: Path, uri: str, n_trials: int, *, before: object | None = None) -> None:
    """Exactly `n_trials` trials, each finished once, in one Optuna history, one live MLflow run each.

    `before`: the Optuna study Ray had saved when the driver was killed; its trials must open the
    final history unchanged.
    """
    trials = ray_trials(folder)
    assert len(trials) == n_trials, sorted(trials)
    assert all(t.status == "TERMINATED" and t.last_result.get("final") == 1 for t in trials.values()), [
        (t.trial_id, t.status) for t in trials.values()
    ]
    asked = _assert_one_history(folder, trials, before)
    _assert_one_run_per_trial(folder, uri, trials, asked)
    assert (folder / "best_config.yaml").is_file()


def _assert_one_history(folder: Path, trials: dict, before: object | None) -> dict:
    """One Optuna history over all trials: the sampler that proposed the trials after a resume
    held the earlier ones (Ray restored it; a fresh seeded sampler would number its trials from 0
    again and replay the first trials' parameters). Returns Ray trial id -> Optuna trial."""
    study, asked = optuna_history(folder)
    history = study.get_trials(deepcopy=False)
    assert set(asked) == set(trials)
    assert sorted(t.number for t in history) == list(range(len(trials)))
    assert all(t.state.name == "COMPLETE" for t in history), [t.state.name for t in history]
    assert len({json.dumps(t.params, sort_keys=True) for t in history}) == len(trials)
    for old in before.get_trials(deepcopy=False) if before is not None else []:
        assert history[old.number].params == old.params, (old.number, old.params, history[old.number].params)
        assert old.state.name != "COMPLETE" or history[old.number].value == old.value
    for trial_id, ot_trial in asked.items():
        config, last = trials[trial_id].config, trials[trial_id].last_result
        assert all(config[k] == v for k, v in ot_trial.params.items()), (ot_trial.params, config)
        assert history[ot_trial.number].value == last[METRIC]
    return asked


def _assert_one_run_per_trial(folder: Path, uri: str, trials: dict, asked: dict) -> None:
    """The sweep's parent run, ended, with one live child run per Ray trial: none missing, none
    twice, each ended with its whole history and artifacts; retired runs ended and soft-deleted."""
    client = MlflowClient(tracking_uri=uri)
    parent, children = children_of(client, folder.name)  # live runs only: superseded ones are deleted
    assert parent.info.run_id == json.loads((folder / "mersweep_state.json").read_text())["parent_run_id"]
    assert parent.info.status == "FINISHED"
    by_trial = {c.data.tags["mersweep.trial_id"]: c for c in children}
    assert len(children) == len(by_trial) and set(by_trial) == set(trials), sorted(by_trial)
    for trial_id, child in by_trial.items():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED" and child.data.tags["mersweep.status"] == "ok", child.data.tags
        assert all(child.data.params[k] == str(v) for k, v in asked[trial_id].params.items())
        # Every result of the trial's last attempt (the one Ray kept) is one step, logged once:
        # a trial rerun on resume does not pile a second history onto the first.
        steps = [m.step for m in client.get_metric_history(child.info.run_id, METRIC)]
        assert steps == list(range(1, trials[trial_id].last_result["iterations_since_restore"] + 1)), steps
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert artifacts >= ARTIFACTS, artifacts
    everything = client.search_runs([parent.info.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    retired = [r for r in everything if r.info.lifecycle_stage == "deleted"]
    assert all(r.info.status == "KILLED" and r.data.tags["mersweep.status"] == "superseded" for r in retired)

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


def optuna_history(folder: Path) -> tuple[list, dict]:
    """(the study's trials as Ray saved them, Ray trial id -> Optuna trial) from the newest
    searcher state Ray saved in `folder`.

    TellingOptunaSearch pickles its attributes (`sweeps.resume.searcher`); `_asked` is what it asks
    and tells through, `_study_history` the stored study's trials at that save.
    """
    path = max(folder.glob("searcher-state-*.pkl"))
    with path.open("rb") as f:
        state = pickle.load(f)  # written by the test's own sweep
    return state["_study_history"], state["_asked"]


def stored_study(folder: Path) -> list:
    """The trials of the sweep's study in its Optuna storage (runs/<sweep>/optuna.db), read through Optuna."""
    import optuna

    return optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'optuna.db'}").get_trials()


def leave_orphans(folder: Path) -> int:
    """The stored study of a driver killed after Ray's last save: a trial asked since (Ray forgot it,
    still RUNNING in the storage) and one asked and told since. Returns the study's trial count."""
    import optuna

    study = optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'optuna.db'}")
    lr = optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    for told in (True, False):
        trial = study.ask({"optim.lr": lr})
        trial.set_user_attr("ray_trial_id", "forgotten")
        trial.report(0.1, 1)
        if told:
            study.tell(trial, 0.2)
    return len(study.get_trials())


def lose_the_outbox(uri: str, experiment: str) -> tuple[str, ...]:
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
    return tuple(run.data.tags["mersweep.trial_id"] for run in (left_open, never_created))


def tear_ray_state(folder: Path) -> list[str]:
    """Empty Ray's experiment-level state files in `folder`, as a driver killed mid-copy leaves them."""
    torn = []
    for pattern in ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl"):
        for path in folder.glob(pattern):
            path.write_bytes(b"")
            torn.append(path.name)
    return torn


def assert_complete(
    folder: Path, uri: str, n_trials: int, *, before: list | None = None, lost: tuple[str, ...] = ()
) -> None:
    """Exactly `n_trials` trials, each finished once, in one Optuna history, one live MLflow run each.

    `before`: the Optuna trials Ray had saved when the driver was killed (of every kill, where
    there were several); they must open the final history unchanged. `lost`: trials whose runs
    the crash took with the outbox.
    """
    trials = ray_trials(folder)
    assert len(trials) == n_trials, sorted(trials)
    assert all(t.status == "TERMINATED" and t.last_result.get("final") == 1 for t in trials.values()), [
        (t.trial_id, t.status) for t in trials.values()
    ]
    asked, history = _assert_one_history(folder, trials, before)
    _assert_one_run_per_trial(folder, uri, trials, asked, history, lost)
    assert (folder / "best_config.yaml").is_file()


def _assert_one_history(folder: Path, trials: dict, before: list | None) -> tuple[dict, list]:
    """One Optuna history over all trials: the sampler that proposed the trials after a resume
    held the earlier ones (Ray restored it; a fresh seeded sampler would number its trials from 0
    again and replay the first trials' parameters). Returns (Ray trial id -> Optuna trial, the stored trials)."""
    saved, asked = optuna_history(folder)
    history = stored_study(folder)  # the storage holds what Ray's searcher knows: no orphans, no RUNNING
    assert [(t.number, t.state, t.params, t.value) for t in history] == [
        (t.number, t.state, t.params, t.value) for t in saved
    ]
    assert set(asked) == set(trials)
    assert sorted(t.number for t in history) == list(range(len(trials)))
    assert all(t.state.name == "COMPLETE" for t in history), [t.state.name for t in history]
    assert len({json.dumps(t.params, sort_keys=True) for t in history}) == len(trials)
    for old in before or []:
        assert history[old.number].params == old.params, (old.number, old.params, history[old.number].params)
        assert old.state.name != "COMPLETE" or history[old.number].value == old.value
    for trial_id, ot_trial in asked.items():
        config, last = trials[trial_id].config, trials[trial_id].last_result
        stored = history[ot_trial.number]
        assert all(config[k] == v for k, v in stored.params.items()), (stored.params, config)
        assert stored.value == last[METRIC]
        assert stored.user_attrs["ray_trial_id"] == trial_id
    return asked, history


def _assert_one_run_per_trial(
    folder: Path, uri: str, trials: dict, asked: dict, history: list, lost: tuple[str, ...] = ()
) -> None:
    """The sweep's parent run, ended, with one live child run per Ray trial: none missing, none
    twice, each ended with its whole history and artifacts; retired runs ended and soft-deleted."""
    client = MlflowClient(tracking_uri=uri)
    parent, children = children_of(client, folder.name)  # live runs only: superseded ones are deleted
    assert parent.info.run_id == json.loads((folder / "mersweep_state.json").read_text())["parent_run_id"]
    assert parent.info.status == "FINISHED"
    by_trial = {c.data.tags["mersweep.trial_id"]: c for c in children}
    assert len(children) == len(by_trial) and set(by_trial) == set(trials), sorted(by_trial)
    everything = client.search_runs([parent.info.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    retired = [r for r in everything if r.info.lifecycle_stage == "deleted"]
    relogged = {r.data.tags.get("mersweep.trial_id") for r in retired} | set(lost)
    for trial_id, child in by_trial.items():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED" and child.data.tags["mersweep.status"] == "ok", child.data.tags
        number = asked[trial_id].number
        assert all(child.data.params[k] == str(v) for k, v in history[number].params.items())
        # Optuna and MLflow name each other: the run carries the trial number, the trial the run id.
        assert child.data.tags["mersweep.optuna_trial"] == str(number)
        # A trial that had ended before the crash but whose end never reached MLflow is logged afresh
        # on resume; Optuna froze it when it was told, so it keeps naming its first run (retired, or
        # here lost with the outbox): never another trial's.
        linked = history[number].user_attrs["mlflow_run_id"]
        others = {r.info.run_id for r in everything if r.data.tags.get("mersweep.trial_id") != trial_id}
        assert linked == child.info.run_id or (trial_id in relogged and linked not in others), (trial_id, linked)
        # Every result of the trial's last attempt (the one Ray kept) is one step, logged once:
        # a trial rerun on resume does not pile a second history onto the first.
        steps = [m.step for m in client.get_metric_history(child.info.run_id, METRIC)]
        assert steps == list(range(1, trials[trial_id].last_result["iterations_since_restore"] + 1)), steps
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert artifacts >= ARTIFACTS, artifacts
    assert all(r.info.status == "KILLED" and r.data.tags["mersweep.status"] == "superseded" for r in retired)

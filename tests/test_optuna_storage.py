"""The sweep's Optuna study in an RDB storage: resume consistency, warm start, checks, dashboard.

Fast tests drive the searchers and the storage helpers directly on SQLite files (real Optuna, no
Ray); the slow one runs two sweeps through the CLI, the second warm-started from the first, and
reads the second's study back over optuna-dashboard's HTTP API while it runs.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from mer_core.errors import ConfigError
from sweeps.ablation.plan import AblationPlan
from sweeps.ablation.search import AblationSearcher
from sweeps.fused.search import PopulationSearcher
from sweeps.space import load_space, make_sampler
from sweeps.space.study import StudyRef, check_storage, default_storage, retune_study_name, study_names
from sweeps.space.tell import TellingOptunaSearch
from sweeps.space.warm_start import WARM_ATTR, load_warm_start, resolve_source
from sweeps.spec import load_sweep
from tests.driver_helpers import Drivers
from tests.sweep_helpers import ROOT, SMALL_SET, children_of, cli_env, free_port, run_sweep_here, write_sweep

METRIC = "val/weighted_f1"
SPACE = ROOT / "search_spaces/quick.yaml"
FINAL = {"final": 1, "status": "ok"}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(tmp_path: Path, name: str = "s") -> tuple[StudyRef, optuna.Study]:
    ref = StudyRef(default_storage(tmp_path), name)
    space = load_space(SPACE)
    return ref, ref.create(sampler=make_sampler("tpe", 0, space=space, n_startup_trials=2), mode="max")


def _searcher(study: optuna.Study) -> TellingOptunaSearch:
    return TellingOptunaSearch(space=load_space(SPACE).define_by_run, metric=METRIC, mode="max", study=study)


def _stored(ref: StudyRef) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=ref.name, storage=ref.storage).get_trials()


# -- --resume: the stored study follows Ray's saved searcher ------------------------------------------
def test_restore_drops_what_ray_forgot_and_reruns_what_it_reruns(tmp_path):
    ref, study = _study(tmp_path)
    search = _searcher(study)
    for trial_id in ("done", "running"):
        search.suggest(trial_id)
        search.on_trial_result(trial_id, {METRIC: 0.4, "training_iteration": 1})
    search.on_trial_complete("done", {METRIC: 0.5, **FINAL})
    checkpoint = tmp_path / "searcher-state.pkl"
    search.save(str(checkpoint))  # what Ray saved; then the driver went on, and was killed
    search.on_trial_result("running", {METRIC: 0.45, "training_iteration": 2})
    search.on_trial_complete("running", {METRIC: 0.6, **FINAL})
    search.suggest("forgotten")
    assert len(_stored(ref)) == 3

    resumed = _searcher(optuna.load_study(study_name=ref.name, storage=ref.storage))
    resumed.restore(str(checkpoint))
    stored = _stored(ref)
    assert [(t.number, t.state) for t in stored] == [(0, TrialState.COMPLETE), (1, TrialState.RUNNING)]
    assert stored[1].intermediate_values == {}  # Ray reruns it from scratch: its epochs come again
    assert [t.user_attrs["ray_trial_id"] for t in stored] == ["done", "running"]

    # Ray reruns "running" and asks for one more trial: numbers go on from Ray's count.
    resumed.on_trial_result("running", {METRIC: 0.41, "training_iteration": 1})
    resumed.on_trial_complete("running", {METRIC: 0.55, **FINAL})
    resumed.suggest("new")
    resumed.on_trial_complete("new", {METRIC: 0.3})  # stopped by the scheduler
    stored = _stored(ref)
    assert [(t.number, t.state) for t in stored] == [
        (0, TrialState.COMPLETE),
        (1, TrialState.COMPLETE),
        (2, TrialState.PRUNED),
    ]
    assert stored[1].value == 0.55 and stored[1].intermediate_values == {1: 0.41}
    assert stored[2].user_attrs["ray_trial_id"] == "new"


def test_restore_leaves_a_study_that_matches_alone(tmp_path):
    ref, study = _study(tmp_path)
    search = _searcher(study)
    search.suggest("a")
    search.on_trial_complete("a", {METRIC: 0.5, **FINAL})
    checkpoint = tmp_path / "searcher-state.pkl"
    search.save(str(checkpoint))
    study_id = study._study_id
    resumed = _searcher(optuna.load_study(study_name=ref.name, storage=ref.storage))
    resumed.restore(str(checkpoint))
    assert resumed.study._study_id == study_id  # nothing rewritten: the dashboard keeps its study


def test_restore_reruns_errored_trials(tmp_path):
    """Ray resumes errored trials too (resume_errored): their FAIL is taken back until they end again."""
    ref, study = _study(tmp_path)
    search = _searcher(study)
    search.suggest("crashed")
    search.on_trial_complete("crashed", None, error=True)
    checkpoint = tmp_path / "searcher-state.pkl"
    search.save(str(checkpoint))
    resumed = _searcher(optuna.load_study(study_name=ref.name, storage=ref.storage))
    resumed.restore(str(checkpoint))
    assert [t.state for t in _stored(ref)] == [TrialState.RUNNING]
    resumed.on_trial_complete("crashed", {METRIC: 0.5, **FINAL})
    assert [(t.state, t.value) for t in _stored(ref)] == [(TrialState.COMPLETE, 0.5)]


def test_fused_restore_puts_the_members_back(tmp_path):
    ref, study = _study(tmp_path)
    space = load_space(SPACE)
    args = {"sampler": study.sampler, "metric": METRIC, "mode": "max", "num_samples": 4, "population": 2}
    search = PopulationSearcher(space, study=study, **args)
    search.suggest("p0")
    assert [t.user_attrs["ray_trial_id"] for t in _stored(ref)] == ["p0-m0", "p0-m1"]
    search.on_trial_result("p0", {"m0/iteration": 1, f"m0/{METRIC}": 0.3, "m1/iteration": 1, f"m1/{METRIC}": 0.2})
    checkpoint = tmp_path / "searcher-state.pkl"
    search.save(str(checkpoint))
    search.suggest("p1")  # asked after Ray's save: forgotten
    assert len(_stored(ref)) == 4

    resumed = PopulationSearcher(space, study=optuna.load_study(study_name=ref.name, storage=ref.storage), **args)
    resumed.restore(str(checkpoint))
    stored = _stored(ref)
    assert [(t.state, t.intermediate_values) for t in stored] == [(TrialState.RUNNING, {})] * 2
    result = {"final": 1, "status": "ok", METRIC: 0.0, "rungs_result": "[]"}
    result.update({"m0/status": "ok", f"m0/{METRIC}": 0.5, "m0/iteration": 2})
    result.update({"m1/status": "ok", f"m1/{METRIC}": 0.4, "m1/iteration": 2})
    resumed.on_trial_result("p0", {"m0/iteration": 1, f"m0/{METRIC}": 0.31, "m1/iteration": 1, f"m1/{METRIC}": 0.21})
    resumed.on_trial_complete("p0", result)
    stored = _stored(ref)
    assert [(t.state, t.value, t.intermediate_values) for t in stored] == [
        (TrialState.COMPLETE, 0.5, {1: 0.31}),
        (TrialState.COMPLETE, 0.4, {1: 0.21}),
    ]
    assert resumed.suggest("p2") is not None and len(_stored(ref)) == 4


def test_ablation_retuning_studies_are_stored_and_restored(tmp_path):
    ref = StudyRef(default_storage(tmp_path), "abl")
    plan = AblationPlan(variants=("a", "b"), seeds=(0,), retune_trials=2, metric=METRIC)
    search = AblationSearcher(plan, space=load_space(SPACE), algorithm="random", seed=0, study=ref)
    as_built = pickle.dumps(search)  # Ray keeps the searcher as built (tuner.pkl) and restores into that
    stored = {v: StudyRef(ref.storage, retune_study_name("abl", v)) for v in ("a", "b")}
    search.suggest("r0")  # variant a's first re-tuning trial
    search.on_trial_complete("r0", {METRIC: 0.5, **FINAL})
    search.suggest("r1")
    checkpoint = tmp_path / "searcher-state.pkl"
    search.save(str(checkpoint))
    search.suggest("r2")  # variant b, asked after Ray's save: forgotten
    assert [len(_stored(stored[v])) for v in ("a", "b")] == [2, 1]
    assert _stored(stored["a"])[1].user_attrs["ray_trial_id"] == "r1"

    resumed = pickle.loads(as_built)
    resumed.restore(str(checkpoint))
    assert [len(_stored(stored[v])) for v in ("a", "b")] == [2, 0]
    resumed.on_trial_complete("r1", {METRIC: 0.6, **FINAL})
    assert [t.state for t in _stored(stored["a"])] == [TrialState.COMPLETE, TrialState.COMPLETE]


def test_the_checkpoint_holds_no_live_connection(tmp_path):
    _, study = _study(tmp_path)
    search = _searcher(study)
    search.suggest("a")
    path = tmp_path / "state.pkl"
    search.save(str(path))
    with path.open("rb") as fh:
        state = pickle.load(fh)
    assert [t.number for t in state["_study_history"]] == [0]
    assert state["study"].study_name == "s"


# -- warm start -----------------------------------------------------------------------------------------
def _earlier(tmp_path: Path) -> StudyRef:
    """An earlier sweep's study: some trials that fit search_spaces/quick.yaml and some that do not."""
    folder = tmp_path / "runs" / "earlier"
    ref = StudyRef(default_storage(folder), "earlier")
    study = ref.create(sampler=optuna.samplers.RandomSampler(seed=0), mode="max")
    base = {
        "optim.lr": 1e-3,
        "optim.weight_decay": 1e-4,
        "model.hidden_dim": 64,
        "model.dropout": 0.1,
        "loss.w_modality": 1.0,
        "model.fusion": "concat",
    }

    dists = {
        "optim.lr": optuna.distributions.FloatDistribution(1e-5, 1.0, log=True),
        "optim.weight_decay": optuna.distributions.FloatDistribution(0.0, 1.0),
        "model.hidden_dim": optuna.distributions.CategoricalDistribution([32, 48, 64, 128]),
        "model.dropout": optuna.distributions.FloatDistribution(0.0, 0.9),
        "loss.w_modality": optuna.distributions.FloatDistribution(0.0, 5.0),
        "model.fusion": optuna.distributions.CategoricalDistribution(
            ["concat", "gated", "attention", "tensor_lowrank"]
        ),
        "model.fusion_rank": optuna.distributions.IntDistribution(2, 32),
    }

    def add(params, state=TrialState.COMPLETE, value=0.5, steps=None):
        trial = optuna.trial.create_trial(
            state=state,
            value=value if state == TrialState.COMPLETE else None,
            params=params,
            distributions={k: dists[k] for k in params},
            intermediate_values=steps or {},
        )
        study.add_trial(trial)

    add(base)  # fits
    add({**base, "model.fusion": "tensor_lowrank", "model.fusion_rank": 4}, value=0.6)  # fits, conditional
    add(base, state=TrialState.PRUNED, steps={1: 0.3, 2: 0.35})  # fits: pruned with epochs
    add(base, state=TrialState.PRUNED)  # no epochs: nothing to rank it by
    add(base, state=TrialState.FAIL)
    add({**base, "optim.lr": 0.5})  # outside the new range
    add({**base, "model.hidden_dim": 48})  # not a choice of the new space
    add({**base, "model.fusion_rank": 4})  # a param the new space would not sample here
    add({k: v for k, v in base.items() if k != "model.dropout"})  # a param missing
    (folder / "mersweep_state.json").write_text(json.dumps({"sweep": "earlier"}))
    return ref


def test_warm_start_takes_the_earlier_trials_that_fit(tmp_path):
    _earlier(tmp_path)
    ref = resolve_source("earlier", runs_root=tmp_path / "runs")  # runs/<sweep> by the sweep's name
    assert ref.name == "earlier"
    warm = load_warm_start(ref, load_space(SPACE))
    assert (len(warm.trials), warm.skipped) == (3, 6)
    assert [t.state for t in warm.trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert [t.user_attrs[WARM_ATTR] for t in warm.trials] == ["earlier#0", "earlier#1", "earlier#2"]
    assert "3 trials from study earlier" in warm.describe() and "(6 skipped)" in warm.describe()

    new_ref, study = _study(tmp_path, "second")
    warm.seed(study)
    search = _searcher(study)
    search.suggest("first")
    stored = _stored(new_ref)
    assert [t.state for t in stored[:3]] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert stored[2].intermediate_values == {1: 0.3, 2: 0.35}
    assert stored[3].number == 3 and stored[3].user_attrs["ray_trial_id"] == "first"
    # The new space's distributions, so TPE models old and new trials alike.
    space_lr = stored[3].distributions["optim.lr"]
    assert stored[0].distributions["optim.lr"] == space_lr


def _first_proposal(tmp_path: Path, earlier: StudyRef, name: str, warm_trials: int) -> dict:
    """TPE (seed 0, 3 random start-up trials)'s first proposal in a study seeded with that many earlier trials."""
    ref = StudyRef(default_storage(tmp_path / name), name)
    warm = load_warm_start(earlier, load_space(SPACE))
    study = ref.create(sampler=make_sampler("tpe", 0, space=load_space(SPACE), n_startup_trials=3), mode="max")
    study.add_trials(list(warm.trials[:warm_trials]))
    search = _searcher(study)
    return search.suggest("first")


def test_tpe_models_the_warm_start_trials_from_its_first_proposal(tmp_path):
    """With fewer earlier trials than TPE's start-up count it samples at random, as in an empty study
    (the same seeded draws); with enough it proposes from its model of them at once."""
    earlier = _earlier(tmp_path)
    cold = _first_proposal(tmp_path, earlier, "cold", 0)
    assert _first_proposal(tmp_path, earlier, "too_few", 2) == cold
    assert _first_proposal(tmp_path, earlier, "warm", 3) != cold


def test_warm_start_by_storage_and_study(tmp_path):
    ref = _earlier(tmp_path)
    got = resolve_source({"storage": ref.storage, "study": "earlier"}, runs_root=tmp_path / "runs")
    assert got == ref
    with pytest.raises(ConfigError, match=r"^search\.warm_start: no such study; .*there: earlier.*given: 'other'"):
        resolve_source({"storage": ref.storage, "study": "other"}, runs_root=tmp_path / "runs")
    with pytest.raises(ConfigError, match=r"^search\.warm_start: no such folder"):
        resolve_source("runs/missing", runs_root=tmp_path / "runs")


# -- checks that only read ----------------------------------------------------------------------------
def test_storage_checks_read_only(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    check_storage(url, field="search.storage", name="s", exists=False)
    assert not (tmp_path / "new.db").exists()  # nothing created by a check
    ref, _ = _study(tmp_path)
    with pytest.raises(ConfigError, match=r"^search\.storage: study s already exists there"):
        check_storage(ref.storage, field="search.storage", name="s", exists=False)
    check_storage(ref.storage, field="search.storage", name="s", exists=True)
    with pytest.raises(ConfigError, match=r"^search\.storage: not a database URL"):
        check_storage("optuna.db", field="search.storage")


def test_storage_url_credentials_are_redacted_in_the_stored_spec(tmp_path):
    path = write_sweep(tmp_path, "cred", search={"storage": "postgresql+psycopg2://optuna:s3cret@db/optuna"})
    spec = load_sweep(path)
    assert spec.search.storage == "postgresql+psycopg2://optuna:s3cret@db/optuna"
    assert "s3cret" not in spec.to_yaml() and "***@db/optuna" in spec.to_yaml()


@pytest.mark.slow
def test_the_study_on_postgresql(postgres, tmp_path):
    """`search.storage` on a cluster: a database of its own on the PostgreSQL server MLflow uses."""
    url = postgres.create_database("optuna")
    check_storage(url, field="search.storage", name="pg", exists=False)  # an empty database: fine, nothing made
    ref = StudyRef(url, "pg")
    study = ref.create(sampler=make_sampler("tpe", 0, space=load_space(SPACE), n_startup_trials=2), mode="max")
    search = _searcher(study)
    search.suggest("a")
    checkpoint = tmp_path / "searcher-state.pkl"
    search.save(str(checkpoint))
    search.suggest("forgotten")
    resumed = _searcher(optuna.load_study(study_name="pg", storage=url))
    resumed.restore(str(checkpoint))
    resumed.on_trial_complete("a", {METRIC: 0.5, **FINAL})
    assert [(t.state, t.user_attrs["ray_trial_id"]) for t in _stored(ref)] == [(TrialState.COMPLETE, "a")]
    with pytest.raises(ConfigError, match=r"^search\.storage: study pg already exists there.*given: '.*\*\*\*@127"):
        check_storage(url, field="search.storage", name="pg", exists=False)


# -- end to end: warm start, and the dashboard reading the study live ---------------------------------------
DASHBOARD = str(Path(sys.executable).parent / "optuna-dashboard")


def _has_study(db: Path) -> bool:
    try:
        return "second" in study_names(f"sqlite:///{db}", field="test")
    except ConfigError:  # the driver is still creating the schema
        return False


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def _wait_for(what: str, check, timeout: float, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process ended (exit {proc.returncode})")
        try:
            got = check()
            if got:
                return got
        except OSError as exc:  # the server is not listening yet
            last = exc
        time.sleep(0.5)
    pytest.fail(f"no {what} within {timeout} s ({last})")


@pytest.mark.slow
def test_second_sweep_starts_from_the_first_and_the_dashboard_shows_it_live(tmp_path, mlflow_uri):
    fast = {**SMALL_SET, "optim.max_epochs": 3, "optim.patience": 3}
    uri = mlflow_uri
    search = {"algorithm": "tpe", "num_samples": 3, "seed": 0, "n_startup_trials": 3}
    first = write_sweep(tmp_path, "first", set=fast, search=search, scheduler={"kind": "none"})
    done = run_sweep_here([str(first), "--tracking-uri", uri], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "runs/first/optuna.db").is_file()

    second = write_sweep(
        tmp_path,
        "second",
        set=fast,
        search={**search, "num_samples": 2, "warm_start": "runs/first"},
        scheduler={"kind": "none"},
    )
    drivers, dashboard = Drivers(), None
    db = tmp_path / "runs/second/optuna.db"
    try:
        driver = drivers.start([str(second), "--tracking-uri", uri], tmp_path)
        _wait_for("the study in runs/second/optuna.db", lambda: db.is_file() and _has_study(db), 240, driver.proc)
        port = free_port()
        dashboard = subprocess.Popen(  # the README's command, from the environment's scripts
            [DASHBOARD, f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(port)],
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        studies = _wait_for("the study over HTTP", lambda: _get(port, "/api/studies")["study_summaries"], 60, dashboard)
        assert [s["study_name"] for s in studies] == ["second"]
        study_id = studies[0]["study_id"]
        # Live: the warm-start trials are there before the sweep's own trials have ended.
        early = _get(port, f"/api/studies/{study_id}")["trials"]
        assert len(early) >= 3 and driver.proc.poll() is None
        assert driver.proc.wait(600) == 0, driver.stderr()[-3000:]
        assert "warm start: 3 trials from study first" in driver.stderr()
        trials = _get(port, f"/api/studies/{study_id}")["trials"]
    finally:
        if dashboard is not None:
            dashboard.terminate()
            dashboard.wait(30)
        drivers.cleanup()

    assert [t["number"] for t in trials] == [0, 1, 2, 3, 4]
    assert all(t["state"] == "Complete" for t in trials), [t["state"] for t in trials]
    attrs = [{a["key"]: a["value"] for a in t["user_attrs"]} for t in trials]
    assert [a[WARM_ATTR] for a in attrs[:3]] == ["first#0", "first#1", "first#2"]
    first_study = optuna.load_study(study_name="first", storage=f"sqlite:///{tmp_path / 'runs/first/optuna.db'}")
    assert [t["values"][0] for t in trials[:3]] == [t.value for t in first_study.trials]

    # The second sweep's own trials: each names its Ray trial and MLflow run, whose run names it back.
    _, children = children_of(MlflowClient(tracking_uri=uri), "second")
    by_run = {c.info.run_id: c for c in children}
    assert len(by_run) == 2
    for number, a in enumerate(attrs[3:], start=3):
        run = by_run[a["mlflow_run_id"]]
        assert run.data.tags["mersweep.trial_id"] == a["ray_trial_id"]
        assert run.data.tags["mersweep.optuna_trial"] == str(number)
    spec = yaml.safe_load((tmp_path / "second.yaml").read_text())
    assert spec["search"]["warm_start"] == "runs/first"

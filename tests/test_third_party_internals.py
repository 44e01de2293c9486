"""Every private attribute of Ray, Optuna and torch that mersweep still relies on, pinned.

Where a public API exists it is used instead (the sweep's Optuna searcher is our own `Searcher`
on Optuna's ask/tell, not a subclass of Ray's `OptunaSearch`). What is left has no public
equivalent; each test here fails on a release that moves it, naming the attribute, the version
installed and the code that needs it, instead of a sweep failing, or quietly doing less, later.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import optuna
import pytest
import ray
import torch
from optuna.trial import TrialState
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler

from sweeps.commands.run import NO_PRESTART
from sweeps.execution.tuner import SeededHyperBand
from sweeps.space import budget_tpe
from sweeps.space.budget_tpe import BudgetTPESampler

OPTUNA = f"optuna {optuna.__version__}"
RAY = f"ray {ray.__version__}"
TORCH = f"torch {torch.__version__}"


def _moved(library: str, attribute: str, user: str) -> str:
    return f"{library} moved {attribute}, which {user} relies on (no public API does the same): adapt it there"


# -- Ray ------------------------------------------------------------------------------------------
def test_a_tuner_keeps_its_search_algorithm_and_run_config_where_the_engine_reads_them(tmp_path: Path) -> None:
    searcher = tune.search.BasicVariantGenerator()
    callbacks: list = []
    tuner = tune.Tuner(
        lambda config: None,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=1),
        run_config=tune.RunConfig(name="pin", storage_path=str(tmp_path), callbacks=callbacks),
    )  # constructing starts no Ray
    local = getattr(tuner, "_local_tuner", None)
    where = "sweeps/execution/tuner.py (ablation_searcher; build_tuner on --resume)"
    assert local is not None, _moved(RAY, "Tuner._local_tuner", where)
    config = getattr(local, "_tune_config", None)
    assert config is not None and config.search_alg is searcher, _moved(RAY, "TunerInternal._tune_config", where)
    assert local.get_run_config().callbacks is callbacks, _moved(RAY, "TunerInternal.get_run_config()", where)


def test_async_hyperband_keeps_its_brackets_and_trial_assignment() -> None:
    where = "sweeps/execution/tuner.py SeededHyperBand (seeded bracket draws)"
    scheduler = SeededHyperBand(seed=0, time_attr="training_iteration", grace_period=1, max_t=9, brackets=3)
    scheduler.set_search_properties("score", "max")
    trial = Trial("fn", stub=True, trial_id="t0")
    for name in ("_brackets", "_trial_info"):
        assert hasattr(AsyncHyperBandScheduler(brackets=2), name), _moved(RAY, f"AsyncHyperBandScheduler.{name}", where)
    assert all(hasattr(b, "_rungs") for b in scheduler._brackets), _moved(RAY, "_Bracket._rungs", where)
    scheduler.on_trial_add(None, trial)
    assert scheduler._trial_info["t0"] in scheduler._brackets, _moved(RAY, "AsyncHyperBandScheduler._trial_info", where)


@pytest.mark.parametrize("module", ["ray._private.accelerators", "ray._private.utils"])
def test_rays_resource_detection_is_where_the_local_check_asks_it(module: str) -> None:
    # local_capacity() returns None (and checks nothing) when these move; this test says so.
    where = "sweeps/execution/ray_start.py local_capacity (the check of a trial's resources)"
    assert importlib.util.find_spec(module) is not None, _moved(RAY, module, where)
    names = {"ray._private.accelerators": "get_accelerator_manager_for_resource", "ray._private.utils": "get_num_cpus"}
    assert hasattr(importlib.import_module(module), names[module]), _moved(RAY, f"{module}.{names[module]}", where)


def test_the_raylet_still_reads_the_prestart_setting_a_local_sweep_turns_off() -> None:
    # Ray reads RAY_<setting> for each of its C++ system settings; an unknown one is ignored, so a
    # release that drops this one would quietly prestart idle workers again.
    where = "sweeps/commands/run.py NO_PRESTART (no idle workers on a sweep's own cluster)"
    setting = NO_PRESTART.removeprefix("RAY_").encode()
    raylet = Path(ray.__file__).parent / "core" / "src" / "ray" / "raylet" / "raylet"
    assert raylet.is_file(), _moved(RAY, "the raylet binary", where)
    assert setting in raylet.read_bytes(), _moved(RAY, f"the system setting {setting.decode()}", where)


@pytest.mark.parametrize("logger", ["ray.train._internal.storage", "ray.train.v2._internal.execution.storage"])
def test_the_chatty_storage_loggers_are_still_rays_modules(logger: str) -> None:
    where = "sweeps/trainable/worker_setup.py _CHATTY_LOGGERS (quiets Ray's per-trial storage lines)"
    assert importlib.util.find_spec(logger) is not None, _moved(RAY, f"the module (logger) {logger}", where)


# -- Optuna ---------------------------------------------------------------------------------------
def test_a_study_keeps_its_storage_and_a_running_trial_can_be_reopened_by_id() -> None:
    where = "sweeps/resume/study.py (restore_study, trial_by_number: --resume)"
    study = optuna.create_study()
    asked = study.ask()
    storage = getattr(study, "_storage", None)
    assert isinstance(storage, optuna.storages.BaseStorage), _moved(OPTUNA, "Study._storage", where)
    frozen = study.get_trials(deepcopy=False)[asked.number]
    assert getattr(frozen, "_trial_id", None) == asked._trial_id, _moved(OPTUNA, "FrozenTrial._trial_id", where)
    reopened = optuna.Trial(study, frozen._trial_id)
    reopened.report(0.5, 1)
    study.tell(reopened, 0.5)
    (done,) = study.get_trials()
    assert done.state == TrialState.COMPLETE and done.intermediate_values == {1: 0.5}, _moved(
        OPTUNA, "Trial(study, trial_id)", where
    )


@pytest.mark.parametrize(
    ("dist", "inside", "outside"),
    [
        (optuna.distributions.FloatDistribution(0.0, 1.0, step=0.25), 0.75, 0.7),
        (optuna.distributions.IntDistribution(2, 8, step=2), 4, 5),
        (optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True), 1e-3, 1.0),
    ],
)
def test_a_distribution_still_tells_whether_it_contains_a_value(dist, inside, outside) -> None:
    where = "sweeps/space/warm_start.py _Replay (which earlier trials fit the new space)"
    contains = getattr(dist, "_contains", None)
    assert callable(contains), _moved(OPTUNA, f"{type(dist).__name__}._contains", where)
    meaning = f"the meaning of {type(dist).__name__}._contains"
    assert contains(inside) and not contains(outside), _moved(OPTUNA, meaning, where)


def test_tpe_still_reads_the_trials_through_study_get_trials(monkeypatch: pytest.MonkeyPatch) -> None:
    """BudgetTPESampler shows TPE a view of the study that answers `_get_trials`; if TPE read the
    trials another way, BOHB would silently model every trial at its last value (plain TPE)."""
    where = "sweeps/space/budget_tpe.py _StudyAtBudget (search.algorithm: bohb)"
    assert callable(getattr(optuna.Study, "_get_trials", None)), _moved(OPTUNA, "Study._get_trials", where)
    read: list[bool] = []
    answer = budget_tpe._StudyAtBudget._get_trials

    def counted(self, *args, **kwargs):
        read.append(True)
        return answer(self, *args, **kwargs)

    monkeypatch.setattr(budget_tpe._StudyAtBudget, "_get_trials", counted)
    sampler = BudgetTPESampler(min_points=2, history=None, seed=0, n_startup_trials=2)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for value in (0.1, 0.9, 0.5):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        trial.report(value, 1)
        study.tell(trial, state=TrialState.PRUNED)
    read.clear()
    study.ask().suggest_float("x", 0.0, 1.0)  # past the startup trials: TPE samples
    assert read, _moved(OPTUNA, "TPESampler's read of the trials (Study._get_trials)", where)


# -- torch ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("_foreach_mul_", "mer_core/train/fused/optim.py (per-member gradient clipping in one kernel)"),
        ("_foreach_copy_", "mer_core/train/capture.py (graph inputs copied in one kernel)"),
    ],
)
def test_torch_foreach_kernels_are_there(name: str, where: str) -> None:
    assert callable(getattr(torch, name, None)), _moved(TORCH, f"torch.{name}", where)


def test_torch_pytree_helpers_are_there() -> None:
    from torch.utils import _pytree

    where = "mer_core/train/capture.py (flattening a captured step's inputs)"
    for name in ("tree_flatten", "tree_map", "tree_unflatten"):
        assert callable(getattr(_pytree, name, None)), _moved(TORCH, f"torch.utils._pytree.{name}", where)
    leaves, spec = _pytree.tree_flatten({"a": torch.zeros(1), "b": (torch.ones(1), 2)})
    assert len(leaves) == 3 and _pytree.tree_unflatten(leaves, spec)["b"][1] == 2

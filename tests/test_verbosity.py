"""Third-party chatter is held back by default and comes back with --verbose; warnings always show.

Each test runs the real library call that prints the chatter (Optuna's study creation, Ray Tune's
slow-operation warning) under `apply_verbosity`, with every logger level restored afterwards.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import optuna
import pytest

from mer_core.verbosity import DRIVER_CHATTER, VERBOSE_ENV, apply_verbosity, is_verbose, ray_logging_level, worker_env
from sweeps.execution.ray_start import worker_runtime_env
from tests.sweep_helpers import ROOT


@pytest.fixture
def levels():
    """Restore the levels `apply_verbosity` sets (they belong to the process)."""
    names = [*DRIVER_CHATTER, "ray.train._internal.storage"]
    saved = {name: logging.getLogger(name).level for name in names}
    optuna_level = optuna.logging.get_verbosity()
    yield
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)
    optuna.logging.set_verbosity(optuna_level)


@pytest.mark.parametrize("verbose", [False, True])
def test_the_choice_reaches_child_processes_through_the_environment(levels, verbose):
    env: dict[str, str] = {}
    apply_verbosity(verbose, env)
    assert env == {VERBOSE_ENV: "1" if verbose else "0"}
    assert is_verbose(env) is verbose


def test_optuna_announces_a_new_study_only_when_verbose(levels, caplog):
    for verbose in (False, True):
        apply_verbosity(verbose, {})
        caplog.clear()
        # Optuna's own handler stops at the "optuna" logger; caplog sees what passes its level.
        optuna.logging.enable_propagation()
        try:
            optuna.create_study()
        finally:
            optuna.logging.disable_propagation()
        said = any("A new study created" in r.getMessage() for r in caplog.records)
        assert said is verbose


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_ray_tunes_slow_operation_warning_only_when_verbose(levels, monkeypatch):
    from ray.tune.utils import util

    monkeypatch.setattr(util, "START_OF_TIME", 0.0)  # Ray keeps quiet in the first minute of a process
    logger = logging.getLogger(util.__name__)  # Ray's loggers do not propagate: listen on it directly
    collect = Collect()
    logger.addHandler(collect)
    try:
        for verbose in (False, True):
            apply_verbosity(verbose, {})
            collect.messages.clear()
            with util.warn_if_slow("callbacks.on_trial_result", threshold=1e-9):
                sum(range(1000))
            assert any("may be a performance bottleneck" in m for m in collect.messages) is verbose
    finally:
        logger.removeHandler(collect)


@pytest.mark.slow  # two fresh processes create a sqlite store each (schema migrations: ~10-25 s apiece)
def test_mlflow_store_creation_lines_only_when_verbose(levels, tmp_path):
    """A new sqlite store says "Creating initial MLflow database tables..." through MLflow's own handler."""
    code = (
        "import sys; sys.path.insert(0, {root!r})\n"
        "from mer_core.verbosity import apply_verbosity\n"
        "apply_verbosity({verbose})\n"
        "import mlflow\n"
        "mlflow.MlflowClient('sqlite:///{db}').search_experiments()\n"
    )
    for verbose in (False, True):
        db = tmp_path / f"v{verbose}.db"
        proc = subprocess.run(
            [sys.executable, "-c", code.format(root=str(ROOT), verbose=verbose, db=db)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert ("Creating initial MLflow database tables" in proc.stderr) is verbose, proc.stderr


def test_warnings_of_the_project_and_of_ray_itself_still_show(levels):
    apply_verbosity(False, {})
    assert logging.getLogger("mersweep.tracking").isEnabledFor(logging.WARNING)
    assert logging.getLogger("ray.tune.execution.tune_controller").isEnabledFor(logging.WARNING)
    assert logging.getLogger("mlflow.tracking").isEnabledFor(logging.WARNING)
    assert optuna.logging.get_verbosity() == logging.WARNING


def test_ray_start_up_lines_and_workers_follow_the_choice():
    assert ray_logging_level(False) == logging.WARNING and ray_logging_level(True) == logging.INFO
    assert worker_env(False) == {} and worker_env(True) == {VERBOSE_ENV: "1"}
    # The common case starts Ray without a runtime_env at all.
    assert worker_runtime_env(False) is None
    assert worker_runtime_env(True) == {"env_vars": {VERBOSE_ENV: "1"}}


@pytest.mark.parametrize("verbose", [False, True])
def test_a_worker_quiets_ray_trains_checkpoint_line_unless_verbose(levels, monkeypatch, verbose):
    from sweeps.trainable.worker_setup import quiet_worker

    monkeypatch.setenv(VERBOSE_ENV, "1" if verbose else "0")
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    quiet_worker()
    quiet = logging.getLogger("ray.train._internal.storage").level == logging.WARNING
    assert quiet is not verbose

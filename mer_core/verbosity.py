"""Which third-party log lines reach the user: quiet by default, everything with `--verbose`.

The libraries mersweep drives announce their start-up and second-guess its performance on the
user's terminal (Optuna: "A new study created in memory with name: optuna"; MLflow: "Creating
initial MLflow database tables..."; Ray Tune: "`callbacks.on_trial_result` operation took 0.723 s,
which may be a performance bottleneck"). A sweep's own progress display already says what happens,
so those lines are held back unless asked for. Real warnings stay: every logger keeps WARNING or
above except the ones named here for a known kind of chatter, and mersweep's own warnings (a trial
failed, MLflow unreachable) go through the `mersweep` logger, which this module never touches.

`apply_verbosity` is called once, by a CLI, in the driver process; Ray workers read the same
choice from `VERBOSE_ENV` (inherited by a local cluster's workers, handed to a joined cluster's
through `worker_env`) and apply their part in `sweeps.trainable.worker_setup`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, MutableMapping

VERBOSE_ENV = "MERSWEEP_VERBOSE"  # "1" in a driver started with --verbose, and in its workers

# Driver-side loggers whose INFO/WARNING lines are chatter, with the level they are held at.
# MLflow: "Creating initial MLflow database tables..." / "Updating database tables" (a new sqlite
# store, INFO); alembic: the schema migration's "Context impl SQLiteImpl." / "Running upgrade ...".
# Ray Tune's `warn_if_slow` ("... may be a performance bottleneck", "Processing trial results took
# ... consider reporting results less frequently"): on a loaded 2-core machine the driver's MLflow
# batching trips its 0.5 s threshold, and there is nothing for the user to do about it.
DRIVER_CHATTER: Mapping[str, int] = {
    "mlflow.store.db.utils": logging.WARNING,
    "alembic": logging.WARNING,
    "ray.tune.utils.util": logging.ERROR,
}

# Ray's own log level for `ray.init(logging_level=...)`: INFO brings back its start-up lines
# ("Started a local Ray instance."); workers' output and errors reach the driver either way.
RAY_QUIET_LEVEL, RAY_VERBOSE_LEVEL = logging.WARNING, logging.INFO


def is_verbose(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process (a driver or a Ray worker) was started for a `--verbose` run."""
    return (os.environ if environ is None else environ).get(VERBOSE_ENV) == "1"


def apply_verbosity(verbose: bool, environ: MutableMapping[str, str] | None = None) -> None:
    """Hold the third-party chatter back (`verbose` False) or let all of it through (True).

    Sets `VERBOSE_ENV` in `environ` (default `os.environ`) so that processes started from here on,
    a local Ray cluster's workers among them, make the same choice.
    """
    env = os.environ if environ is None else environ
    env[VERBOSE_ENV] = "1" if verbose else "0"
    for name, quiet_level in DRIVER_CHATTER.items():
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else quiet_level)
    # Optuna configures its "optuna" logger (level INFO, its own handler) once, at import; its
    # setter is the supported way to change that, and study creation lines are all INFO.
    import optuna

    optuna.logging.set_verbosity(logging.INFO if verbose else logging.WARNING)


def ray_logging_level(verbose: bool) -> int:
    """`logging_level` for `ray.init`."""
    return RAY_VERBOSE_LEVEL if verbose else RAY_QUIET_LEVEL


def worker_env(verbose: bool) -> dict[str, str]:
    """Environment variables a joined cluster's workers need to make the driver's choice."""
    return {VERBOSE_ENV: "1"} if verbose else {}

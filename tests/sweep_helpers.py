"""Shared helpers for the end-to-end sweep tests: small sweep YAMLs and CLI runs in a subprocess
(or, where the fresh interpreter is not what a test checks, the same entry point in this process)."""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

SMALL_DATA = {
    "source": "synthetic-mer",
    "seed": 0,
    "folds": 1,
    "synthetic": {"n_labelled": 240, "n_unlabelled": 300, "dims": {"audio": 24, "text": 32, "video": 16}},
}
SMALL_SET = {
    "model.ff_dim": 64,
    "model.hidden_dim": 32,
    "optim.max_epochs": 6,
    "optim.patience": 3,
    "optim.pretrain_epochs": 1,
    "self_training.oversample_to": 80,
    "runtime.threads": 1,
}


def write_sweep(folder: Path, name: str, **overrides) -> Path:
    """A small synthetic-data search sweep YAML in `folder` (keys of `overrides` replace sections).

    Without the end-of-sweep report unless `tracking` says so (`tracking={"report": True}`).
    """
    spec = {
        "name": name,
        "kind": "search",
        "base": str(ROOT / "mer_core/configs/mrccl.yaml"),
        "data": SMALL_DATA,
        "set": SMALL_SET,
        "search_space": str(ROOT / "search_spaces/quick.yaml"),
        "search": {"algorithm": "tpe", "num_samples": 6, "seed": 0, "n_startup_trials": 3},
        "scheduler": {"kind": "asha", "grace_period": 1, "reduction_factor": 2},
        "metric": "val/weighted_f1",
        "mode": "max",
        "resources": {"cpu": 1, "gpu": 0, "max_concurrent": 1},
        # The end-of-sweep report costs a few seconds of plotting per sweep; the tests of the report
        # (test_mlflow_ui, test_cli_display, test_analysis_report) ask for it, the rest do not.
        "tracking": {"report": False},
    }
    spec.update(overrides)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def cli_env(extra: dict | None = None) -> dict:
    """The environment of a user's shell for our CLIs: the repo importable, no ambient tracking URI."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"PYTHONPATH": str(ROOT), **(extra or {})})
    return env


def run_program(
    program: list[str], args: list[str], cwd: Path, *, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python PROGRAM ARGS` in `cwd` with a user's environment (`cli_env`), output captured."""
    return subprocess.run(
        [sys.executable, *program, *args], cwd=cwd, env=cli_env(env), capture_output=True, text=True, timeout=timeout
    )


def run_cli(
    args: list[str], cwd: Path, *, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python run_sweep.py ARGS` in `cwd`, as a user would run it."""
    return run_program([str(ROOT / "run_sweep.py")], args, cwd, timeout=timeout, env=env)


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """This process's environment is exactly `env` inside the block, and what it was after it."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def _as_a_fresh_process(cwd: Path, env: dict | None) -> Iterator[None]:
    """`cwd` as the working folder and a user's environment (`cli_env`, plus `env`, no debug
    tracebacks); afterwards the process state a CLI's start-up sets (environment, log levels, the
    `mersweep` logger's handler) is put back, so later tests in this process see none of it."""
    from mer_core.verbosity import DRIVER_CHATTER

    saved_cwd = os.getcwd()
    named = [logging.getLogger(name) for name in (*DRIVER_CHATTER, "optuna", "mersweep")]
    saved = [(log, log.level, log.handlers[:], log.propagate) for log in named]
    fresh = {k: v for k, v in cli_env(env).items() if k != "MERSWEEP_DEBUG"}
    os.chdir(cwd)
    try:
        with environment(fresh):
            yield
    finally:
        os.chdir(saved_cwd)
        for log, level, handlers, propagate in saved:
            log.setLevel(level)
            log.handlers[:] = handlers
            log.propagate = propagate


def run_main_here(
    main: Callable[[Sequence[str] | None], int], args: list[str], cwd: Path, *, env: dict | None = None
) -> subprocess.CompletedProcess:
    """A CLI's `main(args)` under `guarded_main`, as `exit_cli` runs it, in this process: its exit
    status and captured stdout/stderr, in the shape `run_program` returns.

    For tests of what a command decides before it starts anything (bad input, --dry-run), and for
    whole sweeps on this process's Ray session (`run_sweep_here`): a fresh interpreter would spend
    seconds importing torch, Ray and MLflow first. What only a fresh interpreter shows (import-time
    output) is checked through real subprocesses elsewhere (tests/test_cli_errors.py). Not for
    runs that start Ray or servers of their own. Not thread-safe (chdir).
    """
    import ray  # noqa: F401  (Ray reads some switches at import: take them from this process's environment)

    from mer_core.cli_util import guarded_main

    out, err = io.StringIO(), io.StringIO()
    with _as_a_fresh_process(cwd, env), redirect_stdout(out), redirect_stderr(err):
        status = guarded_main(main, args)
    return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())


def run_cli_here(args: list[str], cwd: Path, *, env: dict | None = None) -> subprocess.CompletedProcess:
    """`run_cli` for bad input and --dry-run: `run_sweep.py`'s main in this process (`run_main_here`)."""
    from sweeps.commands.run import main

    return run_main_here(main, args, cwd, env=env)


def run_sweep_here(args: list[str], cwd: Path, *, env: dict | None = None) -> subprocess.CompletedProcess:
    """`run_cli` for a whole sweep, in this process, on this process's Ray session (`tests.ray_here`).

    For tests of what the sweep produces (results, MLflow runs, reports, printed output), which a
    fresh interpreter and a Ray start of its own would only make slower. Not for what only a process
    of its own shows (signals, start-up, --address), nor for what a run hands its Ray workers through
    the job's runtime environment, which a session already up does not take: --verbose and
    $MERSWEEP_FAULTS sweeps go through `run_cli`.
    """
    from sweeps.commands.run import main
    from sweeps.trainable.faults import FAULTS_ENV
    from tests.ray_here import ensure_session

    refused = [a for a in args if a in ("--verbose", "--address")] + [k for k in env or {} if k == FAULTS_ENV]
    assert not refused, f"run_sweep_here cannot honour {refused}: use run_cli"
    ensure_session()
    return run_main_here(main, args, cwd, env=env)


def run_analysis_here(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """`run_analysis` in this process (`run_main_here`): for bad input, and for commands that read a sweep
    and write files (`compare`); commands that train or register models run as users run them."""
    from analysis.cli import main

    return run_main_here(main, args, cwd)


def run_analysis(args: list[str], cwd: Path, *, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m analysis ARGS` in `cwd`, as a user would run it."""
    return run_program(["-m", "analysis"], args, cwd, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(client, experiment: str) -> tuple[object, list]:
    """(parent run, child runs) of a sweep's experiment, read back through the MLflow API."""
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1, f"expected one parent run, found {len(parents)}"
    return parents[0], children


# A line a Ray worker printed, forwarded to the driver's stderr with a "(trial_main pid=123)" prefix
# (coloured on a terminal). A worker's interpreter may print "Exception ignored in: ... Traceback"
# as it shuts down; that is Ray's noise, not the driver's.
_WORKER_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?\([\w.:-]+ pid=\d+(, ip=[\w.:]+)?\)")


def driver_lines(stderr: str) -> str:
    """`stderr` without the lines Ray forwarded from its workers: what the driver itself printed."""
    return "\n".join(line for line in stderr.splitlines() if not _WORKER_LINE.match(line))

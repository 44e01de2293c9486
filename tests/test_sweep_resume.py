"""Stopping and resuming sweeps through the real CLI: Ctrl-C, a killed driver, `--resume`.

The contract (README "Running sweeps", DESIGN "MLflow"): Ctrl-C stops cleanly with exit status
130 and a resume hint; `--resume` continues under the same MLflow parent run and no trial is
logged twice, also after the driver was killed outright. Each driver runs in its own session
(process group), like a command in a terminal, so Ctrl-C can reach the whole group and a kill
leaves nothing behind: the Ray processes a driver starts (GCS, raylet, workers) share its group.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mer_core.errors import UserInputError
from sweeps.spec import load_sweep
from sweeps.state import SweepState, check_same_sweep
from tests.sweep_helpers import ROOT, SMALL_SET, children_of, cli_env, run_cli, write_sweep

N_TRIALS = 8
# Short trials that all run to the end (no scheduler): a few seconds each on one core, so the
# signal reliably lands mid-sweep.
FAST_SET = {**SMALL_SET, "optim.max_epochs": 4, "optim.patience": 4}
TERMINAL = {"FINISHED", "FAILED", "KILLED"}


def _write(folder: Path, name: str) -> Path:
    return write_sweep(
        folder,
        name,
        set=FAST_SET,
        search={"algorithm": "tpe", "num_samples": N_TRIALS, "seed": 0, "n_startup_trials": 3},
        scheduler={"kind": "none"},
    )


def _uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


class Driver:
    """`python run_sweep.py ...` in the background, in its own process group (like run_cli's env)."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = cli_env()
        self.out, self.err = cwd / "driver.out", cwd / "driver.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:  # files, not pipes: nothing can block
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "run_sweep.py"), *args],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.pgid = self.proc.pid

    def stderr(self) -> str:
        return self.err.read_text()

    def signal_group(self, sig: int) -> None:
        os.killpg(self.pgid, sig)

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        return True

    def wait_group_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.group_alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def cleanup(self) -> None:
        """Whatever is still in the driver's group (it is ours alone) gets killed."""
        if self.proc.poll() is None or self.group_alive():
            with contextlib.suppress(ProcessLookupError):
                self.signal_group(signal.SIGKILL)
            self.proc.wait(30)
            self.wait_group_gone(30)


@pytest.fixture
def drivers():
    started: list[Driver] = []

    def start(args: list[str], cwd: Path) -> Driver:
        started.append(Driver(args, cwd))
        return started[-1]

    yield start
    for driver in started:
        driver.cleanup()


def _ended_children(client: MlflowClient, experiment: str) -> int:
    """Child runs with a terminal status, read through MLflow while the driver writes to it."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return 0
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return sum("mlflow.parentRunId" in r.data.tags and r.info.status in TERMINAL for r in runs)


def _wait_for_ended(driver: Driver, folder: Path, name: str, count: int, timeout: float = 240) -> None:
    state = folder / "runs" / name / "mersweep_state.json"  # written once the parent run (and the db) exist
    client = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if driver.proc.poll() is not None:
            pytest.fail(f"sweep ended (exit {driver.proc.returncode}) before {count} trials ended:\n{driver.stderr()}")
        if state.is_file():
            client = client or MlflowClient(tracking_uri=_uri(folder))
            with contextlib.suppress(Exception):  # a read racing the driver's write: try again
                if _ended_children(client, name) >= count:
                    return
        time.sleep(0.5)
    pytest.fail(f"{count} trials did not end within {timeout} s:\n{driver.stderr()[-3000:]}")


def _assert_complete(folder: Path, name: str) -> None:
    """One parent (the one the sweep started with), N nested children, one per trial, all ended."""
    client = MlflowClient(tracking_uri=_uri(folder))
    parent, children = children_of(client, name)
    state = json.loads((folder / "runs" / name / "mersweep_state.json").read_text())
    assert parent.info.run_id == state["parent_run_id"]
    assert parent.info.status == "FINISHED"
    assert len(children) == N_TRIALS, sorted(c.data.tags.get("mersweep.trial_id", "?") for c in children)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert len({c.data.tags["mersweep.trial_id"] for c in children}) == N_TRIALS
    assert all(c.info.status in TERMINAL for c in children), [c.info.status for c in children]
    for child in children:
        assert child.data.tags["mersweep.status"] == "ok", child.data.tags
        # One history per trial: a trial rerun on resume does not pile a second one onto the first.
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val/weighted_f1")]
        assert steps and steps == list(range(1, len(steps) + 1)), steps
    assert (folder / "runs" / name / "best_config.yaml").is_file()


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_resume_completes(tmp_path, drivers):
    spec = _write(tmp_path, "intr")
    first = drivers([str(spec), "--tracking-uri", _uri(tmp_path)], tmp_path)
    _wait_for_ended(first, tmp_path, "intr", 2)
    first.signal_group(signal.SIGINT)  # Ctrl-C in a terminal: SIGINT to the foreground process group
    rc = first.proc.wait(120)
    err = first.stderr()
    assert rc == 130, f"exit {rc}:\n{err[-3000:]}"
    assert "Traceback" not in err
    hint = next(line for line in err.splitlines() if "continue it with:" in line)
    assert first.wait_group_gone(60), "Ray processes outlived the interrupted driver"

    # A clean stop: the parent and the trials it stopped are ended, not left RUNNING.
    client = MlflowClient(tracking_uri=_uri(tmp_path))
    parent, children = children_of(client, "intr")
    assert parent.info.status == "KILLED"
    assert 2 <= len(children) < N_TRIALS
    assert all(c.info.status in TERMINAL for c in children), [c.info.status for c in children]

    # The printed hint is the command to run (its run_sweep.py is wherever the user has it).
    args = shlex.split(hint.split("continue it with:", 1)[1])
    assert args[:2] == ["python", "run_sweep.py"] and args[-1] == "--resume"
    assert "--tracking-uri" in args
    resumed = run_cli(args[2:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"trials {N_TRIALS}/{N_TRIALS} ended" in resumed.stderr
    _assert_complete(tmp_path, "intr")


@pytest.mark.slow
def test_resume_after_the_driver_is_killed(tmp_path, drivers):
    spec = _write(tmp_path, "killed")
    first = drivers([str(spec), "--tracking-uri", _uri(tmp_path)], tmp_path)
    _wait_for_ended(first, tmp_path, "killed", 1)
    # A crash: no chance to save anything. Ray's last saved state may predate trials the driver
    # had already logged, and its GCS/raylet/workers share the driver's group and die with it.
    first.signal_group(signal.SIGKILL)
    first.proc.wait(30)
    assert first.wait_group_gone(60), "Ray processes outlived the killed driver"

    resumed = run_cli([str(spec), "--tracking-uri", _uri(tmp_path), "--resume"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_complete(tmp_path, "killed")


def test_resume_of_a_sweep_that_never_ran(tmp_path):
    spec = _write(tmp_path, "never")
    proc = run_cli([str(spec), "--resume"], cwd=tmp_path, timeout=120)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: --resume"), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["never.yaml"]  # no runs/never, no mlflow.db


def test_rerun_without_resume_is_refused(tmp_path):
    spec = _write(tmp_path, "again")
    (tmp_path / "runs" / "again").mkdir(parents=True)
    (tmp_path / "runs" / "again" / "mersweep_state.json").write_text("{}")
    proc = run_cli([str(spec)], cwd=tmp_path, timeout=120)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--resume" in lines[0], proc.stderr
    assert sorted(p.name for p in (tmp_path / "runs" / "again").iterdir()) == ["mersweep_state.json"]
    assert not (tmp_path / "mlflow.db").exists()


def test_resume_refuses_a_changed_sweep(tmp_path):
    """Ray restores its own copy of the search: a resumed sweep must be the sweep that started."""
    path = _write(tmp_path, "same")
    spec = load_sweep(path, sets=["optim.lr=0.001"])
    state = SweepState("same", "same", "0" * 32, _uri(tmp_path), spec.to_yaml())
    check_same_sweep(state, load_sweep(path, sets=["optim.lr=0.001"]).to_yaml())
    with pytest.raises(UserInputError, match=r"^--resume: search\.num_samples .*was 8, now 9"):
        check_same_sweep(state, load_sweep(path, sets=["optim.lr=0.001"], num_samples=9).to_yaml())
    with pytest.raises(UserInputError, match=r"^--resume: set\.optim\.lr "):
        check_same_sweep(state, load_sweep(path).to_yaml())

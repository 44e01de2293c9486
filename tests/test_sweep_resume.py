"""Stopping and resuming sweeps through the real CLI: Ctrl-C, a driver killed outright, `--resume`.

The contract (README "Running sweeps", DESIGN "MLflow"): Ctrl-C stops cleanly with exit status
130 and a resume hint; `--resume` continues under the same MLflow parent run and no trial is
logged twice, also after the driver was SIGKILLed at any point: the sweep ends with exactly N
trials in Ray's results, one Optuna history over all of them, and one live MLflow child run per
trial. Drivers run in their own session (tests/driver_helpers.py), and every process a driver
started must be gone once it is stopped or killed.
"""

from __future__ import annotations

import json
import shlex
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from mlflow.tracking import MlflowClient

from mer_core.errors import UserInputError
from sweeps.resume.state import SweepState, check_same_sweep
from sweeps.spec import load_sweep
from sweeps.tracking.callback import last_attempt_results
from tests.driver_helpers import Driver, Drivers, progress
from tests.resume_checks import (
    TERMINAL,
    assert_complete,
    leave_orphans,
    lose_the_outbox,
    optuna_history,
    tear_ray_state,
)
from tests.sweep_helpers import SMALL_SET, children_of, driver_lines, run_cli_here, write_sweep

# Enough for every kill point: "mid_sweep" kills with 2 or 3 trials ended, and TPE proposes after
# its 3 start-up trials (a resumed sampler that forgot its history would propose trial 0's
# parameters again). Every trial more costs each of these tests seconds.
N_TRIALS = 4
# Short trials that all run to the end (no scheduler): a few seconds each on one core, so every
# kill point is a window of seconds, not a race.
FAST_SET = {**SMALL_SET, "optim.max_epochs": 4, "optim.patience": 4}
DEBUG = {"MERSWEEP_DEBUG": "1"}  # a failing driver prints its traceback into the test's report


def _write(folder: Path, name: str, **overrides) -> Path:
    """The sweep these tests stop and resume: N_TRIALS short TPE trials, no scheduler (`overrides`
    replace sections, as in `write_sweep`)."""
    sections = {
        "set": FAST_SET,
        "search": {"algorithm": "tpe", "num_samples": N_TRIALS, "seed": 0, "n_startup_trials": 3},
        "scheduler": {"kind": "none"},
    }
    return write_sweep(folder, name, **{**sections, **overrides})


def _uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture
def drivers():
    group = Drivers()
    yield group
    group.cleanup()


def _wait_until(driver: Driver, ready: Callable[[str], bool], what: str, timeout: float = 240) -> None:
    """Polls until `ready(the driver's stderr)`; fails if the driver ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready(driver.stderr()):
            return
        if driver.proc.poll() is not None:
            pytest.fail(f"the sweep ended (exit {driver.proc.returncode}) before {what}:\n{driver.stderr()[-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"no {what} within {timeout} s:\n{driver.stderr()[-3000:]}")


def _assert_all_gone(group: Drivers) -> None:
    left = group.wait_all_gone(60)
    assert not left, f"processes outlived their driver: {left}"


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_resume_completes(tmp_path, drivers, mlflow_uri):
    """Ctrl-C once half the trials ended and the other half are running: every trial has started,
    so Ray lists the stopped ones as terminated and the counts alone look complete; the sweep must
    still say it stopped early (130, KILLED parent, a resume hint), and the hint resumes it."""
    spec = _write(tmp_path, "intr", resources={"cpu": 1, "gpu": 0, "max_concurrent": 2})
    # --verbose: a log then also gets a line when a trial starts, the moment this test waits for.
    first = drivers.start([str(spec), "--tracking-uri", mlflow_uri, "--verbose"], tmp_path)
    half = N_TRIALS // 2
    _wait_until(first, lambda err: progress(err) == (half, N_TRIALS - half), "the last trials running")
    first.signal_group(signal.SIGINT)  # Ctrl-C in a terminal: SIGINT to the foreground process group
    rc = first.proc.wait(120)
    err = first.stderr()
    assert rc == 130, f"exit {rc}:\n{err[-3000:]}"
    assert "Traceback" not in driver_lines(err)
    hint = next(line for line in err.splitlines() if "continue it with:" in line)
    _assert_all_gone(drivers)

    # A clean stop: the parent and the trials it stopped are ended, not left RUNNING.
    client = MlflowClient(tracking_uri=mlflow_uri)
    parent, children = children_of(client, "intr")
    assert parent.info.status == "KILLED"
    assert len(children) == N_TRIALS
    assert all(c.info.status in TERMINAL for c in children), [c.info.status for c in children]
    ended = [c for c in children if c.data.tags.get("mersweep.status") == "ok"]
    assert len(ended) >= half, [c.data.tags.get("mersweep.status") for c in children]

    # The printed hint is the command to run (its run_sweep.py is wherever the user has it).
    args = shlex.split(hint.split("continue it with:", 1)[1])
    assert args[:2] == ["python", "run_sweep.py"] and args[-1] == "--resume"
    assert "--tracking-uri" in args
    resumed = drivers.start(args[2:], tmp_path)
    assert resumed.proc.wait(300) == 0, resumed.stderr()[-3000:]
    assert f"trials {N_TRIALS}/{N_TRIALS} ended" in resumed.stderr()
    _assert_all_gone(drivers)
    assert_complete(tmp_path / "runs" / "intr", mlflow_uri, N_TRIALS)


Trigger = Callable[[str, Path, float], bool]  # (driver's stderr, runs/<sweep>/, driver's start time) -> kill now


def _at_ended(low: int, high: int, *, running: int = 0) -> Trigger:
    """The last status line shows `low` <= trials ended <= `high`, with at least `running` running."""

    def check(err: str, folder: Path, started: float) -> bool:
        ended, live = progress(err) or (-1, 0)
        return low <= ended <= high and live >= running

    return check


def _best_config_written(err: str, folder: Path, started: float) -> bool:
    """This driver wrote best_config.yaml (one an earlier driver wrote does not count)."""
    path = folder / "best_config.yaml"
    return path.is_file() and path.stat().st_mtime >= started


# Where a driver is SIGKILLed, in the order a sweep reaches them: (trigger, what the last status
# line before the kill must show, so that the test proves it hit the window it names).
KILL_POINTS: dict[str, tuple[Trigger, Trigger]] = {
    # (a) The first trial is training; Ray may or may not have saved its state yet.
    "first_trial_running": (_at_ended(0, 0, running=1), _at_ended(0, 0)),
    # (b) Half the trials ended: Ray's last saved state may predate trials MLflow already holds.
    "mid_sweep": (_at_ended(N_TRIALS // 2, N_TRIALS - 1), _at_ended(N_TRIALS // 2, N_TRIALS - 1)),
    # (c1) The last trial ended: Ray is winding the Tuner down (final save, actors stopping).
    "all_trials_ended": (_at_ended(N_TRIALS, N_TRIALS), _at_ended(N_TRIALS, N_TRIALS)),
    # (c2) The summary wrote best_config.yaml: the parent run is being (or was just) closed.
    "best_config_written": (_best_config_written, _at_ended(N_TRIALS, N_TRIALS)),
}
# After Ray's final save a crash can also cost what the driver's MLflow outbox still held
# (sweeps/tracking/tracker.py sends in the background); here the test takes that away on purpose.
LOSES_OUTBOX = {"best_config_written"}
# Ray copies its saved state into runs/<sweep>/ in place from a background thread: a kill during
# that copy leaves torn files (seen: a 0-byte search_gen_state-*.json, then a failed restore).
# Here the test tears every such file on purpose where trials have ended (so Ray has saved since
# the first one started): the resume must rebuild Ray's state from mersweep's snapshot alone.
TEARS_RAY_STATE = {"mid_sweep", "all_trials_ended", "best_config_written"}
# The Optuna study is stored at once, Ray's searcher every few seconds: a kill in between leaves
# trials in the storage that Ray's saved state does not know (asked, or asked and told, since).
# Here the test adds such trials on purpose: the resume must put the study back to Ray's state.
LEAVES_ORPHANS = {"mid_sweep", "first_trial_running"}


@pytest.mark.slow
def test_resume_after_the_driver_is_killed_at_each_point_in_turn(tmp_path, drivers, mlflow_uri):
    """One sweep, SIGKILLed at every kill point in turn: the first driver at the first point, then
    each `--resume` at the next (a resumed driver is killed as a fresh one is), and a last
    `--resume` completes it. Between kills the test leaves what such a crash can leave (orphaned
    study trials, torn Ray state, a lost MLflow outbox). One sweep instead of one per point: each
    point costs a driver start, not a sweep."""
    name = "killed"
    spec = _write(tmp_path, name)
    args = [str(spec), "--tracking-uri", mlflow_uri]
    folder = tmp_path / "runs" / name
    saved_before: list = []  # the Optuna histories Ray had saved at the kills: each opens the final one
    lost: tuple[str, ...] = ()
    resume: list[str] = []
    for point, (trigger, landed) in KILL_POINTS.items():
        started = time.time()
        # --verbose: a log also gets a line when a trial starts (the first kill point waits for one).
        driver = drivers.start([*args, "--verbose", *resume], tmp_path, env=DEBUG)
        _wait_until(driver, lambda err, t=trigger, s=started: t(err, folder, s), f"kill point {point}")
        # A crash: no chance to save anything. GCS and raylet share the driver's group and die with
        # it; Ray's workers (in groups of their own) must notice and exit.
        driver.signal_group(signal.SIGKILL)
        assert driver.proc.wait(30) == -signal.SIGKILL, f"the driver ended before the kill at {point}"
        assert landed(driver.stderr(), folder, started), f"killed outside {point}: {progress(driver.stderr())}"
        _assert_all_gone(drivers)
        saved = [p for p in folder.glob("searcher-state-*.pkl") if p.stat().st_size]  # none if Ray saved nothing yet
        if point in LOSES_OUTBOX:
            lost = lose_the_outbox(mlflow_uri, name)
        before = optuna_history(folder)[0] if saved else []
        saved_before += before
        if point in LEAVES_ORPHANS and (folder / "optuna.db").is_file():
            assert leave_orphans(folder) > len(before)
        if point in TEARS_RAY_STATE:
            assert tear_ray_state(folder), f"no Ray state in {folder} to tear at {point}"
        resume = ["--resume"]

    resumed = drivers.start([*args, "--resume"], tmp_path, env=DEBUG)
    assert resumed.proc.wait(300) == 0, resumed.stderr()[-3000:]
    assert f"{N_TRIALS} trials: {N_TRIALS} finished, 0 pruned, 0 failed" in resumed.stdout(), resumed.stdout()
    _assert_all_gone(drivers)
    assert saved_before, "Ray saved no searcher state before any kill"
    assert_complete(folder, mlflow_uri, N_TRIALS, before=saved_before, lost=lost)  # every saved trial, checked once


def test_last_attempt_results_from_rays_result_log(tmp_path):
    """A trial logged afresh on resume gets the results of its last attempt only, in order."""
    lines = [{"iterations_since_restore": i, "val/weighted_f1": i / 10} for i in (1, 2, 3, 1, 2)]
    log = "\n".join(json.dumps(line) for line in lines) + '\n{"iterations_since_rest'  # cut short by a crash
    (tmp_path / "result.json").write_text(log)
    trial = SimpleNamespace(path=str(tmp_path), last_result={"iterations_since_restore": 2})
    assert last_attempt_results(trial) == lines[3:]
    (tmp_path / "result.json").unlink()  # no log (e.g. remote storage): the last result stands for it
    assert last_attempt_results(trial) == [trial.last_result]


def test_resume_of_a_sweep_that_never_ran(tmp_path):
    spec = _write(tmp_path, "never")
    proc = run_cli_here([str(spec), "--resume"], cwd=tmp_path)
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: --resume"), proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["never.yaml"]  # no runs/never, no mlflow.db


def test_rerun_without_resume_is_refused(tmp_path):
    spec = _write(tmp_path, "again")
    (tmp_path / "runs" / "again").mkdir(parents=True)
    (tmp_path / "runs" / "again" / "mersweep_state.json").write_text("{}")
    proc = run_cli_here([str(spec)], cwd=tmp_path)
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
    with pytest.raises(UserInputError, match=rf"^--resume: search\.num_samples .*was {N_TRIALS}, now 9"):
        check_same_sweep(state, load_sweep(path, sets=["optim.lr=0.001"], num_samples=9).to_yaml())
    with pytest.raises(UserInputError, match=r"^--resume: set\.optim\.lr "):
        check_same_sweep(state, load_sweep(path).to_yaml())
    # The same sweep written another way (key order; dotted keys for a nested map, as an earlier
    # version of mersweep wrote `data.synthetic.dims`) is the same sweep; a field only one sets is not.
    raw = yaml.safe_load(state.spec_yaml)
    check_same_sweep(state, yaml.safe_dump(dict(reversed(raw.items())), sort_keys=False))
    data = {k: v for k, v in raw["data"].items() if k != "synthetic.dims"}
    data.update({f"synthetic.dims.{m}": d for m, d in raw["data"]["synthetic.dims"].items()})
    check_same_sweep(state, yaml.safe_dump({**raw, "data": data}, sort_keys=False))
    with pytest.raises(UserInputError, match=r"^--resume: time_budget_x differs .*was not set, now 60\)"):
        check_same_sweep(state, yaml.safe_dump({**raw, "time_budget_x": 60}))

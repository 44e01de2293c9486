"""What a user sees: a quickstart run on a terminal and into a pipe, and `mersweep ui` on it.

The quickstart sweep (bundled data), cut to 3 short trials. On a terminal (a tmux pane: a real
pseudo-terminal, read back with `tmux capture-pane`) the progress is one line redrawn in place;
into a pipe it is one line per ended trial; in neither does third-party chatter show. Then
`mersweep ui` on the piped run's folder serves MLflow's UI, which the test reads over HTTP.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import pytest

from sweeps.execution.progress import CLEAR_LINE
from sweeps.tracking.names import UI_TRAINING_QUERY
from tests.driver_helpers import PROGRESS
from tests.sweep_helpers import ROOT, cli_env, run_cli_here, run_program

pytestmark = pytest.mark.slow

N_TRIALS = 3
QUICK = [
    str(ROOT / "sweeps" / "quickstart.yaml"),
    "--num-samples",
    str(N_TRIALS),
    "--set",
    "optim.max_epochs=2",
    "--set",
    "optim.pretrain_epochs=1",
    "--set",
    "self_training.rounds=0",
    "--set",
    "sweep.resources.max_concurrent=1",  # one trial worker per sweep: what is drawn, not how many run, is tested
]
# Lines the libraries print unless told not to (each seen on a terminal before this display existed).
CHATTER = (
    "A new study created",  # Optuna
    "Creating initial MLflow database tables",  # MLflow, a new sqlite store
    "Updating database tables",
    "Context impl",  # alembic, MLflow's schema migration
    "may be a performance bottleneck",  # Ray Tune's warn_if_slow
    "Started a local Ray instance",  # Ray's start-up
    "Trial status",  # Ray Tune's own progress reporter
    "View detailed results here",
    "Checkpoint successfully created",  # Ray Train, from each worker
    "[I 20",  # any Optuna INFO line
)
ENDED = re.compile(r"^\[\s*\S+\] trial (\S+) (done|pruned|failed)")
# A line Ray forwarded from a worker process ("(trial_main pid=12)", or "(pid=12)" for a pooled
# worker; coloured even into a pipe). Worker output, errors included, always reaches the user: it is
# not the driver's to hold back. (Seen under load: a pooled worker aborting in Ray's own mutex code.)
WORKER_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?\((?:[\w.:-]+ )?pid=\d+(, ip=[\w.:]+)?\)")


def _driver(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not WORKER_LINE.match(line))


def _chatter(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(c in line for c in CHATTER)]


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    """The quickstart run with stdout and stderr going to pipes, and its `--dry-run` (same description)."""
    work = tmp_path_factory.mktemp("piped")
    args = [*QUICK, "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}"]
    dry = run_cli_here([*args, "--dry-run"], work)  # the description a dry run prints: no fresh interpreter needed
    assert dry.returncode == 0, dry.stderr[-3000:]
    proc = run_program([str(ROOT / "run_sweep.py")], args, work, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work, dry, proc


def test_a_pipe_gets_one_line_per_ended_trial_and_nothing_else(piped):
    _, dry, proc = piped
    err = _driver(proc.stderr)
    assert err.startswith(dry.stderr), err[:3000]  # the sweep's description first, as --dry-run prints it
    lines = err[len(dry.stderr) :].splitlines()
    # One line per trial, then the one line that says where the sweep's report went.
    assert len(lines) == N_TRIALS + 1 and lines[-1].startswith("report: "), err[-3000:]
    assert lines.pop().endswith(")") and "report.html" in err
    assert all(ENDED.match(line) for line in lines), lines
    assert len({ENDED.match(line).group(1) for line in lines}) == N_TRIALS  # never the same trial twice
    counts = [PROGRESS.search(line).groups()[:2] for line in lines]
    assert counts == [(str(k), str(N_TRIALS)) for k in range(1, N_TRIALS + 1)]
    assert lines[-1].endswith("| done")
    assert "\r" not in err and "\x1b" not in err  # no terminal control codes in a log
    assert not _chatter(err + proc.stdout)
    assert "best config:" in proc.stdout


def _tmux(socket_name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # COLUMNS/LINES, if this process has them, would override the pane's size for the sweep
    # (shutil.get_terminal_size reads them first); the pane's own size is what the test is about.
    env = {k: v for k, v in cli_env().items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run(
        ["tmux", "-L", socket_name, *args], capture_output=True, text=True, timeout=30, check=check, env=env
    )


def _require_tmux() -> None:
    if shutil.which("tmux"):
        return
    if os.environ.get("MERSWEEP_REQUIRE_TMUX") == "1":
        pytest.fail("MERSWEEP_REQUIRE_TMUX=1 but no tmux on PATH (apt-get install -y tmux)")
    pytest.skip("tmux not installed (apt-get install -y tmux)")


def test_a_terminal_gets_one_line_redrawn_in_place(tmp_path):
    """`mersweep run` in a 200x50 tmux pane: the pane ends with a single status line, redrawn in place."""
    _require_tmux()
    sock = f"mersweep-test-{uuid.uuid4().hex[:8]}"  # a tmux server of this test's own
    raw, done, piping = tmp_path / "pane.raw", tmp_path / "exit-status", tmp_path / "piping"
    run = shlex.join([sys.executable, "-m", "sweeps", "run", *QUICK, "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    # The sweep starts once `pipe-pane` is attached (the test then creates `piping`); the pane
    # outlives the sweep for the capture.
    wait = f"until [ -e {shlex.quote(str(piping))} ]; do sleep 0.1; done"
    script = f"cd {shlex.quote(str(tmp_path))}; {wait}; {run}; echo $? > {shlex.quote(str(done))}; sleep 600"
    _tmux(sock, "new-session", "-d", "-s", "sweep", "-x", "200", "-y", "50", script)
    try:
        # Pinned (tmux's window-size "manual"): a detached session's size may otherwise fall back to
        # tmux's default 80x24 when the other tmux commands below come and go. Set before the sweep starts.
        _tmux(sock, "resize-window", "-t", "sweep", "-x", "200", "-y", "50")
        _tmux(sock, "pipe-pane", "-o", "-t", "sweep", f"cat > {shlex.quote(str(raw))}")
        piping.touch()
        deadline = time.monotonic() + 600
        while not done.exists():
            assert time.monotonic() < deadline, _tmux(sock, "capture-pane", "-p", "-t", "sweep").stdout
            time.sleep(0.2)
        # The sweep's last lines reach the pane after it exits (tmux reads the terminal on its own time).
        deadline = time.monotonic() + 60
        while True:
            screen = _tmux(sock, "capture-pane", "-p", "-J", "-S", "-", "-t", "sweep").stdout
            if "best config:" in screen or done.read_text().strip() not in ("", "0") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        _tmux(sock, "kill-server", check=False)
    assert done.read_text().strip() == "0", screen
    status = [line for line in screen.splitlines() if PROGRESS.search(line)]
    assert len(status) == 1, screen  # one line on screen, however often it was drawn
    assert f"trials {N_TRIALS}/{N_TRIALS} ended: " in status[0] and status[0].endswith("| done"), status
    assert not _chatter(screen), _chatter(screen)
    assert "best config:" in screen
    drawn = raw.read_bytes().decode(errors="replace")
    assert drawn.count(CLEAR_LINE + "[") >= 2, drawn[-3000:]  # redrawn: carriage return + erase, not new lines
    # No ended-trial lines of the log form on a terminal.
    assert not [line for line in screen.splitlines() if ENDED.match(line)], screen


def _read_lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_mersweep_ui_serves_the_sweeps_experiment_until_ctrl_c(piped):
    work, _, _ = piped
    folder = work / "runs" / "quickstart"
    study = folder / "optuna.db"
    if not study.exists():  # a sweep that keeps its Optuna study writes it here
        import optuna

        optuna.create_study(storage=f"sqlite:///{study}", study_name="quickstart")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeps", "ui", str(folder)],
        cwd=work,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
    out: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while not any(line.startswith("Ctrl-C stops") for line in out):
            assert time.monotonic() < deadline and proc.poll() is None, ("".join(out), proc.stderr.read())
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            assert line is not None, ("".join(out), proc.stderr.read())
            out.append(line)
        text = "".join(out)
        url = re.search(r"^MLflow UI: +(http://127\.0\.0\.1:(\d+))/#/experiments/(\d+)\?(\S+)$", text, re.M)
        assert url and url.group(4) == UI_TRAINING_QUERY, text  # the training-runs view
        base, port, experiment_id = url.group(1), int(url.group(2)), url.group(3)
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/search?max_results=100", timeout=30) as resp:
            experiments = json.load(resp)["experiments"]
        assert [e["experiment_id"] for e in experiments if e["name"] == "quickstart"] == [experiment_id]
        if importlib.util.find_spec("optuna_dashboard") is not None:  # started through this interpreter
            dash = re.search(r"^optuna-dashboard: (http://127\.0\.0\.1:\d+)$", text, re.M)
            assert dash, text
            with urllib.request.urlopen(dash.group(1), timeout=30) as resp:
                assert resp.status == 200
        else:
            assert "optuna-dashboard: not installed; `pip install optuna-dashboard`" in text, text
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C (tests/test_servers_stop.py times it under load)
        assert proc.wait(60) == 0, proc.stderr.read()
        deadline = time.monotonic() + 30
        while _port_open(port):  # the server went with it
            assert time.monotonic() < deadline, f"MLflow UI still answers on port {port} after Ctrl-C"
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)

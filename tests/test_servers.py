"""The servers a command starts: found through this interpreter, and stopped with everything they started.

Stand-in servers (small Python programs that ignore SIGTERM, one with a child in a session of its
own) stand for `mlflow server` and its uvicorn: what is checked is that nothing survives a stop,
however the command is told to stop. tests/test_servers_stop.py does the same with the real
servers of `mersweep ui` on busy cores, against the clock.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from sweeps.commands.servers import console_script, stop
from tests.driver_helpers import MARK_VAR, marked_pids
from tests.sweep_helpers import ROOT, cli_env

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes through /proc")

# A server that ignores SIGTERM and has a child, in a session of its own, that ignores it too; it
# prints the child's pid, and "term" each time SIGTERM reaches it.
STUBBORN = """
import signal, subprocess, sys, time
def on_term(signum, frame):
    print("term", flush=True)
signal.signal(signal.SIGTERM, on_term)
child = subprocess.Popen(
    [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"],
    start_new_session=True,
)
print(child.pid, flush=True)
while True:
    time.sleep(600)
"""
# A command that serves STUBBORN until Ctrl-C, as `mersweep ui` serves its servers.
COMMAND = f"""
import sys
from sweeps.commands.servers import ServerGroup
with ServerGroup(quiet=False) as servers:
    servers.start("stubborn", [sys.executable, "-c", {STUBBORN!r}])
    servers.wait()
print("stopped", flush=True)
"""


def _wait_for(what: str, check, proc: subprocess.Popen, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while not (got := check()):
        assert proc.poll() is None, f"{what}: the process ended (exit {proc.returncode})"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)
    return got


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_console_script_runs_through_this_interpreter_without_path(tmp_path):
    if importlib.util.find_spec("optuna_dashboard") is None:
        pytest.skip("optuna-dashboard is not installed")
    cmd = console_script("optuna-dashboard")
    assert cmd is not None and cmd[0] == sys.executable
    proc = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=120, env={"PATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == importlib.metadata.version("optuna-dashboard")


def test_a_console_script_nothing_installs_is_none():
    assert console_script(f"mersweep-no-such-script-{uuid.uuid4().hex[:8]}") is None


def test_a_stop_reaches_a_child_in_a_session_of_its_own_and_sigterm_ignored(tmp_path):
    out = tmp_path / "out"
    with open(out, "w") as sink:
        server = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=sink, start_new_session=True)
    child = 0
    try:
        child = int(_wait_for("the child's pid", lambda: (out.read_text().split() or [""])[0], server))
        stop([server])
        assert server.returncode is not None and not _running(child)
        assert "term" in out.read_text()  # asked first, killed only after it would not go
    finally:
        _kill([server.pid, child] if child else [server.pid])
        server.wait(30)


@pytest.mark.parametrize("how", ["ctrl-c twice", "sigterm then ctrl-c"])
def test_a_second_signal_during_the_stop_does_not_leave_the_server_behind(tmp_path, how):
    """The second signal comes once the server has been asked to stop: in the middle of the stop."""
    mark = uuid.uuid4().hex
    out = tmp_path / "out"
    with open(out, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-c", COMMAND],
            cwd=ROOT,
            env=cli_env({MARK_VAR: mark}),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for("the server's child", lambda: len(marked_pids(mark)) >= 3 and out.read_text().strip(), proc)
        proc.send_signal(signal.SIGTERM if how == "sigterm then ctrl-c" else signal.SIGINT)
        _wait_for("SIGTERM at the server", lambda: "term" in out.read_text(), proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0, out.read_text()
        assert out.read_text().rstrip().endswith("stopped"), out.read_text()
        deadline = time.monotonic() + 30  # the orphaned child is reaped by init on its own time
        while left := marked_pids(mark):
            assert time.monotonic() < deadline, f"left behind: {left}"
            time.sleep(0.05)
    finally:
        _kill([proc.pid, *marked_pids(mark)])
        proc.wait(30)

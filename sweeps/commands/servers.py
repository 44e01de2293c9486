"""Servers a command runs in the background (`mlflow server`, optuna-dashboard), and their stop.

Each server starts through this interpreter (`python -m mlflow`, a console script's entry point),
never looked up on PATH: a venv's python run without activating the venv finds what is installed
in it. Each starts in a session of its own, so Ctrl-C at the terminal reaches only the command,
which then stops every server it started together with all their descendants (`mlflow server`
runs uvicorn as a child; a dashboard under gunicorn has workers). Stopping is bounded: SIGTERM,
then SIGKILL to whatever is left after `STOP_GRACE_S`. A second Ctrl-C (or SIGTERM) during the
stop does not abort it: it only skips the rest of the grace period.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType

STOP_GRACE_S = 2.0  # a UI server holds nothing worth a longer graceful shutdown
POLL_S = 0.05  # how often a stop looks whether the servers are gone


def console_script(name: str) -> list[str] | None:
    """The console script `name` (e.g. `optuna-dashboard`) run by this interpreter, or None if no
    installed distribution provides it; arguments go after the returned list.

    The script's entry point comes from the distribution's metadata, the same one pip's wrapper
    on PATH calls, so the result is what `name ARGS` would do in an activated environment.
    """
    found = importlib.metadata.entry_points(group="console_scripts", name=name)
    if not found:
        return None
    entry = next(iter(found))
    if importlib.util.find_spec(entry.module) is None:  # metadata left behind by a removed package
        return None
    call = f"importlib.import_module({entry.module!r}).{entry.attr}()" if entry.attr else "None"
    code = f"import importlib, sys; sys.argv[0] = {name!r}; sys.exit({call})"
    return [sys.executable, "-c", code]


@dataclass
class Server:
    """A server process started by `ServerGroup.start`, in a session (process group) of its own."""

    name: str
    proc: subprocess.Popen
    log: Path | None  # where its output goes (None: to this command's own stdout/stderr)

    def last_line(self) -> str:
        text = self.log.read_text(errors="replace")[-2000:] if self.log and self.log.is_file() else ""
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return lines[-1] if lines else "(no output)"

    def wait_answering(self, url: str, *, timeout: float) -> None:
        """Until `url` answers HTTP; RuntimeError (with the server's last line) if it exits or never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with status {self.proc.returncode}: {self.last_line()}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # an answer, whatever its status: the server is up
            except OSError:
                time.sleep(0.3)  # the poll interval: not listening yet
        raise RuntimeError(f"{self.name} did not answer at {url} within {timeout:.0f} s: {self.last_line()}")


class ServerGroup:
    """The servers one command starts; leaving the `with` block stops all of them, however it is left.

    Inside the block (in the main thread) the first SIGINT or SIGTERM raises KeyboardInterrupt, as
    Ctrl-C does; any later one, or one that comes while the servers stop, only hurries the stop
    along (SIGKILL at once) instead of interrupting it halfway and leaving servers behind. The
    servers' logs live in a temporary folder (`logs`) removed at the end.
    """

    def __init__(self, *, prefix: str = "mersweep-servers-", quiet: bool = True) -> None:
        self.servers: list[Server] = []
        self.stopping = False  # set by the first signal, or when the block is left
        self.hurry = False  # a signal came while the servers stop: SIGKILL without waiting
        self._prefix = prefix
        self._quiet = quiet
        self._previous: dict[int, object] = {}
        self.logs = Path()

    def __enter__(self) -> ServerGroup:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        self.logs = Path(tempfile.mkdtemp(prefix=self._prefix))
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.stopping = True
        try:
            stop([server.proc for server in self.servers], hurry=lambda: self.hurry)
            shutil.rmtree(self.logs, ignore_errors=True)
        finally:
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)  # type: ignore[arg-type]

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping:  # a second Ctrl-C (or one during a stop): hurry the stop, never abort it
            self.hurry = True
            return
        self.stopping = True
        raise KeyboardInterrupt

    def start(self, name: str, cmd: list[str], *, env: dict[str, str] | None = None) -> Server:
        """Start `cmd` as server `name` (output to a log file unless the group is not quiet)."""
        log = self.logs / f"{name.replace(' ', '-').lower()}.log" if self._quiet else None
        out = open(log, "w") if log else None  # noqa: SIM115 (the child writes it while it runs)
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.logs,
                start_new_session=True,  # Ctrl-C at the terminal reaches the command, which stops it
            )
        finally:
            if out is not None:
                out.close()
        self.servers.append(Server(name, proc, log))  # listed at once: a Ctrl-C from here on stops it
        return self.servers[-1]

    def wait(self, *, poll_s: float = 0.5) -> Server | None:
        """Until a server exits by itself (that server) or a signal interrupts (None)."""
        try:
            while True:
                for server in self.servers:
                    if server.proc.poll() is not None:
                        return server
                time.sleep(poll_s)  # the poll interval; a signal interrupts it
        except KeyboardInterrupt:
            return None


def stop(procs: list[subprocess.Popen], *, hurry=lambda: False, grace: float = STOP_GRACE_S) -> None:
    """Stop each process with its whole process group and every descendant, within about `grace` s.

    SIGTERM to all, then SIGKILL to what is still alive after `grace` seconds (or as soon as
    `hurry()` says so). Descendants are found through /proc as well as by process group: a child
    that started a session of its own, or that its parent's death handed to init, still goes.
    """
    tree = _tree([p.pid for p in procs])
    _signal_all(procs, tree, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and not hurry() and _alive(procs, tree):
        time.sleep(POLL_S)  # the poll interval of a bounded wait
    tree |= _tree([p.pid for p in procs if p.poll() is None])
    _signal_all(procs, tree, signal.SIGKILL)
    deadline = time.monotonic() + 5.0  # SIGKILL cannot be refused: this is the kernel's reaping time
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(deadline - time.monotonic(), 0.01))
    # A descendant in a session of its own is not ours to reap: wait until the kernel has ended it,
    # so a caller that returns from stop() finds the port free and nothing left running.
    while time.monotonic() < deadline and any(_running(pid) for pid in tree):
        time.sleep(POLL_S)


def _signal_all(procs: list[subprocess.Popen], tree: set[int], sig: int) -> None:
    for proc in procs:
        if proc.returncode is None:  # not reaped yet: its pid (the group's id) is still its own
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
    for pid in tree:
        if _running(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)


def _alive(procs: list[subprocess.Popen], tree: set[int]) -> bool:
    return any(p.poll() is None for p in procs) or any(_running(pid) for pid in tree)


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"  # "pid (comm) state ...": comm may hold ")"


def _tree(roots: list[int]) -> set[int]:
    """The descendants of `roots` now (Linux /proc; elsewhere empty: process groups then suffice)."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError, ValueError):
                    ppid = int(Path(entry.path, "stat").read_text().rpartition(")")[2].split()[1])
                    children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found

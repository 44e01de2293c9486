"""A sweep driver (`python run_sweep.py ...`) in the background, and every process it leaves behind.

A driver runs in its own session (process group), like a command in a terminal. The Ray processes
it starts (GCS, raylet, log monitor) share that group, but Ray's workers put themselves into
groups of their own, so the group alone cannot tell whether a killed driver left orphans behind.
Every process a driver starts inherits its environment, so each driver carries a unique marker
variable: a scan of /proc for it finds all of its descendants, whatever their group or parent.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from tests.sweep_helpers import ROOT, cli_env

MARK_VAR = "MERSWEEP_TEST_DRIVER"
# The counts in each line of sweeps.execution.progress.ProgressCallback off a terminal: one line per
# ended trial (and, with --verbose, per started trial).
PROGRESS = re.compile(r"trials (\d+)/(\d+) ended: .*; (\d+) running")


def marked_pids(mark: str) -> list[int]:
    """Live processes (zombies excluded) whose environment holds MARK_VAR=mark."""
    needle = f"{MARK_VAR}={mark}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to read
            if needle in (entry / "environ").read_bytes().split(b"\0") and not _zombie(entry):
                pids.append(int(entry.name))
    return pids


def _zombie(entry: Path) -> bool:
    # /proc/PID/stat: "pid (comm) state ..."; comm may hold spaces and parentheses.
    return (entry / "stat").read_text().rpartition(")")[2].split()[0] == "Z"


def progress(text: str) -> tuple[int, int] | None:
    """(trials ended, trials running) of the last status line in a driver's stderr, if any."""
    lines = PROGRESS.findall(text)
    return (int(lines[-1][0]), int(lines[-1][2])) if lines else None


class Driver:
    """`python run_sweep.py ARGS` in `cwd`, in its own session, output to files (nothing can block)."""

    def __init__(self, args: list[str], cwd: Path, *, mark: str, env: dict | None = None) -> None:
        self.mark = mark
        self.out, self.err = cwd / f"driver-{uuid.uuid4().hex[:8]}.out", cwd / f"driver-{uuid.uuid4().hex[:8]}.err"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "run_sweep.py"), *args],
                cwd=cwd,
                env=cli_env({**(env or {}), MARK_VAR: mark}),
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.pgid = self.proc.pid

    def stdout(self) -> str:
        return self.out.read_text()

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


class Drivers:
    """The drivers of one test, all sharing one marker; `cleanup` kills whatever of theirs is left."""

    def __init__(self) -> None:
        self.mark = uuid.uuid4().hex
        self.started: list[Driver] = []

    def start(self, args: list[str], cwd: Path, *, env: dict | None = None) -> Driver:
        self.started.append(Driver(args, cwd, mark=self.mark, env=env))
        return self.started[-1]

    def leftovers(self) -> list[int]:
        return marked_pids(self.mark)

    def wait_all_gone(self, timeout: float) -> list[int]:
        """Waits until no process of these drivers is left; returns those still alive at the timeout.

        Ray's workers notice a dead raylet within seconds and exit; on a loaded machine it takes longer.
        """
        deadline = time.monotonic() + timeout
        while (left := self.leftovers()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def cleanup(self) -> None:
        for driver in self.started:
            if driver.proc.poll() is None or driver.group_alive():
                with contextlib.suppress(ProcessLookupError):
                    driver.signal_group(signal.SIGKILL)
                driver.proc.wait(30)
        for pid in self.leftovers():  # each carries this test's unique marker: ours, killed by id
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

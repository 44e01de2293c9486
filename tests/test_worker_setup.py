"""Trial workers stay quiet at teardown: SystemExit in a finalizer is dropped, other errors are not."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.sweep_helpers import ROOT

# A weakref callback interrupted by SystemExit, as when Ray's SIGTERM handler fires inside one.
SCRIPT = """
import sys, weakref
sys.path.insert(0, {root!r})
if {quiet}:
    from sweeps.trainable.worker_setup import quiet_worker
    quiet_worker()
class Thing: pass
def callback(ref):
    raise {exc}
thing = Thing()
ref = weakref.ref(thing, callback)
del thing
print("went on", flush=True)
"""


def _run(quiet: bool, exc: str) -> subprocess.CompletedProcess:
    code = SCRIPT.format(root=str(ROOT), quiet=quiet, exc=exc)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_without_the_hook_python_prints_the_teardown_traceback():
    proc = _run(quiet=False, exc="SystemExit(1)")
    assert "Exception ignored" in proc.stderr and "SystemExit" in proc.stderr


def test_the_hook_drops_system_exit_in_a_finalizer():
    proc = _run(quiet=True, exc="SystemExit(1)")
    assert proc.stdout.strip() == "went on"
    assert proc.stderr == ""


@pytest.mark.parametrize("exc", ["ValueError('real bug')", "KeyboardInterrupt()"])
def test_the_hook_still_reports_every_other_exception(exc):
    proc = _run(quiet=True, exc=exc)
    assert "Exception ignored" in proc.stderr and exc.split("(")[0] in proc.stderr


def test_a_trial_worker_starts_without_the_drivers_table_and_statistics_libraries():
    """Every Ray trial worker imports the trial function's module at its start: pandas and SciPy
    (label CSVs, data files and ablation designs, all read on the driver) stay out of it."""
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "import sweeps.trainable.trial, sweeps.trainable.bookkeeping\n"
        "print(sorted(m for m in ('pandas', 'scipy') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]", proc.stdout

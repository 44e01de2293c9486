"""SIGTERM stops a sweep as Ctrl-C does: exit 130, a resume hint, its Ray cluster gone.

A service manager, `kill PID` or a batch system's time limit sends SIGTERM to the driver alone.
Ray's crash handler, installed by `ray.init`, would take it for a fatal signal (a stack dump and
an exit by SIGABRT); the sweep instead stops as after Ctrl-C, resumably, and every process it
started goes with it (tests/driver_helpers.py finds them by an environment marker).
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.driver_helpers import Drivers, progress
from tests.sweep_helpers import SMALL_SET, driver_lines, write_sweep

pytestmark = pytest.mark.slow


def test_sigterm_to_the_driver_stops_the_sweep_resumably_and_leaves_nothing(tmp_path, mlflow_uri):
    spec = write_sweep(
        tmp_path,
        "term",
        set={**SMALL_SET, "optim.max_epochs": 4, "optim.patience": 4},
        search={"algorithm": "random", "num_samples": 6, "seed": 0},
        scheduler={"kind": "none"},
    )
    drivers = Drivers()
    try:
        driver = drivers.start([str(spec), "--tracking-uri", mlflow_uri], tmp_path)
        deadline = time.monotonic() + 300
        while (progress(driver.stderr()) or (0, 0))[0] < 1:  # a trial has ended: the sweep is well under way
            assert driver.proc.poll() is None and time.monotonic() < deadline, driver.stderr()[-3000:]
            time.sleep(0.1)
        driver.proc.send_signal(signal.SIGTERM)  # the driver only, as `kill PID` does
        rc = driver.proc.wait(120)
        err = driver.stderr()
        assert rc == 130, f"exit {rc}:\n{err[-3000:]}"
        assert "SIGTERM received" not in err and "Traceback" not in driver_lines(err), err[-3000:]
        assert "continue it with:" in err and err.rstrip().endswith("--resume"), err[-3000:]
        left = drivers.wait_all_gone(60)
        assert not left, f"processes outlived their driver: {left}"
    finally:
        drivers.cleanup()

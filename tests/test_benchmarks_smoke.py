"""`python -m benchmarks --smoke` runs every registered benchmark end to end and leaves RESULTS.md alone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def _snapshot(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


@pytest.mark.slow
def test_smoke_prints_every_ratio_and_keeps_results() -> None:
    before = _snapshot(RESULTS)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # ~1-2 minutes on 2 idle cores; the margin is for a busy shared machine
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("epoch.speedup", "overhead.engine_vs_optuna", "overhead.plain_tune_vs_optuna"):
        line = re.search(rf"^ratio {re.escape(name)} = (\d+\.\d+)x", proc.stdout, flags=re.MULTILINE)
        assert line is not None, f"no ratio line for {name} in:\n{proc.stdout}"
        assert float(line.group(1)) > 0.0
    # A smoke run must never replace real numbers.
    assert _snapshot(RESULTS) == before


def test_registry_lists_the_benchmarks() -> None:
    from benchmarks import BENCHMARKS

    assert {"epoch", "overhead"} <= set(BENCHMARKS)

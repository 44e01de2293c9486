"""`python -m benchmarks scale --smoke`: both arms on a 3-node local cluster, and a kill and resume.

A file of its own so that pytest-xdist (--dist loadfile) can run it beside the other benchmarks'
smoke instead of after it.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.test_benchmarks_smoke import RESULTS, ROOT, _ratio, _snapshot


@pytest.mark.slow
def test_scale_smoke_runs_both_arms_and_loses_no_run_across_kill_and_resume() -> None:
    before = _snapshot(RESULTS)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "scale", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # 51 s at load 4-5 (8 trials, 2 slots); a 3-node cluster and four drivers under load take longer
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _ratio(proc.stdout, "scale.wall_vs_plain_tune") > 0.0
    assert _ratio(proc.stdout, "scale_resume.lost_runs") == 0.0
    assert _ratio(proc.stdout, "scale_resume.duplicate_runs") == 0.0
    assert _ratio(proc.stdout, "scale_ask.model_growth_whole") > 0.0
    for figure in ("driver peak RSS", "end report", "ask at 100 finished trials", "MLflow largest backlog"):
        assert figure in proc.stdout
    assert _snapshot(RESULTS) == before

"""`python -m benchmarks scale --smoke`: every arm on one 3-node local cluster, and a kill and resume.

A file of its own so that pytest-xdist (--dist loadfile) can run it beside the other benchmarks'
smoke instead of after it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.pg_helpers import require_postgres
from tests.sweep_helpers import run_main_here
from tests.test_benchmarks_smoke import RESULTS, ROOT, _ratio, _snapshot


@pytest.mark.slow
def test_scale_smoke_runs_every_arm_and_loses_no_run_across_kill_and_resume() -> None:
    """Every arm on one 3-node cluster: (a), (b), the kill and resume, and (c) where PostgreSQL is here
    (a throwaway PostgreSQL cluster, an MLflow server on it, 8 trials through the driver)."""
    before = _snapshot(RESULTS)
    arms = ["ask", "plain", "sweep", "resume"] + ["postgres"] * _postgres_here()
    # 58 s alone (8 trials, 2 slots; (c) about 20 of them); five drivers on a 3-node cluster under load take longer
    proc = _bench("scale", "--smoke", "--arms", ",".join(arms), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _ratio(proc.stdout, "scale.wall_vs_plain_tune") > 0.0
    assert _ratio(proc.stdout, "scale_resume.lost_runs") == 0.0
    assert _ratio(proc.stdout, "scale_resume.duplicate_runs") == 0.0
    assert _ratio(proc.stdout, "scale_ask.model_growth_whole") > 0.0
    for figure in ("driver peak RSS", "end report", "ask at 100 finished trials", "MLflow largest backlog"):
        assert figure in proc.stdout
    assert _snapshot(RESULTS) == before
    if "postgres" in arms:
        assert _ratio(proc.stdout, "scale_pg.sweep_vs_ideal") > 1.0
        assert _ratio(proc.stdout, "scale_pg.wall_vs_plain_tune") > 0.0
        runs = re.search(r"\(c\) live child runs\s+(\S+) runs\s+(\d+) distinct trials of 8", proc.stdout)
        assert runs is not None and float(runs.group(1)) == 8.0 and runs.group(2) == "8", proc.stdout
        for figure in ("(c) driver peak RSS", "(c) end report", "(c) MLflow largest backlog"):
            assert figure in proc.stdout


def _postgres_here() -> bool:
    """Whether arm (c) can run: PostgreSQL's binaries and psycopg2 (required under MERSWEEP_REQUIRE_POSTGRES=1)."""
    try:
        require_postgres()
    except pytest.skip.Exception:
        return False
    return True


def _bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["scale", "--arms", "plain,tune"], "unknown arm"),
        (["scale", "--arms", ","], "unknown arm"),
        (["epoch", "--arms", "plain"], "only with the scale benchmark"),
    ],
)
def test_bad_arms_exit_2_naming_the_flag_and_the_arms(args: list[str], named: str) -> None:
    from benchmarks.__main__ import main

    proc = run_main_here(main, [*args, "--smoke"], ROOT)  # refused before any work: no fresh interpreter needed
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: --arms:") and named in line and "Traceback" not in proc.stderr
    if named == "unknown arm":
        assert "ask, plain, sweep, resume, postgres" in line


def test_a_scale_section_reports_whichever_arms_ran() -> None:
    from benchmarks.bench_scale import Driver, Tracking, _wall_result

    plain = Driver(20.0, 400.0, 0, '{"fit_s": 18.0}\n', "")
    sweep = Driver(25.0, 600.0, 0, "", "report: x written in 2.5 s\n")
    tracking = Tracking(children=100, distinct=100, finished=100, rows=5000, parent={"tracking/backlog_max": 3.0})
    both = _wall_result((100, 1.0, 8), plain, sweep, tracking)
    assert [r.name for r in both.ratios] == ["wall_vs_plain_tune", "plain_tune_vs_ideal", "sweep_vs_ideal"]
    assert both.ratios[0].value == pytest.approx(1.25) and both.ratios[2].value == pytest.approx(2.0)
    alone = _wall_result((100, 1.0, 8), None, sweep, tracking)
    assert [r.name for r in alone.ratios] == ["sweep_vs_ideal"]
    assert all(r.label.startswith("(b)") for r in alone.rows)
    assert [r.name for r in _wall_result((100, 1.0, 8), plain, None, None).ratios] == ["plain_tune_vs_ideal"]

"""`python -m benchmarks --smoke` runs every registered benchmark end to end and leaves RESULTS.md alone."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.bench_memory import PeakSampler, read_status
from benchmarks.bench_search_efficiency import Event, SweepRun, early_vs_final, epochs_to_target
from benchmarks.bench_search_mf import ARMS, Trace, default_arm, ert
from benchmarks.ert import expected_epochs, ratio_interval
from benchmarks.mf_hartmann import X_STAR

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
        timeout=600,  # 95-160 s at load 3-8 (each sweep starts its own worker processes); over 3 minutes at load 15
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    positive = ("epoch.speedup", "overhead.engine_vs_optuna", "overhead.plain_tune_vs_optuna")
    positive += ("search_efficiency.tpe_budget_vs_random",)  # the smoke runs TPE + ASHA and random search
    positive += (
        "memory.private_by_value_vs_shared",
        "memory.shared_private_vs_dataset",
        "memory.shared_rss_vs_dataset",
        "fused.fused_vs_trial",
    )
    for name in positive:
        assert _ratio(proc.stdout, name) > 0.0
    # With 1-2 trials and 1 seed an arm may miss the target: inf, 0 or nan are legitimate there.
    for name in ("search_efficiency.tpe_vs_random", "search_efficiency.tpe_ert_vs_random"):
        assert not math.isnan(_ratio(proc.stdout, name)) or "reached 0/1" in proc.stdout
    # search_mf: 1 seed of 3 arms through Ray Tune; a missed target gives inf, 0 or nan, but the line is there.
    for name in ("search_mf.tpe_asha_ert_vs_random", "search_mf.bohb_style_budget_tpe_hyperband_ert_vs_random"):
        _ratio(proc.stdout, name)
    # A smoke run must never replace real numbers.
    assert _snapshot(RESULTS) == before


def _ratio(stdout: str, name: str) -> float:
    line = re.search(rf"^ratio {re.escape(name)} = (\S+)x", stdout, flags=re.MULTILINE)
    assert line is not None, f"no ratio line for {name} in:\n{stdout}"
    return float(line.group(1))


def test_registry_lists_the_benchmarks_and_each_module_registers_its_own() -> None:
    from benchmarks import BENCHMARKS, DEFAULT, MODULES, load

    assert {"epoch", "overhead", "search_efficiency", "search_mf", "memory", "fused", "gpu", "scale"} <= set(MODULES)
    assert "gpu" not in DEFAULT and "scale" not in DEFAULT  # each runs when named
    for name in MODULES:
        assert load(name) is BENCHMARKS.get(name)


def test_sqlite_store_copies_one_migrated_template_into_independent_stores(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from benchmarks.common import sqlite_store

    template = tmp_path / "empty.db"
    first = sqlite_store(tmp_path / "a.db", template=template)
    made = template.stat().st_mtime_ns
    second = sqlite_store(tmp_path / "b.db", template=template)
    assert template.stat().st_mtime_ns == made  # made once, then only copied
    MlflowClient(tracking_uri=first).create_experiment("only-in-a")

    def names(uri: str) -> set[str]:
        return {e.name for e in MlflowClient(tracking_uri=uri).search_experiments()}

    assert "only-in-a" in names(first) and "only-in-a" not in names(second)
    # Without a template nothing is made here: the sweep's tracker creates the store.
    assert sqlite_store(tmp_path / "c.db", template=None) == f"sqlite:///{tmp_path / 'c.db'}"
    assert not (tmp_path / "c.db").exists()


def test_epochs_to_target_counts_every_trial_in_arrival_order() -> None:
    events = [
        Event(ms=10, trial="a", step=1, value=0.50, final=False),
        Event(ms=20, trial="b", step=1, value=0.70, final=False),  # b's epoch beats the target but is no final
        Event(ms=30, trial="a", step=2, value=0.60, final=False),
        Event(ms=40, trial="a", step=3, value=0.60, final=True),  # a found 0.60: below the target
        Event(ms=50, trial="b", step=2, value=0.80, final=False),
        Event(ms=50, trial="b", step=3, value=0.80, final=True),  # same ms: b's epoch counts first
        Event(ms=60, trial="c", step=1, value=0.90, final=False),
    ]
    assert epochs_to_target(reversed(events), 0.75) == 4.0  # order comes from the timestamps, not the input
    assert epochs_to_target(events, 0.60) == 3.0  # b's epoch that ran beside a counts too
    assert math.isinf(epochs_to_target(events, 0.85))  # c never ended: its epoch is cost, not a find


def test_early_vs_final_ranks_curves_and_counts_the_good_trials_a_rung_would_cut() -> None:
    # Six trials, two epochs then a final value each. At epoch 1 the order is the final order but for
    # trial "late", which starts last and ends best: the one good trial a rung at epoch 1 would cut.
    curves = {"a": (0.1, 0.2, 0.3), "b": (0.2, 0.3, 0.4), "c": (0.3, 0.4, 0.5), "d": (0.4, 0.5, 0.6)}
    curves |= {"e": (0.5, 0.6, 0.7), "late": (0.0, 0.7, 0.9)}
    events = []
    for trial, (e1, e2, final) in curves.items():
        events += [Event(1, trial, 1, e1, False), Event(2, trial, 2, e2, False), Event(3, trial, 3, final, True)]
    out = early_vs_final([SweepRun("random", 0, tuple(events))], target=0.65, rungs=(1, 2, 5))
    rho1, cut1 = out[1]
    assert 0.0 < rho1 < 1.0 and cut1 == 0.5  # good: e (kept at epoch 1) and late (cut)
    assert out[2] == (1.0, 0.0)  # by epoch 2 the order is the final one
    assert all(math.isnan(v) for v in out[5])  # no trial reached epoch 5


def test_expected_epochs_charges_failed_seeds_their_whole_budget() -> None:
    # Seeds: hit after 10, missed having spent 100, hit after 30 -> (10 + 100 + 30) / 2 hits.
    assert expected_epochs([10.0, math.inf, 30.0], [50.0, 100.0, 60.0]) == 70.0
    assert expected_epochs([5.0], [9.0]) == 5.0
    assert math.isinf(expected_epochs([math.inf, math.inf], [40.0, 50.0]))


def test_ert_ratio_interval_brackets_the_ratio_and_separates_a_faster_arm() -> None:
    base = [(float(100 + 10 * i), 300.0) for i in range(20)]  # every seed hits at 100..290 epochs
    same_lo, same_hi = ratio_interval(base, base)
    assert same_lo < 1.0 < same_hi
    faster = [(t / 4, s) for t, s in base]
    lo, hi = ratio_interval(faster, base)
    assert 0.0 < lo <= 0.25 <= hi < 1.0
    # An arm that never hits has an infinite ratio in every resample; one only it hits has 0.
    never = [(math.inf, 300.0)] * 5
    assert ratio_interval(never, base) == (math.inf, math.inf)
    assert ratio_interval(base, never) == (0.0, 0.0)


def test_peak_sampler_sees_a_private_allocation() -> None:
    if "RssAnon" not in read_status():
        pytest.skip("needs /proc/self/status")
    with PeakSampler(period_s=0.001) as mem:
        block = b"\x01" * (64 * 2**20)  # written byte by byte: every page is resident
        deadline = time.monotonic() + 60
        while mem.peak["RssAnon"] - mem.start["RssAnon"] < 60 and time.monotonic() < deadline:
            time.sleep(0.001)  # held until the sampler's thread has seen it, however busy the machine
        del block
    assert mem.peak["RssAnon"] - mem.start["RssAnon"] >= 60
    assert mem.peak["VmHWM"] >= mem.peak["VmRSS"] >= mem.start["VmRSS"]


def _config(x) -> dict:
    return {f"x{i}": float(v) for i, v in enumerate(x)}


def test_search_mf_trace_counts_epochs_until_the_first_good_finish_and_nothing_after() -> None:
    trace = Trace("arm", 0, target=0.5, budget=100)
    far = _config([0.9] * 6)
    trace.record("a", {"config": far, "loss": -0.1})
    trace.record("b", {"config": _config(X_STAR), "loss": -3.0})  # the optimum, not finished yet
    trace.record("a", {"config": far, "loss": -0.1, "final": 1, "true_regret": 3.3})  # a bad finish finds nothing
    trace.record("b", {"config": _config(X_STAR), "loss": -3.2})
    trace.record("b", {"config": _config(X_STAR), "loss": -3.3, "final": 1, "true_regret": 0.0})
    assert trace.hit_at == 3.0 and trace.done
    trace.record("c", {"config": far, "loss": -0.1})  # in flight when the sweep ended: not counted
    assert trace.epochs == 3 and "c" not in trace.trials
    assert trace.trials["a"][1:] == [1, True] and trace.trials["b"][0] == pytest.approx(0.0, abs=1e-5)


def test_search_mf_ert_charges_missed_seeds_their_whole_run() -> None:
    hit, missed = Trace("x", 0, 1.0, 50), Trace("x", 1, 1.0, 50)
    hit.hit_at, hit.epochs, missed.epochs = 10.0, 10, 50
    assert ert([hit, missed]) == 60.0
    assert math.isinf(ert([missed]))


def test_search_mf_has_an_arm_for_the_default_search() -> None:
    assert default_arm() in ARMS

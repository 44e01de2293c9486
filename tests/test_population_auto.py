"""`execution.population: auto`: a short probe sizes fused populations, or falls back to one trial per
process (with a GPU share on CUDA) where fusing does not pay or a field forces trial mode.

The rule is tested on given probe figures (no timing enters a verdict); the sweep-level tests run
the real probe on the CPU through `--dry-run` and check what the header says, not which K won.
"""

from __future__ import annotations

import pytest

from mer_core.errors import ConfigError
from mer_core.train.fused.sizing import MAX_PER_GPU, Probe, choose_population, gpu_fraction
from sweeps.spec import load_sweep
from tests.sweep_helpers import run_cli_here, write_sweep

MIB = 2**20


def test_the_fewest_seconds_per_member_wins():
    probe = Probe("cpu", (1, 2, 4, 8), seconds=(1.0, 1.2, 1.6, 4.0), peak_bytes=(0, 0, 0, 0), free_bytes=None)
    choice = choose_population(probe, num_samples=100)  # per member: 1.0, 0.6, 0.4, 0.5
    assert (choice.population, choice.gpu) == (4, 0.0)
    assert "fastest per member at K=4" in choice.reason and "K=8 0.5 s" in choice.reason


def test_free_memory_and_the_trial_count_cap_the_population():
    fast = (1.0, 1.1, 1.2, 1.3)  # the largest K is fastest per member
    peaks = (100 * MIB, 200 * MIB, 400 * MIB, 800 * MIB)  # 100 MiB per member
    roomy = Probe("cuda", (1, 2, 4, 8), fast, peaks, free_bytes=10_000 * MIB)
    assert choose_population(roomy, num_samples=100).population == 8
    tight = Probe("cuda", (1, 2, 4, 8), fast, peaks, free_bytes=400 * MIB)  # 0.8 x 400 MiB: 3 members
    assert choose_population(tight, num_samples=100).population == 2
    assert choose_population(roomy, num_samples=3).population == 2  # no population larger than the sweep


def test_when_fusing_does_not_pay_trials_share_the_gpu_by_memory():
    slow = (1.0, 2.5, 5.0, 10.0)  # per member: K=1 is fastest
    probe = Probe("cuda", (1, 2, 4, 8), slow, (1024 * MIB,) * 4, free_bytes=3 * 1024 * MIB)
    choice = choose_population(probe, num_samples=100)
    assert (choice.population, choice.gpu) == (1, 0.5)  # 0.8 x 3 GiB holds 2 trials of 1 GiB
    assert "one trial per process" in choice.reason
    assert gpu_fraction(10 * MIB, 80 * 1024 * MIB) == 1 / MAX_PER_GPU  # never more than MAX_PER_GPU per GPU
    assert gpu_fraction(100 * 1024 * MIB, 80 * 1024 * MIB) == 1.0  # one that barely fits gets a GPU
    cpu = Probe("cpu", (1, 2), (1.0, 3.0), (0, 0), free_bytes=None)
    assert choose_population(cpu, num_samples=10).gpu == 0.0  # no GPU share on the CPU


def test_auto_belongs_to_fused_mode(tmp_path):
    spec = write_sweep(tmp_path, "auto_trial")
    with pytest.raises(ConfigError, match=r"^execution\.population: only with execution\.mode: fused"):
        load_sweep(spec, sets=["sweep.execution.population=auto"])
    auto = load_sweep(spec, sets=["sweep.execution.population=auto", "sweep.execution.mode=fused"])
    assert auto.execution.population == "auto"


def _dry_run(tmp_path, name: str, sets: list[str]):
    spec = write_sweep(tmp_path, name, scheduler={"kind": "none"})
    args = [str(spec), "--dry-run", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    for s in ["sweep.execution.mode=fused", "sweep.execution.population=auto", *sets]:
        args += ["--set", s]
    proc = run_cli_here(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


@pytest.mark.slow
def test_a_dry_run_says_what_the_probe_chose_and_why(tmp_path):
    err = _dry_run(tmp_path, "auto", [])
    (line,) = [ln for ln in err.splitlines() if ln.startswith("execution: population auto -> ")]
    assert "probe on cpu, one short epoch, seconds per member: K=1 " in line and "K=8 " in line
    fused = [ln for ln in err.splitlines() if ln.startswith("execution: fused populations of up to ")]
    assert bool(fused) == ("trial mode" not in line)  # the chosen K is the sweep's population


@pytest.mark.slow
def test_a_field_fused_mode_refuses_falls_back_to_trial_mode(tmp_path):
    err = _dry_run(tmp_path, "auto_retrieval", ["missing.impute=retrieval"])
    assert "execution: population auto -> trial mode (missing.impute forces it: fused mode refuses it)" in err
    assert "execution: fused populations" not in err

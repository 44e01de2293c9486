"""The GPU check starts on a bare GPU machine: torch and the scientific stack, no Ray, Optuna or MLflow.

Each test runs the check's entry in a subprocess whose Python cannot import ray, optuna or mlflow
(`tests.blocked_imports`), including the worker processes the check starts.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.common import nvidia_smi
from tests.blocked_imports import blocking_env, refused

CLUSTER_STACK = ("ray", "optuna", "mlflow")
HAS_GPU = nvidia_smi("name") is not None


def _run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_the_check_and_its_worker_import_without_the_cluster_stack(tmp_path):
    env = blocking_env(tmp_path, CLUSTER_STACK)
    probe = "import benchmarks.bench_gpu, benchmarks.gpu_worker, benchmarks.bench_epoch, benchmarks.__main__"
    proc = _run(["-c", probe], env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert refused(tmp_path) == []
    # The blocker works: importing the sweep engine fails the way a missing Ray does.
    proc = _run(["-c", "import ray"], env, timeout=60)
    assert proc.returncode != 0 and "blocked by the test" in proc.stderr


@pytest.mark.skipif(HAS_GPU, reason="checks the message of a machine without a GPU")
def test_without_a_gpu_the_check_says_so_in_one_line_and_exits_2(tmp_path):
    proc = _run(["-m", "benchmarks", "gpu"], blocking_env(tmp_path, CLUSTER_STACK), timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: gpu: no CUDA device; allowed: a machine where nvidia-smi sees a GPU (--smoke runs the check's "
        "tiny form on the CPU); given: 'no GPU visible'"
    ]
    assert refused(tmp_path) == []


@pytest.mark.slow
def test_the_smoke_form_runs_every_arm_with_the_cluster_stack_blocked(tmp_path):
    proc = _run(["-m", "benchmarks", "gpu", "--smoke"], blocking_env(tmp_path, CLUSTER_STACK), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert refused(tmp_path) == []
    out = proc.stdout
    for expected in (
        "ratio epoch.above_floor",  # the epoch benchmark with the memory floor, fp32 and bf16
        "== packing: trials per hour on one GPU",
        "sequential: 2 single trials",
        "2 single-trial processes at once",
        "fused: one population of K=2",
        "MER2024 dims: fused K=2",
    ):
        assert expected in out, f"{expected!r} not in:\n{out[-3000:]}"
    assert out.count("== epoch:") == 2

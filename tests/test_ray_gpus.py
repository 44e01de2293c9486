"""Ray's fractional GPUs: `resources.gpu: 0.25` packs 4 trials onto each GPU, each in its own process
that sees only its GPU. No GPU is needed: the test cluster declares two (`num_gpus=2`), and the
trials train on the CPU (`runtime.device: cpu`) while Ray places them as on a GPU node.

A local sweep asking for a GPU where torch has no CUDA is refused before Ray starts; a joined
cluster (`--address`, as here) is trusted with GPUs the driver's machine does not have.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from sweeps.trainable.faults import FAULTS_ENV
from sweeps.trainable.report import DEVICES_KEY
from tests.ray_cluster import private_cluster
from tests.sweep_helpers import SMALL_SET, run_cli, run_cli_here, write_sweep

N_TRIALS = 8
# Every trial holds its GPU share for a while at its first epoch, so all 8 hold one at the same time.
HOLD = json.dumps({"hang_s": 5, "at_epoch": 1})
# Trials that cost little beside Ray's own start of 8 worker processes.
TINY = {"n_labelled": 120, "n_unlabelled": 0, "dims": {"audio": 8, "text": 8, "video": 8}}
SHORT = {"optim.max_epochs": 1, "optim.pretrain_epochs": 0, "self_training.rounds": 0}


def _devices(trial_dir: Path) -> set[str]:
    """The CUDA_VISIBLE_DEVICES of every result a trial reported."""
    rows = map(json.loads, (trial_dir / "result.json").read_text().splitlines())
    return {row[DEVICES_KEY] for row in rows if DEVICES_KEY in row}


@pytest.mark.slow
def test_a_quarter_gpu_per_trial_runs_four_trials_on_each_of_two_gpus(tmp_path, mlflow_uri):
    spec = write_sweep(
        tmp_path,
        "quarters",
        data={"source": "synthetic-mer", "seed": 0, "folds": 1, "synthetic": TINY},
        set={**SMALL_SET, **SHORT, "runtime.device": "cpu"},
        search={"algorithm": "random", "num_samples": N_TRIALS, "seed": 0},
        scheduler={"kind": "none"},
        resources={"cpu": 1, "gpu": 0.25, "max_concurrent": N_TRIALS},
    )
    with private_cluster(head_cpus=N_TRIALS, head_gpus=2) as (cluster, env):
        args = [str(spec), "--address", cluster.address, "--tracking-uri", mlflow_uri]
        proc = run_cli(args, cwd=tmp_path, env={**env, FAULTS_ENV: HOLD}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"trials {N_TRIALS}/{N_TRIALS} ended: {N_TRIALS} done" in proc.stderr
    folder = tmp_path / "runs" / "quarters"
    seen = [_devices(d) for d in folder.iterdir() if (d / "result.json").exists()]
    assert len(seen) == N_TRIALS
    assert all(len(devices) == 1 for devices in seen), seen  # one GPU per trial, for its whole life
    assert Counter(next(iter(d)) for d in seen) == {"0": 4, "1": 4}


@pytest.mark.parametrize(
    ("sets", "field"), [(["sweep.resources.gpu=0.25"], "resources.gpu"), (["runtime.device=cuda"], "runtime.device")]
)
def test_a_local_sweep_asking_for_a_gpu_without_cuda_in_torch_exits_2_before_ray(tmp_path, sets, field):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine's torch has CUDA")
    spec = write_sweep(tmp_path, "nogpu")
    args = [str(spec), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    for s in sets:
        args += ["--set", s]
    proc = run_cli_here(args, cwd=tmp_path)  # refused before anything starts: no fresh interpreter needed
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: {field}: ") and ("CPU build" in line or "no CUDA device" in line), line
    assert "--address" in line
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()  # nothing written

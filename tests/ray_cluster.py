"""A private Ray cluster for tests that drive sweeps with `run_sweep.py --address`.

`ray.cluster_utils.Cluster` runs each node as its own raylet and object store on this machine.
Started once per test module, it also spares every sweep of the module Ray's start-up.

`python -m tests.ray_cluster CPUS` serves one such cluster from a process of its own until its
stdin closes: the test process's shared cluster (`shared_ray` in tests/conftest.py) lives there, so
the test process's own environment and Ray state stay untouched, and the cluster ends with it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVE_START_S = 300.0  # a cluster's start-up on a busy 2-core machine


@contextmanager
def private_cluster(
    *, head_cpus: int, workers: int = 0, worker_cpus: int = 1, head_gpus: int = 0
) -> Iterator[tuple[object, dict]]:
    """Yield (cluster, env): `env` holds what a driver needs in its environment to use it.

    `head_gpus` declares GPUs on the head node (Ray schedules them and sets each trial's
    CUDA_VISIBLE_DEVICES; no GPU needs to exist), for tests of how trials share GPUs.

    The nodes live under a short temp dir of their own (RAY_TMPDIR): Ray's unix sockets go below
    it, and so does the cluster's address file, which under the default /tmp/ray would make any
    other `ray.init()` on this machine join this cluster instead of starting its own.
    """
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_TMPDIR", tmp)
        head = {"num_cpus": head_cpus, "num_gpus": head_gpus, "include_dashboard": False}
        cluster = Cluster(
            initialize_head=True,
            connect=False,
            head_node_args=head,
        )
        try:
            for _ in range(workers):
                cluster.add_node(num_cpus=worker_cpus)
            cluster.wait_for_nodes()
            yield cluster, {"RAY_TMPDIR": tmp}
        finally:
            cluster.shutdown()
            shutil.rmtree(tmp, ignore_errors=True)


def serve(head_cpus: int) -> None:
    """Start a private cluster, print one JSON line (its address and the env a driver needs) and
    hold it until stdin closes (the process that asked for it ended or let go of it)."""
    with private_cluster(head_cpus=head_cpus) as (cluster, env):
        print(json.dumps({"RAY_ADDRESS": cluster.address, **env}), flush=True)
        sys.stdin.read()


@contextmanager
def served_cluster(head_cpus: int) -> Iterator[dict[str, str]]:
    """A private cluster served by `python -m tests.ray_cluster` in a session of its own (a Ctrl-C
    to pytest does not reach it; pytest's end closes its stdin); yields a driver's environment for
    it (`RAY_ADDRESS`, `RAY_TMPDIR`)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.ray_cluster", str(head_cpus)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line = _first_line(proc, SERVE_START_S)
        yield json.loads(line)
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _first_line(proc: subprocess.Popen, timeout: float) -> str:
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        if not sel.select(timeout):
            raise RuntimeError(f"the shared Ray cluster did not start within {timeout:.0f} s")
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line:
        raise RuntimeError(f"the shared Ray cluster's process ended (exit {proc.wait()}) before it started")
    return line


if __name__ == "__main__":
    serve(int(sys.argv[1]))

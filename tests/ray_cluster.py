"""A private Ray cluster for tests that drive sweeps with `run_sweep.py --address`.

`ray.cluster_utils.Cluster` runs each node as its own raylet and object store on this machine.
Started once per test module, it also spares every sweep of the module Ray's start-up.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


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

    from sweeps.commands.run import NO_PRESTART

    tmp = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_TMPDIR", tmp)
        env.setenv(NO_PRESTART, "0")  # as a sweep's own local cluster: no idle workers per CPU on each node
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

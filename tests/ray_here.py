"""One Ray session per test process, for the sweeps a test runs in this process (`run_sweep_here`).

A sweep run through `python run_sweep.py` pays for a fresh interpreter (torch, Ray, MLflow imports)
and a Ray start and stop (GCS, raylet and their agents): measured on 2 cores, a 6-trial sweep used
17.5 CPU-seconds that way and 8.5 in a Ray session that was already up. Tests of what a user sees
of the sweep (its results, MLflow runs, output) do not depend on either, so they share one session
per test process; tests of the process itself (signals, start-up, --address, --verbose, injected
faults) still start `run_sweep.py` as users do.

The session is started the way the CLI starts a local cluster (`sweeps.execution.ray_start`), with
the environment a user's shell gives the CLI (`cli_env`), under a temp dir of its own (RAY_TMPDIR:
its address file must not make another `ray.init` on this machine join it). Ray's switches read at
`import ray` (loopback-only servers, token authentication) are this process's, not the CLI's: the
tests of those start `run_sweep.py`. Before each sweep it
must be idle (every CPU free again): a session that still holds resources, or that stopped
answering, is replaced rather than handed to the next test.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import time

SETTLE_S = 15.0  # Ray frees a finished sweep's placement groups asynchronously (well under a second idle)


def ensure_session() -> None:
    """An idle Ray session in this process: the one already up if it is idle, else a new one."""
    import ray

    if ray.is_initialized():
        if _idle(ray, SETTLE_S):
            return
        ray.shutdown()
    _start()


def _idle(ray, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            total = ray.cluster_resources().get("CPU", 0.0)
            free = ray.available_resources().get("CPU", 0.0)
        except Exception:  # a session that no longer answers
            return False
        if total > 0 and free >= total:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _start() -> None:
    from sweeps.commands.run import NO_PRESTART
    from sweeps.execution.ray_start import start_ray
    from tests.sweep_helpers import cli_env, environment

    folder = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's unix socket paths live below it
    atexit.register(shutil.rmtree, folder, True)  # registered before Ray's own exit hook, so it runs after it
    with environment({**cli_env(), "RAY_TMPDIR": folder, NO_PRESTART: "0"}):  # as the CLI's local cluster
        start_ray(None)  # the raylet, and so every worker, inherits this environment


def stop_session() -> None:
    """For a test that starts Ray its own way in this process (`ray.init` refuses a second session)."""
    import ray

    ray.shutdown()

"""Starting Ray for a sweep: a local cluster, or joining the one `--address` names.

Joining is checked before anything is written: an address where no cluster answers is bad
input (exit 2, one line), not a sweep whose parent run and state exist without any trials.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

from mer_core.errors import ConfigError, UserInputError
from mer_core.verbosity import is_verbose, ray_logging_level, worker_env
from sweeps.trainable.faults import fault_runtime_env

T = TypeVar("T")
CONNECT_TIMEOUT_S = 5.0  # Ray itself retries an unreachable GCS for minutes before giving up
ALLOWED = (
    "'auto' (a cluster started on this machine with `ray start --head`), HOST:PORT of a head node's GCS "
    "(`ray start --head` prints it), or ray://HOST:10001 (Ray Client)"
)


def ray_address(flag: str | None, env: Mapping[str, str]) -> tuple[str | None, str]:
    """(the Ray cluster to join, the input that named it): `--address`, else `$RAY_ADDRESS` (what
    `ray job submit` sets for its entrypoint), else (None, "") for a new local cluster."""
    if flag is not None:
        return flag, "--address"
    if env.get("RAY_ADDRESS"):
        return env["RAY_ADDRESS"], "RAY_ADDRESS"
    return None, ""


def check_address(address: str, *, field: str = "--address") -> None:
    """Fail fast on a HOST:PORT where nothing listens (ray.init would wait minutes); others go to Ray."""
    if address in ("auto", "local") or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserInputError(f"{field}: expected {ALLOWED}; got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        message = f"{field}: no Ray cluster answers at {address!r} ({reason}); expected {ALLOWED}"
        raise UserInputError(message) from None


def start_ray(address: str | None, *, field: str = "--address") -> None:
    """Start a local Ray cluster (`address` None) or join the one at `address`; no-op if Ray is up.

    A local cluster is asked for as such ("local"): Ray's own default would join a cluster that
    `ray start` left running on this machine, with none of the local cluster's settings.
    Ray's start-up lines show only in a `--verbose` run (`mer_core.verbosity`); what workers
    print, errors included, always reaches the driver (`log_to_driver`).
    """
    import ray

    if ray.is_initialized():
        return
    if address is not None:
        check_address(address, field=field)
    verbose = is_verbose()
    try:
        ray.init(  # the dashboard would be one more server listening
            address="local" if address is None else address,
            include_dashboard=False,
            logging_level=ray_logging_level(verbose),
            configure_logging=True,
            log_to_driver=True,
            runtime_env=worker_runtime_env(verbose),
        )
    except (ConnectionError, TimeoutError, ValueError) as err:
        if address is None:
            raise
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        message = f"{field}: cannot join a Ray cluster at {address!r}: {first}; expected {ALLOWED}"
        raise UserInputError(message) from None


def worker_runtime_env(verbose: bool) -> dict[str, Any] | None:
    """The job's `runtime_env`: what workers on every node must see (None when nothing: the common case).

    `$MERSWEEP_FAULTS` (fault injection) and a `--verbose` driver's choice; a local cluster's workers
    inherit the driver's environment anyway, a joined cluster's do not.
    """
    env_vars = {**(fault_runtime_env() or {}).get("env_vars", {}), **worker_env(verbose)}
    return {"env_vars": env_vars} if env_vars else None


def local_capacity() -> tuple[int, int] | None:
    """(CPUs, GPUs) a Ray cluster started on this machine will have, by Ray's own detection.

    Ray's detection is not public API: when it cannot be asked, None (and no check is made);
    tests/test_third_party_internals.py fails on a Ray release that moves it.
    """
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource
        from ray._private.utils import get_num_cpus

        gpus = get_accelerator_manager_for_resource("GPU")
        n_gpus = gpus.get_current_node_num_accelerators()
        visible = gpus.get_current_process_visible_accelerator_ids()  # CUDA_VISIBLE_DEVICES, if set
        return int(get_num_cpus()), int(n_gpus if visible is None else min(n_gpus, len(visible)))
    except Exception:  # an internal API that moved: the sweep runs unchecked, as before
        return None


def check_local_resources(cpu: float, gpu: float, *, device: str = "auto") -> None:
    """A trial asking a local cluster for more than it has never starts: Ray waits forever.

    Args:
        cpu: `resources.cpu` of one trial (a fused population: of the whole population).
        gpu: `resources.gpu` of one trial.
        device: The base config's `runtime.device`: `cuda` on a machine without a GPU fails every trial.

    Raises:
        ConfigError: Naming `resources.cpu` / `resources.gpu` / `runtime.device`, what this machine has
            and the value.
    """
    capacity = local_capacity()
    if capacity is None:
        return
    if device == "cuda" and capacity[1] == 0:
        allowed = "auto, cpu (this machine's local Ray cluster has no GPU; a GPU cluster: --address)"
        raise ConfigError("runtime.device", allowed, device, "unavailable")
    for field, asked, have in (("resources.cpu", cpu, capacity[0]), ("resources.gpu", gpu, capacity[1])):
        if asked > have:
            allowed = f"<= {have} (this machine's local Ray cluster; a bigger cluster: --address)"
            raise ConfigError(field, allowed, asked, "more than the cluster has (no trial would ever start)")


def torch_cuda() -> tuple[bool, str]:
    """(can this Python's torch train on a GPU, why not): what a local cluster's trials would see."""
    import torch

    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} here is a CPU build"
    if not torch.cuda.is_available():
        return False, f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device"
    return True, ""


def check_local_cuda(gpu: float, *, device: str = "auto", cuda: tuple[bool, str] | None = None) -> None:
    """A local sweep that asks for GPUs needs a torch that can use one: refused before Ray starts.

    The trials of a local cluster run in this machine's Python, so a GPU slot or `runtime.device:
    cuda` without CUDA in its torch would fail every trial or hold idle GPU slots. A joined
    cluster (`--address`) is not checked: its nodes, not the driver, hold the GPUs and the torch
    that uses them (this is also how a test cluster with declared GPUs runs GPU sweeps on a
    machine without one).

    Args:
        gpu: `resources.gpu` of one trial.
        device: the base config's `runtime.device`.
        cuda: (available, why not) of this machine's torch; None asks torch (`torch_cuda`).

    Raises:
        ConfigError: naming `resources.gpu` (or `runtime.device: cuda`), why, and the value.
    """
    if gpu <= 0 and device != "cuda":
        return
    available, why = cuda if cuda is not None else torch_cuda()
    if available:
        return
    if gpu > 0:
        allowed = f"0 ({why}; install a CUDA build of torch, or run on a GPU cluster with --address)"
        raise ConfigError("resources.gpu", allowed, gpu, "no GPU for a local sweep")
    allowed = f"auto, cpu ({why}; a GPU cluster: --address)"
    raise ConfigError("runtime.device", allowed, device, "unavailable")


def in_background(fn: Callable[..., T], *args: Any) -> Future[T]:
    """`fn(*args)` in a daemon thread: Ctrl-C in the main thread is not held up waiting for it."""
    future: Future[T] = Future()

    def target() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as err:  # handed to whoever waits on the future
            future.set_exception(err)

    threading.Thread(target=target, name="mersweep-background", daemon=True).start()
    return future

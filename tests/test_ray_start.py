"""Helpers of the sweep's start: the background opener and the --address check."""

from __future__ import annotations

import socket
import threading

import pytest

from mer_core.errors import ConfigError, UserInputError
from sweeps.execution.ray_start import check_address, check_local_resources, in_background, local_capacity, ray_address


def test_in_background_hands_back_the_result_and_the_error() -> None:
    seen: list[bool] = []

    def work(x: int) -> int:
        seen.append(threading.current_thread().daemon)
        return x * 2

    assert in_background(work, 21).result(timeout=10) == 42
    assert seen == [True]  # a daemon thread: Ctrl-C in the main thread never waits for it

    def boom() -> None:
        raise ValueError("tracking store refused")

    with pytest.raises(ValueError, match="tracking store refused"):
        in_background(boom).result(timeout=10)


def test_check_address_accepts_a_listening_port_and_ray_forms() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_address(f"127.0.0.1:{server.getsockname()[1]}")
    for address in ("auto", "local", "ray://head:10001"):
        check_address(address)  # left to Ray: nothing to probe without resolving its own state


@pytest.mark.parametrize("address", ["head", "head:", ":6379", "head:port"])
def test_check_address_names_the_flag_and_the_value(address: str) -> None:
    with pytest.raises(UserInputError, match=r"--address: expected .*got"):
        check_address(address)


def test_the_cluster_to_join_is_the_flag_then_ray_address_then_none() -> None:
    assert ray_address("head:6379", {"RAY_ADDRESS": "other:6379"}) == ("head:6379", "--address")
    assert ray_address(None, {"RAY_ADDRESS": "other:6379"}) == ("other:6379", "RAY_ADDRESS")  # `ray job submit`
    assert ray_address(None, {"RAY_ADDRESS": ""}) == (None, "")
    assert ray_address(None, {}) == (None, "")  # a new local cluster of the sweep's own
    with pytest.raises(UserInputError, match=r"^RAY_ADDRESS: expected .*got 'head:port'"):
        check_address("head:port", field="RAY_ADDRESS")


def test_local_capacity_is_what_ray_will_see_here() -> None:
    import os

    capacity = local_capacity()
    assert capacity is not None, "Ray's resource detection moved: check_local_resources checks nothing"
    cpus, gpus = capacity
    assert 1 <= cpus <= (os.cpu_count() or 1) and gpus >= 0


@pytest.mark.parametrize(("cpu", "gpu", "field"), [(3.0, 0.0, "resources.cpu"), (1.0, 0.5, "resources.gpu")])
def test_asking_a_local_cluster_for_more_than_it_has_is_refused(monkeypatch, cpu, gpu, field) -> None:
    import sweeps.execution.ray_start as ray_start

    monkeypatch.setattr(ray_start, "local_capacity", lambda: (2, 0))
    with pytest.raises(ConfigError, match=rf"^{field}: more than the cluster has .*allowed: <= [02] "):
        check_local_resources(cpu, gpu)  # Ray would wait forever for a trial that never fits
    check_local_resources(2.0, 0.0)
    with pytest.raises(ConfigError, match=r"^runtime\.device: unavailable; allowed: auto, cpu .*given: 'cuda'"):
        check_local_resources(1.0, 0.0, device="cuda")  # every trial would fail to find a GPU
    monkeypatch.setattr(ray_start, "local_capacity", lambda: None)
    check_local_resources(cpu, gpu)  # detection unavailable: no check

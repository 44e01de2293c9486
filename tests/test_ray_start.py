"""Helpers of the sweep's start: the background opener and the --address check."""

from __future__ import annotations

import socket
import threading

import pytest

from mer_core.errors import UserInputError
from sweeps.ray_start import check_address, in_background, ray_address


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

"""The retry layer under SweepTracker: which failures are retried, backoff, the two messages, the outbox.

A fake clock drives the backoff so these run in milliseconds; the errors are the real exception
types MLflow and requests raise when a tracking server is away (the end-to-end behaviour against a
real server, killed and restarted, is tests/test_mlflow_outage.py).
"""

from __future__ import annotations

import io
import os
import threading
import time

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException

from sweeps.tracking.retry import (
    Op,
    Outbox,
    RetryingCaller,
    RetryPolicy,
    RunRef,
    TrackingUnavailable,
    is_transient,
)

POLICY = RetryPolicy(deadline_s=30.0, in_sweep_s=0.25, quiet_s=2.0, first_wait_s=0.5, max_wait_s=4.0)


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


class Server:
    """Stands for the tracking server: `down` makes calls fail as a refused connection does."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.down:
            try:
                raise requests.ConnectionError("[Errno 111] Connection refused")
            except requests.ConnectionError as err:  # how MLflow's http_request wraps it
                raise MlflowException(f"API request to http://127.0.0.1:5000 failed with exception {err}") from None
        return "ok"


def _caller(time_: FakeTime, out: io.StringIO, policy: RetryPolicy = POLICY) -> RetryingCaller:
    return RetryingCaller(policy, label="http://h:5000", stream=out, clock=time_.clock, sleep=time_.sleep)


def _wrapped(err: Exception) -> MlflowException:
    try:
        raise err
    except Exception as inner:
        try:
            raise MlflowException(f"API request failed with exception {inner}")
        except MlflowException as outer:
            return outer


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status}", response=response)


@pytest.mark.parametrize(
    ("err", "transient"),
    [
        (requests.ConnectionError("refused"), True),
        (requests.Timeout("read timed out"), True),
        (_wrapped(requests.ConnectionError("refused")), True),
        (_http_error(503), True),
        (_http_error(404), False),
        (RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "db down"}), True),
        (RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad"}), False),
        (MlflowException("gone", error_code=1000), False),  # RESOURCE_DOES_NOT_EXIST... of any kind
        (requests.exceptions.InvalidURL("no"), False),
        (ValueError("a bug"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_which_failures_are_retried(err, transient):
    assert is_transient(err) is transient


def test_a_blocking_call_waits_with_doubling_pauses_and_a_blip_is_no_news():
    time_, out, server = FakeTime(), io.StringIO(), Server()
    caller = _caller(time_, out)
    server.down = True

    def flaky() -> str:  # three refused connections (1.5 s < quiet_s), then the server is back
        server.down = server.calls < 3
        return server()

    assert caller.call(flaky, block=True) == "ok"
    assert time_.sleeps == [0.5, 1.0, 2.0]
    assert out.getvalue() == ""


def test_an_outage_is_announced_once_and_its_end_once():
    time_, out, server = FakeTime(), io.StringIO(), Server()
    caller = _caller(time_, out)
    server.down = True
    for _ in range(10):  # the sweep goes on making calls, one a second
        with pytest.raises(TrackingUnavailable):
            caller.call(server, block=False)
        time_.now += 1.0
    assert time_.sleeps == []  # calls made while trials run never wait...
    assert server.calls == 5  # ...and only try when the backoff says so: at 0, 1, 2, 4 and 8 s
    server.down = False
    time_.now += POLICY.max_wait_s
    assert caller.call(server, block=False) == "ok"
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("mlflow: tracking server http://h:5000 unreachable (Connection refused); keeping")
    assert lines[1].startswith("mlflow: tracking server http://h:5000 is back after")


def test_a_blocking_call_gives_up_at_the_deadline_then_later_ones_try_once():
    time_, out, server = FakeTime(), io.StringIO(), Server()
    caller = _caller(time_, out)
    server.down = True
    start = time_.now
    with pytest.raises(TrackingUnavailable, match="unreachable"):
        caller.call(server, block=True)
    assert POLICY.deadline_s - POLICY.max_wait_s <= time_.now - start <= POLICY.deadline_s
    second = time_.now
    with pytest.raises(TrackingUnavailable):
        caller.call(server, block=True)  # the same outage: no second full wait
    assert time_.now == second
    lines = out.getvalue().splitlines()
    assert ["unreachable" in ln for ln in lines] == [True, False] and "gave up waiting" in lines[1], lines


def test_errors_that_are_not_the_servers_absence_surface_at_once():
    time_, out = FakeTime(), io.StringIO()
    caller = _caller(time_, out)
    calls = []

    def refused() -> None:
        calls.append(1)
        raise RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "param changed"})

    with pytest.raises(RestException):
        caller.call(refused, block=True)
    assert calls == [1] and time_.sleeps == []


def test_the_outbox_keeps_order_through_an_outage_and_skips_what_the_server_refuses():
    time_, out, server = FakeTime(), io.StringIO(), Server()
    box = Outbox(_caller(time_, out))
    sent: list[str] = []
    run, broken = RunRef(token="a"), RunRef(token="b")

    def create(ref: RunRef, name: str):
        def send(_: str | None) -> None:
            server()
            if name == "refused":
                raise RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "bad name"})
            ref.run_id = name
            sent.append(f"create {name}")

        return send

    def log(what: str):
        def send(run_id: str | None) -> None:
            server()
            sent.append(f"{what} on {run_id}")

        return send

    server.down = True
    assert not box.put(Op("create", run, create(run, "r1"), creates=True), Op("metrics", run, log("m1"), n_metrics=3))
    assert sent == [] and len(box) == 2 and box.n_metrics == 3  # kept, in order
    box.put(Op("create", broken, create(broken, "refused"), creates=True), Op("metrics", broken, log("m2")))
    server.down = False
    time_.now += POLICY.max_wait_s
    assert box.drain(block=False)
    assert sent == ["create r1", "m1 on r1"]  # the refused run's later operation was dropped with it
    assert "could not create: INVALID_PARAMETER_VALUE: bad name; skipped" in out.getvalue()
    assert len(box) == 0


def test_a_backlog_goes_out_over_several_calls_while_trials_run():
    time_, out = FakeTime(), io.StringIO()
    box = Outbox(_caller(time_, out))
    run, sent = RunRef(token="a", run_id="r"), []

    def send(run_id: str | None) -> None:
        time_.now += 0.1  # each request takes 0.1 s
        sent.append(run_id)

    assert not box.put(*(Op("log", run, send) for _ in range(10)))
    assert len(sent) == 3  # 0.25 s worth: Ray's event loop goes on
    assert box.drain(block=True) and len(sent) == 10


def _background_box(out: io.StringIO, **policy: float) -> Outbox:
    """An outbox on the real clock with its sender thread running (the tracker's set-up)."""
    settings = {"deadline_s": 5.0, "quiet_s": 0.0, "first_wait_s": 0.01, "max_wait_s": 0.05, **policy}
    box = Outbox(RetryingCaller(RetryPolicy(**settings), label="http://h:5000", stream=out))
    box.send_in_background()
    return box


def test_a_background_outbox_sends_in_order_from_its_own_thread():
    out, server = io.StringIO(), Server()
    box = _background_box(out)
    run, sent = RunRef(token="a", run_id="r"), []

    def send(i: int):
        return lambda _: sent.append((i, threading.current_thread().name, server()))

    try:
        for i in range(20):
            assert box.put(Op("log", run, send(i))) in (True, False)  # hands over; the thread sends
        deadline = time.monotonic() + 30
        while len(box) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [i for i, *_ in sent] == list(range(20))
        assert {name for _, name, _ in sent} == {"mersweep-mlflow-outbox"}
        assert len(box) == 0 and box.stats.ops == 20 and box.drain(block=True)
    finally:
        box.close()


def test_a_background_outbox_holds_the_caller_back_only_past_its_bound_while_the_server_answers():
    out, server = io.StringIO(), Server()
    box = _background_box(out, max_backlog=2)
    run, sent, release = RunRef(token="a", run_id="r"), [], threading.Event()

    def slow(i: int):
        def send(_: str | None) -> None:
            release.wait()  # the server takes its time
            sent.append(i)

        return send

    try:
        box.put(Op("log", run, slow(0)))
        putter = threading.Thread(target=lambda: box.put(*(Op("log", run, slow(i)) for i in range(1, 6))))
        putter.start()
        putter.join(0.5)
        assert putter.is_alive(), "a put past max_backlog returned while the server was answering slowly"
        release.set()
        putter.join(10)
        assert not putter.is_alive()
        assert box.drain(block=True) and sent == list(range(6))

        # While the server is away nothing is held back: the backlog waits for it instead.
        server.down = True
        down = [Op("log", run, lambda _: server()) for _ in range(6)]
        box.put(*down[:1])
        while not box.caller.away:
            time.sleep(0.01)
        box.put(*down[1:])  # returns: past the bound, but the server is away
        assert len(box) == 6 and "unreachable" in out.getvalue()
        server.down = False
        assert box.drain(block=True) and len(box) == 0
        assert "is back" in out.getvalue()
    finally:
        release.set()
        box.close()


def test_mlflow_retry_settings_hold_only_during_our_calls_and_a_users_own_win(monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
    caller = RetryingCaller(POLICY, label="h", env=env, stream=io.StringIO())
    seen = caller.call(lambda: {k: os.environ.get(k) for k in env}, block=False)
    assert seen == {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


def test_a_real_mlflow_client_facing_a_closed_port_fails_fast_and_transiently():
    from mlflow.tracking import MlflowClient

    from sweeps.tracking.tracker import MLFLOW_HTTP_ENV
    from tests.sweep_helpers import free_port

    out = io.StringIO()
    caller = RetryingCaller(RetryPolicy(quiet_s=0.0), label="h", env=MLFLOW_HTTP_ENV, stream=out)
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=r"\(Connection refused\)"):
        caller.call(lambda: client.get_experiment_by_name("x"), block=False)
    assert time.monotonic() - start < 10  # one attempt: MLflow's own retries (minutes) are off
    assert "unreachable (Connection refused)" in out.getvalue()


@pytest.mark.parametrize(
    "name",
    ["val/f1/very, happy", "val/f1/joy!", "val/f1/it's ok", "val/f1/a+b", "val/f1/..", "val/f1/.", "val/f1/", "/x"],
)
def test_keys_from_user_class_and_modality_names_are_valid_mlflow_keys(name):
    from mlflow.utils.validation import _validate_metric_name, _validate_param_name

    from sweeps.tracking.names import mlflow_key

    key = mlflow_key(name)
    _validate_metric_name(key)  # one refused key made MLflow drop the whole batch: every metric of a trial
    _validate_param_name(key)
    assert key.count("/") == name.count("/")


def test_ordinary_keys_are_unchanged_and_colliding_keys_keep_the_first():
    from sweeps.tracking.names import mlflow_items, mlflow_key

    for name in ("val/weighted_f1", "val/f1/sad face", "val/f1/惊讶", "data.features.modalities.au dio", "f1/x-y_z:1"):
        assert mlflow_key(name) == name
    assert mlflow_items({"f1/a+b": 1.0, "f1/a_b": 2.0, "f1/c": 3.0}) == {"f1/a_b": 1.0, "f1/c": 3.0}

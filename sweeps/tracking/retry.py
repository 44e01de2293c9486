"""Riding out a tracking-server outage: retries with backoff, an ordered outbox, two messages.

A sweep runs for hours and its tracking server may restart under it (a deploy, a crash, a database
failover). Nothing the driver logs may be lost then, and the sweep may not stop: every MLflow call
goes through `RetryingCaller` (exponential backoff; a transient failure is retried, anything else
surfaces at once), and the operations of a sweep wait in an `Outbox` (in order, so a run is created
before its metrics arrive) until the server takes them. The user hears of an outage twice: once
when the server is given up on for now, once when it is back.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO, TypeVar

T = TypeVar("T")
TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})  # MLflow's own list of retryable statuses


class TrackingUnavailable(RuntimeError):
    """The tracking server did not answer within the time a call was allowed to wait."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long calls wait for an absent tracking server.

    Attributes:
        deadline_s: total wait of a blocking call: opening the sweep's runs, and the final flush at
            the end of the sweep (then the sweep fails with exit 1 if the server is still away).
            Calls made while trials run never wait: their work stays buffered, the sweep goes on.
        in_sweep_s: how long one call made while trials run may spend sending a backlog; the rest
            goes out on the next calls (Ray warns about callbacks slower than 0.5 s).
        max_backlog: ...unless more operations than this wait while the server answers: then the
            call sends until this many are left, so a server slower than the sweep's stream of
            results holds the driver back instead of its memory growing without bound (during an
            outage nothing is sent and nothing waits: the backlog is then bounded by the outage).
        quiet_s: an outage shorter than this is not worth a message.
        first_wait_s: the first pause between attempts; it doubles after each failure...
        max_wait_s: ...up to this.
    """

    deadline_s: float = 120.0
    in_sweep_s: float = 0.25
    quiet_s: float = 5.0
    first_wait_s: float = 0.5
    max_wait_s: float = 10.0
    max_backlog: int = 500


def is_transient(err: BaseException) -> bool:
    """True for failures that a later attempt can cure: no connection, timeouts, HTTP 408/429/5xx."""
    import requests
    from mlflow.exceptions import MlflowException

    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:  # MLflow wraps requests' errors, look inside
        seen.add(id(cause))
        if isinstance(cause, requests.HTTPError):  # artifact uploads raise these directly
            status = cause.response.status_code if cause.response is not None else 0
            return status in TRANSIENT_HTTP
        if isinstance(cause, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema)):
            return False
        if isinstance(cause, (requests.RequestException, ConnectionError, TimeoutError)):
            return True
        cause = cause.__cause__ or cause.__context__
    return isinstance(err, MlflowException) and err.get_http_status_code() in TRANSIENT_HTTP


class RetryingCaller:
    """Calls with exponential backoff; the backoff carries over from call to call during an outage."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        label: str,
        scrub: Callable[[str], str] = str,
        env: Mapping[str, str] | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.policy = policy
        self._label, self._scrub, self._stream = label, scrub, stream
        self._env = dict(env or {})
        self._clock, self._sleep = clock, sleep
        self._failing_since: float | None = None  # first failed attempt of the current outage
        self._announced = False  # the user was told the server is away
        self._gave_up_blocking = False  # a blocking call ran out of time in this outage: later ones try once
        self._wait = policy.first_wait_s
        self._next_try = 0.0
        self._reason = ""
        # The outbox's sender thread and the driver's own blocking calls share the backoff state.
        self._lock = threading.RLock()

    def now(self) -> float:
        return self._clock()

    @property
    def away(self) -> bool:
        """The server's last answer was a transient failure (an outage is under way)."""
        return self._failing_since is not None

    def seconds_to_next_try(self) -> float:
        """How long until an attempt is due (0 when one is due now)."""
        return max(0.0, self._next_try - self._clock())

    def call(self, fn: Callable[[], T], *, block: bool) -> T:
        """`fn()`, retried on transient failures for up to deadline_s (`block`); else one attempt, if due.

        Raises:
            TrackingUnavailable: the server did not answer in time.
            Exception: whatever `fn` raised for a non-transient reason, at once.
        """
        with self._lock:
            return self._call(fn, block=block)

    def _call(self, fn: Callable[[], T], *, block: bool) -> T:
        blocking = block and not self._gave_up_blocking
        end = self._clock() + (self.policy.deadline_s if blocking else 0.0)
        while True:
            now = self._clock()
            if now >= self._next_try:  # during an outage, attempts follow the backoff, not the call rate
                try:
                    with _env_defaults(self._env):
                        result = fn()
                except Exception as err:
                    if not is_transient(err):
                        raise
                    self._failed(err, now)
                else:
                    self._succeeded(now)
                    return result
            if self._next_try > end:
                if blocking:
                    self._give_up()
                raise TrackingUnavailable(f"MLflow tracking server {self._label} unreachable ({self._reason})")
            self._sleep(max(0.0, self._next_try - self._clock()))

    def _failed(self, err: Exception, now: float) -> None:
        if self._failing_since is None:
            self._failing_since = now
        self._reason = self._scrub(_short_reason(err))
        self._next_try = now + self._wait
        self._wait = min(self._wait * 2, self.policy.max_wait_s)
        if now - self._failing_since >= self.policy.quiet_s:
            self._announce()

    def _succeeded(self, now: float) -> None:
        if self._announced:
            self.say(f"mlflow: tracking server {self._label} is back after {now - self._failing_since:.0f} s")
        self._failing_since, self._announced, self._gave_up_blocking = None, False, False
        self._wait, self._next_try = self.policy.first_wait_s, 0.0

    def _announce(self) -> None:
        """The one line of an outage (a blip shorter than quiet_s is not news)."""
        if not self._announced:
            self._announced = True
            self.say(
                f"mlflow: tracking server {self._label} unreachable ({self._reason}); "
                "keeping everything to log until it is back"
            )

    def _give_up(self) -> None:
        self._announce()
        self._gave_up_blocking = True
        self.say(f"mlflow: gave up waiting for {self._label} after {self.policy.deadline_s:.0f} s")

    def say(self, line: str) -> None:
        """One line for the user (stderr unless a stream was given)."""
        print(line, file=self._stream or sys.stderr, flush=True)


def _short_reason(err: Exception) -> str:
    """`Connection refused` rather than three nested exception reprs (what MLflow and urllib3 make of it)."""
    text = " ".join(str(err).split())
    errno = re.search(r"\[Errno -?\d+\] ([^'\"()]+)", text)
    if errno:
        return errno.group(1).strip()
    return f"{type(err).__name__}: {text}"[:200]


@contextmanager
def _env_defaults(defaults: Mapping[str, str]) -> Iterator[None]:
    """`defaults` in os.environ while one call runs (values already set win), then as before."""
    added = [k for k in defaults if k not in os.environ]
    for key in added:
        os.environ[key] = defaults[key]
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@dataclass
class RunRef:
    """A run that may not exist on the server yet: `run_id` is set once its creation went through."""

    token: str  # tagged on the run at creation, so a retried create finds a run the server made
    run_id: str | None = None
    tried: bool = False  # a create was sent at least once


@dataclass
class Op:
    """One buffered MLflow operation on `run`; `send` gets the run id (None for the create itself)."""

    what: str
    run: RunRef
    send: Callable[[str | None], None]
    creates: bool = False
    n_metrics: int = 0
    rows: int = 1  # rows it writes (metrics, params, tags; a run's creation or end is one)


@dataclass
class OutboxStats:
    """What an outbox has sent: operations, rows, seconds spent in successful sends, and the most
    operations that ever waited at once."""

    ops: int = 0
    rows: int = 0
    send_s: float = 0.0
    peak_backlog: int = 0


class Outbox:
    """MLflow operations in the order they were made, sent when the server takes them.

    By default whoever puts or drains sends. After `send_in_background()` a thread of its own
    sends while the server answers: a Ray callback that hands over an operation then never waits
    for a request (with a remote server, each is a round trip), only for a backlog past
    `max_backlog`; a blocking `drain` still sends everything itself before it returns.
    """

    def __init__(self, caller: RetryingCaller, *, scrub: Callable[[str], str] = str) -> None:
        self.caller = caller
        self._ops: deque[Op] = deque()
        self._scrub = scrub
        self.stats = OutboxStats()
        self._changed = threading.Condition()  # guards _ops; signalled when operations arrive or leave
        self._sending = threading.Lock()  # held by whoever sends: the thread, or a blocking drain
        self._thread: threading.Thread | None = None
        self._closing = False

    def __len__(self) -> int:
        return len(self._ops)

    @property
    def n_metrics(self) -> int:
        with self._changed:
            return sum(op.n_metrics for op in self._ops)

    def send_in_background(self) -> None:
        """From now on a daemon thread sends (until `close`); see the class docstring."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._send_loop, name="mersweep-mlflow-outbox", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the sender thread (what still waits stays in the outbox)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            with self._changed:
                self._closing = True
                self._changed.notify_all()
            thread.join()

    def put(self, *ops: Op, block: bool = False) -> bool:
        with self._changed:
            self._ops.extend(ops)
            self.stats.peak_backlog = max(self.stats.peak_backlog, len(self._ops))
            self._changed.notify_all()
        return self.drain(block=block)

    def drain(self, *, block: bool) -> bool:
        """`_drain` by whoever calls, or with a sender thread: wait for a backlog past `max_backlog`
        (not during an outage) unless `block`, and then send the rest here. True when all went out."""
        if self._thread is None or not self._thread.is_alive():
            return self._drain(block=block)
        if block:
            with self._sending:  # the thread pauses between two operations
                return self._drain(block=True)
        with self._changed:
            while len(self._ops) > self.caller.policy.max_backlog and not self.caller.away and self._thread.is_alive():
                self._changed.wait(0.5)
            return not self._ops

    def _send_loop(self) -> None:
        while True:
            with self._changed:
                while not self._ops and not self._closing:
                    self._changed.wait()
                if self._closing:
                    return
            with self._sending:
                try:
                    self._drain(block=False, sliced=False)
                except Exception:  # not the server's absence (that is handled): the driver's next drain
                    return  # sends the same operation itself and raises the same error there
            if self.caller.away:  # the next attempt is not due before the backoff says
                with self._changed:
                    self._changed.wait(min(1.0, max(0.05, self.caller.seconds_to_next_try())))

    def _drain(self, *, block: bool, sliced: bool = True) -> bool:
        """Send what waits, in order; True when all went out. Never raises for the server's sake.

        Without `block` it sends for at most `in_sweep_s` (a backlog goes out over several calls),
        or longer while more than `max_backlog` operations wait, and stops at the first failure:
        the server is away. An operation the server refuses for
        good (a deleted run, an invalid value) is reported and dropped, with the later operations
        on a run that could not be created: one refusal must not hold back everything behind it,
        nor stop the sweep.
        """
        from mlflow.exceptions import MlflowException

        start = self.caller.now()
        while self._ops:
            late = sliced and self.caller.now() - start > self.caller.policy.in_sweep_s
            if not block and late and len(self._ops) <= self.caller.policy.max_backlog:
                return False
            op = self._ops[0]
            if op.run.run_id is not None or op.creates:
                try:
                    sent = time.perf_counter()
                    self.caller.call(lambda op=op: op.send(op.run.run_id), block=block)
                    self.stats.ops += 1
                    self.stats.rows += op.rows
                    self.stats.send_s += time.perf_counter() - sent
                except TrackingUnavailable:
                    return False
                except (MlflowException, OSError) as err:  # OSError: requests' errors, a vanished artifact file
                    first = (str(err).strip().splitlines() or [""])[0]
                    self.caller.say(f"mlflow: could not {op.what}: {self._scrub(first)[:300]}; skipped")
            with self._changed:
                self._ops.popleft()
                self._changed.notify_all()
        return True

"""The driver's MLflow outbox: a backlog past `max_backlog` is sent down before the sweep goes on
(bounded memory), except while the server is away; what went out is counted."""

from __future__ import annotations

from sweeps.tracking.retry import Op, Outbox, RetryingCaller, RetryPolicy, RunRef


class _Clock:
    """Seconds that pass only when an operation is sent (1 s each), so time limits are exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _outbox(clock: _Clock, *, max_backlog: int) -> Outbox:
    policy = RetryPolicy(in_sweep_s=0.5, max_backlog=max_backlog, quiet_s=1e9)
    return Outbox(RetryingCaller(policy, label="test", clock=clock, sleep=lambda s: None))


def test_a_backlog_past_the_bound_is_sent_down_to_it_and_counted() -> None:
    clock = _Clock()
    outbox = _outbox(clock, max_backlog=10)
    sent: list[int] = []
    run = RunRef(token="t", run_id="r")

    def op(i: int) -> Op:
        def send(run_id: str | None) -> None:
            clock.now += 1.0
            sent.append(i)

        return Op(f"op {i}", run, send, rows=3)

    outbox._ops.extend(op(i) for i in range(30))  # arrived while the driver was busy elsewhere
    assert outbox.put(op(30)) is False  # sending takes longer than a call may spend...
    assert len(outbox) == 10  # ...yet the backlog is brought down to the bound, in order
    assert sent == list(range(21))
    assert outbox.stats.ops == 21 and outbox.stats.rows == 63 and outbox.stats.peak_backlog == 31
    assert outbox.put(op(31)) is False and len(outbox) == 10  # at the bound: one call's time, as before
    assert outbox.drain(block=True) and len(outbox) == 0 and sent == list(range(32))


def test_an_absent_server_holds_everything_without_blocking() -> None:
    clock = _Clock()
    outbox = _outbox(clock, max_backlog=2)
    run = RunRef(token="t", run_id="r")

    def refused(run_id: str | None) -> None:
        clock.now += 0.1
        raise ConnectionError("Connection refused")

    assert outbox.put(*(Op(f"op {i}", run, refused) for i in range(5))) is False
    assert len(outbox) == 5 and outbox.stats.ops == 0  # nothing lost, nothing waited for


def test_a_retried_trials_runs_keep_their_own_buffered_metrics(tmp_path) -> None:
    """The tracker's thread creates runs after `child` returns, so both attempts of a retried trial
    start as stand-ins: each keeps its own handle, and the failed attempt's buffered epoch goes to
    its own (superseded) run, never into the retry's history."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    from sweeps.tracking.tracker import SweepTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker(uri, "retry")
    tracker.open_parent(sweep="retry", parent_id=None, tags={})
    first = tracker.child("t1", "t1", {"optim.lr": 0.1})
    tracker.queue_metrics(first, {"val/a": 0.1}, step=1)
    tracker.retire_child("t1", "superseded: this attempt failed")
    second = tracker.child("t1", "t1", {"optim.lr": 0.1})
    assert second != first
    for step, value in ((1, 0.5), (2, 0.6)):
        tracker.queue_metrics(second, {"val/a": value}, step=step)
    tracker.finish_child(second, status="FINISHED", tags={"mersweep.status": "ok"})
    tracker.finish_parent(status="FINISHED", metrics={}, tags={})

    client = MlflowClient(tracking_uri=uri)
    live = tracker.run_id_of("t1")
    assert [(m.step, m.value) for m in client.get_metric_history(live, "val/a")] == [(1, 0.5), (2, 0.6)]
    experiment = client.get_experiment_by_name("retry").experiment_id
    (gone,) = client.search_runs([experiment], run_view_type=ViewType.DELETED_ONLY)
    assert [(m.step, m.value) for m in client.get_metric_history(gone.info.run_id, "val/a")] == [(1, 0.1)]

"""MLflow bookkeeping on the driver: one parent run per sweep, one child run per trial.

Trials never talk to MLflow themselves; the driver logs in batches (a Ray Tune callback
feeds `SweepTracker`), so a slow or absent tracking server costs trials nothing: what cannot be
sent waits in order until the server is back (`sweeps.tracking.retry`).
Child runs carry the Ray trial id as a tag, so a resumed sweep finds and reuses them
instead of logging a trial twice.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from sweeps.tracking.names import (
    EXPERIMENT_KIND_TAG,
    FAILURE_TAG,
    LOGGED_ARTIFACTS_TAG,
    NOTE_TAG,
    PARENT_TAG,
    REPORT_DIR,
    REPORT_PAGE,
    REPORT_TAG,
    RUN_NAME_TAG,
    STATUS_TAG,
    SWEEP_TAG,
    TOKEN_TAG,
    TRAINING_KIND,
    TRIAL_TAG,
    mlflow_items,
)
from sweeps.tracking.retry import Op, Outbox, RetryingCaller, RetryPolicy, RunRef, TrackingUnavailable
from sweeps.tracking.uri import redact, ui_link

# MLflow's HTTP client retries by itself (7 times, backoff up to 2 min, 120 s per request), so through
# an outage one call would block for minutes, past our deadline, with urllib3 logging every retry.
# One attempt per call with a bounded timeout, set only while our calls run; a user's own values win.
MLFLOW_HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


class SweepTracker:
    """Parent/child runs of one sweep, logged in batches, riding out tracking-server outages.

    Only the sweep's start (experiment, parent run) waits for the server and fails without it.
    Everything else goes through an outbox: sent at once while the server answers, kept in order
    while it does not, sent when it is back; the Ray callbacks that call in never see an error
    for the server's sake. `finish_parent` waits up to `retry.deadline_s` for the last of it.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        *,
        flush_every: int = 500,
        retry: RetryPolicy | None = None,
        stream: TextIO | None = None,
    ) -> None:
        from mlflow.tracking import MlflowClient  # heavy import: only drivers pay for it

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        policy = retry or RetryPolicy()
        self._caller = RetryingCaller(policy, label=redact(uri), scrub=redact, env=MLFLOW_HTTP_ENV, stream=stream)
        self._outbox = Outbox(self._caller, scrub=redact)
        # Tune's event loop calls in at every trial start, result and end: a request each time would
        # hold it up (at 8 one-second trials at once, most of the loop's time); a thread sends instead.
        self._outbox.send_in_background()
        self.experiment_id: str = self._caller.call(lambda: self._experiment(experiment), block=True)
        self.parent_id: str | None = None
        self._runs: dict[str, RunRef] = {}  # handle (what `child` returned) -> run
        self._children: dict[str, str] = {}  # trial id -> handle
        self._pending: dict[str, list[Any]] = {}  # handle -> metrics not yet handed to the outbox
        self._flush_every = flush_every

    def _experiment(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            try:
                return self.client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})
            except MlflowException as err:  # created by an earlier attempt whose answer was lost
                if err.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                exp = self.client.get_experiment_by_name(name)
        # Without a kind MLflow 3 opens an experiment on its GenAI pages (traces: "No data"); an
        # experiment of older sweeps gets it too, a kind someone chose stays.
        if EXPERIMENT_KIND_TAG not in exp.tags:
            self.client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
        return exp.experiment_id

    @classmethod
    def attach(cls, uri: str, experiment: str, parent_id: str, **options: Any) -> SweepTracker:
        """A tracker on the parent run of a sweep that already ran (to refresh what the parent shows);
        the run's status is left alone."""
        tracker = cls(uri, experiment, **options)
        tracker.parent_id = parent_id
        tracker._runs[parent_id] = RunRef(token="", run_id=parent_id)
        return tracker

    # -- parent ---------------------------------------------------------------------------
    def open_parent(self, *, sweep: str, parent_id: str | None, tags: Mapping[str, str]) -> str:
        """Create the sweep's parent run, or reopen `parent_id` on resume (waits for the server)."""
        if parent_id:
            self._caller.call(lambda: self.client.update_run(parent_id, status="RUNNING"), block=True)
            self.parent_id = parent_id
            self._runs[parent_id] = RunRef(token="", run_id=parent_id)
            for trial_id, run_id in self._caller.call(self._existing_children, block=True).items():
                self._runs[run_id] = RunRef(token="", run_id=run_id)
                self._children[trial_id] = run_id
        else:
            parent = RunRef(token=uuid.uuid4().hex)
            run_tags = {SWEEP_TAG: sweep, **tags}
            self._caller.call(lambda: self._create(parent, sweep, run_tags), block=True)
            self.parent_id = parent.run_id
            self._runs[self.parent_id] = parent
        return self.parent_id

    def _existing_children(self) -> dict[str, str]:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_id}'", max_results=50000
        )
        return {r.data.tags[TRIAL_TAG]: r.info.run_id for r in runs if TRIAL_TAG in r.data.tags}

    def retire_children(self, keep: set[str]) -> list[str]:
        """Delete (soft) the child runs of trials not in `keep`; returns their trial ids.

        On resume Ray restarts unfinished trials from scratch, and after a hard crash its saved
        state can predate trials the driver had already logged (Ray then forgets them, or runs
        them again). Their earlier runs would show as duplicates or never end, so the restarted
        trial gets a fresh run and a forgotten one disappears (restorable: `mlflow runs restore`).
        """
        retired = sorted(t for t in self._children if t not in keep)
        for trial_id in retired:
            self.retire_child(trial_id, "superseded: the sweep was resumed and Ray restarted or dropped this trial")
        return retired

    def retire_child(self, trial_id: str, note: str) -> None:
        """End, tag `superseded` and soft-delete the trial's run, so its next attempt gets a fresh one."""
        handle = self._children.pop(trial_id, None)
        if handle is None:
            return
        run = self._runs[handle]
        self._flush_pending([handle] if handle in self._pending else [])  # the attempt's history stays its own
        ops = self._batch_ops(run, f"retire the run of trial {trial_id}", tags=_superseded(note))
        ops.append(Op("end a superseded run", run, lambda rid: self.client.set_terminated(rid, status="KILLED")))
        ops.append(Op("delete a superseded run", run, lambda rid: self.client.delete_run(rid)))
        self._outbox.put(*ops)

    def log_parent_artifact_text(self, text: str, name: str, *, block: bool = True) -> None:
        parent = self._runs[self.parent_id]
        self._outbox.put(Op(f"log {name}", parent, lambda rid: self.client.log_text(rid, text, name)), block=block)

    def log_parent_files(self, files: list[Path], artifact_path: str) -> None:
        """Upload files (the report and its PNGs) under `artifact_path` of the parent run, in the outbox:
        an upload an outage holds back goes out when the server is back, as everything else does."""
        parent = self._runs[self.parent_id]
        ops = [Op(f"upload {f.name}", parent, self._artifact_sender(str(f), artifact_path)) for f in files]
        self._outbox.put(*ops)

    def log_parent_tables(self, tables: Mapping[str, str]) -> None:
        """Tables the UI renders on the parent run's artifacts page: name (`*.json`) -> JSON text in
        `mlflow.log_table`'s format (pandas' orient="split").

        Written whole rather than through `log_table`, which appends to a table already there: a
        resumed sweep, a refreshed report or a retry after a lost answer would repeat every row.
        """
        import json

        parent = self._runs[self.parent_id]
        ops = [Op(f"log {name}", parent, self._text_sender(text, name)) for name, text in tables.items()]
        listed = json.dumps([{"path": name, "type": "table"} for name in tables])
        ops += self._batch_ops(parent, "list the parent's tables", tags={LOGGED_ARTIFACTS_TAG: listed})
        self._outbox.put(*ops)

    def log_parent_values(
        self, *, metrics: Mapping[str, float] = {}, params: Mapping[str, Any] = {}, tags: Mapping[str, str] = {}
    ) -> None:
        """Metrics, params and tags of the parent run (batched; through the outbox).

        A param MLflow already holds with another value is refused (params are immutable), which the
        outbox reports and skips; callers log a param only once per parent run.
        """
        parent = self._runs[self.parent_id]
        params = {k: _param(v) for k, v in params.items()}
        self._outbox.put(*self._batch_ops(parent, "log the sweep's summary", metrics=metrics, params=params, tags=tags))

    def backlog(self) -> int:
        """Operations still waiting for the server (0 once everything went out)."""
        return len(self._outbox) + sum(len(q) for q in self._pending.values())

    def throughput(self) -> dict[str, float]:
        """What the driver has written to MLflow so far, as the parent run's `tracking/*` metrics:
        rows (metric values, params, tags, run starts and ends), their rate while sending, and the
        most operations that ever waited at once."""
        stats = self._outbox.stats
        return {
            "tracking/rows": float(stats.rows),
            "tracking/rows_per_s": stats.rows / stats.send_s if stats.send_s > 0 else 0.0,
            "tracking/send_s": stats.send_s,
            "tracking/backlog_max": float(stats.peak_backlog),
        }

    def _text_sender(self, text: str, name: str) -> Callable[[str | None], None]:
        return lambda rid: self.client.log_text(rid, text, name)

    def finish_parent(self, *, status: str, metrics: Mapping[str, float], tags: Mapping[str, str]) -> None:
        """End the sweep's run after everything still buffered; raises TrackingUnavailable if the
        server stays away past the deadline (exit 1: the trials' results under runs/ are complete)."""
        parent = self._runs[self.parent_id]
        self._flush_pending(list(self._pending))
        self._outbox.drain(block=False)  # what is left goes first, so the throughput below counts it
        metrics = {**self.throughput(), **metrics}
        ops = self._batch_ops(parent, "log the sweep's summary", metrics=metrics, tags=tags)
        ops.append(Op("end the sweep's run", parent, lambda rid: self.client.set_terminated(rid, status=status)))
        sent = self._outbox.put(*ops, block=True)
        self._outbox.close()  # the sweep's last operations went (or failed) here; later ones send themselves
        if not sent:
            raise TrackingUnavailable(
                f"MLflow tracking server {redact(self.uri)} unreachable at the end of the sweep; "
                f"{len(self._outbox)} operations ({self._outbox.n_metrics} metric values) were not logged"
            )

    # -- children -------------------------------------------------------------------------
    def child(self, trial_id: str, name: str, params: Mapping[str, Any]) -> str:
        """A handle on the trial's child run: reused if it exists (resume), else created with its params.

        The handle is the run id, or until the run is created a stand-in (`pending-<trial>`) that
        the tracker maps to the run once created; `run_id_of` gives the real id.
        """
        handle = self._children.get(trial_id)
        if handle is not None:
            reopen = Op(f"reopen the run of trial {trial_id}", self._runs[handle], self._reopen)
            self._outbox.put(reopen)
            return handle
        run = RunRef(token=uuid.uuid4().hex)
        tags = {PARENT_TAG: self.parent_id, TRIAL_TAG: trial_id, RUN_NAME_TAG: name, **self._report_link()}
        create = Op(
            f"create the run of trial {trial_id}",
            run,
            lambda _: self._create(run, name, tags),
            creates=True,
            rows=len(tags) + 2,
        )
        what = f"log the params of trial {trial_id}"
        self._outbox.put(create, *self._batch_ops(run, what, params={k: _param(v) for k, v in params.items()}))
        handle = run.run_id or self._stand_in(trial_id)
        self._runs[handle] = run
        self._children[trial_id] = handle
        return handle

    def _stand_in(self, trial_id: str) -> str:
        """`pending-<trial>` for a run not created yet; a retried trial's next run gets `pending-<trial>-2`
        and so on, so one attempt's buffered metrics never land in another attempt's run."""
        handle, attempt = f"pending-{trial_id}", 1
        while handle in self._runs:
            attempt += 1
            handle = f"pending-{trial_id}-{attempt}"
        return handle

    def _report_link(self) -> dict[str, str]:
        """A trial's way back to its sweep: the report's artifact URI, and a note (the run page's
        description) linking to the parent run and to its report, relative to whichever UI shows it."""
        report = f"{REPORT_DIR}/{REPORT_PAGE}"
        parent = ui_link("", self.experiment_id, self.parent_id)
        page = ui_link("", self.experiment_id, self.parent_id, report)
        note = f"A trial of the sweep in [parent run {self.parent_id}]({parent}); its report: [{report}]({page})."
        return {REPORT_TAG: f"runs:/{self.parent_id}/{report}", NOTE_TAG: note}

    def _reopen(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")

    def _create(self, run: RunRef, name: str, tags: Mapping[str, str]) -> None:
        if run.tried:  # an earlier attempt may have reached the server before the connection broke
            found = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{TOKEN_TAG}` = '{run.token}'", max_results=1
            )
            if found:
                run.run_id = found[0].info.run_id
                return
        run.tried = True
        created = self.client.create_run(self.experiment_id, run_name=name, tags={**tags, TOKEN_TAG: run.token})
        run.run_id = created.info.run_id

    def run_id_of(self, trial_id: str) -> str | None:
        """The trial's child run id; waits (up to the deadline) while its creation is still buffered."""
        handle = self._children.get(trial_id)
        if handle is None:
            return None
        run = self._runs[handle]
        if run.run_id is None:
            self._outbox.drain(block=True)
        return run.run_id

    def known_run_id(self, trial_id: str) -> str | None:
        """The trial's child run id if MLflow has answered already; never waits."""
        handle = self._children.get(trial_id)
        return None if handle is None else self._runs[handle].run_id

    def tag_child(self, handle: str, tags: Mapping[str, str]) -> None:
        """Set tags on the run `child` returned (queued behind its creation)."""
        self._outbox.put(*self._batch_ops(self._runs[handle], "tag a trial's run", tags=tags))

    def queue_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int) -> None:
        """Buffer one step's metrics of the run `child` returned; sent in batches of `flush_every`."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)  # fixed now: a resent batch repeats rows MLflow already has, no duplicates
        batch = mlflow_items(metrics)
        self._pending.setdefault(run_id, []).extend(Metric(k, float(v), now, step) for k, v in batch.items())
        if sum(len(q) for q in self._pending.values()) >= self._flush_every:
            self._flush_pending(list(self._pending))
        if len(self._outbox):  # also a chance to send what an outage held back
            self._outbox.drain(block=False)

    def flush(self) -> None:
        """Send everything buffered, waiting up to the deadline for an absent server; never raises
        for the server's sake (what did not go out stays buffered for `finish_parent`)."""
        self._flush_pending(list(self._pending))
        self._outbox.drain(block=True)

    def _flush_pending(self, handles: list[str]) -> None:
        for handle in handles:
            pending = self._pending.pop(handle, [])
            run = self._runs[handle]
            for start in range(0, len(pending), 1000):  # MLflow's log_batch limit is 1000 metrics
                chunk = pending[start : start + 1000]
                send = self._metric_sender(chunk)
                self._outbox.put(Op("log metrics", run, send, n_metrics=len(chunk), rows=len(chunk)))

    def _metric_sender(self, chunk: list[Any]) -> Callable[[str | None], None]:
        return lambda rid: self.client.log_batch(rid, metrics=chunk)

    def finish_child(self, run_id: str, *, status: str, tags: Mapping[str, str], artifacts: Path | None = None) -> None:
        """Log the trial's last metrics, tags and artifact files, then end its run."""
        run = self._runs[run_id]
        self._flush_pending([run_id] if run_id in self._pending else [])
        ops = self._batch_ops(run, "tag a finished trial", tags=tags)
        if artifacts is not None and artifacts.is_dir():
            files = [str(p) for p in sorted(artifacts.iterdir()) if p.is_file()]
            ops += [Op(f"upload {Path(f).name}", run, self._artifact_sender(f)) for f in files]
        ops.append(Op("end a trial's run", run, lambda rid: self.client.set_terminated(rid, status=status)))
        self._outbox.put(*ops)

    def _artifact_sender(self, path: str, artifact_path: str | None = None) -> Callable[[str | None], None]:
        return lambda rid: self.client.log_artifact(rid, path, artifact_path)

    def _batch_ops(
        self,
        run: RunRef,
        what: str,
        *,
        metrics: Mapping[str, float] = {},
        params: Mapping[str, str] = {},
        tags: Mapping[str, str] = {},
    ) -> list[Op]:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        m = [Metric(k, float(v), now, 0) for k, v in mlflow_items(metrics).items()]
        p = [Param(k, v) for k, v in mlflow_items(params).items()]
        t = [RunTag(k, str(v)) for k, v in tags.items()]
        ops = []
        for start in range(0, max(len(p), 1), 100):  # MLflow accepts at most 100 params per batch
            head = start == 0  # metrics and tags ride with the first batch
            send = self._batch_sender(m if head else [], p[start : start + 100], t if head else [])
            rows = len(p[start : start + 100]) + (len(m) + len(t) if head else 0)
            ops.append(Op(what, run, send, rows=max(rows, 1)))
        return ops

    def _batch_sender(self, metrics: list, params: list, tags: list) -> Callable[[str | None], None]:
        return lambda rid: self.client.log_batch(rid, metrics=metrics, params=params, tags=tags)


def _superseded(note: str) -> dict[str, str]:
    return {STATUS_TAG: "superseded", FAILURE_TAG: note}


def _param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."

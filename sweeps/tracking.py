"""MLflow bookkeeping on the driver: one parent run per sweep, one child run per trial.

Trials never talk to MLflow themselves; the driver logs in batches (a Ray Tune callback
feeds `SweepTracker`), so a slow or briefly absent tracking server costs trials nothing.
Child runs carry the Ray trial id as a tag, so a resumed sweep finds and reuses them
instead of logging a trial twice.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mer_core.errors import UserInputError

TRIAL_TAG = "mersweep.trial_id"
SWEEP_TAG = "mersweep.sweep"
PARENT_TAG = "mlflow.parentRunId"
_CRED = re.compile(r"(?<=://)[^/@\s]+@")


def redact(uri: str) -> str:
    """A tracking URI without credentials (`https://user:pw@host` -> `https://***@host`)."""
    return _CRED.sub("***@", uri)


def resolve_tracking_uri(cli_uri: str | None, spec_uri: str | None) -> str:
    """--tracking-uri, else the sweep's tracking.uri, else $MLFLOW_TRACKING_URI, else ./mlflow.db."""
    uri = cli_uri or spec_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def check_reachable(uri: str, *, timeout: float = 5.0) -> None:
    """Fail fast (exit 2) when an HTTP tracking server does not answer, before anything is written."""
    if not uri.startswith(("http://", "https://")):
        return
    # Probe without userinfo: urllib would take `user:pw@host` for the host name. /health needs
    # no login, and any answer below 500 (401 included) means a server is there.
    scheme, _, rest = uri.partition("://")
    netloc, slash, path = rest.partition("/")
    url = f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path}".rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if resp.status < 500:
                return
    except urllib.error.HTTPError as err:
        if err.code < 500:
            return
    except (urllib.error.URLError, OSError, ValueError):
        pass
    raise UserInputError(f"tracking.uri: MLflow tracking server unreachable; given: {redact(uri)}")


class SweepTracker:
    """Parent/child runs of one sweep, with buffered metric logging."""

    def __init__(self, uri: str, experiment: str, *, flush_every: int = 500) -> None:
        from mlflow.tracking import MlflowClient  # heavy import: only drivers pay for it

        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(experiment)
        self.parent_id: str | None = None
        self._children: dict[str, str] = {}
        self._pending: dict[str, list[Any]] = {}
        self._flush_every = flush_every

    # -- parent ---------------------------------------------------------------------------
    def open_parent(self, *, sweep: str, parent_id: str | None, tags: Mapping[str, str]) -> str:
        """Create the sweep's parent run, or reopen `parent_id` on resume."""
        if parent_id:
            self.client.update_run(parent_id, status="RUNNING")
            self.parent_id = parent_id
            self._children = self._existing_children()
        else:
            run = self.client.create_run(self.experiment_id, run_name=sweep, tags={SWEEP_TAG: sweep, **tags})
            self.parent_id = run.info.run_id
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
            run_id = self._children.pop(trial_id)
            note = "superseded: the sweep was resumed and Ray restarted or dropped this trial"
            self._log_batch(run_id, tags={"mersweep.status": "superseded", "mersweep.failure_reason": note})
            self.client.set_terminated(run_id, status="KILLED")
            self.client.delete_run(run_id)
        return retired

    def log_parent_artifact_text(self, text: str, name: str) -> None:
        self.client.log_text(self.parent_id, text, name)

    def finish_parent(self, *, status: str, metrics: Mapping[str, float], tags: Mapping[str, str]) -> None:
        self._log_batch(self.parent_id, metrics=metrics, tags=tags)
        self.client.set_terminated(self.parent_id, status=status)

    # -- children -------------------------------------------------------------------------
    def child(self, trial_id: str, name: str, params: Mapping[str, Any]) -> str:
        """The child run of a trial: reused if it exists (resume), else created with its params."""
        if trial_id in self._children:
            run_id = self._children[trial_id]
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {PARENT_TAG: self.parent_id, TRIAL_TAG: trial_id, "mlflow.runName": name}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        run_id = run.info.run_id
        self._children[trial_id] = run_id
        self._log_batch(run_id, params={k: _param(v) for k, v in params.items()})
        return run_id

    def run_id_of(self, trial_id: str) -> str | None:
        return self._children.get(trial_id)

    def queue_metrics(self, run_id: str, metrics: Mapping[str, float], *, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        queue = self._pending.setdefault(run_id, [])
        queue.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if sum(len(q) for q in self._pending.values()) >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        for run_id in list(self._pending):
            pending = self._pending.pop(run_id)
            for start in range(0, len(pending), 1000):  # MLflow's log_batch limit is 1000 metrics
                self.client.log_batch(run_id, metrics=pending[start : start + 1000])

    def finish_child(self, run_id: str, *, status: str, tags: Mapping[str, str], artifacts: Path | None = None) -> None:
        self.flush()
        self._log_batch(run_id, tags=tags)
        if artifacts is not None and artifacts.is_dir():
            for path in sorted(artifacts.iterdir()):
                if path.is_file():
                    self.client.log_artifact(run_id, str(path))
        self.client.set_terminated(run_id, status=status)

    def _log_batch(
        self,
        run_id: str,
        *,
        metrics: Mapping[str, float] = {},
        params: Mapping[str, str] = {},
        tags: Mapping[str, str] = {},
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        m = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
        p = [Param(k, v) for k, v in params.items()]
        t = [RunTag(k, str(v)) for k, v in tags.items()]
        for start in range(0, max(len(p), 1), 100):  # MLflow accepts at most 100 params per batch
            self.client.log_batch(
                run_id, metrics=m if start == 0 else [], params=p[start : start + 100], tags=t if start == 0 else []
            )


def _param(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."

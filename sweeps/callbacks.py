"""Ray Tune callbacks on the driver: MLflow logging and the live progress line."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ray.tune import Callback

from sweeps.tracking import PARENT_TAG, TRIAL_TAG, SweepTracker
from sweeps.trainable import FINAL_KEY

MLFLOW_STATUS = {"ok": "FINISHED", "pruned": "KILLED", "diverged": "FAILED", "invalid": "FAILED", "error": "FAILED"}
ENDED = ("TERMINATED", "ERROR")  # Ray's statuses of a trial that will not run again
RESULT_FILE = "result.json"  # Ray's log of every result of a trial, one JSON object a line, in its folder


def trial_outcome(last: Mapping[str, Any] | None, *, errored: bool = False) -> str:
    """ok | pruned | diverged | invalid | error, from a trial's last result."""
    if errored:
        return "error"
    if last and last.get(FINAL_KEY):
        return str(last.get("status", "ok"))
    return "pruned"  # stopped by the scheduler before its final report


def _metrics_of(result: Mapping[str, Any]) -> dict[str, float]:
    """Our metrics are namespaced (`val/...`, `train/...`); Ray's bookkeeping keys are not logged."""
    return {
        k: float(v)
        for k, v in result.items()
        if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("config/")
    }


class MlflowCallback(Callback):
    """Feeds trial starts, results and ends to the SweepTracker (batched, driver-side)."""

    def __init__(self, tracker: SweepTracker, params_of: Callable[[Mapping[str, Any]], dict[str, Any]]) -> None:
        self.tracker = tracker
        self.params_of = params_of
        self.runs: dict[str, str] = {}
        self._first_step: dict[str, int] = {}
        self._reconciled = False

    def __getstate__(self) -> dict:
        # Ray pickles callbacks into tuner.pkl; the live MLflow client (and any credentials in its
        # URI) must not go there. A resumed sweep attaches fresh callbacks instead.
        return {"tracker": None, "params_of": None, "runs": {}, "_first_step": {}, "_reconciled": False}

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if not self._reconciled:  # first step: `trials` is exactly what Ray restored (nothing new yet)
            self._reconcile(trials)

    def _reconcile(self, trials: list) -> None:
        """Match the runs a resumed sweep finds in MLflow to the trials Ray restored.

        Only trials Ray counts as ended keep their runs; the others are rerun from scratch or were
        lost. The driver sends a run's last metrics, tags, artifacts and end in the background
        (SweepTracker's outbox), so a crash can leave an ended trial's run open, or not even
        created: such a trial is logged afresh from what Ray saved of it.
        """
        self._reconciled = True
        ended = {t.trial_id: t for t in trials if t.status in ENDED}
        incomplete = self._incomplete(set(ended)) if ended else set()
        self.tracker.retire_children(set(ended) - incomplete)
        for trial_id in sorted(incomplete):
            self._relog(ended[trial_id])

    def _incomplete(self, ended: set[str]) -> set[str]:
        """Ended trials whose run is missing or still RUNNING (its end never reached MLflow)."""
        runs = self.tracker.client.search_runs(
            [self.tracker.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{self.tracker.parent_id}' and attributes.status = 'RUNNING'",
            max_results=50000,
        )
        open_runs = {r.data.tags.get(TRIAL_TAG) for r in runs}
        return {t for t in ended if t in open_runs or self.tracker.run_id_of(t) is None}

    def _relog(self, trial) -> None:
        """A fresh run for an ended trial: its params, its last attempt's results, its end."""
        run_id = self.tracker.child(trial.trial_id, str(trial), self.params_of(trial.config))
        for result in last_attempt_results(trial):
            step = int(result.get("iterations_since_restore", 1))
            self.tracker.queue_metrics(run_id, _metrics_of(result), step=step)
        self.runs[trial.trial_id] = run_id
        self._finish(trial, errored=trial.status == "ERROR")

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self.runs[trial.trial_id] = self.tracker.child(trial.trial_id, str(trial), self.params_of(trial.config))
        self._first_step.pop(trial.trial_id, None)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        run_id = self.runs.get(trial.trial_id)
        if run_id is not None:
            # Every start of a trial trains from scratch, but Ray goes on counting iterations from
            # a restored checkpoint; so an attempt's first result is step 1 of its run's history.
            done = int(result.get("training_iteration", 1))
            step = done - self._first_step.setdefault(trial.trial_id, done - 1)
            self.tracker.queue_metrics(run_id, _metrics_of(result), step=step)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        # A failed attempt that Ray retries from scratch (FailureConfig): its run is superseded
        # (kept, soft-deleted, with the error), and the retry logs a fresh run from step 1.
        self.runs.pop(trial.trial_id, None)
        self._first_step.pop(trial.trial_id, None)
        note = f"superseded: this attempt failed and Ray retried the trial ({_error_line(trial)})"
        self.tracker.retire_child(trial.trial_id, note[:5000])

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial, errored=False)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial, errored=True)

    def _finish(self, trial, *, errored: bool) -> None:
        run_id = self.runs.pop(trial.trial_id, None)
        self._first_step.pop(trial.trial_id, None)
        if run_id is None:
            return
        last = trial.last_result or {}
        outcome = trial_outcome(last, errored=errored)
        reason = str(last.get("failure_reason", "")) if not errored else _error_line(trial)
        artifacts = Path(trial.checkpoint.path) if getattr(trial, "checkpoint", None) else None
        tags = {"mersweep.status": outcome, "mersweep.failure_reason": reason[:5000]}
        self.tracker.finish_child(run_id, status=MLFLOW_STATUS[outcome], tags=tags, artifacts=artifacts)

    def on_experiment_end(self, trials: list, **info) -> None:
        if not self._reconciled:  # resumed with nothing left to run: Ray took no step
            self._reconcile(trials)
        # Trials still open here were stopped by Ctrl-C (or the time budget): end their runs, so
        # nothing stays RUNNING; a resumed sweep replaces them when Ray reruns those trials.
        for trial_id, run_id in list(self.runs.items()):
            tags = {"mersweep.status": "interrupted", "mersweep.failure_reason": "sweep stopped before it ended"}
            self.tracker.finish_child(run_id, status="KILLED", tags=tags)
            del self.runs[trial_id]
        self.tracker.flush()


def last_attempt_results(trial) -> list[dict[str, Any]]:
    """The results of a trial's last attempt (each attempt trains from scratch), oldest first.

    Read from the result log in the trial's folder under runs/<sweep>/, which Ray saves together
    with its experiment state; a line cut short by a crash is skipped. Without the log: the last result.
    """
    try:
        lines = (Path(trial.path) / RESULT_FILE).read_text().splitlines()
    except (OSError, TypeError):
        lines = []
    results: list[dict[str, Any]] = []
    for line in lines:
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if result.get("iterations_since_restore") == 1:  # a new attempt starts
            results = []
        results.append(result)
    return results or ([trial.last_result] if trial.last_result else [])


def _error_line(trial) -> str:
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text() if path else ""
    except OSError:
        text = ""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "trial raised an error"


class ProgressCallback(Callback):
    """One status line whenever the counts change: running / done / pruned / failed, best so far."""

    def __init__(self, *, metric: str, mode: str, total: int, stream=sys.stderr) -> None:
        self.metric, self.mode, self.total, self.stream = metric, mode, total, stream
        self._last_line = ""
        self._started = time.monotonic()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "stream": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.stream = sys.stderr

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        line = self.status_line(trials)
        key = line.split("] ", 1)[-1]  # the elapsed time alone is no news
        if key != self._last_line:
            self._last_line = key
            print(line, file=self.stream, flush=True)

    def status_line(self, trials: list) -> str:
        counts = {"running": 0, "done": 0, "pruned": 0, "failed": 0}
        best: tuple[float, str] | None = None
        for t in trials:
            if t.status == "RUNNING":
                counts["running"] += 1
            elif t.status in ("TERMINATED", "ERROR"):
                outcome = trial_outcome(t.last_result, errored=t.status == "ERROR")
                key = {"ok": "done", "pruned": "pruned"}.get(outcome, "failed")
                counts[key] += 1
                value = (t.last_result or {}).get(self.metric)
                if outcome == "ok" and isinstance(value, (int, float)):
                    score = value if self.mode == "max" else -value
                    if best is None or score > best[0]:
                        best = (score, f"{value:.4f} ({t.trial_id})")
        elapsed = time.monotonic() - self._started
        best_text = best[1] if best else "-"
        return (
            f"[{elapsed:6.0f}s] trials {counts['done'] + counts['pruned'] + counts['failed']}/{self.total} ended: "
            f"{counts['done']} done, {counts['pruned']} pruned, {counts['failed']} failed; "
            f"{counts['running']} running | best {self.metric} {best_text}"
        )

"""Ray Tune callbacks on the driver: MLflow logging and the live progress line.

A Ray trial is one run of the sweep, or in fused mode (`sweeps.fused.trial`) a population
of members: then each member is its own MLflow child run (trial id `<ray trial id>-m<i>`, its
values under the `m<i>/` prefix of the trial's results) and counts as one trial in the progress.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ray.tune import Callback

from sweeps.fused.search import member_prefix, member_result, member_trial_id, members_of
from sweeps.tracking.tracker import PARENT_TAG, TRIAL_TAG, SweepTracker
from sweeps.trainable.trial import FINAL_KEY

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


def member_outcome(last: Mapping[str, Any] | None, index: int, *, errored: bool = False) -> str:
    """ok | pruned | diverged | invalid | error of member `index` of a fused trial, from its last result."""
    if errored:
        return "error"
    if last and last.get(FINAL_KEY):
        return str(member_result(last, index).get("status", "error"))
    return "pruned"  # the population was stopped before its final report (as `trial_outcome`)


def run_units(trial) -> list[tuple[str, str, Mapping[str, Any], str]]:
    """(trial id, run name, params config, result prefix) of each MLflow run of a Ray trial:
    the trial itself, or in fused mode each of its members."""
    members = members_of(trial.config)
    if members is None:
        return [(trial.trial_id, str(trial), trial.config, "")]
    return [
        (member_trial_id(trial.trial_id, i), f"{trial}-m{i}", params, member_prefix(i))
        for i, params in enumerate(members)
    ]


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
        self.interrupted: set[str] = set()  # trials (fused: members) the sweep's stop cut short
        self._first_step: dict[str, int] = {}
        self._reconciled = False

    def __getstate__(self) -> dict:
        # Ray pickles callbacks into tuner.pkl; the live MLflow client (and any credentials in its
        # URI) must not go there. A resumed sweep attaches fresh callbacks instead.
        return {
            "tracker": None,
            "params_of": None,
            "runs": {},
            "interrupted": set(),
            "_first_step": {},
            "_reconciled": False,
        }

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
        ended = {unit[0]: t for t in trials if t.status in ENDED for unit in run_units(t)}
        incomplete = self._incomplete(set(ended)) if ended else set()
        self.tracker.retire_children(set(ended) - incomplete)
        for trial in {ended[u].trial_id: ended[u] for u in sorted(incomplete)}.values():
            self._relog(trial, incomplete)

    def _incomplete(self, ended: set[str]) -> set[str]:
        """Ended trials whose run is missing or still RUNNING (its end never reached MLflow)."""
        runs = self.tracker.client.search_runs(
            [self.tracker.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{self.tracker.parent_id}' and attributes.status = 'RUNNING'",
            max_results=50000,
        )
        open_runs = {r.data.tags.get(TRIAL_TAG) for r in runs}
        return {t for t in ended if t in open_runs or self.tracker.run_id_of(t) is None}

    def _relog(self, trial, units: set[str]) -> None:
        """A fresh run for each of `units` of an ended trial: its params, its last attempt's results, its end."""
        for unit_id, name, config, _ in run_units(trial):
            if unit_id in units:
                self.runs[unit_id] = self.tracker.child(unit_id, name, self.params_of(config))
        for result in last_attempt_results(trial):
            if members_of(trial.config) is not None:
                self._queue_members(trial, result)
            elif trial.trial_id in self.runs:
                step = int(result.get("iterations_since_restore", 1))
                self.tracker.queue_metrics(self.runs[trial.trial_id], _metrics_of(result), step=step)
        self._finish(trial, errored=trial.status == "ERROR")

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        for unit_id, name, config, _ in run_units(trial):
            self.runs[unit_id] = self.tracker.child(unit_id, name, self.params_of(config))
        self._first_step.pop(trial.trial_id, None)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        if members_of(trial.config) is not None:
            self._queue_members(trial, result)
            return
        run_id = self.runs.get(trial.trial_id)
        if run_id is not None:
            # Every start of a trial trains from scratch, but Ray goes on counting iterations from
            # a restored checkpoint; so an attempt's first result is step 1 of its run's history.
            done = int(result.get("training_iteration", 1))
            step = done - self._first_step.setdefault(trial.trial_id, done - 1)
            self.tracker.queue_metrics(run_id, _metrics_of(result), step=step)

    def _queue_members(self, trial, result: Mapping[str, Any]) -> None:
        """Each member's values of a population result, at the member's own epoch count.

        A member's final values come one step after its last epoch, as a trial's final report
        does; a pruned member has none (a trial that ASHA stops never reports its end).
        """
        final = bool(result.get(FINAL_KEY))
        for unit_id, _, _, prefix in run_units(trial):
            values = {k[len(prefix) :]: v for k, v in result.items() if k.startswith(prefix)}
            run_id = self.runs.get(unit_id)
            if run_id is None or not values or (final and values.get("status") == "pruned"):
                continue
            step = int(values.get("iteration", 0)) + (1 if final else 0)
            self.tracker.queue_metrics(run_id, _metrics_of(values), step=max(step, 1))

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        # A failed attempt that Ray retries from scratch (FailureConfig): its run is superseded
        # (kept, soft-deleted, with the error), and the retry logs a fresh run from step 1.
        self._first_step.pop(trial.trial_id, None)
        note = f"superseded: this attempt failed and Ray retried the trial ({_error_line(trial)})"
        for unit_id, *_ in run_units(trial):
            self.runs.pop(unit_id, None)
            self.tracker.retire_child(unit_id, note[:5000])

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial, errored=False)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._finish(trial, errored=True)

    def _finish(self, trial, *, errored: bool) -> None:
        self._first_step.pop(trial.trial_id, None)
        last = trial.last_result or {}
        checkpoint = Path(trial.checkpoint.path) if getattr(trial, "checkpoint", None) else None
        fused = members_of(trial.config) is not None
        for i, (unit_id, _, _, prefix) in enumerate(run_units(trial)):
            run_id = self.runs.pop(unit_id, None)
            if run_id is None:
                continue
            values = member_result(last, i) if fused else last
            outcome = member_outcome(last, i, errored=errored) if fused else trial_outcome(last, errored=errored)
            reason = str(values.get("failure_reason", "")) if not errored else _error_line(trial)
            artifacts = checkpoint / prefix.rstrip("/") if checkpoint and fused else checkpoint
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
            self.interrupted.add(trial_id)
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
            for outcome, value, label in _tallies(t, self.metric):
                if outcome is None:
                    counts["running"] += 1
                    continue
                counts[{"ok": "done", "pruned": "pruned"}.get(outcome, "failed")] += 1
                if outcome == "ok" and isinstance(value, (int, float)):
                    score = value if self.mode == "max" else -value
                    if best is None or score > best[0]:
                        best = (score, f"{value:.4f} ({label})")
        elapsed = time.monotonic() - self._started
        best_text = best[1] if best else "-"
        return (
            f"[{elapsed:6.0f}s] trials {counts['done'] + counts['pruned'] + counts['failed']}/{self.total} ended: "
            f"{counts['done']} done, {counts['pruned']} pruned, {counts['failed']} failed; "
            f"{counts['running']} running | best {self.metric} {best_text}"
        )


def _tallies(trial, metric: str) -> list[tuple[str | None, Any, str]]:
    """(outcome, value of `metric`, trial id) of each sweep trial in a Ray trial (each member in
    fused mode); outcome None while running, nothing while pending."""
    if trial.status == "RUNNING":
        return [(None, None, unit[0]) for unit in run_units(trial)]
    if trial.status not in ENDED:
        return []
    last, errored = trial.last_result or {}, trial.status == "ERROR"
    if members_of(trial.config) is None:
        return [(trial_outcome(last, errored=errored), last.get(metric), trial.trial_id)]
    return [
        (member_outcome(last, i, errored=errored), member_result(last, i).get(metric), unit[0])
        for i, unit in enumerate(run_units(trial))
    ]

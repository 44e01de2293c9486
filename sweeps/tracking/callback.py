"""`MlflowCallback`: the Ray Tune callback on the driver that feeds trials to the `SweepTracker`.

A Ray trial is one run of the sweep, or in fused mode (`sweeps.fused`) a population of members:
then each member is its own MLflow child run (trial id `<ray trial id>-m<i>`, its values under
the `m<i>/` prefix of the trial's results).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ray.tune import Callback

from sweeps.fused.members import member_outcome, member_result, members_of, run_units
from sweeps.space.study import StudyLinks
from sweeps.tracking.names import (
    ABLATION_SEED_PARAM,
    EPOCH_METRIC,
    EVAL_PHASE,
    FAILURE_TAG,
    FOLD_METRIC,
    OPTUNA_TRIAL_TAG,
    PARENT_TAG,
    PHASE_PARAM,
    ROUND_METRIC,
    STATUS_TAG,
    TRIAL_TAG,
    VARIANT_PARAM,
)
from sweeps.tracking.tracker import SweepTracker
from sweeps.trainable.report import ENDED, FINAL_KEY, trial_outcome

MLFLOW_STATUS = {"ok": "FINISHED", "pruned": "KILLED", "diverged": "FAILED", "invalid": "FAILED", "error": "FAILED"}
RESULT_FILE = "result.json"  # Ray's log of every result of a trial, one JSON object a line, in its folder


def _metrics_of(result: Mapping[str, Any]) -> dict[str, float]:
    """Our metrics are namespaced (`val/...`, `train/...`); Ray's bookkeeping keys are not logged.

    An epoch's report also says where it stood (`fold`, `epoch`, `stage`): logged as `trial/*`
    metrics at the same step, so a reader can split a trial's history into its folds and stages.
    """
    metrics = {
        k: float(v)
        for k, v in result.items()
        if "/" in k and isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("config/")
    }
    if "fold" in result and "epoch" in result:
        metrics[FOLD_METRIC] = float(result["fold"])
        metrics[EPOCH_METRIC] = float(result["epoch"])
        metrics[ROUND_METRIC] = float(_round_of(str(result.get("stage", ""))))
    return metrics


def run_name(name: str, params: Mapping[str, Any]) -> str:
    """The name MLflow's run table shows: an ablation trial's variant and seed first (`no_nee seed 2`),
    then Ray's name; a search trial keeps Ray's name (`trial_main_85f180d7`)."""
    variant, seed = params.get(VARIANT_PARAM), params.get(ABLATION_SEED_PARAM)
    if variant is None:
        return name
    phase = params.get(PHASE_PARAM)
    arm = f"{variant} seed {seed}" + (f" {phase}" if phase not in (None, EVAL_PHASE) else "")
    return f"{arm} ({name.rsplit('_', 1)[-1]})"


def _round_of(stage: str) -> int:
    """0 for supervised fine-tuning, r for `self_training_<r>` (`mer_core.train.plan.round_stage`)."""
    match = re.fullmatch(r"self_training_(\d+)", stage)
    return int(match.group(1)) if match else 0


class MlflowCallback(Callback):
    """Feeds trial starts, results and ends to the SweepTracker (batched, driver-side)."""

    def __init__(
        self,
        tracker: SweepTracker,
        params_of: Callable[[Mapping[str, Any]], dict[str, Any]],
        *,
        links: StudyLinks | None = None,
    ) -> None:
        self.tracker = tracker
        self.params_of = params_of
        self.links = links  # the sweep's Optuna study: trial number <-> MLflow run id
        self._unlinked: dict[str, str] = {}  # unit id -> run handle whose run id MLflow has not given yet
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
            "links": None,
            "_unlinked": {},
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
                params = self.params_of(config)
                self.runs[unit_id] = self.tracker.child(unit_id, run_name(name, params), params)
        self._link({u: self.runs[u] for u, *_ in run_units(trial) if u in units})
        for result in last_attempt_results(trial):
            if members_of(trial.config) is not None:
                self._queue_members(trial, result)
            elif trial.trial_id in self.runs:
                step = int(result.get("iterations_since_restore", 1))
                self.tracker.queue_metrics(self.runs[trial.trial_id], _metrics_of(result), step=step)
        self._finish(trial, errored=trial.status == "ERROR")

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        for unit_id, name, config, _ in run_units(trial):
            params = self.params_of(config)
            self.runs[unit_id] = self.tracker.child(unit_id, run_name(name, params), params)
        self._first_step.pop(trial.trial_id, None)
        self._link({unit_id: self.runs[unit_id] for unit_id, *_ in run_units(trial)})

    def _link(self, handles: Mapping[str, str]) -> None:
        """Optuna trial <-> MLflow run: the run id onto the Optuna trial, its number onto the run.

        While MLflow is away a run has no id yet; it is linked at a later result of its trial.
        """
        if self.links is None or not handles:
            return
        ids = {unit: self.tracker.known_run_id(unit) for unit in handles}
        for unit, number in self.links.link(ids).items():
            self.tracker.tag_child(handles[unit], {OPTUNA_TRIAL_TAG: str(number)})
        for unit, run_id in ids.items():
            if run_id is None:
                self._unlinked[unit] = handles[unit]
            else:
                self._unlinked.pop(unit, None)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        if self._unlinked:
            self._link_later()
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

    def _link_later(self) -> None:
        ready = {u: h for u, h in self._unlinked.items() if self.tracker.known_run_id(u) is not None}
        if ready and self.links is not None:
            runs = {u: self.tracker.known_run_id(u) for u in ready}
            self.links.link(runs)
            for unit in ready:
                del self._unlinked[unit]

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
            tags = {STATUS_TAG: outcome, FAILURE_TAG: reason[:5000]}
            self.tracker.finish_child(run_id, status=MLFLOW_STATUS[outcome], tags=tags, artifacts=artifacts)

    def on_experiment_end(self, trials: list, **info) -> None:
        if not self._reconciled:  # resumed with nothing left to run: Ray took no step
            self._reconcile(trials)
        # Trials still open here were stopped by Ctrl-C (or the time budget): end their runs, so
        # nothing stays RUNNING; a resumed sweep replaces them when Ray reruns those trials.
        for trial_id, run_id in list(self.runs.items()):
            tags = {STATUS_TAG: "interrupted", FAILURE_TAG: "sweep stopped before it ended"}
            self.tracker.finish_child(run_id, status="KILLED", tags=tags)
            self.interrupted.add(trial_id)
            del self.runs[trial_id]
        self.tracker.flush()
        if self._unlinked:  # runs the tracker's thread created after their trial's last result
            self._link_later()


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

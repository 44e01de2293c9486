"""Reading a sweep back from MLflow: the parent run, its spec, and one `TrialRun` per child.

Everything in `analysis/` starts here, so the analyses work on any store a sweep logged to
(local sqlite, a tracking server) and never on Ray's private files. A sweep is found by its
parent run id, by its MLflow experiment (the newest sweep in it), or by its `runs/<sweep>/`
folder (whose state file names both).
"""

from __future__ import annotations

import copy
import functools
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# MLflow draws a progress bar per downloaded artifact; an analysis downloads dozens.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# MLflow prints "View run ... at <tracking URI>" when a run ends, credentials included.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

from mer_core.errors import UserInputError
from sweeps.tracking.names import (
    ABLATION_SEED_PARAM,
    CONFIG_SEED_PARAM,
    PARENT_TAG,
    PHASE_PARAM,
    PHASE_TAG,
    RUN_NAME_TAG,
    SEARCH_PHASE,
    STATUS_TAG,
    SWEEP_ARTIFACT,
    SWEEP_TAG,
    TRIAL_ARTIFACT,
    TRIAL_TAG,
    VARIANT_PARAM,
)
from sweeps.tracking.uri import redact


@dataclass(frozen=True)
class TrialRun:
    """One trial's child run: its final metrics (latest value per key), params and tags."""

    run_id: str
    trial_id: str
    name: str
    status: str  # mersweep.status: ok | pruned | diverged | invalid | error | interrupted
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    tags: Mapping[str, str]

    @property
    def variant(self) -> str | None:
        return self.params.get(VARIANT_PARAM)

    @property
    def seed(self) -> int | None:
        """The ablation seed, else the experiment seed."""
        raw = self.params.get(ABLATION_SEED_PARAM, self.params.get(CONFIG_SEED_PARAM))
        return None if raw is None else int(raw)

    @property
    def phase(self) -> str:
        """`eval` for an ablation's measured runs, `retune` for its nuisance search, `search` for a
        search's trials, or what a later analysis tagged (`export-reseed`)."""
        return self.tags.get(PHASE_TAG) or self.params.get(PHASE_PARAM, SEARCH_PHASE)

    def param_value(self, name: str) -> Any:
        """A param parsed back from its MLflow string (numbers, booleans, null; else the string)."""
        raw = self.params.get(name)
        return None if raw is None else parse_param(raw)


# libyaml's loader where PyYAML was built with it (5x faster; same results); else the pure-Python one.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_param(raw: str) -> Any:
    """A param's value from its MLflow string: YAML's reading of it (numbers, booleans, null, lists),
    else the string itself. A report parses every trial's sampled params several times (table,
    plots, importance): 10,000 trials make hundreds of thousands of calls, so results are memoised;
    a list or mapping comes back as a fresh copy, so no caller can change another's."""
    value = _parse_cached(raw)
    return copy.deepcopy(value) if isinstance(value, (list, dict)) else value


@functools.lru_cache(maxsize=1 << 16)
def _parse_cached(raw: str) -> Any:
    loader = _LOADER(raw)  # what yaml.safe_load does, with the faster safe loader where there is one
    try:
        return loader.get_single_data()
    except yaml.YAMLError:
        return raw
    finally:
        loader.dispose()


@dataclass(frozen=True)
class SweepRuns:
    """A sweep as MLflow recorded it."""

    tracking_uri: str
    experiment: str
    experiment_id: str
    parent_run_id: str
    sweep: str
    spec: Mapping[str, Any]  # the resolved sweep YAML logged with the parent (sweep.yaml)
    trials: tuple[TrialRun, ...] = field(default_factory=tuple)

    @property
    def kind(self) -> str:
        return str(self.spec.get("kind", "search"))

    @property
    def metric(self) -> str:
        return str(self.spec.get("metric", "val/weighted_f1"))

    @property
    def report_metric(self) -> str:
        """What verdicts and `compare` judge and `export-best` reports (it chooses by `metric`): the spec's
        resolved `report_metric` (`test/<metric>` when the data held out a test split); a sweep recorded
        before it existed: `metric`."""
        return str(self.spec.get("report_metric") or self.metric)

    @property
    def mode(self) -> str:
        return str(self.spec.get("mode", "max"))

    def finished(self) -> list[TrialRun]:
        """Trials that trained to the end and reported the sweep metric."""
        return [t for t in self.trials if t.status == "ok" and self.metric in t.metrics]

    def ranked(self) -> list[TrialRun]:
        """Finished trials, best first by the sweep metric."""
        sign = -1.0 if self.mode == "max" else 1.0
        return sorted(self.finished(), key=lambda t: sign * t.metrics[self.metric])

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def describe(self) -> str:
        counts: dict[str, int] = {}
        for t in self.trials:
            counts[t.status] = counts.get(t.status, 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no trials"
        return (
            f"sweep {self.sweep} ({self.kind}) in experiment {self.experiment} at {redact(self.tracking_uri)}: "
            f"parent run {self.parent_run_id}; {len(self.trials)} trials ({summary})"
        )


def load_sweep_runs(tracking_uri: str, *, experiment: str | None = None, parent_run_id: str | None = None) -> SweepRuns:
    """The sweep with parent run `parent_run_id`, else the newest sweep in `experiment`.

    Raises:
        UserInputError: no such experiment / run, or neither selector given.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        parent = _find_parent(client, experiment, parent_run_id)
    except MlflowException as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        given = redact(tracking_uri)
        raise UserInputError(f"tracking.uri: MLflow could not answer ({message}); given: {given}") from err
    exp = client.get_experiment(parent.info.experiment_id)
    trials = tuple(_trial(r) for r in _children(client, parent.info.experiment_id, parent.info.run_id))
    return SweepRuns(
        tracking_uri=tracking_uri,
        experiment=exp.name,
        experiment_id=exp.experiment_id,
        parent_run_id=parent.info.run_id,
        sweep=parent.data.tags.get(SWEEP_TAG, exp.name),
        spec=_parent_spec(client, parent.info.run_id),
        trials=trials,
    )


def _find_parent(client, experiment: str | None, parent_run_id: str | None):
    if parent_run_id:
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(parent_run_id)
        except MlflowException as err:
            raise UserInputError(f"--parent-run: no MLflow run with this id; given: {parent_run_id}") from err
        if SWEEP_TAG not in run.data.tags:
            raise UserInputError(f"--parent-run: run is not a mersweep sweep's parent run; given: {parent_run_id}")
        return run
    if not experiment:
        raise UserInputError("--experiment: give an MLflow experiment, --parent-run or --sweep-dir; given: nothing")
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments(max_results=200))
        allowed = ", ".join(names)
        raise UserInputError(f"--experiment: no such MLflow experiment; allowed: {allowed}; given: {experiment}")
    parents = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{SWEEP_TAG}` != ''",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    parents = [r for r in parents if PARENT_TAG not in r.data.tags]
    if not parents:
        raise UserInputError(f"--experiment: experiment holds no mersweep sweep; given: {experiment}")
    return parents[0]


def _children(client, experiment_id: str, parent_id: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'", max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return sorted(runs, key=lambda r: r.info.start_time or 0)


def _trial(run) -> TrialRun:
    tags = dict(run.data.tags)
    return TrialRun(
        run_id=run.info.run_id,
        trial_id=tags.get(TRIAL_TAG, run.info.run_id),
        name=tags.get(RUN_NAME_TAG, run.info.run_name or run.info.run_id),
        status=tags.get(STATUS_TAG, "running" if run.info.status == "RUNNING" else "unknown"),
        params=dict(run.data.params),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        tags=tags,
    )


def _parent_spec(client, parent_id: str) -> dict[str, Any]:
    text = read_artifact_text(client, parent_id, SWEEP_ARTIFACT)
    spec = yaml.safe_load(text) if text else None
    return spec if isinstance(spec, dict) else {}


def read_artifact_text(client, run_id: str, name: str) -> str | None:
    """A text artifact of a run, or None if the run has none by that name."""
    with tempfile.TemporaryDirectory(prefix="mersweep-artifact-") as tmp:
        try:
            path = client.download_artifacts(run_id, name, tmp)
        except Exception:  # MLflow raises several types for "not there"
            return None
        return Path(path).read_text()


def download_artifact(sweep: SweepRuns, run_id: str, name: str, dst: Path) -> Path | None:
    """Download one artifact of a run into `dst`; None if it does not exist."""
    dst.mkdir(parents=True, exist_ok=True)
    try:
        return Path(sweep.client().download_artifacts(run_id, name, str(dst)))
    except Exception:  # MLflow raises several types for "not there"
        return None


def metric_history(sweep: SweepRuns, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric of one run, in step order."""
    history = sweep.client().get_metric_history(run_id, key)
    return sorted((int(m.step), float(m.value)) for m in history)


def trial_summary(sweep: SweepRuns, run_id: str) -> dict[str, Any] | None:
    """The trial's `trial.json` artifact (status, metrics, pseudo-label reports), if logged."""
    text = read_artifact_text(sweep.client(), run_id, TRIAL_ARTIFACT)
    return json.loads(text) if text else None

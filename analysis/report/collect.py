"""Everything a report shows, read from MLflow once: the space, the leading trials, their curves,
pseudo-label counts and (for an ablation) the comparison table.

Plots and HTML then work on this plain data and never talk to MLflow.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.runs import SweepRuns, TrialRun, metric_history, read_artifact_text, trial_summary
from mer_core.errors import UserInputError
from sweeps.space import SearchSpace, load_space
from sweeps.tracking.names import EVAL_PHASE, FOLD_METRIC, ROUND_METRIC, SPACE_ARTIFACT, VARIANCE_PHASE
from sweeps.tracking.uri import ui_base, ui_link

if TYPE_CHECKING:
    from analysis.compare import AblationTable

log = logging.getLogger("mersweep.analysis")

PSEUDO_TRIALS = 3  # panels of pseudo-label counts: the best trials that logged any


@dataclass(frozen=True)
class PseudoCounts:
    """Pseudo-labels chosen per self-training round and class, summed over a trial's folds."""

    class_names: tuple[str, ...]
    rounds: tuple[int, ...]
    counts: tuple[tuple[float, ...], ...]  # (rounds, classes)

    @property
    def total(self) -> float:
        return float(sum(sum(row) for row in self.counts))


@dataclass(frozen=True)
class CurvePoint:
    """One reported epoch of a trial: where it stood and the metric's value.

    Attributes:
        step: The run's step (reported epochs so far, over all folds and stages).
        value: The metric at that epoch.
        fold: The fold being trained (0 when the run did not log it: one curve).
        round: 0 in supervised fine-tuning, r in self-training round r.
    """

    step: int
    value: float
    fold: int = 0
    round: int = 0


@dataclass(frozen=True)
class ReportData:
    """The inputs of one report.

    Attributes:
        sweep: The sweep as MLflow recorded it.
        space: The searched space, or None (`space_note` says why).
        searched: Trials of the parameter search (an ablation's re-tuning trials; not its eval runs).
        leaders: The top trials for curves and parallel coordinates, best first (finished trials,
            then pruned ones by their last value when too few finished).
        histories: run id -> the reported epochs of each leader, in step order.
        pseudo: run id -> pseudo-label counts of the best trials that logged any.
        ablation: The ablation table (analysis.compare), or None (`ablation_note` says why).
    """

    sweep: SweepRuns
    space: SearchSpace | None
    space_note: str
    searched: tuple[TrialRun, ...]
    leaders: tuple[TrialRun, ...]
    histories: Mapping[str, list[CurvePoint]] = field(default_factory=dict)
    pseudo: Mapping[str, PseudoCounts] = field(default_factory=dict)
    ablation: AblationTable | None = None
    ablation_note: str = ""

    def value(self, trial: TrialRun) -> float:
        """The trial's sweep metric (for a pruned trial: its last reported value); NaN if none."""
        return trial.metrics.get(self.sweep.metric, math.nan)

    def link(self, run_id: str | None = None) -> str | None:
        """The MLflow UI's page of a run (or of the experiment) when the sweep is on a tracking
        server; None for a local store, which no URL reaches."""
        base = ui_base(self.sweep.tracking_uri)
        return ui_link(base, self.sweep.experiment_id, run_id) if base else None


def collect(sweep: SweepRuns, *, top_k: int, seed: int) -> ReportData:
    """Read what the report needs; one MLflow call per leading trial for curves and pseudo-labels.

    `seed` seeds the ablation table's bootstrap."""
    space, note = load_report_space(sweep)
    searched = tuple(t for t in sweep.trials if t.phase not in (EVAL_PHASE, VARIANCE_PHASE))  # only re-tuning
    leaders = tuple(leading_trials(sweep, list(sweep.trials), max(top_k, 10)))
    histories = {t.run_id: curve(sweep, t.run_id) for t in leaders[:top_k]}
    ablation, ablation_note = _ablation(sweep, seed)
    return ReportData(
        sweep=sweep,
        space=space,
        space_note=note,
        searched=searched,
        leaders=leaders,
        histories=histories,
        pseudo=_pseudo_of_best(sweep),
        ablation=ablation,
        ablation_note=ablation_note,
    )


def curve(sweep: SweepRuns, run_id: str) -> list[CurvePoint]:
    """The sweep metric's history of one run, each step placed in its fold and stage.

    A run that logged its folds keeps only its epochs: the trial's last step holds its final
    values (the mean over folds), which belong to no fold's curve.
    """
    folds = dict(metric_history(sweep, run_id, FOLD_METRIC))
    rounds = dict(metric_history(sweep, run_id, ROUND_METRIC))
    return [
        CurvePoint(step, value, int(folds.get(step, 0)), int(rounds.get(step, 0)))
        for step, value in metric_history(sweep, run_id, sweep.metric)
        if math.isfinite(value) and (not folds or step in folds)
    ]


def leading_trials(sweep: SweepRuns, trials: list[TrialRun], k: int) -> list[TrialRun]:
    """The best `k` trials: finished ones by the metric, then pruned ones by their last value."""
    sign = -1.0 if sweep.mode == "max" else 1.0

    def order(ts: list[TrialRun]) -> list[TrialRun]:
        return sorted((t for t in ts if sweep.metric in t.metrics), key=lambda t: sign * t.metrics[sweep.metric])

    finished = order([t for t in trials if t.status == "ok"])
    pruned = order([t for t in trials if t.status == "pruned"])
    return (finished + pruned)[:k]


def load_report_space(sweep: SweepRuns) -> tuple[SearchSpace | None, str]:
    """The space the sweep logged with its parent run, else the file its spec names; or why neither."""
    text = read_artifact_text(sweep.client(), sweep.parent_run_id, SPACE_ARTIFACT)
    if text is not None:  # the resolved space (includes merged), so a temporary copy loads the same
        with tempfile.TemporaryDirectory(prefix="mersweep-space-") as tmp:
            file = Path(tmp) / SPACE_ARTIFACT
            file.write_text(text)
            return _load_space(file, f"the parent run's {SPACE_ARTIFACT}")
    path = _spec_space_path(sweep.spec)
    if path is None:
        return None, "This sweep searched no parameters (no search space)."
    if not Path(path).is_file():
        return None, f"The search space is not logged with the parent run and {path} no longer exists."
    return _load_space(Path(path), path)


def _load_space(file: Path, where: str) -> tuple[SearchSpace | None, str]:
    try:
        return load_space(file), ""
    except UserInputError as err:  # e.g. a config field renamed since the sweep ran: report the rest
        log.warning("search space of %s unreadable: %s", where, err)
        return None, f"The search space ({where}) no longer validates: {err}"


def _spec_space_path(spec: Mapping[str, Any]) -> str | None:
    ablation = spec.get("ablation")
    retune = ablation.get("retune") if isinstance(ablation, Mapping) else None
    if isinstance(retune, Mapping) and retune.get("num_samples"):  # a re-tuning space is searched only then
        return retune.get("search_space")
    return spec.get("search_space")


def pseudo_counts(summary: Mapping[str, Any]) -> PseudoCounts | None:
    """Counts per round and class from a trial.json summary (None if it has no self-training rounds)."""
    classes = tuple(str(c) for c in summary.get("class_names") or ())
    by_round: dict[int, list[float]] = {}
    for fold in summary.get("pseudo") or ():
        for report in fold.get("rounds") or ():
            row = by_round.setdefault(int(report["round"]), [0.0] * len(classes))
            for k, name in enumerate(classes):
                row[k] += float(report.get(f"count/{name}", 0.0))
    if not classes or not by_round:
        return None
    rounds = tuple(sorted(by_round))
    return PseudoCounts(classes, rounds, tuple(tuple(by_round[r]) for r in rounds))


def _pseudo_of_best(sweep: SweepRuns) -> dict[str, PseudoCounts]:
    out: dict[str, PseudoCounts] = {}
    for trial in sweep.ranked()[: 3 * PSEUDO_TRIALS]:  # bounded: a sweep without self-training has none
        summary = trial_summary(sweep, trial.run_id)
        counts = pseudo_counts(summary) if summary else None
        if counts is not None:
            out[trial.run_id] = counts
        if len(out) == PSEUDO_TRIALS:
            break
    return out


def _ablation(sweep: SweepRuns, seed: int) -> tuple[AblationTable | None, str]:
    if sweep.kind != "ablation":
        return None, ""
    from analysis.compare import ablation_table

    try:
        return ablation_table(sweep, seed=seed), ""
    except (UserInputError, ValueError) as err:  # e.g. no finished eval run yet: the rest still reports
        return None, f"No ablation table: {err}"


def search_seed(sweep: SweepRuns) -> int:
    """The sweep's `search.seed` (the report's seed unless one is given), else 0."""
    search = sweep.spec.get("search")
    seed = search.get("seed") if isinstance(search, Mapping) else None
    return seed if isinstance(seed, int) else 0

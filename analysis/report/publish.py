"""What a sweep's parent run in MLflow shows: the report, the table of trials, an ablation's comparison.

The sweep writes it at its end (`publish_sweep_end`) and `python -m analysis report` refreshes it
(`publish_to_parent`). Everything goes through the sweep tracker's outbox, so a tracking server
that is away holds the uploads back (and says so) instead of losing them or failing the sweep.
On the parent run:
- `report/report.html` and its PNGs (MLflow's UI shows HTML and images on the artifacts page);
- `trials.json` (every trial: status, arm, metric, params; a table the UI renders) and `trials.csv`;
- for an ablation `ablation.json` / `ablation.csv`, `compare`'s table with every column it has, and
  each variant's numbers as metrics (`variant/<name>/<column>`) for the run table and charts;
- a note (the run page's description) with the counts, the best trial and the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from analysis.report import report_pngs, write_report
from analysis.report.collect import ReportData, collect, search_seed
from analysis.report.sections import sampled
from analysis.report.tables import (
    ablation_rows,
    table_csv,
    table_json,
    trial_rows,
    variant_metrics,
    varying_params,
)
from analysis.runs import SweepRuns, load_sweep_runs
from sweeps.tracking.names import (
    ABLATION_CSV,
    ABLATION_TABLE,
    NOTE_TAG,
    REPORT_DIR,
    REPORT_PAGE,
    REPORT_TAG,
    TRIALS_CSV,
    TRIALS_TABLE,
)
from sweeps.tracking.uri import redact, ui_link

if TYPE_CHECKING:
    from sweeps.tracking.tracker import SweepTracker


@dataclass(frozen=True)
class Sent:
    """Whether everything reached the parent run; if not, a sentence saying what did not."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


def publish(data: ReportData, report: Path, tracker: SweepTracker) -> None:
    """Queue the report (written at `report`), the tables, the variant metrics and the note on the
    parent run of `tracker`; `tracker.flush()` sends them."""
    sweep = data.sweep
    params = [p.name for p in sampled(data)] if data.space is not None else varying_params(sweep)
    trials = trial_rows(sweep, params)
    tables = {TRIALS_TABLE: table_json(trials)}
    metrics: dict[str, float] = {}
    if data.ablation is not None and data.ablation.rows:
        rows = ablation_rows(data.ablation)
        tables[ABLATION_TABLE] = table_json(rows)
        tracker.log_parent_artifact_text(table_csv(rows), ABLATION_CSV, block=False)
        metrics = variant_metrics(rows)
    tracker.log_parent_tables(tables)
    tracker.log_parent_artifact_text(table_csv(trials), TRIALS_CSV, block=False)
    tracker.log_parent_files([report, *report_pngs(report.parent)], REPORT_DIR)
    tags = {REPORT_TAG: f"runs:/{sweep.parent_run_id}/{REPORT_DIR}/{REPORT_PAGE}", NOTE_TAG: parent_note(data)}
    tracker.log_parent_values(metrics=metrics, tags=tags)


def parent_note(data: ReportData) -> str:
    """The parent run's description (Markdown): counts, the best trial, where the report and tables are."""
    sweep = data.sweep
    counts: dict[str, int] = {}
    for t in sweep.trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none yet"
    lines = [f"**Sweep `{sweep.sweep}`** ({sweep.kind}): {len(sweep.trials)} trials ({tally})."]
    ranked = sweep.ranked()
    if ranked:
        best = ranked[0]
        run = ui_link("", sweep.experiment_id, best.run_id)
        value = best.metrics[sweep.metric]
        lines.append(f"Best {sweep.metric} = {value:.4f}: trial {best.trial_id}, [run {best.run_id}]({run}).")
    page = ui_link("", sweep.experiment_id, sweep.parent_run_id, f"{REPORT_DIR}/{REPORT_PAGE}")
    tables = f"`{TRIALS_TABLE}` (one row per trial)" + (f", `{ABLATION_TABLE}`" if data.ablation else "")
    lines.append(f"Report: [{REPORT_DIR}/{REPORT_PAGE}]({page}); tables: {tables}.")
    if data.ablation is not None and data.ablation.rows:
        from analysis.compare import to_markdown

        lines += ["", to_markdown(data.ablation)]
    elif data.ablation_note:
        lines.append(data.ablation_note)
    return "\n".join(lines)[:5000]


def publish_to_parent(sweep: SweepRuns, out: Path, *, top_k: int = 5, seed: int = 0) -> tuple[Path, Sent]:
    """Write the report into `out` and refresh the sweep's parent run with it (`analysis report`)."""
    from sweeps.tracking.tracker import SweepTracker

    data = collect(sweep, top_k=top_k, seed=seed)
    path = write_report(data, out, seed=seed)
    tracker = SweepTracker.attach(sweep.tracking_uri, sweep.experiment, sweep.parent_run_id)
    publish(data, path, tracker)
    tracker.flush()
    left = tracker.backlog()
    if left:
        where = redact(sweep.tracking_uri)
        return path, Sent(False, f"{left} uploads to the sweep's parent run did not reach MLflow at {where}")
    return path, Sent(True)


def publish_sweep_end(tracker: SweepTracker, out: Path, *, top_k: int = 5) -> Path:
    """At a sweep's end: read the sweep back from MLflow (everything it logged must have gone out:
    `tracker.flush()` first), write its report into `out` and queue it all on the parent run."""
    sweep = load_sweep_runs(tracker.uri, parent_run_id=tracker.parent_id)
    seed = search_seed(sweep)
    data = collect(sweep, top_k=top_k, seed=seed)
    path = write_report(data, out, seed=seed)
    publish(data, path, tracker)
    return path

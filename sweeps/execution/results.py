"""After the Tuner: pick the best finished trial, print the top table, write best_config.yaml.

In fused mode a row is a member of a population (trial id `<ray trial id>-m<i>`), not a Ray trial.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mer_core.configs import ExperimentConfig, build_config, load_config, save_config
from mer_core.train.effective import pin_threads_and_folds
from sweeps.execution.prepare import PreparedSweep
from sweeps.fused.members import member_outcome, member_prefix, member_result, member_trial_id, members_of
from sweeps.tracking.names import CONFIG_ARTIFACT
from sweeps.trainable.report import FINAL_KEY, trial_outcome
from sweeps.trainable.trial import trial_overrides


@dataclass
class TrialRow:
    trial_id: str
    outcome: str
    value: float | None
    params: dict[str, Any]
    iterations: int
    reported: float | None = None  # the spec's report_metric (held-out test score with a test split)
    checkpoint: Any = None  # the trial's ray.tune.Checkpoint: its artifacts, the config it ran with
    prefix: str = ""  # a fused member's folder in the checkpoint (`m<i>/`)


@dataclass
class SweepOutcome:
    rows: list[TrialRow] = field(default_factory=list)
    best_trial: str | None = None
    best_value: float | None = None
    best_config_path: str | None = None
    interrupted: bool = False

    def count(self, outcome: str) -> int:
        return sum(r.outcome == outcome for r in self.rows)


def summarize(
    grid, prepared: PreparedSweep, *, stopped: bool = False, cut: Collection[str] = (), complete: bool = True
) -> SweepOutcome:
    """Rows for every trial, the best finished one, and its complete config written to disk.

    `stopped`: Ctrl-C ended the run (`sweeps.execution.interrupt`), whatever the trial counts say.
    `cut`: trials (fused: members) still running when the sweep stopped (Ctrl-C, time budget):
    "interrupted", not "pruned", although like pruned ones they never sent a final report.
    `complete`: the searcher had nothing left to hand out; an adaptive ablation that stops adding
    seeds early ran fewer trials than its maximum without being interrupted.
    """
    spec = prepared.spec
    rows = [row for result in grid for row in _rows(result, spec.metric, spec.report_metric or spec.metric)]
    for row in rows:
        if row.trial_id in cut and row.outcome == "pruned":
            row.outcome = "interrupted"
    done = [r for r in rows if r.outcome == "ok" and r.value is not None]
    # Stopped early: fewer trials than asked for, or some never ended (Ctrl-C during the last ones).
    unfinished = len(grid) - grid.num_terminated - grid.num_errors + _cut_populations(grid)
    adaptive = prepared.plan is not None and prepared.plan.adaptive
    short = not complete if adaptive else len(rows) < prepared.total_trials
    out = SweepOutcome(rows=rows, interrupted=stopped or short or unfinished > 0)
    if done:
        best = max(done, key=lambda r: r.value if spec.mode == "max" else -r.value)  # type: ignore[operator]
        cfg = _config_of(best, prepared)
        path = prepared.folder / "best_config.yaml"
        held_out = (
            ""
            if best.reported is None or spec.report_metric == spec.metric
            else (f", {spec.report_metric} = {best.reported:.4f}")
        )
        header = (
            f"Best trial of sweep '{spec.name}': trial {best.trial_id}, {spec.metric} = {best.value:.4f}{held_out}\n"
            f"Reproduce: python -m mer_core.train {path}"
        )
        save_config(cfg, path, header=header)
        out.best_trial, out.best_value, out.best_config_path = best.trial_id, best.value, str(path)
    return out


def _rows(result, metric: str, reported: str) -> list[TrialRow]:
    """The sweep's trials in one Ray result: itself, or each member of a fused population."""
    last = result.metrics or {}
    errored = result.error is not None
    trial_id = str(last.get("trial_id", result.path.rsplit("/", 1)[-1] if result.path else "?"))
    members = members_of(result.config)
    if members is None:
        outcome = trial_outcome(last, errored=errored)
        iterations = int(last.get("training_iteration", 0))
        value, report = _float(last.get(metric)), _float(last.get(reported))
        return [TrialRow(trial_id, outcome, value, dict(result.config or {}), iterations, report, result.checkpoint)]
    rows = []
    for i, params in enumerate(members):
        values = member_result(last, i)
        outcome = member_outcome(last, i, errored=errored)
        iterations = int(values.get("iteration", 0))
        value, report = _float(values.get(metric)), _float(values.get(reported))
        member = member_trial_id(trial_id, i)
        rows.append(TrialRow(member, outcome, value, params, iterations, report, result.checkpoint, member_prefix(i)))
    return rows


def _config_of(row: TrialRow, prepared: PreparedSweep) -> ExperimentConfig:
    """The config a trial ran with: its logged `config.yaml` (the effective one: threads, device and
    fold seed as the worker found them), else rebuilt here with the threads and fold seed it was given."""
    if row.checkpoint is not None:
        with row.checkpoint.as_directory() as folder:
            path = Path(folder) / row.prefix / CONFIG_ARTIFACT
            if path.is_file():
                return load_config(path)
    cfg = build_config(prepared.settings.base, trial_overrides(row.params, prepared.settings))
    return pin_threads_and_folds(cfg, threads=prepared.settings.threads)


def _cut_populations(grid) -> int:
    """Fused populations that ended without their final report and without an error.

    Tune stops no population (fused mode runs no Tune scheduler), so such a population was cut
    by Ctrl-C or the time budget, although Ray lists it as terminated; `--resume` reruns it.
    """
    return sum(
        1 for r in grid if members_of(r.config) is not None and r.error is None and not (r.metrics or {}).get(FINAL_KEY)
    )


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def format_table(
    outcome: SweepOutcome, *, metric: str, mode: str, top: int = 5, report_metric: str | None = None
) -> str:
    """The final summary: counts, then the top trials (ranked by `metric`) with their held-out
    `report_metric` score when it differs, and their sampled parameters."""
    ranked = sorted(
        (r for r in outcome.rows if r.value is not None and r.outcome == "ok"),
        key=lambda r: r.value if mode == "min" else -r.value,  # type: ignore[operator]
    )[:top]
    counted = ("ok", "pruned", "interrupted")
    cut = f"{outcome.count('interrupted')} interrupted, " if outcome.count("interrupted") else ""
    head = (
        f"{len(outcome.rows)} trials: {outcome.count('ok')} finished, {outcome.count('pruned')} pruned, {cut}"
        f"{len(outcome.rows) - sum(outcome.count(c) for c in counted)} failed"
    )
    lines = [head]
    if not ranked:
        return "\n".join([*lines, "no trial finished"])
    keys = sorted({k for r in ranked for k in r.params})
    short = [k.rsplit(".", 1)[-1][:14] for k in keys]
    held_out = report_metric is not None and report_metric != metric
    extra = [f"{report_metric:>17}"] if held_out else []
    lines.append("  ".join([f"{'trial':<12}", f"{metric:>16}", *extra, f"{'epochs':>6}", *(f"{s:>14}" for s in short)]))
    for r in ranked:
        cells = [f"{r.trial_id:<12}", f"{r.value:>16.4f}"]
        if held_out:
            cells.append(f"{r.reported:>17.4f}" if r.reported is not None else f"{'-':>17}")
        cells.append(f"{r.iterations:>6}")
        cells += [f"{_fmt(r.params.get(k)):>14}" for k in keys]
        lines.append("  ".join(cells))
    if outcome.best_config_path:
        lines.append(f"best config: {outcome.best_config_path}")
    if held_out:
        lines.append(
            f"ranked by {metric} (validation rows); {report_metric} is the held-out score, selected on by nothing"
        )
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)[:14]

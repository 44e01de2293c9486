"""The report's sections, built from `ReportData`: each writes its PNGs and says what to show."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.compare import footer, row_cells, table_header
from analysis.report.boundary import BoundaryHit, boundary_hits
from analysis.report.collect import ReportData, leading_trials
from analysis.report.figures import file_stem, save_png
from analysis.report.importance import MAX_TRIALS, active_params, fanova_importance
from analysis.report.plots_params import Point, importance_chart, parallel_coordinates, param_scatter
from analysis.report.plots_runs import ablation_chart, learning_curves, line_color_name, pseudo_label_chart
from analysis.runs import TrialRun
from sweeps.space.params import Param


@dataclass(frozen=True)
class Link:
    """A table cell that links to a page (a run in MLflow's UI)."""

    text: str
    href: str


Cell = str | Link


@dataclass(frozen=True)
class Section:
    """One part of the report: text, warnings, a table and images (PNG files next to the report)."""

    title: str
    anchor: str
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    table: tuple[tuple[Cell, ...], ...] = ()  # header row first
    images: tuple[tuple[Path, str], ...] = field(default_factory=tuple)  # (png, alt text)


def build_sections(data: ReportData, out: Path, *, seed: int) -> list[Section]:
    """Every section of the report, in order; PNGs are written into `out`."""
    ablation = data.sweep.kind == "ablation"
    sections = [ablation_section(data, out)] if ablation else []
    if data.space is not None or not ablation:  # an ablation without re-tuning searched nothing: no empty sections
        sections += [
            parameters_section(data, out),
            importance_section(data, out, seed=seed),
            parallel_section(data, out),
        ]
    sections += [curves_section(data, out), pseudo_section(data, out)]
    return sections


def ablation_section(data: ReportData, out: Path) -> Section:
    """Bar chart (mean and CI per variant, paired difference to the reference) and the table.

    The table is `python -m analysis compare`'s own (every column it has), not a copy of it.
    """
    title = "Ablation: variants vs the reference"
    table = data.ablation
    if table is None or not table.rows:
        return Section(title, "ablation", notes=(data.ablation_note or "No ablation table: no variant finished.",))
    seeds = max((r.n_seeds for r in table.rows), default=0)
    what = f"{table.metric} of {len(table.rows)} variants over {seeds} paired seeds (eval runs; mean and 95% CI)"
    fig = ablation_chart(table.rows, metric=table.metric, reference=table.reference, title=what)
    png = save_png(fig, out / "ablation.png")
    rows = [tuple(table_header(table)), *(tuple(row_cells(table, r)) for r in table.rows)]
    note = footer(table)
    if table.variance is not None:
        note += " " + " ".join(table.variance.to_text(table.metric).split())
    return Section(title, "ablation", notes=(note,), table=tuple(rows), images=((png, "ablation bar chart"),))


def parameters_section(data: ReportData, out: Path) -> Section:
    """Metric vs each sampled param, with boundary hits of the best trial flagged."""
    title = "Metric vs each parameter"
    if data.space is None:
        return Section(title, "params", notes=(data.space_note,))
    values = {t.run_id: trial_params(data, t) for t in data.searched}
    finished = [t for t in data.searched if t.status == "ok" and values.get(t.run_id) is not None]
    best = next(iter(leading_trials(data.sweep, finished, 1)), None)
    hits = {h.param: h for h in boundary_hits(data.space, values[best.run_id])} if best else {}
    images = []
    for p in sampled(data):
        points = _points(data, p, values, best)
        if points:
            fig = param_scatter(p, points, metric=data.sweep.metric, hit=hits.get(p.name))
            images.append((save_png(fig, out / f"param_{file_stem(p.name)}.png"), f"{data.sweep.metric} vs {p.name}"))
    notes = [
        "Finished trials are solid, trials stopped by the scheduler hollow (their last value); the star is the best."
    ]
    if best is None:
        notes.append("No trial finished, so no best value to check against the range edges.")
    return Section(title, "params", notes=tuple(notes), warnings=_hit_lines(hits.values()), images=tuple(images))


def importance_section(data: ReportData, out: Path, *, seed: int) -> Section:
    title = "Parameter importance (fANOVA)"
    if data.space is None:
        return Section(title, "importance", notes=(data.space_note,))
    trials = [(_param_strings(data, t), data.value(t)) for t in data.searched if t.status == "ok"]
    result = fanova_importance(data.space, trials, mode=data.sweep.mode, seed=seed)
    if result.reason:
        return Section(title, "importance", notes=(result.reason,))
    png = save_png(importance_chart(result), out / "importance.png")
    sample = f" (of a seeded sample of {MAX_TRIALS} of the {len(trials)})" if len(trials) > MAX_TRIALS else ""
    notes = [f"Optuna's fANOVA (seed {seed}) on a study rebuilt from {result.n_trials} finished trials{sample}."]
    unranked = [p.name for p in sampled(data) if p.name not in result.values]
    if unranked:
        notes.append(f"Not ranked (not used by every trial, e.g. conditional): {', '.join(unranked)}.")
    return Section(title, "importance", notes=tuple(notes), images=((png, "parameter importance"),))


def parallel_section(data: ReportData, out: Path) -> Section:
    title = "Parallel coordinates of the top trials"
    params = sampled(data)
    if data.space is None or not params:
        return Section(title, "parallel", notes=(data.space_note or "No sampled parameters.",))
    rows = [(v, data.value(t), t.status == "ok") for t in data.leaders if (v := trial_params(data, t)) is not None]
    rows = [r for r in rows if math.isfinite(r[1])]
    if not rows:
        return Section(title, "parallel", notes=("No trial reported the metric.",))
    fig = parallel_coordinates(params, rows, metric=data.sweep.metric, mode=data.sweep.mode)
    png = save_png(fig, out / "parallel.png")
    note = "Each axis spans the searched range (log params in log scale); a gap is a param the trial did not use."
    return Section(title, "parallel", notes=(note,), images=((png, "parallel coordinates"),))


def curves_section(data: ReportData, out: Path) -> Section:
    """The metric per epoch of the top trials, one panel per fold, and a table naming each line's run."""
    title = "Learning curves of the top trials"
    shown = [t for t in data.leaders if data.histories.get(t.run_id)]
    if not shown:
        return Section(title, "curves", notes=(f"No trial logged a history of {data.sweep.metric}.",))
    arms = data.sweep.kind == "ablation"
    curves = [
        (
            f"#{i + 1} {t.trial_id}" + (f" {t.variant} seed {t.seed}" if arms else ""),
            data.histories[t.run_id],
            t.status == "ok",
        )
        for i, t in enumerate(shown)
    ]
    folds = len({p.fold for t in shown for p in data.histories[t.run_id]})
    what = (
        f"{data.sweep.metric} per epoch, {'one panel per fold' if folds > 1 else 'one fold'}: "
        f"top {len(shown)} of {len(data.sweep.trials)} trials ({_runs_note(data)})"
    )
    png = save_png(learning_curves(curves, metric=data.sweep.metric, title=what), out / "learning_curves.png")
    arm_columns = ("variant", "seed") if arms else ()
    header: tuple[Cell, ...] = ("line", "colour", "trial", *arm_columns, "run", data.sweep.metric, "status")
    rows: list[tuple[Cell, ...]] = [header]
    for i, t in enumerate(shown):
        href = data.link(t.run_id)
        run: Cell = Link(t.run_id, href) if href else t.run_id
        arm = (t.variant or "", str(t.seed)) if arms else ()
        rows.append((f"#{i + 1}", line_color_name(i), t.trial_id, *arm, run, _f(data.value(t)), t.status))
    notes = [
        "Each fold trains afresh: its epochs have their own panel (fine-tuning, then each self-training round; "
        "dotted lines mark where the best trial's rounds start). Dashed: stopped early by the scheduler."
    ]
    if data.link() is None:
        notes.append("Run ids are those of the MLflow store the sweep logged to (a local store: no links).")
    return Section(title, "curves", notes=tuple(notes), table=tuple(rows), images=((png, "learning curves"),))


def _runs_note(data: ReportData) -> str:
    """How many finished trials and seeds the sweep holds, for a figure's title."""
    finished = len(data.sweep.finished())
    seeds = {t.seed for t in data.sweep.trials if t.seed is not None}
    per = "one seed each" if data.sweep.kind != "ablation" else f"{len(seeds)} seeds per variant"
    return f"{finished} finished, {per}"


def pseudo_section(data: ReportData, out: Path) -> Section:
    title = "Pseudo-labels per class and self-training round"
    by_id = {t.run_id: t for t in data.sweep.trials}
    panels = [(_label(by_id[rid], data), counts) for rid, counts in data.pseudo.items()]
    if not panels:
        return Section(title, "pseudo", notes=("No finished trial ran a self-training round.",))
    notes = ("Counts are summed over each trial's folds.",)
    if all(c.total == 0 for _, c in panels):
        notes += ("The thresholds admitted no pseudo-label in any round of these trials.",)
    what = f"Pseudo-labels chosen per class and self-training round: the best {len(panels)} finished trials"
    png = save_png(pseudo_label_chart(panels, title=what), out / "pseudo_labels.png")
    return Section(title, "pseudo", notes=notes, images=((png, "pseudo-label counts"),))


def sampled(data: ReportData) -> list[Param]:
    """The params the sweep sampled (fixed values are not searched)."""
    return [p for p in data.space.params if p.kind != "fixed"] if data.space else []


def trial_params(data: ReportData, trial: TrialRun) -> dict[str, Any] | None:
    """The sampled params a trial used, in the space's types (None if outside the space)."""
    return active_params(data.space, _param_strings(data, trial)) if data.space else None


def _param_strings(data: ReportData, trial: TrialRun) -> dict[str, Any]:
    return {p.name: trial.param_value(p.name) for p in data.space.params} if data.space else {}


def _points(data: ReportData, p: Param, values: Mapping[str, Any], best: TrialRun | None) -> list[Point]:
    out = []
    for t in data.searched:
        used = values.get(t.run_id)
        if used is None or p.name not in used or not math.isfinite(data.value(t)) or t.status not in ("ok", "pruned"):
            continue
        is_best = best is not None and t.run_id == best.run_id
        out.append(Point(used[p.name], data.value(t), t.status == "ok", is_best))
    return out


def _hit_lines(hits: Iterable[BoundaryHit]) -> tuple[str, ...]:
    return tuple(h.message() for h in sorted(hits, key=lambda h: h.param))


def _label(trial: TrialRun, data: ReportData) -> str:
    state = "" if trial.status == "ok" else f", {trial.status}"
    arm = f" {trial.variant} seed {trial.seed}" if trial.variant is not None else ""
    return f"{trial.trial_id}{arm} ({_f(data.value(trial))}{state})"


def _f(x: float, *, digits: int = 4, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"

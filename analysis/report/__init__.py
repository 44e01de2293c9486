"""`python -m analysis report`: a self-contained HTML report (and its PNGs) of a search or an ablation.

The report is written to `--out` (default `reports/<sweep>/`): `report.html` embeds every PNG as a
data URI, so the one file can be mailed or attached, and the same PNGs lie next to it for slides.
The sweep writes one at its end (`runs/<sweep>/report/`); both land on the sweep's parent run in
MLflow with its tables (`publish`), so `analysis report` also refreshes what the MLflow UI shows.
Modules: `collect` reads MLflow once, `boundary`/`importance` analyse, `plots_*` draw (Agg),
`sections` decides what each part shows, `tables` holds the tables, `html` writes the page,
`publish` puts it all on the parent run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from analysis.sources import add_source_args, out_folder, sweep_from_args
from mer_core.errors import ConfigError
from sweeps.tracking.names import REPORT_PAGE

if TYPE_CHECKING:
    from analysis.report.collect import ReportData
    from analysis.report.sections import Cell
    from analysis.runs import SweepRuns

REPORT_FILE = REPORT_PAGE
OWN_PNGS = ("param_*.png", "ablation.png", "importance.png", "parallel.png", "learning_curves.png", "pseudo_labels.png")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_args(parser)
    parser.add_argument("--out", default=None, help="output folder (default: reports/<sweep>/)")
    parser.add_argument("--top-k", type=int, default=5, help="trials shown in the learning curves (default 5)")
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of fANOVA and the bootstrap (default: search.seed)"
    )
    parser.add_argument(
        "--no-upload",
        action="store_true",
        help="only write the files; leave the sweep's parent run in MLflow as it is (default: refresh it)",
    )


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise ConfigError("--top-k", "an integer >= 1", args.top_k)
    from analysis.report.collect import search_seed

    out_folder(args.out, Path("reports"))  # a file named by --out: exit 2 before reading the runs
    sweep = sweep_from_args(args)
    out = out_folder(args.out, Path("reports") / sweep.sweep)
    seed = args.seed if args.seed is not None else search_seed(sweep)
    if args.no_upload:
        print(build_report(sweep, out, top_k=args.top_k, seed=seed))
        return 0
    from analysis.report.publish import publish_to_parent

    path, sent = publish_to_parent(sweep, out, top_k=args.top_k, seed=seed)
    print(path)
    if not sent:
        print(f"warning: {sent.reason}", file=sys.stderr)
    return 0


def build_report(sweep: SweepRuns, out: Path, *, top_k: int = 5, seed: int = 0) -> Path:
    """Write `out/report.html` and its PNGs; returns the report's path."""
    from analysis.report.collect import collect

    return write_report(collect(sweep, top_k=top_k, seed=seed), out, seed=seed)


def write_report(data: ReportData, out: Path, *, seed: int = 0) -> Path:
    """Write the report of collected data into `out`; returns the report's path."""
    from analysis.report.html import render_page
    from analysis.report.sections import build_sections

    out.mkdir(parents=True, exist_ok=True)
    for pattern in OWN_PNGS:  # a previous report's plots (e.g. of a param since dropped) must not linger
        for stale in out.glob(pattern):
            stale.unlink()
    sections = build_sections(data, out, seed=seed)
    page = render_page(f"mersweep report: {data.sweep.sweep}", header_rows(data), sections)
    path = out / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path


def report_pngs(out: Path) -> list[Path]:
    """The PNGs a report wrote into `out` (its own names only: `--out` may be a shared folder)."""
    return sorted({png for pattern in OWN_PNGS for png in out.glob(pattern)})


def header_rows(data: ReportData) -> list[tuple[str, Cell]]:
    """Sweep identity, metric, trial counts by status and the best trial (linked to MLflow on a server)."""
    from analysis.report.sections import Link
    from sweeps.tracking.uri import redact

    sweep = data.sweep
    counts: dict[str, int] = {}
    for t in sweep.trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    ranked = sweep.ranked()
    top = ranked[0] if ranked else None
    best: Cell = f"{top.metrics[sweep.metric]:.4f} (trial {top.trial_id}, run {top.run_id})" if top else "none finished"
    if top and data.link(top.run_id):
        best = Link(str(best), data.link(top.run_id))  # type: ignore[arg-type]
    experiment = data.link()
    parent = data.link(sweep.parent_run_id)
    return [
        ("sweep", f"{sweep.sweep} ({sweep.kind})"),
        ("experiment", Link(sweep.experiment, experiment) if experiment else sweep.experiment),
        ("parent run", Link(sweep.parent_run_id, parent) if parent else sweep.parent_run_id),
        ("tracking", redact(sweep.tracking_uri)),
        ("metric", f"{sweep.metric} ({sweep.mode})"),
        ("trials", f"{len(sweep.trials)}: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none")),
        ("best", best),
    ]

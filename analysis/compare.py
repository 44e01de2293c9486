"""`python -m analysis compare`: the ablation table of a sweep read back from MLflow.

Per variant: mean of the metric over its seeds with a bootstrap CI; the paired difference to the
reference variant (same seeds, same folds) with its CI; a paired test (t or Wilcoxon) with Holm's
correction across variants; and a verdict that says "no detectable difference" unless the CI of
the difference excludes 0 and the corrected test agrees. Written as a terminal table, Markdown
and CSV.

The default test is the paired t-test: with the 5 seeds an ablation typically has, Wilcoxon's
smallest possible two-sided p-value is 2/2^5 = 0.0625, so it could never flag a difference.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from analysis.runs import SweepRuns
from analysis.sources import add_source_args, out_folder, sweep_from_args
from analysis.stats import Comparison, compare_variants
from mer_core.errors import ConfigError, UserInputError
from sweeps.tracking.names import EVAL_PHASE

COLUMNS = ("variant", "n_seeds", "mean", "ci_low", "ci_high", "n", "diff_mean", "diff_ci_low", "diff_ci_high",
           "p_value", "p_adj", "verdict", "failed")  # fmt: skip


@dataclass(frozen=True)
class AblationTable:
    """The comparison rows plus what a reader needs to interpret them."""

    sweep: str
    metric: str
    reference: str
    test: str
    confidence: float
    rows: tuple[Comparison, ...]
    failed: dict[str, int]  # variant -> eval trials that did not finish (left out of the statistics)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_args(parser)
    parser.add_argument(
        "--metric",
        action="append",
        default=None,
        help="metric to compare (default: the sweep's report_metric, test/<metric> with a held-out test split); "
        "repeat for one table per metric",
    )
    parser.add_argument("--reference", default=None, help="reference variant (default: the sweep's)")
    parser.add_argument("--test", default="t", choices=["t", "wilcoxon"], help="paired test (default: t)")
    parser.add_argument("--confidence", type=float, default=0.95, help="CI level (default 0.95)")
    parser.add_argument("--n-boot", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--out", default=None, help="folder for compare.md and compare.csv (default: reports/<sweep>/)")


def run(args: argparse.Namespace) -> int:
    out_folder(args.out, Path("reports"))  # a file named by --out: exit 2 before reading the runs
    sweep = sweep_from_args(args)
    print(sweep.describe(), file=sys.stderr)
    options = {"reference": args.reference, "test": args.test, "confidence": args.confidence}
    options.update(n_boot=args.n_boot, seed=args.seed)
    tables = [ablation_table(sweep, metric=m, **options) for m in (args.metric or [sweep.report_metric])]
    out = out_folder(args.out, Path("reports") / sweep.sweep)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text("\n".join(to_markdown(t) for t in tables))
    (out / "compare.csv").write_text(to_csv(tables))
    print("\n\n".join(to_text(t) for t in tables))
    print(f"wrote {out / 'compare.md'} and {out / 'compare.csv'}", file=sys.stderr)
    return 0


def ablation_scores(sweep: SweepRuns, metric: str) -> tuple[dict[str, dict[int, float]], dict[str, int]]:
    """variant -> seed -> metric of the finished eval trials, and variant -> unfinished eval trials."""
    scores: dict[str, dict[int, float]] = {}
    failed: dict[str, int] = {}
    for trial in sweep.trials:
        if trial.variant is None or trial.phase != EVAL_PHASE:
            continue
        scores.setdefault(trial.variant, {})
        if trial.status == "ok" and metric in trial.metrics and trial.seed is not None:
            scores[trial.variant][trial.seed] = trial.metrics[metric]
        else:
            failed[trial.variant] = failed.get(trial.variant, 0) + 1
    return scores, failed


def ablation_table(
    sweep: SweepRuns,
    *,
    metric: str | None = None,
    reference: str | None = None,
    test: str = "t",
    confidence: float = 0.95,
    n_boot: int = 10_000,
    seed: int = 0,
) -> AblationTable:
    """The comparison of an ablation sweep's variants (UserInputError for a search sweep)."""
    if sweep.kind != "ablation":
        raise UserInputError(
            f"kind: compare needs an ablation sweep (kind: ablation); given: sweep {sweep.sweep} of kind {sweep.kind}"
        )
    metric = metric or sweep.report_metric
    scores, failed = ablation_scores(sweep, metric)
    ablation = sweep.spec.get("ablation") or {}
    reference = reference or str(ablation.get("reference", ""))
    if not any(scores.values()) and any(t.metrics for t in sweep.trials):
        known = sorted({k for t in sweep.trials for k in t.metrics if k.startswith(("val/", "test/"))})
        raise ConfigError("--metric", ", ".join(known), metric, "no finished eval trial reports it")
    if reference not in scores:
        raise ConfigError("--reference", ", ".join(scores) or "no variant has eval runs", reference, "not a variant")
    if not scores[reference]:
        raise UserInputError(f"--reference: variant {reference} has no finished eval trial with {metric}")
    order = [v for v in ablation.get("variants", {}) if v in scores] + [
        v for v in scores if v not in ablation.get("variants", {})
    ]
    scored = {v: scores[v] for v in order if scores[v]}
    rows = compare_variants(
        scored,
        reference=reference,
        test=test,
        confidence=confidence,
        n_boot=n_boot,
        seed=seed,
        higher_is_better=sweep.mode == "max",
    )
    for name in order:  # variants whose every seed failed still get a row: hiding them would flatter
        if not scores[name]:
            nan = math.nan
            rows.append(Comparison(name, 0, nan, nan, nan, nan, nan, nan, nan, nan, nan, "no finished seed", 0))
    return AblationTable(sweep.sweep, metric, reference, test, confidence, tuple(rows), failed)


def _cells(table: AblationTable, row: Comparison) -> list[str]:
    ref = row.variant == table.reference
    return [
        row.variant + (" (ref)" if ref else ""),
        f"{row.n_seeds}",
        _num(row.mean),
        f"[{_num(row.ci_low)}, {_num(row.ci_high)}]",
        "" if ref else _signed(row.diff_mean),
        "" if ref else f"[{_signed(row.diff_ci_low)}, {_signed(row.diff_ci_high)}]",
        "" if ref else _p(row.p_adj),
        row.verdict,
        str(table.failed.get(row.variant, 0)),
    ]


def _header(table: AblationTable) -> list[str]:
    level = f"{table.confidence:.0%}"
    return ["variant", "seeds", f"mean {table.metric}", f"{level} CI", "diff vs ref", f"{level} CI of diff",
            f"p ({table.test}, Holm)", "verdict", "failed"]  # fmt: skip


def _footer(table: AblationTable) -> str:
    return (
        f"Paired by seed against '{table.reference}'; CIs: percentile bootstrap over seeds; "
        f"p: paired {table.test}-test, Holm-corrected across {len(table.rows) - 1} variants; "
        "failed: eval trials that did not finish (left out)."
    )


def to_text(table: AblationTable) -> str:
    """A fixed-width table for the terminal."""
    rows = [_header(table), *(_cells(table, r) for r in table.rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([f"ablation {table.sweep}: {table.metric}", *lines, _footer(table)])


def to_markdown(table: AblationTable) -> str:
    """A GitHub-flavoured Markdown table with a caption."""
    head = _header(table)
    lines = [f"### Ablation `{table.sweep}`: {table.metric}", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join("---" for _ in head) + "|")
    lines += ["| " + " | ".join(_cells(table, r)) + " |" for r in table.rows]
    return "\n".join([*lines, "", _footer(table), ""])


def to_csv(tables: AblationTable | Sequence[AblationTable]) -> str:
    """Every number at full precision, one row per metric and variant."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=("metric", *COLUMNS))
    writer.writeheader()
    for table in [tables] if isinstance(tables, AblationTable) else tables:
        for row in table.rows:
            values = {**asdict(row), "metric": table.metric}
            writer.writerow({c: values.get(c, table.failed.get(row.variant, 0)) for c in ("metric", *COLUMNS)})
    return buf.getvalue()


def _num(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.4f}"


def _signed(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:+.4f}"


def _p(x: float) -> str:
    if math.isnan(x):
        return "-"
    return "<0.001" if x < 0.001 else f"{x:.3f}"

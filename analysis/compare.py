"""`python -m analysis compare`: the ablation table of a sweep read back from MLflow.

Per variant: mean of the metric over its seeds with a 95% t-interval; the paired difference to
the reference variant (same seeds, same folds) with its interval at the ablation's corrected
level; the paired t-test's p, corrected the same way; P(variant beats reference) with a bootstrap
interval; the minimum detectable difference at 80% power; the seeds needed to detect
`ablation.min_effect`; and the verdict (`sweeps.ablation.verdicts`): different, equivalent within
±min_effect, or undecided with about how many more seeds. The interval, the corrected p and the
verdict are one computation and cannot disagree. Written as a terminal table, Markdown and CSV;
when the reference ran a crossed init x split design (`ablation.variance_seeds`) the variance
sources follow (`analysis.variance`).
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
from analysis.variance import VarianceComponents, variance_components
from mer_core.configs.fields import from_dict
from mer_core.errors import ConfigError, UserInputError
from sweeps.ablation.plan import design_of
from sweeps.ablation.sequential import SequentialDesign
from sweeps.spec.schema import AblationConfig
from sweeps.tracking.names import CONFIG_SEED_PARAM, EVAL_PHASE, VARIANCE_PHASE

COLUMNS = ("variant", "n_seeds", "mean", "ci_low", "ci_high", "n", "diff_mean", "diff_ci_low", "diff_ci_high",
           "level", "p_value", "p_adj", "p_improve", "p_improve_low", "p_improve_high", "mde", "seeds_needed",
           "decision", "verdict", "failed")  # fmt: skip
SPLIT_SEED_PARAM = "data.fold_seed"  # the flattened config's fold seed (a trial's split)
OLD_SPLIT_SEED_PARAM = "data.seed"  # runs logged before data.fold_seed existed: their folds' seed


@dataclass(frozen=True)
class AblationTable:
    """The comparison rows plus what a reader needs to interpret them."""

    sweep: str
    metric: str
    reference: str
    design: SequentialDesign
    min_effect: float | None
    rows: tuple[Comparison, ...]
    failed: dict[str, int]  # variant -> eval trials that did not finish (left out of the statistics)
    variance: VarianceComponents | None = None  # the reference's crossed init x split seeds, if run


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
    parser.add_argument(
        "--min-effect", type=float, default=None, help="equivalence band ± (default: the sweep's ablation.min_effect)"
    )
    parser.add_argument("--n-boot", type=int, default=2_000, help="P(improvement) bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    parser.add_argument("--out", default=None, help="folder for compare.md and compare.csv (default: reports/<sweep>/)")


def run(args: argparse.Namespace) -> int:
    out_folder(args.out, Path("reports"))  # a file named by --out: exit 2 before reading the runs
    sweep = sweep_from_args(args)
    print(sweep.describe(), file=sys.stderr)
    options = {"reference": args.reference, "min_effect": args.min_effect, "n_boot": args.n_boot, "seed": args.seed}
    tables = [ablation_table(sweep, metric=m, **options) for m in (args.metric or [sweep.report_metric])]
    out = out_folder(args.out, Path("reports") / sweep.sweep)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text("\n".join(to_markdown(t) for t in tables))
    (out / "compare.csv").write_text(to_csv(tables))
    print("\n\n".join(to_text(t) for t in tables))
    for table in tables:
        if table.variance is not None:
            print("\n" + table.variance.to_text(table.metric))
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


def variance_cells(sweep: SweepRuns, metric: str) -> dict[tuple[int, int], float]:
    """(init seed, split seed) -> metric of the reference's finished crossed-design trials."""
    cells: dict[tuple[int, int], float] = {}
    for trial in sweep.trials:
        if trial.phase != VARIANCE_PHASE or trial.status != "ok" or metric not in trial.metrics:
            continue
        init, split = trial.param_value(CONFIG_SEED_PARAM), trial.param_value(SPLIT_SEED_PARAM)
        if split is None:
            split = trial.param_value(OLD_SPLIT_SEED_PARAM)
        if isinstance(init, int) and isinstance(split, int):
            cells[(init, split)] = trial.metrics[metric]
    return cells


def ablation_design(spec_ablation: object) -> tuple[SequentialDesign | None, float | None]:
    """The design and min_effect the sweep ran with, from its logged spec; (None, None) for a spec
    this version cannot read (the caller then judges one look at the seeds there are)."""
    try:
        ablation = from_dict(AblationConfig, spec_ablation if isinstance(spec_ablation, dict) else {}, "ablation")
    except ConfigError:
        return None, None
    return design_of(ablation), ablation.min_effect


def ablation_table(
    sweep: SweepRuns,
    *,
    metric: str | None = None,
    reference: str | None = None,
    min_effect: float | None = None,
    n_boot: int = 2_000,
    seed: int = 0,
) -> AblationTable:
    """The comparison of an ablation sweep's variants (UserInputError for a search sweep)."""
    if sweep.kind != "ablation":
        raise UserInputError(
            f"kind: compare needs an ablation sweep (kind: ablation); given: sweep {sweep.sweep} of kind {sweep.kind}"
        )
    if min_effect is not None and not min_effect > 0:
        raise ConfigError("--min-effect", "a number > 0", min_effect)
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
    design, spec_min_effect = ablation_design(ablation)
    if design is None:  # one look at the most seeds any variant paired
        most = max(len(scores[v].keys() & scores[reference].keys()) for v in order)
        design = SequentialDesign(looks=(max(1, most),), comparisons=max(1, len(order) - 1))
    min_effect = min_effect if min_effect is not None else spec_min_effect
    scored = {v: scores[v] for v in order if scores[v]}
    rows = compare_variants(
        scored,
        reference=reference,
        design=design,
        min_effect=min_effect,
        n_boot=n_boot,
        seed=seed,
        higher_is_better=sweep.mode == "max",
    )
    for name in order:  # variants whose every seed failed still get a row: hiding them would flatter
        if not scores[name]:
            nan = math.nan
            rows.append(Comparison(name, 0, nan, nan, nan, nan, nan, nan, nan, nan, "no finished seed", 0, "none"))
    variance = variance_components(variance_cells(sweep, metric))
    return AblationTable(sweep.sweep, metric, reference, design, min_effect, tuple(rows), failed, variance)


def row_cells(table: AblationTable, row: Comparison) -> list[str]:
    ref = row.variant == table.reference
    blank = ["", "", "", "", "", ""]
    name = row.variant + (" (ref)" if ref else "")
    own = [name, f"{row.n_seeds}", _num(row.mean), f"[{_num(row.ci_low)}, {_num(row.ci_high)}]"]
    tail = [row.verdict, str(table.failed.get(row.variant, 0))]
    if ref:
        return [*own, *blank, *tail]
    # Seeds to detect min_effect: news for an undecided variant only (the CSV keeps every number).
    needed = str(row.seeds_needed) if row.decision == "undecided" and row.seeds_needed is not None else "-"
    return [
        *own,
        _signed(row.diff_mean),
        f"[{_signed(row.diff_ci_low)}, {_signed(row.diff_ci_high)}]",
        _p(row.p_adj),
        f"{_num(row.p_improve, 2)} [{_num(row.p_improve_low, 2)}, {_num(row.p_improve_high, 2)}]",
        _num(row.mde),
        needed,
        *tail,
    ]


def table_header(table: AblationTable) -> list[str]:
    return ["variant", "seeds", f"mean {table.metric}", "95% CI", "diff vs ref", "CI of diff (corrected)",
            "p (corrected)", "P(better) [95%]", "MDE (80%)", "seeds needed", "verdict", "failed"]  # fmt: skip


def footer(table: AblationTable) -> str:
    d = table.design
    looks = ""
    if len(d.looks) > 1:
        looks = f"looks at {list(d.looks)} paired seeds with O'Brien-Fleming-type alpha spending, "
    band = f"equivalent: the interval inside ±{table.min_effect:g}; " if table.min_effect is not None else ""
    return (
        f"Paired by seed against '{table.reference}'. Mean: 95% t-interval over seeds. Difference: t-interval at "
        f"family-wise alpha {d.alpha:g} ({looks}Bonferroni across {d.comparisons} variants); p: paired t-test, "
        f"scaled by the same correction (< {d.alpha:g} exactly when the interval excludes 0 = different); {band}"
        "P(better): P(a seed of the variant beats one of the reference), paired bootstrap; MDE: smallest difference "
        "detected with 80% power at these seeds; seeds needed: to detect min_effect with 80% power; "
        "failed: eval trials that did not finish (left out)."
    )


def to_text(table: AblationTable) -> str:
    """A fixed-width table for the terminal."""
    rows = [table_header(table), *(row_cells(table, r) for r in table.rows)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([f"ablation {table.sweep}: {table.metric}", *lines, footer(table)])


def to_markdown(table: AblationTable) -> str:
    """A GitHub-flavoured Markdown table with a caption."""
    head = table_header(table)
    lines = [f"### Ablation `{table.sweep}`: {table.metric}", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join("---" for _ in head) + "|")
    lines += ["| " + " | ".join(row_cells(table, r)) + " |" for r in table.rows]
    return "\n".join([*lines, "", footer(table), ""])


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


def _num(x: float, digits: int = 4) -> str:
    return "-" if math.isnan(x) else "inf" if math.isinf(x) else f"{x:.{digits}f}"


def _signed(x: float) -> str:
    return "-" if math.isnan(x) else "inf" if math.isinf(x) else f"{x:+.4f}"


def _p(x: float) -> str:
    if math.isnan(x):
        return "-"
    return "<0.001" if x < 0.001 else f"{x:.3f}"

"""What `search_replay` reports: ERT ratios, where the epochs went, early-vs-final ranks, the held-out choice."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from benchmarks.common import BenchResult, Ratio, Row
from benchmarks.curves.loop import Trace
from benchmarks.curves.problems import TableProblem, spearman
from benchmarks.ert import ert_of

HELD_OUT_GOAL = 0.5  # the default's ERT ratio on every held-out real task (90% interval below 1)
MF_GOAL = 0.3  # and on MF-Hartmann6
RUNGS = (1, 2, 3, 6)  # epochs whose values are rank-correlated with the final one


def _seeds(traces: Sequence[Trace]) -> list[tuple[float, float]]:
    return [(t.hit_at, float(t.epochs)) for t in traces]


def ratios(traces: Mapping[str, Sequence[Trace]], baseline: str) -> dict[str, tuple[float, float, float]]:
    """arm -> (ERT ratio to `baseline`, 90% interval low, high)."""
    from benchmarks.ert import ratio, ratio_interval

    base = _seeds(traces[baseline])
    out = {}
    for arm, ts in traces.items():
        lo, hi = ratio_interval(_seeds(ts), base)
        out[arm] = (ratio(ert_of(_seeds(ts)), ert_of(base)), lo, hi)
    return out


def choose(table: Mapping[str, Mapping[str, tuple[float, float, float]]], tasks: Sequence[str], baseline: str) -> str:
    """The arm with the smallest worst ERT ratio over `tasks` (ties: the smaller mean)."""
    arms = [a for a in next(iter(table.values())) if a != baseline]

    def score(arm: str) -> tuple[float, float]:
        values = [table[t][arm][0] for t in tasks]
        values = [v if not math.isnan(v) else math.inf for v in values]
        return max(values), sum(values) / len(values)

    return min(arms, key=score)


def choices(
    real: Mapping[str, Any], traces: Mapping[str, Mapping[str, Sequence[Trace]]], *, baseline: str
) -> dict[str, str]:
    """Held-out task -> the arm chosen on the other real tasks, and "all" -> the arm chosen on all of them."""
    table = {name: ratios(traces[name], baseline) for name in real}
    tasks = list(real)
    out = {held: choose(table, [t for t in tasks if t != held] or [held], baseline) for held in tasks}
    out["all"] = choose(table, tasks, baseline)
    return out


def profile(traces: Sequence[Trace]) -> dict[str, float]:
    """Medians over seeds: trials started, epochs per trial, share of proposals that reach the target, share of
    those the scheduler cut before their end, share of epochs spent on trials it cut (a trial still running
    when the sweep ended counts as neither)."""

    def good_cut(t: Trace) -> float:
        good = [info for info in t.trials if info[3]]
        return sum(info[4] for info in good) / len(good) if good else 0.0

    return {
        "trials": statistics.median(len(t.trials) for t in traces),
        "epochs_per_trial": statistics.median(t.epochs / max(len(t.trials), 1) for t in traces),
        "good": statistics.median(sum(i[3] for i in t.trials) / max(len(t.trials), 1) for t in traces),
        "good_cut": statistics.median(good_cut(t) for t in traces),
        "cut_epochs": statistics.median(sum(i[1] for i in t.trials if i[4]) / max(t.epochs, 1) for t in traces),
    }


def early_vs_final(problem: TableProblem) -> dict[str, float]:
    """Over the whole table: Spearman of the val F1 at each rung with the final one; the share of target-reaching
    configurations in the bottom two thirds at that rung (what a reduction-3 cut there would tend to remove);
    Spearman of the final val F1 with the test F1 of the same kept epoch; the measured noise of val F1."""
    curves = problem.table.curves["val_f1"]  # (n, E)
    ok = np.isfinite(curves).all(axis=1)
    finals, good = problem.finals[ok], problem.good[ok]
    out: dict[str, float] = {}
    for r in RUNGS:
        if r > curves.shape[1]:
            continue
        early = curves[ok, r - 1]
        out[f"rho{r}"] = spearman(early, finals)
        cut_below = np.quantile(early, 2 / 3) if len(early) else math.nan
        out[f"cut{r}"] = float((early[good] < cut_below).mean()) if good.any() else math.nan
    out["rho_test"] = spearman(finals, problem.table.at_best("test_f1")[ok])
    bends = np.abs(np.diff(curves[ok], n=2, axis=1)).ravel()  # second differences: 6 sigma^2 of noise
    out["noise"] = float(1.4826 * np.median(bends) / math.sqrt(6.0)) if bends.size else math.nan
    return out


def _cell(table, traces, name: str, arm: str, baseline: str) -> str:
    """One cell of the ratio table: the baseline's own ERT, an arm's ratio, or '-' where the arm did not run."""
    if arm not in traces[name]:
        return "-"
    if arm == baseline:
        return f"ERT {ert_of(_seeds(traces[name][arm])):.0f}"
    return _fmt(table[name][arm])


def _fmt(r: tuple[float, float, float]) -> str:
    value, lo, hi = r
    return f"{value:.2f}x ({lo:.2f}..{hi:.2f})"


def result(
    built: Mapping[str, Any],
    traces: Mapping[str, Mapping[str, Sequence[Trace]]],
    *,
    seeds: int,
    minutes: float,
    smoke: bool,
) -> BenchResult:
    from benchmarks.bench_search_replay import ARMS, BASELINE, MF, budget_of

    real = [name for name, p in built.items() if isinstance(p, TableProblem)]
    arms = list(traces[real[0]])
    table = {name: ratios(traces[name], BASELINE) for name in built}
    n = {name: built[name].table.n for name in real}
    res = BenchResult(
        "search_replay",
        f"ERT ratios to random search on recorded MR-CCL curves ({', '.join(f'{t}: {n[t]} configs' for t in real)}) "
        f"and MF-Hartmann6, {seeds} seeds per arm",
    )
    # Leave one task out: choose on the others, report on the held-out one.
    loto = choices({t: built[t] for t in real}, traces, baseline=BASELINE)
    overall = loto.pop("all")
    for held, arm in loto.items():
        value, lo, hi = table[held][arm]
        res.ratios.append(
            Ratio(
                f"held_out_{held}",
                value,
                f"ERT of {arm} (chosen on the other real tasks) on {held} ÷ random's; 90% interval {lo:.2f}..{hi:.2f}",
                goal=f"<= {HELD_OUT_GOAL}x, interval below 1",
            )
        )
    value, lo, hi = table[MF][overall]
    res.ratios.append(
        Ratio(
            f"mf_{_key(overall)}",
            value,
            f"ERT of {overall} (chosen on all real tasks) on {MF} ÷ random's; 90% interval {lo:.2f}..{hi:.2f}",
            goal=f"<= {MF_GOAL}x",
        )
    )
    for name in built:
        for arm in traces[name]:
            res.rows.append(Row(f"{name}: {arm}: ERT", (ert_of(_seeds(traces[name][arm])),), "epochs"))
    res.notes = _notes(
        built,
        traces,
        table,
        loto,
        overall,
        real=real,
        arms=arms,
        seeds=seeds,
        minutes=minutes,
        smoke=smoke,
        budget_of=budget_of,
        mf=MF,
        baseline=BASELINE,
        arm_specs=ARMS,
    )
    return res


def _key(arm: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "_", arm.lower()).strip("_")


def _notes(
    built, traces, table, loto, overall, *, real, arms, seeds, minutes, smoke, budget_of, mf, baseline, arm_specs
) -> list[str]:
    names = list(built)
    out = [
        "Recorded configurations per task at this run: "
        + ", ".join(f"{t} {built[t].table.n}" for t in real)
        + f" (of 500 planned; `benchmarks/curves/data/DATASHEET.md`). {len(names) * len(arms) * seeds} sweeps "
        f"took {minutes:.1f} minutes.",
        "",
        "Targets: a finished trial within "
        + "; ".join(
            f"{t}: {built[t].tolerance} of the table's best final val F1 {built[t].finals.max():.4f} "
            f"({int(built[t].good.sum())} of {built[t].table.n} configurations reach it; budget "
            f"{budget_of(built[t], smoke=smoke)} trial-epochs)"
            for t in real
        )
        + f"; {mf}: true regret <= {built[mf].target_regret} (budget {budget_of(built[mf], smoke=smoke)}).",
        "",
        "ERT ratio to random search without early stopping (90% bootstrap interval over seeds); < 1 is faster. "
        f"{mf} runs only random search, the current default and the arms chosen below (`search_mf` runs every "
        "arm on it):",
        "",
        "| arm | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for arm in arms:
        out.append(f"| {arm} | " + " | ".join(_cell(table, traces, nm, arm, baseline) for nm in names) + " |")
    out += [
        "",
        "Leave one task out (chosen by the smallest worst ERT ratio on the other real tasks):",
        "",
        f"| held-out task | chosen arm | held-out ratio | goal (<= {HELD_OUT_GOAL}x, interval < 1) | {mf} ratio |",
        "|---|---|---|---|---|",
    ]
    for held, arm in loto.items():
        v, _lo, hi = table[held][arm]
        met = "met" if v <= HELD_OUT_GOAL and hi < 1 else "not met"
        out.append(f"| {held} | {arm} | {_fmt(table[held][arm])} | {met} | {_cell(table, traces, mf, arm, '')} |")
    v, _lo, hi = table[mf][overall]
    out += [
        "",
        f"Chosen on all real tasks: **{overall}** ({mf}: {_fmt(table[mf][overall])}, goal <= {MF_GOAL}x "
        f"{'met' if v <= MF_GOAL and hi < 1 else 'not met'}).",
        "",
    ]
    out += [
        "Early epochs against the end, over every recorded configuration (Spearman rho of val F1 at epoch r "
        "with the final val F1; `cut r`: share of the target-reaching configurations in the bottom two thirds "
        "at epoch r; `val~test`: rho of the final val F1 with the test F1 of the kept epoch; `noise`: the val "
        "F1's measured standard deviation around its curve, from second differences):",
        "",
        "| task | " + " | ".join(f"rho {r} | cut {r}" for r in RUNGS) + " | val~test | noise |",
        "|---|" + "---|" * (2 * len(RUNGS) + 2),
    ]
    for t in real:
        e = early_vs_final(built[t])
        out.append(
            f"| {t} | "
            + " | ".join(f"{e.get(f'rho{r}', math.nan):.2f} | {e.get(f'cut{r}', math.nan):.0%}" for r in RUNGS)
            + f" | {e['rho_test']:.2f} | {e['noise']:.4f} |"
        )
    out += [
        "",
        "Where the epochs went (medians over seeds): trials per sweep, epochs per trial, share of proposals "
        "that reach the target (the searcher's part), share of those cut before their end (the scheduler's "
        "part), share of epochs spent on cut trials:",
        "",
    ]
    for nm in names:
        out += [
            f"| {nm} | trials | epochs/trial | good proposals | good cut | epochs on cut |",
            "|---|---|---|---|---|---|",
        ]
        for arm in traces[nm]:
            p = profile(traces[nm][arm])
            out.append(
                f"| {arm} | {p['trials']:.0f} | {p['epochs_per_trial']:.2f} | {p['good']:.1%} | "
                f"{p['good_cut']:.0%} | {p['cut_epochs']:.0%} |"
            )
        out.append("")
    return out

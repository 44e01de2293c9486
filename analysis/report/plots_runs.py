"""Plots over runs: learning curves, pseudo-label counts per round, the ablation bar chart."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.report.collect import CurvePoint, PseudoCounts
from analysis.report.figures import BEST_COLOR, PRUNED_COLOR, new_figure

VERDICT_COLORS = {"different: better": "#2ca02c", "different: worse": "#d62728", "reference": "#555555"}
NEUTRAL_COLOR = "#1f77b4"
# tab10 without its red, which marks the best trial
OTHER_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
OTHER_NAMES = ("blue", "orange", "green", "purple", "brown", "pink", "grey", "olive", "cyan")  # for tables


def line_color(rank: int) -> str:
    """The colour of the rank-th trial's line (0: the best, red)."""
    return BEST_COLOR if rank == 0 else OTHER_COLORS[(rank - 1) % len(OTHER_COLORS)]


def line_color_name(rank: int) -> str:
    """`line_color`'s name, for the table that says which run each line is."""
    return "red (thick)" if rank == 0 else OTHER_NAMES[(rank - 1) % len(OTHER_NAMES)]


def learning_curves(curves: Sequence[tuple[str, Sequence[CurvePoint], bool]], *, metric: str, title: str) -> Figure:
    """The metric per epoch of the top trials (best first), one panel per fold; pruned trials dashed.

    Each fold trains afresh, so its epochs get their own panel and x axis (epochs trained in that
    fold: fine-tuning, then each self-training round); end to end on one axis, a new fold's first
    epoch would look like a collapse. Where the best trial starts a self-training round, a dotted
    line marks it.

    Args:
        curves: (label, reported epochs, finished) per trial.
        title: What the figure shows and how many trials it covers.
    """
    folds = sorted({p.fold for _, points, _ in curves for p in points})
    ncols = min(len(folds), 3)
    nrows = math.ceil(len(folds) / ncols)
    fig, axes = new_figure(4.2 * ncols + 1.0, 3.2 * nrows + 0.6, nrows=nrows, ncols=ncols, squeeze=False, sharey=True)
    for ax, fold in zip(axes.flat, folds, strict=False):
        for rank, (label, points, finished) in enumerate(curves):
            mine = [p for p in points if p.fold == fold]
            if not mine:
                continue
            xs = np.arange(1, len(mine) + 1)  # (E,) epochs trained in this fold, over its stages
            style = {"linewidth": 2.4 if rank == 0 else 1.3, "color": line_color(rank)}
            line = "-" if finished else "--"
            ax.plot(xs, [p.value for p in mine], marker="o", markersize=3, linestyle=line, label=label, **style)
            if rank == 0:
                for x, (before, after) in zip(xs[1:], itertools.pairwise(mine), strict=True):
                    if after.round != before.round:
                        ax.axvline(x - 0.5, color=PRUNED_COLOR, linestyle=":", linewidth=1.0)
                        ax.text(x - 0.4, 0.02, f"round {after.round}", transform=ax.get_xaxis_transform(), fontsize=7)
        ax.set_title(f"fold {fold}" if len(folds) > 1 else "the trial's one fold", fontsize=9)
        ax.set_xlabel("epoch in this fold (fine-tuning, then self-training rounds)", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(folds) :]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(metric)
    axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    return fig


def pseudo_label_chart(panels: Sequence[tuple[str, PseudoCounts]], *, title: str) -> Figure:
    """Grouped bars: pseudo-labels chosen per class (bars) in each self-training round (groups).

    Args:
        panels: (trial label, counts) per trial, one panel each.
        title: What the figure shows and how many trials it covers.
    """
    fig, axes = new_figure(5.0 * len(panels), 3.9, ncols=len(panels), squeeze=False)
    fig.suptitle(title, fontsize=10)
    for ax, (label, counts) in zip(axes[0], panels, strict=True):
        data = np.array(counts.counts)  # (rounds, classes)
        width = 0.8 / max(1, data.shape[1])
        x = np.arange(len(counts.rounds))
        for k, name in enumerate(counts.class_names):
            ax.bar(x + (k - (data.shape[1] - 1) / 2) * width, data[:, k], width, label=name)
        ax.set_xticks(x, [f"round {r}" for r in counts.rounds])
        ax.set_ylabel("pseudo-labels (sum over folds)")
        ax.set_title(f"{label}: {int(counts.total)} pseudo-labels", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7, ncols=2)
        if counts.total == 0:  # an empty chart would otherwise look like a plotting failure
            ax.set_ylim(0, 1)
            ax.text(0.5, 0.5, "no pseudo-label passed the thresholds", transform=ax.transAxes, ha="center")
        else:
            ax.set_ylim(bottom=0)
    return fig


def ablation_chart(rows: Sequence[object], *, metric: str, reference: str | None, title: str) -> Figure:
    """Left: each variant's mean with its 95% CI; right: its paired difference to the reference.

    Args:
        rows: `analysis.stats.Comparison` rows (reference first); NaN statistics are left out.
        title: What the figure shows and how many variants and seeds it covers.
    """
    names = [r.variant for r in rows][::-1]  # type: ignore[attr-defined]
    by_name: Mapping[str, object] = {r.variant: r for r in rows}  # type: ignore[attr-defined]
    fig, (left, right) = new_figure(10.0, 0.5 * len(names) + 1.9, ncols=2, sharey=True)
    fig.suptitle(title, fontsize=10)
    y = np.arange(len(names))
    for i, name in enumerate(names):
        r = by_name[name]
        color = VERDICT_COLORS.get(r.verdict, NEUTRAL_COLOR)  # type: ignore[attr-defined]
        _bar(left, i, r.mean, r.ci_low, r.ci_high, color)  # type: ignore[attr-defined]
        if name != reference:
            _bar(right, i, r.diff_mean, r.diff_ci_low, r.diff_ci_high, color)  # type: ignore[attr-defined]
    left.set_yticks(y, names)
    left.set_xlabel(f"{metric}: mean and 95% t-interval over seeds")
    right.axvline(0.0, color=PRUNED_COLOR, linewidth=1.2)
    right.set_xlabel(f"difference to {reference} (paired by seed), corrected CI")
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
    return fig


def _bar(ax, y: float, mean: float, low: float, high: float, color: str) -> None:
    if not math.isfinite(mean):
        return
    ax.barh(y, mean, color=color, alpha=0.75, height=0.6)
    if math.isfinite(low) and math.isfinite(high):
        ax.errorbar(mean, y, xerr=[[mean - low], [high - mean]], color="black", capsize=4, linewidth=1.2)

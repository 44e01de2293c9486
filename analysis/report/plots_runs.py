"""Plots over runs: learning curves, pseudo-label counts per round, the ablation bar chart."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from analysis.report.collect import PseudoCounts
from analysis.report.figures import BEST_COLOR, PRUNED_COLOR, new_figure

VERDICT_COLORS = {"different: better": "#2ca02c", "different: worse": "#d62728", "reference": "#555555"}
NEUTRAL_COLOR = "#1f77b4"
# tab10 without its red, which marks the best trial
OTHER_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def learning_curves(curves: Sequence[tuple[str, Sequence[tuple[int, float]], bool]], *, metric: str) -> Figure:
    """The metric per reported step of the top trials (best first); pruned trials dashed.

    Args:
        curves: (label, [(step, value)], finished) per trial.
    """
    fig, ax = new_figure(7.0, 3.8)
    for rank, (label, history, finished) in enumerate(curves):
        steps = [s for s, _ in history]
        values = [v for _, v in history]
        color = BEST_COLOR if rank == 0 else OTHER_COLORS[(rank - 1) % len(OTHER_COLORS)]
        style = {"linewidth": 2.4 if rank == 0 else 1.3, "color": color}
        ax.plot(steps, values, marker="o", markersize=3, linestyle="-" if finished else "--", label=label, **style)
    ax.set_xlabel("reported step (epoch)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"{metric} of the top {len(curves)} trials (dashed: pruned)", fontsize=10)
    return fig


def pseudo_label_chart(panels: Sequence[tuple[str, PseudoCounts]]) -> Figure:
    """Grouped bars: pseudo-labels chosen per class (bars) in each self-training round (groups).

    Args:
        panels: (trial label, counts) per trial, one panel each.
    """
    fig, axes = new_figure(5.0 * len(panels), 3.6, ncols=len(panels), squeeze=False)
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


def ablation_chart(rows: Sequence[object], *, metric: str, reference: str | None) -> Figure:
    """Left: each variant's mean with its 95% CI; right: its paired difference to the reference.

    Args:
        rows: `analysis.stats.Comparison` rows (reference first); NaN statistics are left out.
    """
    names = [r.variant for r in rows][::-1]  # type: ignore[attr-defined]
    by_name: Mapping[str, object] = {r.variant: r for r in rows}  # type: ignore[attr-defined]
    fig, (left, right) = new_figure(10.0, 0.5 * len(names) + 1.6, ncols=2, sharey=True)
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

"""Plots over the search space: metric vs each param, fANOVA importance, parallel coordinates."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from analysis.report.boundary import BoundaryHit, position
from analysis.report.figures import BEST_COLOR, CMAP, PRUNED_COLOR, WARN_COLOR, new_figure, short
from analysis.report.importance import Importance
from sweeps.space.params import Param, same_value

DENSE_POINTS = 2000  # trials above which a param plot shows their density instead of one marker each


@dataclass(frozen=True)
class Point:
    """One trial in a param plot: the param's value, the metric, and whether it finished."""

    value: Any
    metric: float
    finished: bool
    best: bool = False


def param_scatter(param: Param, points: Sequence[Point], *, metric: str, hit: BoundaryHit | None) -> Figure:
    """Metric vs one param: finished trials solid, pruned ones hollow grey (their last value), best a star.

    Categorical params are strip plots; log params get a log axis; the searched range is shaded so
    a best value at its edge is visible, and a boundary hit turns the title into a warning. Past
    `DENSE_POINTS` trials the points become a 2-D histogram (hexagons shaded by trial count, log
    scale), where thousands of markers would be one blot; the best trial stays a star.
    """
    fig, ax = new_figure(5.2, 3.4)
    xs = _strip_positions(param, points) if param.kind == "categorical" else [float(p.value) for p in points]
    if len(points) > DENSE_POINTS:
        _density(ax, param, xs, [p.metric for p in points])
    for group, style in (
        ([i for i, p in enumerate(points) if not p.finished], {"facecolors": "none", "edgecolors": PRUNED_COLOR}),
        ([i for i, p in enumerate(points) if p.finished and not p.best], {"color": "#1f77b4"}),
    ):
        if group and len(points) <= DENSE_POINTS:
            label = "pruned (last value)" if "edgecolors" in style else "finished"
            ax.scatter([xs[i] for i in group], [points[i].metric for i in group], s=36, label=label, **style)
    best = [i for i, p in enumerate(points) if p.best]
    if best:
        ax.scatter([xs[best[0]]], [points[best[0]].metric], marker="*", s=220, color=BEST_COLOR, label="best", zorder=3)
    _range_axis(ax, param)
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    finished = sum(p.finished for p in points)
    fig.suptitle(f"{metric} vs {param.name}: {len(points)} trials ({finished} finished, one seed each)", fontsize=9)
    if hit is None:
        ax.set_title(param.name, fontsize=10)
    else:
        advice = "" if hit.at_field_limit else ": widen the range"
        ax.set_title(f"WARNING {param.name}: best at the {hit.edge} edge{advice}", fontsize=10, color=WARN_COLOR)
        ax.axvline(hit.bound, color=WARN_COLOR, linewidth=2)
    return fig


def _density(ax, param: Param, xs: Sequence[float], ys: Sequence[float]) -> None:
    """Trials per hexagon of (param, metric), shaded on a log scale, with its colour bar."""
    log_x = param.kind != "categorical" and bool(param.log)
    cells = ax.hexbin(
        xs, ys, gridsize=(40, 24), bins="log", mincnt=1, cmap="Blues", xscale="log" if log_x else "linear", linewidths=0
    )
    ax.figure.colorbar(cells, ax=ax, label="trials (log scale)", pad=0.01)


def importance_chart(importance: Importance) -> Figure:
    """Horizontal bars of fANOVA importance, most important on top."""
    names = list(importance.values)[::-1]
    fig, ax = new_figure(6.0, 0.45 * len(names) + 1.5)
    ax.barh(names, [importance.values[n] for n in names], color="#1f77b4")
    ax.set_title(f"Parameter importance (fANOVA) over {importance.n_trials} finished trials", fontsize=10)
    ax.set_xlabel(f"fANOVA importance (share of variance; {importance.n_trials} finished trials)")
    ax.set_xlim(0, 1)
    ax.grid(axis="x", alpha=0.3)
    return fig


def parallel_coordinates(
    params: Sequence[Param], rows: Sequence[tuple[Mapping[str, Any], float, bool]], *, metric: str, mode: str
) -> Figure:
    """One line per trial across normalised axes (0 = low/first choice, 1 = high/last choice).

    The metric is the first axis, so every line starts there; params no row used are dropped, and a
    line skips (joins across) a param its trial did not use (conditional).

    Args:
        params: The sampled params.
        rows: (active param values, metric value, finished) per trial, best first.
    """
    params = [p for p in params if any(p.name in values for values, _, _ in rows)]
    fig, ax = new_figure(max(6.0, 1.3 * (len(params) + 1)), 4.2)
    metrics = np.array([r[1] for r in rows], dtype=float)  # (T,)
    lo, hi = float(metrics.min()), float(metrics.max())
    span = hi - lo if hi > lo else 1.0
    norm = matplotlib.colors.Normalize(lo, hi)
    cmap = matplotlib.colormaps[CMAP] if mode == "max" else matplotlib.colormaps[CMAP].reversed()  # best is bright
    for values, value, finished in reversed(rows):  # the best trial drawn last, on top
        ys = np.array([(value - lo) / span] + [_normalised(p, values.get(p.name)) for p in params])  # (1 + P,)
        xs = np.arange(ys.size)[~np.isnan(ys)]
        style = {"linewidth": 2.4, "linestyle": "-"} if finished else {"linewidth": 1.2, "linestyle": "--"}
        ax.plot(xs, ys[~np.isnan(ys)], color=cmap(norm(value)), marker="o", markersize=3, **style)
    axes = [[(0.0, short(lo)), (1.0, short(hi))]] + [_axis_labels(p) for p in params]
    for i, labels in enumerate(axes):
        ax.axvline(i, color="#444", linewidth=0.8)
        for y, text in labels:
            ax.text(i + 0.04, y, text, fontsize=7, va="center", bbox={"facecolor": "white", "alpha": 0.7, "pad": 1})
    ax.set_xticks(range(len(axes)), [metric] + [p.name for p in params], rotation=20, ha="right", fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(axes) - 0.4)
    ax.set_ylim(-0.08, 1.08)
    finished = sum(r[2] for r in rows)
    ax.set_title(
        f"Parallel coordinates: top {len(rows)} trials ({finished} finished solid, pruned dashed; one seed each)",
        fontsize=9,
    )
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=metric, pad=0.01)
    return fig


def _normalised(param: Param, value: Any) -> float:
    if value is None:
        return math.nan
    if param.kind == "categorical":
        idx = next(i for i, c in enumerate(param.choices) if same_value(c, value))
        return idx / max(1, len(param.choices) - 1)
    return position(param, value)


def _axis_labels(param: Param) -> list[tuple[float, str]]:
    if param.kind == "categorical":
        n = max(1, len(param.choices) - 1)
        return [(i / n, short(c)) for i, c in enumerate(param.choices)]
    suffix = " (log)" if param.log else ""
    return [(0.0, short(param.low)), (1.0, short(param.high) + suffix)]


def _strip_positions(param: Param, points: Sequence[Point]) -> list[float]:
    """Category index plus an even spread within the category (deterministic, unlike random jitter)."""
    index = {i: [] for i in range(len(param.choices))}
    slots = []
    for p in points:
        k = next(i for i, c in enumerate(param.choices) if same_value(c, p.value))
        slots.append((k, len(index[k])))
        index[k].append(p)
    out = []
    for k, j in slots:
        n = len(index[k])
        out.append(k + (0.0 if n == 1 else -0.18 + 0.36 * j / (n - 1)))
    return out


def _range_axis(ax, param: Param) -> None:
    if param.kind == "categorical":
        ax.set_xticks(range(len(param.choices)), [short(c) for c in param.choices])
        ax.set_xlim(-0.5, len(param.choices) - 0.5)
        ax.set_xlabel(param.name)
        return
    low, high = float(param.low), float(param.high)  # type: ignore[arg-type]
    if param.log:
        ax.set_xscale("log")
        pad = (high / low) ** 0.04
        ax.set_xlim(low / pad, high * pad)
    else:
        pad = 0.04 * (high - low)
        ax.set_xlim(low - pad, high + pad)
    ax.axvspan(low, high, color="#1f77b4", alpha=0.06, label="searched range")
    ax.set_xlabel(param.name + (" (log scale)" if param.log else ""))

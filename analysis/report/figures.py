"""Matplotlib plumbing shared by the report's plots: Agg figures without pyplot's global state."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
BEST_COLOR = "#d62728"
PRUNED_COLOR = "#9a9a9a"
WARN_COLOR = "#b00020"
CMAP = "viridis"


def new_figure(width: float, height: float, **subplots) -> tuple[Figure, object]:
    """A figure drawn by the Agg canvas (no pyplot, so nothing global) and its axes."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(**subplots)


def save_png(fig: Figure, path: Path) -> Path:
    """Write `fig` as a PNG (the report embeds the same bytes).

    Class and modality names come from the user's data; a script the bundled font lacks (CJK
    class names) draws as boxes in the PNG, and the HTML tables beside it spell them out. Matplotlib
    would also print two lines per missing character to stderr, for every figure.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        fig.savefig(path, format="png", dpi=DPI)
    return path


def file_stem(name: str) -> str:
    """A file-name-safe form of a param name (`optim.lr` -> `optim_lr`)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "param"


def short(value: object) -> str:
    """Compact label of a param value (floats in 3 significant digits)."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)

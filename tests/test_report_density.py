"""Per-parameter plots stay readable at 10,000 trials: past `DENSE_POINTS` they show density."""

from __future__ import annotations

import random

import matplotlib
import pytest

from analysis.report.plots_params import DENSE_POINTS, Point, param_scatter
from sweeps.space import load_space
from tests.sweep_helpers import ROOT

matplotlib.use("Agg")


def _points(param, n: int) -> list[Point]:
    rng = random.Random(0)
    out = []
    for i in range(n):
        value = rng.choice(param.choices) if param.kind == "categorical" else rng.uniform(param.low, param.high)
        out.append(Point(value=value, metric=rng.random(), finished=i % 3 == 0, best=i == 7))
    return out


@pytest.mark.parametrize("name", ["optim.lr", "model.fusion"])
def test_many_trials_are_drawn_as_a_density_with_the_best_on_top(name: str) -> None:
    param = next(p for p in load_space(ROOT / "search_spaces/quick.yaml").params if p.name == name)
    dense = param_scatter(param, _points(param, DENSE_POINTS + 500), metric="val/weighted_f1", hit=None)
    ax, bar = dense.axes  # the plot and the colour bar of its trial counts
    assert "trials" in bar.get_ylabel()
    assert len(ax.collections) >= 2  # the hexagons and the best trial's star, not one marker per trial
    assert f"{DENSE_POINTS + 500} trials" in dense._suptitle.get_text()
    sparse = param_scatter(param, _points(param, 50), metric="val/weighted_f1", hit=None)
    assert len(sparse.axes) == 1  # a few trials: one marker each, no density

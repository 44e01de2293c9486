"""F1 against the test-time missing rate: the table the missing-modality papers report.

The recipe (`mer_core.train.recipe`) applies the protocol inside each fold (`fold_data`) and,
after training, re-scores the final model on the validation rows at each of `missing.eval_rates`
(`val/weighted_f1_missing_<r>`, `val/accuracy_missing_<r>` of the voted ensemble and
`val/f1_fusion_missing_<r>` of the fusion head, fold means like every metric).
`evaluate_missing_grid` trains once and returns those scores as one table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from mer_core.configs import with_overrides
from mer_core.configs.schema import ExperimentConfig
from mer_core.data.featureset import FeatureSet
from mer_core.errors import ConfigError
from mer_core.train.recipe import fold_data
from mer_core.train.result import TrialResult
from mer_core.train.run import run
from mer_core.train.scores import GRID_METRICS, metric_name

if TYPE_CHECKING:  # pandas loads where a table is built, not with `mer_core.train` in every trial worker
    import pandas as pd

__all__ = [
    "DEFAULT_RATES",
    "GRID_METRICS",
    "evaluate_missing_grid",
    "fold_data",
    "grid_table",
    "metric_name",
    "parse_rates",
]

DEFAULT_RATES = (0.0, 0.2, 0.5, 0.7)


def grid_table(result: TrialResult, rates: Sequence[float]) -> pd.DataFrame:
    """One row per test-time rate: GRID_METRICS as fold means (and stds with > 1 fold).

    Args:
        result: a run whose config had `missing.eval_rates` covering `rates`.
        rates: the rates, in table order.

    Returns:
        DataFrame indexed by `missing_rate` with columns `<m>` and `<m>_std` per metric m
        (NaN where a value is absent, e.g. a pruned run or a single fold's std).
    """
    import pandas as pd

    rows = []
    for rate in rates:
        row = {"missing_rate": float(rate)}
        for metric in GRID_METRICS:
            key = metric_name(rate, metric)
            row[metric] = result.metrics.get(key, np.nan)
            row[f"{metric}_std"] = result.metrics.get(f"{key}_std", np.nan)
        rows.append(row)
    return pd.DataFrame(rows).set_index("missing_rate")


def evaluate_missing_grid(
    cfg: ExperimentConfig, data: FeatureSet, rates: Sequence[float] = DEFAULT_RATES
) -> pd.DataFrame:
    """Trains `cfg` once (every fold) and scores it at each test-time missing rate.

    Args:
        cfg: the experiment (its train-time rates and imputation apply; its `eval_rates` are replaced).
        data: the dataset.
        rates: test-time missing rates, each in [0, 1].

    Returns:
        The `grid_table` of the run.
    """
    result = run(with_overrides(cfg, {"missing.eval_rates": [float(r) for r in rates]}), data)
    return grid_table(result, rates)


def parse_rates(text: str) -> tuple[float, ...]:
    """`"0,0.2,0.5"` -> (0.0, 0.2, 0.5); anything else is a one-line ConfigError (exit 2)."""
    try:
        rates = tuple(float(part) for part in text.split(","))
    except ValueError:
        rates = ()
    if not rates or not all(0.0 <= r <= 1.0 for r in rates):
        raise ConfigError("--missing-grid", "comma-separated missing rates in [0, 1], e.g. 0,0.2,0.5,0.7", text)
    return rates

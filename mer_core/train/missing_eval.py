"""The missing-modality protocol inside a fold, and F1 against the test-time missing rate.

`fold_data` gives a fold the protocol's mask (train-time drops on training and pool rows,
test-time drops on validation rows). After training, `score_missing_rates` re-scores the
final model on the validation rows at each of `missing.eval_rates` (one rate for every modality,
drawn from the data's mask with the protocol's fixed draws), which `run` reports as
`val/weighted_f1_missing_<r>`, `val/accuracy_missing_<r>` (the voted ensemble) and
`val/f1_fusion_missing_<r>` (the fusion head alone), fold means like every metric.
MLflow refuses `@` and `=` in metric names, hence `_missing_<r>` rather than `@missing=<r>`.
`evaluate_missing_grid` trains once and returns the F1-vs-missing-rate table the papers report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from mer_core.configs import with_overrides
from mer_core.configs.schema import ExperimentConfig, MissingConfig
from mer_core.data.featureset import FeatureSet, Split
from mer_core.errors import ConfigError
from mer_core.missing.protocol import fold_mask, val_mask_at_rate
from mer_core.train.device_data import DeviceData
from mer_core.train.fit import FitContext, score_logits
from mer_core.train.result import TrialResult
from mer_core.train.steps import predict

__all__ = [
    "DEFAULT_RATES",
    "evaluate_missing_grid",
    "fold_data",
    "grid_table",
    "metric_name",
    "parse_rates",
    "score_missing_rates",
]

DEFAULT_RATES = (0.0, 0.2, 0.5, 0.7)
GRID_METRICS = ("weighted_f1", "accuracy", "f1_fusion")  # per rate; the first two of the voted ensemble


def metric_name(rate: float, metric: str = "weighted_f1") -> str:
    """`val/<metric>_missing_<rate>` (MLflow-legal: letters, digits, `_ - . / : space`)."""
    return f"val/{metric}_missing_{rate:g}"


def fold_data(dev: DeviceData, data: FeatureSet, split: Split, cfg: MissingConfig) -> DeviceData:
    """`dev` with the fold's protocol mask; `dev` itself when no rate is set (features are shared)."""
    mask = fold_mask(data.mask, split.val, cfg, data.modalities)  # (N, M)
    if mask is data.mask:
        return dev
    return dataclasses.replace(dev, mask=torch.as_tensor(mask, device=dev.mask.device))


def score_missing_rates(ctx: FitContext, data: FeatureSet, split: Split, cfg: MissingConfig) -> dict[str, float]:
    """Weighted F1 and accuracy of the fold's model on its validation rows at each `cfg.eval_rates`.

    Args:
        ctx: the fold's context after training (model with its best weights, imputer refreshed).
        data: the dataset (the rates drop from its mask).
        split: the fold's rows.
        cfg: the `missing` section.

    Returns:
        `metric_name(r, m)` for every rate r and m in GRID_METRICS; empty without rates.
    """
    out: dict[str, float] = {}
    if not cfg.eval_rates:
        return out
    base = ctx.data.mask.cpu().numpy()  # (N, M) the fold's mask
    y = data.labels[split.val]  # (n_val,)
    for rate in cfg.eval_rates:
        mask = val_mask_at_rate(base, data.mask, split.val, rate, cfg.seed)  # (N, M)
        dev = dataclasses.replace(ctx.data, mask=torch.as_tensor(mask, device=ctx.data.mask.device))
        logits = predict(ctx.step.model, dev, split.val, batch_size=max(256, ctx.optim.batch_size))
        found = score_logits(logits, y, ctx.voting_weights, space=ctx.voting_space, class_names=ctx.class_names)
        out.update({metric_name(rate, m): found[f"val/{m}"] for m in GRID_METRICS})
    return out


def grid_table(result: TrialResult, rates: Sequence[float]) -> pd.DataFrame:
    """One row per test-time rate: GRID_METRICS as fold means (and stds with > 1 fold).

    Args:
        result: a run whose config had `missing.eval_rates` covering `rates`.
        rates: the rates, in table order.

    Returns:
        DataFrame indexed by `missing_rate` with columns `<m>` and `<m>_std` per metric m
        (NaN where a value is absent, e.g. a pruned run or a single fold's std).
    """
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
    from mer_core.train.run import run  # run -> fold -> this module: import at call time

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

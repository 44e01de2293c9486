"""Fused populations: K configs of one shape group trained as one stacked model, by the same recipe.

Usage (one Ray trial training a population)::

    for group in group_by_shape(cfgs):              # ConfigError if a schedule field differs
        members = [cfgs[i] for i in group]
        results = train_population(members, data, report=lambda i, metrics: asha_says_stop(group[i], metrics))

- `fields`: what fused mode does with every config field (per member, per-population schedule,
  shape group, or refused with a one-line error) and `group_by_shape`.
- `executor`: `FusedExecutor`, the recipe's executor for a population: stacked parameters
  (`stack`), one `vmap` per step, each member's own optimiser update (`optim`), per-member
  dropout rates (`dropout`), and which parameters each stage trains (`probe`).
- `train_population(cfgs, data, report=...)` trains one group with `mer_core.train.recipe` and
  returns one `TrialResult` per config, in order. `report(member_index, metrics)` receives exactly
  what `mer_core.train.run` would report for that config; returning True prunes that member only.

What equals the single run (`mer_core.train.run(cfg, data)`, same seed): everything the recipe
decides (folds, fold masks, batch order, NEE and negative-view draws, early stopping,
pseudo-labels, reports, results), the initialisation and the optimiser arithmetic. What differs:

- float rounding: batched kernels (bmm under vmap) round differently from the single run's
  matmuls (1 ulp in a step's loss). Training can amplify it where gradients are pure rounding
  noise (biases in front of a BatchNorm, InfoNCE over oversampled duplicate rows), so a
  near-tie prediction may flip; the parity tests compare continuous quantities;
- dropout > 0: the draws come from the global generator under `vmap(randomness="different")`,
  not the single run's stream (same distribution; a member with rate 0 stays exact);
- `TrialResult.seconds` is the whole population's wall time.
"""

from __future__ import annotations

from collections.abc import Sequence

from mer_core.configs.schema import ExperimentConfig
from mer_core.data.featureset import FeatureSet
from mer_core.errors import ConfigError
from mer_core.train.device_data import resolve_device
from mer_core.train.fused.executor import FusedExecutor
from mer_core.train.fused.fields import group_by_shape, template_key
from mer_core.train.recipe import MemberReport, train_members
from mer_core.train.result import TrialResult

__all__ = ["FusedExecutor", "MemberReport", "group_by_shape", "train_population"]


def train_population(
    cfgs: Sequence[ExperimentConfig],
    data: FeatureSet,
    *,
    report: MemberReport | None = None,
    keep_model: bool = False,
) -> list[TrialResult]:
    """Train every config in `cfgs` as one member of a fused population; one result per config.

    Args:
        cfgs: members' configs; they must form one group of `group_by_shape`.
        data: the dataset (shared, never modified).
        report: called as `report(member_index, metrics)` once per fine-tuning epoch of each
            member, with the metrics `run` would report; True prunes that member only.
        keep_model: keep each member's last-fold best state dict (CPU) in its result.

    Returns:
        One `TrialResult` per config, in order. `seconds` is the whole population's wall time.

    Raises:
        ConfigError: the configs do not form one group, a schedule field differs, or a config
            sets a field fused mode refuses (`fields.FIELDS`).
    """
    if not cfgs:
        return []
    _check_one_group(cfgs)
    device = resolve_device(cfgs[0].runtime)
    return train_members(cfgs, data, FusedExecutor(cfgs, device), report=report, keep_model=keep_model)


def _check_one_group(cfgs: Sequence[ExperimentConfig]) -> None:
    groups = group_by_shape(cfgs)
    if len(groups) == 1:
        return
    keys = [dict(template_key(cfgs[g[0]])) for g in groups]
    fields = sorted({f for key in keys for f in key if len({repr(k.get(f)) for k in keys}) > 1})
    raise ConfigError(
        ", ".join(fields),
        "one value per fused population (split the configs with group_by_shape and train each group)",
        {f: [k.get(f) for k in keys] for f in fields},
        problem="members need different modules",
    )

"""Which config fields a fused population may vary, and grouping of configs into populations.

Every dotted config field falls in one of three kinds:

- per-member: each member keeps its own value inside one fused model (optimiser scalars, loss
  weights, dropout rates, NEE scales, self-training and voting settings, the seed);
- schedule: the data, the batch sizes, the epoch counts, the optimiser type and the runtime;
  they fix the step sequence every member shares, so one population needs one value;
- template: everything else (hidden size, layers, heads, fusion operator, head type...).
  Members that differ there need a different module, so they go to different groups.

Unknown (future) fields default to template: splitting a group is always correct, only slower.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mer_core.configs import flatten
from mer_core.configs.schema import ExperimentConfig
from mer_core.errors import ConfigError

__all__ = ["PER_MEMBER", "SCHEDULE", "group_by_shape", "template_key"]

# Exact dotted names, or prefixes ending in "." (every field below that section).
PER_MEMBER: tuple[str, ...] = (
    "seed",
    "model.dropout",
    "model.head_dropout",
    "loss.w_cls",
    "loss.w_modality",
    "loss.w_noise",
    "loss.pretrain_w_modality",
    "loss.pretrain_w_noise",
    "loss.temperature_init",
    "loss.learnable_temperature",
    "nee.",
    "self_training.",
    "voting.",
    "optim.lr",
    "optim.weight_decay",
    "optim.patience",
    "optim.grad_clip",
)
SCHEDULE: tuple[str, ...] = (
    "data.",
    "optim.optimizer",
    "optim.batch_size",
    "optim.max_epochs",
    "optim.pretrain_epochs",
    "optim.pretrain_batch_size",
    "runtime.",
)
_MISSING = "<unset>"


def _matches(field: str, patterns: Sequence[str]) -> bool:
    return any(field == p or (p.endswith(".") and field.startswith(p)) for p in patterns)


def _kind(field: str) -> str:
    if _matches(field, SCHEDULE):
        return "schedule"
    if _matches(field, PER_MEMBER):
        return "member"
    return "template"


def _flat_all(cfgs: Sequence[ExperimentConfig]) -> tuple[list[dict[str, Any]], list[str]]:
    flats = [flatten(c) for c in cfgs]
    fields = sorted({k for f in flats for k in f})
    return flats, fields


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def template_key(cfg: ExperimentConfig) -> tuple[Any, ...]:
    """The values that decide the fused module's structure; equal keys can share one population.

    Dropout rates are per member, except for two structural facts: whether the heads hold a
    Dropout module at all (an `fc` head only inserts one for `head_dropout > 0`), and, with
    `attention_shortcut: false`, the rate inside `nn.MultiheadAttention` (read as a float there).
    """
    flat = flatten(cfg)
    key = [(k, _hashable(v)) for k, v in sorted(flat.items()) if _kind(k) == "template"]
    key.append(("model.head_dropout > 0", cfg.model.head_dropout > 0))
    if not cfg.model.attention_shortcut and cfg.model.layers > 0:
        key.append(("model.dropout", cfg.model.dropout))
    return tuple(key)


def _check_schedule(cfgs: Sequence[ExperimentConfig]) -> None:
    flats, fields = _flat_all(cfgs)
    differing = {}
    for field in fields:
        if _kind(field) != "schedule":
            continue
        values = [_hashable(f.get(field, _MISSING)) for f in flats]
        if len(set(values)) > 1:
            differing[field] = sorted({repr(v) for v in values})
    if differing:
        raise ConfigError(
            ", ".join(differing),
            "one value for every member of a fused population (it varies only seed, optim.lr, "
            "optim.weight_decay, loss weights, dropout, nee.*, self_training.*, voting.*; "
            "data, batch sizes, epochs, optimizer and runtime must agree)",
            {k: ", ".join(v) for k, v in differing.items()},
            problem="differs between members",
        )


def group_by_shape(cfgs: Sequence[ExperimentConfig]) -> list[list[int]]:
    """Split configs into groups that can each train as one fused population.

    Args:
        cfgs: the members' validated configs.

    Returns:
        Lists of indices into `cfgs`, grouped by `template_key`, groups in order of their
        first member, indices ascending.

    Raises:
        ConfigError: a schedule field (data, batch sizes, epochs, optimizer, runtime) differs
            between members; the message lists every such field with the values given.
    """
    if not cfgs:
        return []
    _check_schedule(cfgs)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, cfg in enumerate(cfgs):
        groups.setdefault(template_key(cfg), []).append(i)
    return list(groups.values())

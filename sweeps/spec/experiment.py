"""The experiment configs a sweep's trials start from: its base YAML with the sweep's overrides.

The base YAML, then the sweep's `data` (as `data.<key>`), then its `set`, then an ablation
variant's overrides; built in stages, so an error names the sweep field the user has to edit:
a bad `set` entry is `set.<field>`, a bad variant override `ablation.variants.<name>.<field>`, a
bad base YAML names the base file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mer_core.configs.loader import build_config, read_yaml
from mer_core.configs.schema import ExperimentConfig
from mer_core.errors import ConfigError
from sweeps.errors import prefixed


def experiment_overrides(
    *, data: Mapping[str, Any], sets: Mapping[str, Any], variant: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Dotted overrides of the base YAML: `data.*`, then `set`, then an ablation variant's."""
    out = {f"data.{k}": v for k, v in data.items()}
    out.update(sets)
    if variant is not None:
        out.update(variant)
    return out


def build_experiment(
    base: str | None,
    *,
    data: Mapping[str, Any],
    sets: Mapping[str, Any],
    variant: tuple[str, Mapping[str, Any]] | None = None,
) -> ExperimentConfig:
    """The validated experiment config of base YAML `base` (None: built-in defaults) with the overrides.

    Args:
        base: The base experiment YAML, or None.
        data: The sweep's `data` section (dotted keys below `data`).
        sets: The sweep's `set` section (dotted experiment fields).
        variant: (name, dotted overrides) of an ablation variant, or None.

    Raises:
        ConfigError: naming the sweep field that caused it (`set.<field>`, `ablation.variants.<name>.<field>`).
    """
    raw = read_yaml(base, what="base experiment config") if base else {}
    try:
        build_config(raw)
    except ConfigError as err:
        raise prefixed(err, "", suffix=f" (in base {base})") from None
    dotted_data = {f"data.{k}": v for k, v in data.items()}
    build_config(raw, dotted_data)  # fields are `data.<key>`, as in the sweep
    overrides = {**dotted_data, **sets}
    try:
        cfg = build_config(raw, overrides)
    except ConfigError as err:
        raise prefixed(err, "set") from None
    if variant is None:
        return cfg
    name, variant_overrides = variant
    try:
        return build_config(raw, {**overrides, **variant_overrides})
    except ConfigError as err:
        raise prefixed(err, f"ablation.variants.{name}") from None

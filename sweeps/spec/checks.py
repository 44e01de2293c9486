"""The checks of a sweep spec that read files or span several fields.

What every trial would trip over is refused here, when the sweep is loaded: the base config and
every ablation variant must build, a search space must suit the algorithm and the trial count,
and neither a variant nor a space may set what the sweep fixes for all trials (the seeds an
ablation pairs, the data fields that load once per sweep).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mer_core.errors import ConfigError
from sweeps.space import check_algorithm, load_space
from sweeps.spec.schema import SweepSpec

SPLIT_KEYS = ("data.folds", "data.val_fraction", "data.fold_seed")  # data fields a trial applies itself
PAIRED_KEYS = ("seed", "data.fold_seed")  # what an ablation's paired seed sets


def check_variant_keys(name: str, overrides: Mapping[str, Any]) -> None:
    """Variants may not set the seeds (the ablation pairs them) or change how data loads (once per sweep)."""
    for key in overrides:
        if key in PAIRED_KEYS:
            raise ConfigError(
                f"ablation.variants.{name}.{key}", "use ablation.seeds", overrides[key], "seeds are paired"
            )
        if key.startswith("data.") and key not in SPLIT_KEYS:
            allowed = f"{', '.join(SPLIT_KEYS)} (the data loads once per sweep; set others in the sweep's data)"
            raise ConfigError(f"ablation.variants.{name}.{key}", allowed, overrides[key], "not a per-variant field")


def check_resolved(spec: SweepSpec) -> None:
    """The checks that read files: experiment configs, variants, search spaces vs algorithm."""
    spec.base_config()
    if spec.search_space is not None:
        _check_space(spec.search_space, spec.search.algorithm, spec.search.num_samples, "search.num_samples")
    if spec.ablation is not None:
        for name, overrides in spec.ablation.variants.items():
            check_variant_keys(name, overrides)
            spec.variant_config(name)
        retune = spec.ablation.retune
        if retune.search_space is not None and retune.num_samples > 0:
            where = "ablation.retune.num_samples"
            _check_space(retune.search_space, spec.search.algorithm, retune.num_samples, where)
            _check_retune_keys(spec, load_space(retune.search_space).names)


def _check_retune_keys(spec: SweepSpec, names: tuple[str, ...]) -> None:
    """The re-tuned nuisance params must leave what the variants and seeds set alone."""
    assert spec.ablation is not None
    for name, overrides in spec.ablation.variants.items():
        clash = sorted({*PAIRED_KEYS, *overrides} & set(names))
        if clash:
            allowed = f"nuisance fields no variant sets (nor {' / '.join(PAIRED_KEYS)})"
            raise ConfigError(
                "ablation.retune.search_space", allowed, clash[0], f"clashes with variant {name} or the seeds"
            )


def _check_space(path: str, algorithm: str, num_samples: int, where: str) -> None:
    space = load_space(path)
    check_algorithm(algorithm, space)
    for name in space.names:
        # The data loads once per sweep from the base config: a sampled data.labelled_fraction would
        # be logged per trial yet change nothing. Only the split fields are applied by each trial.
        if name.startswith("data.") and name not in SPLIT_KEYS:
            allowed = f"{', '.join(SPLIT_KEYS)} (the data loads once per sweep; set others in the sweep's data)"
            raise ConfigError(f"params.{name}", allowed, name, f"not a per-trial field (in {path})")
    if algorithm == "grid" and num_samples > space.grid_size():
        size = space.grid_size()
        raise ConfigError(where, f"<= {size} (the grid size of {path})", num_samples, "more trials than grid points")

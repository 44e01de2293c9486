"""Helpers of `sweeps.spec.schema`: raw-YAML normalisation, `sweep.` overrides, path resolution, and the
checks that need files (the base experiment config, ablation variants, search spaces).

Errors name the sweep field the user has to edit: a bad `set` entry is `set.<field>`, a bad
variant override `ablation.variants.<name>.<field>`, a bad base YAML names the base file.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mer_core.configs.fields import FrozenDict, field_type
from mer_core.configs.loader import build_config, read_yaml, set_nested
from mer_core.configs.schema import ExperimentConfig
from mer_core.errors import ConfigError
from sweeps.ablation.plan import SPLIT_KEYS, check_variant_keys
from sweeps.space.params import prefixed
from sweeps.space.search_space import check_algorithm, load_space

if TYPE_CHECKING:
    from sweeps.spec.schema import SweepSpec

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def apply_sweep_sets(raw: Mapping[str, Any], sets: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """A copy of the raw sweep mapping with dotted spec overrides (`search.num_samples`) set.

    Below `set` and below `ablation.variants.<name>` the keys are dotted experiment fields, so the
    rest of the path is one key there (`set.optim.lr` sets key `optim.lr` of `set`).
    """
    out = copy.deepcopy(dict(raw))
    for key, value in sets:
        parts = key.split(".")
        if not key or not all(parts):
            raise ConfigError("--set sweep.KEY", "a dotted sweep field, e.g. sweep.search.num_samples", key, "bad key")
        if parts[0] == "set":
            cut = 1
        elif parts[:2] == ["ablation", "variants"]:
            cut = 3
        else:
            cut = len(parts) - 1
        cut = min(cut, len(parts) - 1)
        set_nested(out, parts[:cut], ".".join(parts[cut:]), value)
    return out


def normalise(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten `set`, `data` and variant overrides to dotted keys and freeze them.

    Nested and dotted spellings then mean the same thing, and a nested `set: {optim: {lr: ..}}`
    merges into the base's `optim` instead of replacing the whole section.
    """
    out = dict(raw)
    if "set" in out and out["set"] is None:  # `set:` left empty: no overrides, as an empty variant is the base
        out["set"] = FrozenDict()
    for key, at in (("set", ""), ("data", "data")):
        if isinstance(out.get(key), Mapping):
            out[key] = _freeze(_flatten_fields(out[key], at=at))
    ablation = out.get("ablation")
    if isinstance(ablation, Mapping) and isinstance(ablation.get("variants"), Mapping):
        variants = {
            name: _freeze(_flatten_fields(v)) if isinstance(v, Mapping) else FrozenDict() if v is None else v
            for name, v in ablation["variants"].items()
        }
        out["ablation"] = {**ablation, "variants": variants}
    return out


def _flatten_fields(tree: Mapping[str, Any], *, at: str = "") -> dict[str, Any]:
    """Dotted keys (relative to `tree`, which sits at config path `at`), except that a map field
    declared `merge=False` (`data.features.modalities`) stays one value: as in an experiment YAML it
    replaces the base's map whole; merged key by key, the base's other modalities would survive."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        full = f"{at}.{key}" if at else str(key)
        if isinstance(value, Mapping) and value and not _replaced_whole(full):
            out.update({f"{key}.{k}": v for k, v in _flatten_fields(value, at=full).items()})
        else:
            out[str(key)] = value
    return out


def _replaced_whole(dotted: str) -> bool:
    parent, _, name = dotted.rpartition(".")
    try:
        owner = field_type(ExperimentConfig, parent) if parent else ExperimentConfig
    except ConfigError:
        return False  # names no field: flattened as it is, and validation names it later
    if not dataclasses.is_dataclass(owner):
        return False
    fields = {f.name: f for f in dataclasses.fields(owner)}
    return name in fields and fields[name].metadata.get("merge", True) is False


def resolve_path(given: str, *, sweep_dir: Path, field: str) -> str:
    """Absolute path of a file named in a sweep: sweep dir, then cwd, then the project root."""
    candidate = Path(given).expanduser()
    bases = [Path()] if candidate.is_absolute() else [sweep_dir, Path.cwd(), PROJECT_ROOT]
    for base in bases:
        if (base / candidate).is_file():
            return str((base / candidate).resolve())
    allowed = f"a file relative to {sweep_dir}, the cwd or {PROJECT_ROOT}"
    raise ConfigError(field, "an existing file" if candidate.is_absolute() else allowed, given, "file not found")


def experiment_overrides(spec: SweepSpec, variant: str | None = None) -> dict[str, Any]:
    """Dotted overrides of the base YAML: `data.*`, then `set`, then ablation variant `variant`."""
    out = {f"data.{k}": v for k, v in spec.data.items()}
    out.update(spec.set)
    if variant is not None:
        out.update(_variant(spec, variant))
    return out


def build_experiment(spec: SweepSpec, variant: str | None = None) -> ExperimentConfig:
    """Build the experiment config in stages, so an error names the sweep field that caused it."""
    raw = read_yaml(spec.base, what="base experiment config") if spec.base else {}
    try:
        build_config(raw)
    except ConfigError as err:
        raise prefixed(err, "", suffix=f" (in base {spec.base})") from None
    data = {f"data.{k}": v for k, v in spec.data.items()}
    build_config(raw, data)  # fields are `data.<key>`, as in the sweep
    overrides = {**data, **spec.set}
    try:
        cfg = build_config(raw, overrides)
    except ConfigError as err:
        raise prefixed(err, "set") from None
    if variant is None:
        return cfg
    try:
        return build_config(raw, {**overrides, **_variant(spec, variant)})
    except ConfigError as err:
        raise prefixed(err, f"ablation.variants.{variant}") from None


def check_resolved(spec: SweepSpec) -> None:
    """The checks that read files: experiment configs, variants, search spaces vs algorithm."""
    spec.base_config()
    if spec.search_space is not None:
        _check_space(spec.search_space, spec.search.algorithm, spec.search.num_samples, "search.num_samples")
    if spec.ablation is not None:
        for name, overrides in spec.ablation.variants.items():
            check_variant_keys(name, overrides)
            build_experiment(spec, name)
        retune = spec.ablation.retune
        if retune.search_space is not None and retune.num_samples > 0:
            where = "ablation.retune.num_samples"
            _check_space(retune.search_space, spec.search.algorithm, retune.num_samples, where)
            _check_retune_keys(spec, load_space(retune.search_space).names)


def _check_retune_keys(spec: SweepSpec, names: tuple[str, ...]) -> None:
    """The re-tuned nuisance params must leave what the variants and seeds set alone."""
    assert spec.ablation is not None
    for name, overrides in spec.ablation.variants.items():
        clash = sorted({"seed", "data.seed", *overrides} & set(names))
        if clash:
            allowed = "nuisance fields no variant sets (nor seed / data.seed)"
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


def _variant(spec: SweepSpec, name: str) -> Mapping[str, Any]:
    if spec.ablation is None or name not in spec.ablation.variants:
        known = ", ".join(spec.ablation.variants) if spec.ablation else "none (not an ablation sweep)"
        raise ConfigError("ablation.variants", known, name, "unknown variant")
    return spec.ablation.variants[name]


def _freeze(value: Any) -> Any:
    """Lists -> tuples, dicts -> FrozenDict, so a frozen spec holds no mutable values."""
    if isinstance(value, Mapping):
        return FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value

"""`load_sweep`: the one boundary where a sweep YAML becomes a validated, frozen `SweepSpec`.

Raw YAML is normalised first (nested and dotted spellings of `set`, `data` and variant overrides
mean the same thing; lists and maps are frozen), `--set sweep.KEY=VALUE` overrides are applied,
a fused search that names no scheduler kind gets ASHA (the default median rule is not one fused
populations run), every field is validated, files named in the sweep are resolved to absolute
paths, and the checks that read files run last (`sweeps.spec.checks`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mer_core.configs.fields import FrozenDict, field_type, from_dict
from mer_core.configs.loader import parse_override, read_yaml, set_nested
from mer_core.configs.schema import ExperimentConfig
from mer_core.errors import ConfigError
from sweeps.spec.checks import check_resolved
from sweeps.spec.schema import FUSED_SCHEDULER_KIND, METRICS, AblationConfig, SeedSchedule, SweepSpec

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def load_sweep(path: str | Path, *, sets: Iterable[str] = (), num_samples: int | None = None) -> SweepSpec:
    """Read, override and validate a sweep YAML.

    Relative paths in it resolve against the sweep file's directory, then the current
    directory, then the project root (so shipped sweeps work from any directory).

    Args:
        path: The sweep YAML.
        sets: `--set KEY=VALUE` strings. `sweep.`-prefixed keys (`sweep.search.num_samples=4`)
            override the spec; all others are experiment overrides added to `set`.
        num_samples: `--num-samples`: overrides `search.num_samples` (applied last).

    Raises:
        UserInputError: missing file or invalid YAML; ConfigError (a subclass) for any invalid
            field, naming the dotted field, the allowed values and the given value.
    """
    path = Path(path)
    raw = read_yaml(path, what="sweep")
    parsed = [parse_override(s) for s in sets]
    raw = apply_sweep_sets(raw, [(k[len("sweep.") :], v) for k, v in parsed if k.startswith("sweep.")])
    experiment = {k: v for k, v in parsed if not k.startswith("sweep.")}
    if experiment and isinstance(raw.get("set") or {}, dict):
        raw["set"] = {**(raw.get("set") or {}), **experiment}
    if num_samples is not None:
        raw = apply_sweep_sets(raw, [("search.num_samples", num_samples)])
    raw = fused_scheduler_default(normalise(raw))
    if raw.get("ablation") is not None:
        # Optional sections convert as a union, which would hide the inner field's message.
        if isinstance(raw["ablation"], Mapping) and isinstance(raw["ablation"].get("seeds"), Mapping):
            from_dict(SeedSchedule, raw["ablation"]["seeds"], "ablation.seeds")
        from_dict(AblationConfig, raw["ablation"], "ablation")
    spec = from_dict(SweepSpec, raw)
    spec = _resolve_paths(spec, path.parent)
    check_resolved(spec)
    return resolve_report_metric(spec)


def resolve_report_metric(spec: SweepSpec) -> SweepSpec:
    """`spec` with `report_metric` set: given, else the test counterpart of `metric` when the data
    holds out a test split, else `metric` itself (`describe` prints a note: those scores were selected on).

    Raises:
        ConfigError: `report_metric` names a test metric and the data has no test split.
    """
    has_test = spec.base_config().data.has_test_split
    if spec.report_metric is not None:
        if spec.report_metric.startswith("test/") and not has_test:
            allowed = f"{', '.join(METRICS)} (or give the data a test split: data.test_fraction > 0)"
            raise ConfigError("report_metric", allowed, spec.report_metric, "the data has no test split")
        return spec
    if has_test:
        return dataclasses.replace(spec, report_metric=f"test/{spec.metric.partition('/')[2]}")
    return dataclasses.replace(spec, report_metric=spec.metric)


def fused_scheduler_default(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The raw sweep with `scheduler.kind: asha` filled in for a fused search that names no kind.

    The schema's default rule (median stopping) is one that fused populations cannot run, so a fused
    search left at the default would be refused for a field it never set; it gets ASHA, the rule fused
    mode runs, instead. A kind the sweep names is kept, and checked by the schema (one line, exit 2).
    """
    out = dict(raw)
    execution, scheduler = out.get("execution"), out.get("scheduler")
    fused = isinstance(execution, Mapping) and execution.get("mode") == "fused"
    if not fused or out.get("kind", "search") != "search" or not isinstance(scheduler, Mapping | None):
        return out
    if scheduler is None or "kind" not in scheduler:
        out["scheduler"] = {**(scheduler or {}), "kind": FUSED_SCHEDULER_KIND}
    return out


def _resolve_paths(spec: SweepSpec, here: Path) -> SweepSpec:
    def resolve(value: str | None, field: str) -> str | None:
        return None if value is None else resolve_path(value, sweep_dir=here, field=field)

    changes: dict[str, Any] = {
        "base": resolve(spec.base, "base"),
        "search_space": resolve(spec.search_space, "search_space"),
    }
    if spec.ablation is not None:
        retune = spec.ablation.retune
        retune = dataclasses.replace(retune, search_space=resolve(retune.search_space, "ablation.retune.search_space"))
        changes["ablation"] = dataclasses.replace(spec.ablation, retune=retune)
    return dataclasses.replace(spec, **changes)


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


def _freeze(value: Any) -> Any:
    """Lists -> tuples, dicts -> FrozenDict, so a frozen spec holds no mutable values."""
    if isinstance(value, Mapping):
        return FrozenDict({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value

"""Typed, validated construction of frozen config dataclasses from plain dicts.

This is the single boundary where untyped data (YAML, `--set` overrides, search-space
samples) becomes a config. Everything is checked here once, with messages that name
the dotted field, the allowed values and the given value, so no later code needs to
re-validate or `assert` on user input.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from mer_core.errors import ConfigError

T = TypeVar("T")


class FrozenDict(dict):
    """A dict that refuses mutation, so configs holding maps stay immutable.

    Subclassing dict (rather than MappingProxyType) keeps it picklable for Ray and
    equal to plain dicts, which the YAML round trip relies on.
    """

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("config maps are immutable; build a new config with overrides instead")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))


def fld(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    doc: str = "",
    merge: bool = True,
) -> Any:
    """A dataclass field with numeric bounds checked at construction.

    Mutable defaults (dicts, nested configs) are wrapped in a default_factory. A map field
    with `merge=False` is replaced, not merged over its default, when given: use it for maps
    that define *which* entries exist (e.g. the modalities of a dataset).
    """
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "doc": doc, "merge": merge}
    if isinstance(default, dict):
        frozen = FrozenDict(default)
        return dataclasses.field(default_factory=lambda: frozen, metadata=meta)
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def from_dict(cls: type[T], raw: Mapping[str, Any] | None, prefix: str = "") -> T:
    """Build a validated config of type `cls` from a (possibly partial) mapping.

    Missing keys take the dataclass default; maps merge over their default map.
    Raises ConfigError naming `prefix.key` for unknown keys and bad values.
    """
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ConfigError(prefix or "<root>", "a mapping of fields", raw, "expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = [k for k in raw if k not in fields]
    if unknown:
        name = _join(prefix, str(unknown[0]))
        raise ConfigError(name, ", ".join(sorted(fields)), unknown[0], "unknown key")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        dotted = _join(prefix, name)
        if name not in raw:
            continue
        given = raw[name]
        default = _default_of(f)
        if isinstance(default, Mapping) and isinstance(given, Mapping) and f.metadata.get("merge", True):
            given = {**default, **given}
        value = convert(hints[name], given, dotted)
        check_bounds(f.metadata, value, dotted)
        values[name] = value
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if callable(check):
        check(prefix)
    return obj


def to_dict(cfg: Any) -> Any:
    """Plain-data view of a config (tuples → lists) suitable for YAML and MLflow."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (tuple, list)):
        return [to_dict(v) for v in cfg]
    return cfg


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted `{"model.hidden_dim": 128, ...}` view of a config (for MLflow params)."""
    out: dict[str, Any] = {}
    data = to_dict(cfg) if not isinstance(cfg, dict) else cfg
    for key, value in data.items():
        dotted = _join(prefix, key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def field_type(cls: type, dotted: str) -> Any:
    """The declared type of a dotted field, or raise ConfigError if it names none.

    Keys below a map-valued field (`voting.weights.audio`) resolve to the map's value type.
    """
    current: Any = cls
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        if dataclasses.is_dataclass(current):
            hints = typing.get_type_hints(current)
            if part not in hints:
                names = ", ".join(sorted(hints))
                raise ConfigError(here, names, part, "names no config field")
            current = _strip_optional(hints[part])
        elif get_origin(current) in (dict, Mapping, FrozenDict) or current in (dict, FrozenDict):
            args = get_args(current)
            current = _strip_optional(args[1]) if args else Any
        else:
            raise ConfigError(here, "a field of a config section", dotted, "names no config field")
    return current


def convert(tp: Any, value: Any, dotted: str) -> Any:
    """Check `value` against type `tp`, converting YAML shapes (lists → tuples, dicts → configs)."""
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        non_none = [o for o in options if o is not type(None)]
        errors: list[ConfigError] = []
        for option in non_none:
            try:
                return convert(option, value, dotted)
            except ConfigError as err:
                errors.append(err)
        allowed = " or ".join(describe(o) for o in options)
        raise ConfigError(dotted, allowed, value, "wrong type")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            raise ConfigError(dotted, ", ".join(map(str, choices)), value, "not one of the allowed values")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, dotted)
    if origin is tuple:
        return _convert_tuple(tp, value, dotted)
    if origin in (dict, Mapping, FrozenDict) or tp in (dict, FrozenDict):
        return _convert_map(tp, value, dotted)
    return _convert_scalar(tp, value, dotted)


def describe(tp: Any) -> str:
    """Human-readable name of a config type for error messages."""
    origin = get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(map(str, get_args(tp)))
    if origin is tuple:
        return f"list of {describe(get_args(tp)[0])}"
    if origin in (dict, Mapping, FrozenDict):
        return f"mapping of name to {describe(get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _convert_scalar(tp: Any, value: Any, dotted: str) -> Any:
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return _finite(float(value), dotted)
        if isinstance(value, str):
            # YAML 1.1 reads "1e-3" (no dot) as a string; accept it as the number it means.
            try:
                number = float(value)
            except ValueError:
                pass
            else:
                return _finite(number, dotted)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported config type {tp!r} at {dotted}")  # a schema bug, not user input
    raise ConfigError(dotted, describe(tp), value, "wrong type")


def _finite(value: float, dotted: str) -> float:
    # No field means anything by inf or nan (null is "none"); inf weight decay or CPUs only fail later.
    if not math.isfinite(value):
        raise ConfigError(dotted, "a finite number", value, "not finite")
    return value


def _convert_tuple(tp: Any, value: Any, dotted: str) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(dotted, describe(tp), value, "wrong type")
    args = get_args(tp)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(convert(args[0], v, f"{dotted}[{i}]") for i, v in enumerate(value))
    if len(args) != len(value):
        raise ConfigError(dotted, f"a list of {len(args)} items", value, "wrong length")
    return tuple(convert(a, v, f"{dotted}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))


def _convert_map(tp: Any, value: Any, dotted: str) -> FrozenDict:
    if not isinstance(value, Mapping):
        raise ConfigError(dotted, describe(tp), value, "wrong type")
    args = get_args(tp) or (str, Any)
    out = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise ConfigError(f"{dotted}.{key}", "string keys", key, "wrong key type")
        out[key] = convert(args[1], item, f"{dotted}.{key}")
    return FrozenDict(out)


def check_bounds(meta: Mapping[str, Any], value: Any, dotted: str) -> None:
    bounds = {k: meta.get(k) for k in ("ge", "gt", "le", "lt") if meta.get(k) is not None}
    if not bounds:
        return
    if isinstance(value, Mapping):
        items = [(f"{dotted}.{k}", v) for k, v in value.items()]
    elif isinstance(value, tuple):
        items = [(f"{dotted}[{i}]", v) for i, v in enumerate(value)]
    else:
        items = [(dotted, value)]
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    allowed = " and ".join(f"{symbols[k]} {v}" for k, v in bounds.items())
    for name, item in items:
        if item is None or isinstance(item, (str, bool)):
            continue
        ok = all({"ge": item >= b, "gt": item > b, "le": item <= b, "lt": item < b}[k] for k, b in bounds.items())
        if not ok:
            raise ConfigError(name, allowed, item, "out of range")


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _strip_optional(tp: Any) -> Any:
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        non_none = [a for a in get_args(tp) if a is not type(None)]
        if len(non_none) == 1:
            return non_none[0]
    return tp


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name

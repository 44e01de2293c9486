"""One search-space parameter: its YAML shape, validation against ExperimentConfig, and sampling.

A parameter is keyed by a dotted ExperimentConfig field (`optim.lr`, `nee.timesteps.audio`) and is
one of: a float or int range, a categorical, or a fixed value; any of them may carry a `when`
condition on categorical/fixed parents. Every bound, choice and fixed value is checked here with
the field's own type and bounds, so a sample can never produce a config that fails validation
on a single field.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from mer_core.configs.fields import FrozenDict, check_bounds, convert, describe, field_type, from_dict
from mer_core.configs.schema import ExperimentConfig
from mer_core.errors import ConfigError
from sweeps.errors import prefixed

Kind = Literal["float", "int", "categorical", "fixed"]
_SCALARS = (type(None), bool, int, float, str)  # what Optuna's CategoricalDistribution stores


@dataclass(frozen=True)
class _ParamShape:
    """The YAML shape of one param; from_dict gives unknown keys and bad types the usual message."""

    type: Literal["float", "int", "categorical"] | None = None
    low: Any = None
    high: Any = None
    step: Any = None
    log: bool = False
    choices: tuple[Any, ...] | None = None
    fixed: Any = None
    when: FrozenDict[str, Any] = dataclasses.field(default_factory=FrozenDict)


@dataclass(frozen=True)
class Param:
    """One validated parameter of a search space.

    Attributes:
        name: Dotted ExperimentConfig field, also the Optuna parameter name.
        kind: float | int | categorical | fixed.
        low, high, step, log: Range of a float/int param (values already of the field's type).
        choices: Values of a categorical param.
        value: Value of a fixed param.
        when: Parent param -> allowed parent values; the param exists only when all hold.
    """

    name: str
    kind: Kind
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    value: Any = None
    when: FrozenDict[str, tuple[Any, ...]] = dataclasses.field(default_factory=FrozenDict)

    def active(self, values: Mapping[str, Any]) -> bool:
        """Whether every `when` parent was set in `values` to one of its allowed values."""
        return all(p in values and any(same_value(values[p], v) for v in ok) for p, ok in self.when.items())

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial (or Ray's wrapper around it) for this param's value."""
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        raise ValueError(f"fixed param {self.name} is not suggested")  # a caller bug, not user input

    def grid_values(self) -> list[Any] | None:
        """The values a grid search visits, or None when the param has no finite grid."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int" and self.step is not None:
            return list(range(int(self.low), int(self.high) + 1, int(self.step)))
        if self.kind == "float" and self.step is not None:
            n = round((self.high - self.low) / self.step)
            return [round(self.low + i * self.step, 12) for i in range(n + 1)]
        return None

    def to_dict(self) -> dict[str, Any]:
        """The YAML spec form of this param (what `parse_param` reads back)."""
        if self.kind == "fixed":
            out: dict[str, Any] = {"fixed": _plain(self.value)}
        elif self.kind == "categorical":
            out = {"type": "categorical", "choices": list(self.choices)}
        else:
            out = {"type": self.kind, "low": self.low, "high": self.high}
            if self.step is not None:
                out["step"] = self.step
            if self.log:
                out["log"] = True
        if self.when:
            out["when"] = {p: (v[0] if len(v) == 1 else list(v)) for p, v in self.when.items()}
        return out

    def describe(self) -> str:
        """One human line, e.g. `optim.lr  float [1e-05, 0.01] log`."""
        if self.kind == "fixed":
            text = f"= {self.value!r} (fixed)"
        elif self.kind == "categorical":
            text = "one of " + ", ".join(map(repr, self.choices))
        else:
            text = f"{self.kind} [{self.low}, {self.high}]" + (f" step {self.step}" if self.step else "")
            text += " log" if self.log else ""
        cond = " and ".join(f"{p} in {{{', '.join(map(repr, v))}}}" for p, v in self.when.items())
        return f"{self.name:<36} {text}" + (f"  when {cond}" if cond else "")


def parse_param(name: str, raw: Any) -> Param:
    """Validate one `params.<name>` entry against the ExperimentConfig field it names.

    Raises:
        ConfigError: naming `params.<name>[.key]`, the allowed values and the given value.
    """
    where = f"params.{name}"
    tp, meta = field_info(name, where)
    if not isinstance(raw, Mapping):
        raise ConfigError(where, "{type: float|int|categorical, ...} or {fixed: VALUE}", raw, "expected a mapping")
    shape = from_dict(_ParamShape, raw, where)
    given = set(raw)
    when = _parse_when(shape.when, f"{where}.when")
    if "fixed" in given:
        extra = sorted(given - {"fixed", "when"})
        if extra:
            raise ConfigError(f"{where}.{extra[0]}", "only `when` beside `fixed`", raw[extra[0]], "not allowed")
        return Param(name, "fixed", value=_check_value(tp, meta, shape.fixed, f"{where}.fixed"), when=when)
    if shape.type is None:
        raise ConfigError(f"{where}.type", "float, int, categorical (or `fixed: VALUE`)", None, "required")
    base = _strip_optional(tp)
    allowed = {float: "float, categorical, fixed", int: "int, categorical, fixed"}.get(base, "categorical, fixed")
    if shape.type != "categorical" and base is not {"float": float, "int": int}[shape.type]:
        raise ConfigError(f"{where}.type", allowed, shape.type, f"does not fit the field's type {describe(tp)}")
    if shape.type == "categorical":
        return _parse_categorical(name, shape, given, tp, meta, when)
    return _parse_range(name, shape, given, base, meta, when)


def field_info(dotted: str, where: str) -> tuple[Any, Mapping[str, Any]]:
    """(declared type, bounds metadata) of a dotted ExperimentConfig field.

    Keys below a map field (`nee.timesteps.audio`) get the map's value type and the map's bounds,
    which `fld` applies to every item.
    """
    try:
        field_type(ExperimentConfig, dotted)  # the standard "names no config field" error
    except ConfigError as err:
        raise prefixed(err, "params", problem=f"names no ExperimentConfig field (key {dotted!r})") from None
    tp: Any = ExperimentConfig
    meta: Mapping[str, Any] = {}
    for part in dotted.split("."):
        current = _strip_optional(tp)
        if dataclasses.is_dataclass(current):
            tp = typing.get_type_hints(current)[part]
            meta = next(f for f in dataclasses.fields(current) if f.name == part).metadata
        else:
            args = get_args(current)
            tp = args[1] if args else Any
    return tp, meta


def same_value(a: Any, b: Any) -> bool:
    """Equality that keeps bools apart from ints (YAML `true` must not match a choice of 1)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _parse_categorical(name: str, shape: _ParamShape, given: set, tp: Any, meta: Mapping, when: FrozenDict) -> Param:
    where = f"params.{name}"
    _refuse(given, {"low", "high", "step", "log"}, where, "categorical")
    if not shape.choices:
        raise ConfigError(f"{where}.choices", "a non-empty list of values", shape.choices, "required for categorical")
    choices = []
    for i, choice in enumerate(shape.choices):
        here = f"{where}.choices[{i}]"
        if not isinstance(choice, _SCALARS):
            raise ConfigError(here, "null, bool, int, float or str (Optuna categorical types)", choice, "wrong type")
        value = _check_value(tp, meta, choice, here)
        if any(same_value(value, c) for c in choices):
            raise ConfigError(here, "distinct values", choice, "duplicate choice")
        choices.append(value)
    return Param(name, "categorical", choices=tuple(choices), when=when)


def _parse_range(name: str, shape: _ParamShape, given: set, base: type, meta: Mapping, when: FrozenDict) -> Param:
    where = f"params.{name}"
    _refuse(given, {"choices"}, where, shape.type or "")
    for key in ("low", "high"):
        if key not in given:
            raise ConfigError(f"{where}.{key}", f"a number of type {base.__name__}", None, f"required for {shape.type}")
    low = _check_value(base, meta, shape.low, f"{where}.low")
    high = _check_value(base, meta, shape.high, f"{where}.high")
    if not low < high:
        raise ConfigError(f"{where}.high", f"> low ({low})", high, "empty range (use `fixed:` for one value)")
    step = None if shape.step is None else convert(base, shape.step, f"{where}.step")
    if step is not None and step <= 0:
        raise ConfigError(f"{where}.step", "> 0", step, "out of range")
    if shape.log and (low <= 0 or step is not None):
        bad, allowed = ("low", "> 0 with log: true") if low <= 0 else ("step", "no step with log: true")
        raise ConfigError(f"{where}.{bad}", allowed, low if bad == "low" else step, "invalid with log")
    if step is not None and not math.isclose((high - low) / step, round((high - low) / step), abs_tol=1e-9):
        raise ConfigError(f"{where}.step", f"a divisor of high - low ({high - low})", step, "does not divide the range")
    return Param(name, shape.type, low=low, high=high, step=step, log=shape.log, when=when)  # type: ignore[arg-type]


def _parse_when(raw: Mapping[str, Any], where: str) -> FrozenDict:
    out = {}
    for parent, values in raw.items():
        allowed = tuple(values) if isinstance(values, (list, tuple)) else (values,)
        if not allowed:
            raise ConfigError(f"{where}.{parent}", "a value or a non-empty list of values", values, "empty")
        out[parent] = allowed
    return FrozenDict(out)


def _check_value(tp: Any, meta: Mapping[str, Any], value: Any, where: str) -> Any:
    value = convert(tp, value, where)
    check_bounds(meta, value, where)
    return value


def _refuse(given: set, keys: set, where: str, kind: str) -> None:
    bad = sorted(given & keys)
    if bad:
        raise ConfigError(f"{where}.{bad[0]}", f"keys allowed for type {kind}", bad[0], "not allowed")


def _strip_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _plain(value: Any) -> Any:
    """Tuples/FrozenDicts of a fixed value as plain lists/dicts, so the YAML dump stays safe."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value

"""Declarative search spaces (`search_spaces/*.yaml`) compiled to Optuna define-by-run functions.

A space file maps dotted ExperimentConfig fields to distributions:

    include: [nee.yaml]            # optional; merged in order, then this file's params (later wins)
    params:
      optim.lr: {type: float, low: 1.0e-5, high: 1.0e-2, log: true}
      model.fusion: {type: categorical, choices: [concat, gated, tensor_lowrank]}
      model.fusion_rank: {type: int, low: 2, high: 16, when: {model.fusion: tensor_lowrank}}
      nee.enabled: {fixed: true}

The compiled `SearchSpace` does no work at sampling time: everything is validated
when the file is loaded, and `define_by_run` only calls `trial.suggest_*`. The samplers that search
a space are in `sweeps.space.samplers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mer_core.configs.loader import read_yaml
from mer_core.errors import ConfigError
from sweeps.errors import prefixed
from sweeps.space.params import Param, parse_param, same_value


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space; params are in dependency order (parents before children).

    Attributes:
        params: The parameters, every `when` parent listed before the params it conditions.
        source: The file it was loaded from (for messages only; not compared).
    """

    params: tuple[Param, ...]
    source: str = field(default="", compare=False)

    @property
    def names(self) -> tuple[str, ...]:
        """Dotted names of all params, in order."""
        return tuple(p.name for p in self.params)

    @property
    def has_conditionals(self) -> bool:
        """Whether some param exists only under a `when` condition (a dynamic space for Optuna)."""
        return any(p.when for p in self.params)

    def define_by_run(self, trial: Any) -> dict[str, Any] | None:
        """Suggest every active param on `trial`; return the active fixed values (None if none).

        Suitable for `OptunaSearch(space=space.define_by_run)`: Ray merges the returned constants
        with the values it captured from the `suggest_*` calls, and Optuna's param names are the
        dotted field names.
        """
        values: dict[str, Any] = {}
        fixed: dict[str, Any] = {}
        for p in self.params:
            if not p.active(values):
                continue
            if p.kind == "fixed":
                values[p.name] = fixed[p.name] = p.value
            else:
                values[p.name] = p.suggest(trial)
        return fixed or None

    def sample_config_overrides(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Dotted overrides for `with_overrides`: the sampled `params` plus the active fixed values.

        Args:
            params: Sampled values by dotted name (Optuna's `trial.params` or Ray's trial config);
                fixed values in it are ignored in favour of the space's, inactive ones are dropped.

        Raises:
            ValueError: if `params` names no param of this space or lacks an active sampled param.
        """
        unknown = sorted(set(params) - set(self.names))
        if unknown:
            raise ValueError(f"not params of search space {self.source}: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for p in self.params:
            if not p.active(values):
                continue
            if p.kind == "fixed":
                values[p.name] = p.value
            elif p.name in params:
                values[p.name] = params[p.name]
            else:
                raise ValueError(f"no sampled value for active param {p.name} of search space {self.source}")
        return values

    def grid_blocker(self) -> str | None:
        """Why a grid search cannot run over this space, or None when it can."""
        for p in self.params:
            if p.when:
                return f"params.{p.name} is conditional (a grid would repeat configurations)"
            if p.kind != "fixed" and p.grid_values() is None:
                return f"params.{p.name} is a {p.kind} range without step"
        return None

    def grid(self) -> dict[str, list[Any]]:
        """The grid for `optuna.samplers.GridSampler` (fixed params are returned by define_by_run).

        Raises:
            ConfigError: if a param is conditional or a float/int range has no step.
        """
        blocker = self.grid_blocker()
        if blocker:
            allowed = "categorical params, or int/float ranges with step, none conditional"
            raise ConfigError("search.algorithm", allowed, "grid", f"space {self.source} is not grid-able: {blocker}")
        return {p.name: p.grid_values() for p in self.params if p.kind != "fixed"}  # type: ignore[misc]

    def grid_size(self) -> int:
        """Number of points in the grid (raises like `grid`)."""
        size = 1
        for values in self.grid().values():
            size *= len(values)
        return size

    def describe(self) -> list[str]:
        """Human lines for `--dry-run`, one per param."""
        return [p.describe() for p in self.params]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for logging; written as YAML, `load_space` reads back an equal space."""
        return {"params": {p.name: p.to_dict() for p in self.params}}


def load_space(path: str | Path) -> SearchSpace:
    """Load, merge (`include`) and validate a search-space YAML file.

    Raises:
        UserInputError: for a missing file or invalid YAML (one line with the file and line).
        ConfigError: for an invalid param, naming `params.<dotted>` and the file.
    """
    path = Path(path)
    params = _load_params(path, ())
    if not params:
        raise ConfigError("params", "at least one param", {}, f"empty search space in {path}")
    return SearchSpace(params=_dependency_order(params, path), source=str(path))


def _load_params(path: Path, stack: tuple[Path, ...]) -> dict[str, Param]:
    key = path.resolve()
    if key in stack:
        chain = " -> ".join(str(p) for p in (*stack, key))
        raise ConfigError("include", "files that do not include each other", chain, "include cycle")
    raw = read_yaml(path, what="search space")
    unknown = sorted(set(raw) - {"include", "params"})
    if unknown:
        raise ConfigError(unknown[0], "include, params", unknown[0], f"unknown key in search space {path}")
    merged: dict[str, Param] = {}
    includes = raw.get("include") or []
    for inc in [includes] if isinstance(includes, str) else includes:
        target = path.parent / str(inc)
        if not target.is_file():
            raise ConfigError("include", f"files relative to {path.parent}", inc, f"file not found (in {path})")
        merged.update(_load_params(target, (*stack, key)))
    own = raw.get("params") or {}
    if not isinstance(own, Mapping):
        raise ConfigError("params", "a mapping of dotted field -> spec", own, f"expected a mapping (in {path})")
    for name, spec in own.items():
        try:
            merged[str(name)] = parse_param(str(name), spec)
        except ConfigError as err:
            raise prefixed(err, "", suffix=f" (in {path})") from None
    return merged


def _dependency_order(params: dict[str, Param], path: Path) -> tuple[Param, ...]:
    """Check every `when` and order params parents-first (file order otherwise kept)."""
    for p in params.values():
        for parent, allowed in p.when.items():
            where = f"params.{p.name}.when.{parent}"
            if parent not in params:
                raise ConfigError(where, f"a param of this space ({', '.join(params)})", parent, f"unknown in {path}")
            q = params[parent]
            options = q.choices if q.kind == "categorical" else (q.value,) if q.kind == "fixed" else None
            if options is None:
                given = f"{parent} ({q.kind})"
                raise ConfigError(where, "a categorical or fixed param", given, f"bad parent in {path}")
            for v in allowed:
                if not any(same_value(v, c) for c in options):
                    raise ConfigError(where, ", ".join(map(repr, options)), v, f"not a value of {parent} in {path}")
    ordered: list[Param] = []
    state: dict[str, int] = {}  # 1 = on the current DFS path, 2 = placed

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join((*trail[trail.index(name) :], name))
            raise ConfigError(f"params.{name}.when", "conditions without cycles", cycle, f"cycle in {path}")
        state[name] = 1
        for parent in params[name].when:
            visit(parent, (*trail, name))
        state[name] = 2
        ordered.append(params[name])

    for name in params:
        visit(name, ())
    return tuple(ordered)

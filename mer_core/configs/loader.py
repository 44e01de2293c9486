"""YAML + dotted overrides -> validated ExperimentConfig, and back.

This module is the one place YAML enters. Overrides (`--set model.hidden_dim=256`,
search-space samples, ablation variants) are applied to the raw mapping *before*
validation, so every path through here is validated the same way and no config is
ever mutated afterwards.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from mer_core.configs.fields import field_type, from_dict, to_dict
from mer_core.configs.schema import ExperimentConfig
from mer_core.errors import ConfigError, UserInputError


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, except that a key given twice in one mapping is an error.

    PyYAML keeps the last of two equal keys without a word: a second `data:` section, or `lr`
    written twice, silently replaced the first.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` merges, it does not repeat
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (list, dict)):
                continue  # unhashable: the base constructor reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _safe_load_unique(text: str) -> Any:
    """`yaml.safe_load(text)` through `_UniqueKeyLoader` (what safe_load does, with that loader)."""
    loader = _UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: str | Path, *, what: str = "config") -> dict[str, Any]:
    """Read a YAML mapping safely; any problem is a one-line UserInputError."""
    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"{what} file not found: {p}")
    try:
        data = _safe_load_unique(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise UserInputError(
            f"{what} file {p}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start})"
        ) from None
    except OSError as err:
        raise UserInputError(f"{what} file {p}: cannot be read ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserInputError(f"{what} file {p}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserInputError(f"{what} file {p}: expected a mapping at top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """`"a.b=1e-3"` -> `("a.b", 0.001)`; the value is read as YAML (numbers, bools, lists)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserInputError(f"--set: expected KEY=VALUE (e.g. model.hidden_dim=256); given: {text!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key, parsed


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any], *, root: type = ExperimentConfig) -> dict:
    """Return a deep copy of `raw` with dotted `overrides` set (each key must name a field)."""
    out = copy.deepcopy(dict(raw))
    for dotted, value in overrides.items():
        field_type(root, dotted)  # raises ConfigError if the path names no field
        parts = dotted.split(".")
        set_nested(out, parts[:-1], parts[-1], value)
    return out


def set_nested(tree: dict, path: list[str], key: str, value: Any) -> None:
    """`tree[path[0]]...[path[-1]][key] = value`, creating mappings on the way (in place)."""
    node = tree
    for i, part in enumerate(path):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(".".join(path[: i + 1]), "a mapping", child, "cannot set a sub-key of a value")
        node = child
    node[key] = value


def build_config(raw: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Validated config from a raw mapping plus dotted overrides."""
    merged = apply_overrides(raw or {}, overrides or {})
    return from_dict(ExperimentConfig, merged)


def load_config(path: str | Path | None = None, sets: Iterable[str] = ()) -> ExperimentConfig:
    """The loader behind every CLI: YAML file (or defaults) + `--set k=v` strings."""
    raw = read_yaml(path) if path is not None else {}
    overrides = dict(parse_override(s) for s in sets)
    return build_config(raw, overrides)


def with_overrides(cfg: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """A new validated config: `cfg` with dotted overrides applied (cfg is untouched)."""
    return build_config(to_dict(cfg), overrides)


def dump_config(cfg: ExperimentConfig, *, header: str = "") -> str:
    """YAML text that `load_config` turns back into an equal config."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, width=100)
    if header:
        text = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + text
    return text


def save_config(cfg: ExperimentConfig, path: str | Path, *, header: str = "") -> Path:
    """Write `cfg` as YAML atomically (temp file + rename), so no half-written file is left."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(dump_config(cfg, header=header), encoding="utf-8")
    tmp.replace(p)
    return p

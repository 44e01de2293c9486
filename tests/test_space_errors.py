"""Malformed search spaces: each is a one-line error naming the field and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from mer_core.errors import ConfigError, UserInputError
from sweeps.space import load_space


def _space(tmp_path: Path, body: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


BAD = {
    "unknown field": ("optim.lrr: {type: float, low: 0.1, high: 0.2}", "params.optim.lrr", ConfigError),
    "float on int field": ("model.layers: {type: float, low: 1, high: 4}", "params.model.layers.type", ConfigError),
    "int on float field": ("optim.lr: {type: int, low: 1, high: 4}", "params.optim.lr.type", ConfigError),
    "range on bool field": ("nee.enabled: {type: float, low: 0, high: 1}", "params.nee.enabled.type", ConfigError),
    "bad literal choice": (
        "nee.noise: {type: categorical, choices: [gaussian, salt]}",
        "params.nee.noise.choices[1]",
        ConfigError,
    ),
    "choice out of bounds": (
        "model.hidden_dim: {type: categorical, choices: [-1, 64]}",
        "params.model.hidden_dim.choices[0]",
        ConfigError,
    ),
    "non-scalar choice": (
        "model.head_hidden: {type: categorical, choices: [[64], [128]]}",
        "params.model.head_hidden.choices[0]",
        ConfigError,
    ),
    "duplicate choice": ("optim.batch_size: {type: categorical, choices: [16, 16]}", "choices[1]", ConfigError),
    "fixed out of bounds": ("model.dropout: {fixed: 1.5}", "params.model.dropout.fixed", ConfigError),
    "fixed with range keys": ("model.dropout: {fixed: 0.1, low: 0.0}", "params.model.dropout.low", ConfigError),
    "low >= high": ("optim.lr: {type: float, low: 0.1, high: 0.01}", "params.optim.lr.high", ConfigError),
    "low below field bound": ("optim.lr: {type: float, low: 0.0, high: 0.01}", "params.optim.lr.low", ConfigError),
    "int low not int": ("model.layers: {type: int, low: 1.5, high: 4}", "params.model.layers.low", ConfigError),
    "log needs low > 0": (
        "optim.weight_decay: {type: float, low: 0.0, high: 0.1, log: true}",
        "params.optim.weight_decay.low",
        ConfigError,
    ),
    "log with step": (
        "optim.lr: {type: float, low: 0.001, high: 0.1, step: 0.001, log: true}",
        "params.optim.lr.step",
        ConfigError,
    ),
    "step not > 0": (
        "model.hidden_dim: {type: int, low: 64, high: 512, step: 0}",
        "params.model.hidden_dim.step",
        ConfigError,
    ),
    "step not dividing": (
        "model.hidden_dim: {type: int, low: 64, high: 500, step: 64}",
        "params.model.hidden_dim.step",
        ConfigError,
    ),
    "unknown spec key": ("optim.lr: {type: float, lo: 0.001, high: 0.1}", "params.optim.lr.lo", ConfigError),
    "missing type": ("optim.lr: {low: 0.001, high: 0.1}", "params.optim.lr.type", ConfigError),
    "missing choices": ("model.fusion: {type: categorical}", "params.model.fusion.choices", ConfigError),
    "spec not a mapping": ("optim.lr: 0.001", "params.optim.lr", ConfigError),
    "when unknown param": (
        "model.fusion_rank: {type: int, low: 2, high: 8, when: {model.fusion: tensor_lowrank}}",
        "params.model.fusion_rank.when.model.fusion",
        ConfigError,
    ),
    "when value not a choice": (
        "model.fusion: {type: categorical, choices: [concat, gated]}\n"
        "  model.fusion_rank: {type: int, low: 2, high: 8, when: {model.fusion: [gated, x]}}",
        "params.model.fusion_rank.when.model.fusion",
        ConfigError,
    ),
    "when on a range": (
        "model.layers: {type: int, low: 1, high: 4}\n"
        "  model.dropout: {type: float, low: 0, high: 0.5, when: {model.layers: 2}}",
        "params.model.dropout.when.model.layers",
        ConfigError,
    ),
    "when cycle": (
        "model.fusion: {type: categorical, choices: [concat, gated], when: {model.head: fc}}\n"
        "  model.head: {type: categorical, choices: [fc, linear], when: {model.fusion: gated}}",
        "cycle",
        ConfigError,
    ),
    "empty space": ("", "params", ConfigError),
    "yaml syntax": ("optim.lr: {type: float, low: [", "line", UserInputError),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_space_is_one_line_error_naming_the_field(case: str, tmp_path: Path) -> None:
    body, expected, error = BAD[case]
    path = _space(tmp_path, f"params:\n  {body}\n" if body else "params: {}\n", "bad_space.yaml")
    with pytest.raises(error) as info:
        load_space(path)
    message = str(info.value)
    assert expected in message and "\n" not in message
    assert "bad_space.yaml" in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("parms: {}\n", "parms"),
        ("include: [missing.yaml]\n", "include"),
        ("include: [space.yaml]\n", "include cycle"),
        ("params: [optim.lr]\n", "params"),
    ],
)
def test_bad_space_file_structure(body: str, expected: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        load_space(_space(tmp_path, body))
    assert "\n" not in str(info.value)


def test_missing_space_file_is_user_input_error(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"not found"):
        load_space(tmp_path / "nope.yaml")

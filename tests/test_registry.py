"""Registry: registration, lookup, and the ConfigError an unknown name raises."""

from __future__ import annotations

import pytest

from mer_core.errors import ConfigError, UserInputError
from mer_core.registry import Registry


def _registry() -> Registry[type]:
    reg: Registry[type] = Registry("widget")

    @reg.register("beta")
    class Beta:
        pass

    @reg.register("alpha")
    class Alpha:
        pass

    return reg


def test_register_returns_entry_and_get_finds_it() -> None:
    reg: Registry[type] = Registry("widget")

    class Gamma:
        pass

    assert reg.register("gamma")(Gamma) is Gamma
    assert reg.get("gamma", field="x.widget") is Gamma
    assert "gamma" in reg and "delta" not in reg
    assert len(reg) == 1
    assert reg.name == "widget"


def test_names_are_sorted() -> None:
    reg = _registry()
    assert reg.names() == ("alpha", "beta")
    assert list(reg) == ["alpha", "beta"]


def test_unknown_name_raises_config_error_naming_field_and_allowed() -> None:
    reg = _registry()
    with pytest.raises(ConfigError) as info:
        reg.get("gamma", field="model.widget")
    err = info.value
    assert isinstance(err, UserInputError)
    assert err.field == "model.widget"
    assert err.allowed == "alpha, beta"
    assert err.given == "gamma"
    message = str(err)
    assert message.startswith("model.widget: unknown widget")
    assert "alpha, beta" in message and "'gamma'" in message


def test_field_defaults_to_registry_name() -> None:
    with pytest.raises(ConfigError, match=r"^widget: unknown widget"):
        _registry().get("nope")


def test_unhashable_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        _registry().get(["alpha"], field="model.widget")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", None])
def test_bad_name_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        Registry("widget").register(bad)  # type: ignore[arg-type]


def test_duplicate_name_rejected() -> None:
    reg = _registry()
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha")

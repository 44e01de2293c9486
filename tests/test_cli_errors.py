"""Bad input through the real CLIs: exit status 2, one line on stderr, nothing written.

Every case runs `run_sweep.py ...` or `mer_core.train ...` in a fresh folder, as a user would, and
checks the contract of README/DESIGN: status 2, stderr is exactly one line starting with "error:"
that names the culprit (the field, flag or file) and the value given, no traceback, and the folder
is left as it was (no `runs/`, no `mlflow.db`, no `mlruns/`, no `--save` folder). All of them fail
in validation, before Ray or MLflow start.

A few cases (IN_SUBPROCESS: one per kind of failure) run `python run_sweep.py` / `python -m
mer_core.train` in a fresh interpreter, where whatever an import prints (a library's warning, a
banner) would land on stderr too. The rest call the same entry point, `main` under `guarded_main`
as `exit_cli` runs it, in this process with its own working folder, environment and captured
stdout/stderr: a fresh interpreter per case spent its seconds importing torch, Ray and MLflow.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from mer_core.data import load_data
from sweeps.spec import load_sweep
from tests.cli_error_cases import CASES, FEATURE_CLASSES, FEATURE_DIMS, FEATURES_DATA, Case, make_features
from tests.sweep_helpers import ROOT, free_port, run_main_here, run_program, write_sweep


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _set_up(case: Case, tmp_path: Path) -> tuple[Path, Callable[[str], str]]:
    """The working folder with the case's files (and its features folder beside it); the filler of `{...}`."""
    work, feats = tmp_path / "work", tmp_path / "feats"
    work.mkdir()
    values = {"{port}": str(free_port()), "{feats}": str(feats)}

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace(key, value)
        return text

    if case.features is not None:
        make_features(feats, case.features)
    for rel, text in case.files.items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(fill(text))
    if case.sweep is not None:
        # write_sweep names the file after the sweep; relative files in it resolve against its folder.
        path = write_sweep(work, "bad", **case.sweep)
        path.write_text(fill(path.read_text()))
    return work, fill


@dataclass
class Outcome:
    """One case run through its CLI: the process, and the working folder's files before the run."""

    proc: subprocess.CompletedProcess
    tmp: Path
    work: Path
    before: set[str]
    fill: Callable[[str], str]


# Run as `python ...` in a fresh interpreter: the argument parser, a sweep file, loading features,
# the tracking store, the Ray address, the local cluster's resources, and the training CLI.
IN_SUBPROCESS = frozenset(
    {
        "no-sweep-argument",
        "yaml-syntax",
        "feature-dims-differ",
        "unreachable-tracking-uri",
        "unreachable-ray-address",
        "gpus-beyond-the-local-cluster",
        "train-nan-features",
    }
)


def _main_of(case: Case) -> Callable[[Sequence[str] | None], int]:
    if case.train:
        from mer_core.train.cli import main
    else:
        from sweeps.commands.run import main
    return main


def _run_case(name: str, tmp_path: Path, *, in_subprocess: bool) -> Outcome:
    case = CASES[name]
    work, fill = _set_up(case, tmp_path)
    args = [fill(a) for a in case.args]
    before = _listing(work)
    if in_subprocess:
        # The environment must not point MLflow elsewhere: the default store is ./mlflow.db here.
        program = ["-m", "mer_core.train"] if case.train else [str(ROOT / "run_sweep.py")]
        proc = run_program(program, args, work, timeout=120)
    else:
        proc = run_main_here(_main_of(case), args, work)
    return Outcome(proc, tmp_path, work, before, fill)


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory) -> dict[str, Outcome]:
    """Every selected case, each in its own folder: the IN_SUBPROCESS ones in a fresh interpreter
    each (a few at a time, in threads), the others meanwhile one after another in this process.
    Assertions stay per case, in the test below.
    """
    this = request.node.nodeid if hasattr(request.node, "nodeid") else ""
    selected = [
        item.callspec.params["name"]
        for item in request.session.items
        if item.originalname == "test_bad_input_exits_2_with_one_line" and item.nodeid.startswith(this)
    ]
    folders = {name: tmp_path_factory.mktemp(f"case-{name}") for name in selected}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            name: pool.submit(_run_case, name, folder, in_subprocess=True)
            for name, folder in folders.items()
            if name in IN_SUBPROCESS
        }
        here = [name for name in folders if name not in futures]
        done = {name: _run_case(name, folders[name], in_subprocess=False) for name in here}
        return {**done, **{name: future.result() for name, future in futures.items()}}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line(name, outcomes):
    case, out = CASES[name], outcomes[name]
    proc, fill = out.proc, out.fill
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr[-2000:]}"
    assert len(lines) == 1 and lines[0].strip(), f"expected one line on stderr, got:\n{proc.stderr[-2000:]}"
    assert lines[0].startswith("error:"), lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in map(fill, case.names):
        assert fragment in lines[0], f"{fragment!r} not named in: {lines[0]}"
    assert _listing(out.work) == out.before, "bad input wrote files"
    assert not list((out.tmp / "feats").glob(".mersweep-cache/*")), "a failed load left a cache entry"


def test_there_are_at_least_30_distinct_cases():
    assert len(CASES) >= 30
    assert set(CASES) >= IN_SUBPROCESS


def test_the_sweeps_the_cases_spoil_are_valid(tmp_path):
    """Each case breaks one thing in an otherwise valid sweep (so the error is the one named)."""
    spec = load_sweep(write_sweep(tmp_path, "good"))
    assert spec.search.num_samples >= 1 and spec.resources.max_concurrent >= 1
    # The intact feature folder loads, with exactly the modalities the sweep names.
    feats = make_features(tmp_path / "feats", "none")
    sweep = write_sweep(
        tmp_path, "features", data={**FEATURES_DATA, "features": {**FEATURES_DATA["features"], "root": str(feats)}}
    )
    data = load_data(load_sweep(sweep).base_config().data)
    assert data.dims == FEATURE_DIMS and data.class_names == FEATURE_CLASSES

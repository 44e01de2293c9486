"""Bad input through the real CLIs: exit status 2, one line on stderr, nothing written.

Every case runs `python run_sweep.py ...` or `python -m mer_core.train ...` in a fresh folder, as
a user would, and checks the contract of README/DESIGN: status 2, stderr is exactly one line
starting with "error:" that names the culprit, no traceback, and the folder is left as it was
(no `runs/`, no `mlflow.db`, no `mlruns/`, no `--save` folder).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sweeps.spec import load_sweep
from tests.sweep_helpers import ROOT, run_cli, write_sweep


@dataclass(frozen=True)
class Case:
    """One bad input: files to write in the working folder, the arguments, what stderr names."""

    args: list[str]
    names: str  # a fragment the one-line message must contain (the field, flag or file at fault)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> text, written before the run
    sweep: dict | None = None  # write_sweep(overrides) as "bad.yaml" (None: no sweep file)
    train: bool = False  # python -m mer_core.train instead of run_sweep.py


BAD_SPACE = "params:\n  model.no_such_field: {type: float, low: 0.0, high: 1.0}\n"

CASES = {
    "yaml-syntax": Case(["bad.yaml"], "invalid YAML", files={"bad.yaml": "name: [unclosed\nkind: search\n"}),
    "unknown-sweep-key": Case(["bad.yaml"], "searh", sweep={"searh": {"num_samples": 3}}),
    "wrong-type": Case(["bad.yaml"], "search.num_samples", sweep={"search": {"num_samples": "many"}}),
    "out-of-range": Case(["bad.yaml"], "resources.max_concurrent", sweep={"resources": {"max_concurrent": 0}}),
    "unknown-metric": Case(["bad.yaml"], "metric", sweep={"metric": "val/auc"}),
    "space-names-missing-field": Case(
        ["bad.yaml"], "model.no_such_field", files={"space.yaml": BAD_SPACE}, sweep={"search_space": "space.yaml"}
    ),
    "empty-space": Case(
        ["bad.yaml"], "params", files={"space.yaml": "params: {}\n"}, sweep={"search_space": "space.yaml"}
    ),
    "missing-sweep-file": Case(["no_such_sweep.yaml"], "no_such_sweep.yaml"),
    "missing-data-folder": Case(
        ["bad.yaml"],
        "data.features.root",
        sweep={"data": {"source": "features", "folds": 1, "features": {"root": "/nonexistent/no_such_features"}}},
    ),
    "unknown-data-source": Case(["bad.yaml"], "data.source", sweep={"data": {"source": "imagenet"}}),
    "bad-set-syntax": Case(["bad.yaml", "--set", "model.hidden_dim"], "--set", sweep={}),
    "set-unknown-field": Case(["bad.yaml", "--set", "model.hidden_dims=64"], "model.hidden_dims", sweep={}),
    "set-out-of-range": Case(["bad.yaml", "--set", "optim.lr=-1"], "optim.lr", sweep={}),
    "set-unknown-registry-name": Case(["bad.yaml", "--set", "model.head=nope"], "model.head", sweep={}),
    "num-samples-zero": Case(["bad.yaml", "--num-samples", "0"], "--num-samples", sweep={}),
    "unknown-cli-flag": Case(["bad.yaml", "--bogus"], "--bogus", sweep={}),
    "train-missing-config": Case(["no_such_config.yaml", "--save", "out"], "no_such_config.yaml", train=True),
    "train-wrong-type": Case(["--set", "model.hidden_dim=wide", "--save", "out"], "model.hidden_dim", train=True),
    "train-bad-set-syntax": Case(["--set", "optim.lr", "--save", "out"], "--set", train=True),
    "train-unknown-flag": Case(["--epochs", "3"], "--epochs", train=True),
}


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _run_train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "mer_core.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line(name, tmp_path):
    case = CASES[name]
    for rel, text in case.files.items():
        (tmp_path / rel).write_text(text)
    if case.sweep is not None:
        # write_sweep names the file after the sweep; the search space may be relative to it.
        write_sweep(tmp_path, "bad", **case.sweep)
    before = _listing(tmp_path)
    # The environment must not point MLflow elsewhere: the default store is ./mlflow.db here.
    proc = _run_train(case.args, tmp_path) if case.train else run_cli(case.args, cwd=tmp_path, timeout=120)

    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr[-2000:]}"
    assert len(lines) == 1 and lines[0].strip(), f"expected one line on stderr, got:\n{proc.stderr[-2000:]}"
    assert lines[0].startswith("error:"), lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert case.names in lines[0], f"{case.names!r} not named in: {lines[0]}"
    assert _listing(tmp_path) == before, "bad input wrote files"


def test_the_sweep_the_cases_spoil_is_valid(tmp_path):
    """Each case breaks one thing in an otherwise valid sweep (so the error is the one named)."""
    spec = load_sweep(write_sweep(tmp_path, "good"))
    assert spec.search.num_samples >= 1 and spec.resources.max_concurrent >= 1

"""The MLflow vocabulary (`sweeps/tracking/names.py`) is the only place that spells an MLflow name.

A tag, param, metric or artifact name spelled as a literal elsewhere in `sweeps/`, `analysis/` or
`benchmarks/` is how a writer and a reader drift apart; these tests find such literals.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sweeps.tracking import names

ROOT = Path(__file__).resolve().parents[1]
NAMES_FILE = ROOT / "sweeps/tracking/names.py"
SCANNED = ("sweeps", "analysis", "benchmarks")
# Where a name is spelled by the writer and read back by the readers: each must import the vocabulary.
USERS = (
    "sweeps/tracking/tracker.py",
    "sweeps/tracking/callback.py",
    "sweeps/execution/engine.py",
    "sweeps/ablation/plan.py",
    "sweeps/trainable/trial.py",
    "analysis/runs.py",
    "analysis/export_reseed.py",
    "analysis/export_select.py",
    "analysis/fit_voting.py",
    "analysis/report/collect.py",
    "analysis/report/publish.py",
    "analysis/report/tables.py",
    "analysis/report/readme_pictures.py",
    "benchmarks/bench_search_efficiency.py",
)


def _vocabulary() -> dict[str, str]:
    """Value -> constant name of every string constant in names.py (private prefixes included)."""
    tree = ast.parse(NAMES_FILE.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[node.value.value] = target.id
    return out


def _distinctive(value: str) -> bool:
    """Names spelled like nothing else: dotted, slashed or hyphenated (`mersweep.status`, `best/`,
    `config.yaml`, `export-reseed`). Bare words (`seed`, `eval`, `export`) are too common to scan for."""
    return any(c in value for c in "./-")


def _mlflow_system_tag(value: str) -> bool:
    """MLflow's own tags (`mlflow.runName`); `mlflow.db`, the local store's file, is none."""
    return value.startswith("mlflow.") and not value.endswith(".db")


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _logger_names(tree: ast.AST) -> set[int]:
    """`getLogger("mersweep.sweep")`: logger names share the `mersweep.` prefix, but are no MLflow names."""
    return {
        id(arg)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith("getLogger")
        for arg in node.args
    }


def _spelled_elsewhere() -> list[str]:
    vocab = {v: k for v, k in _vocabulary().items() if _distinctive(v)}
    prefixes = tuple(v for v in vocab if v.endswith(("/", ".")))
    hits = []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == NAMES_FILE:
                continue
            tree = ast.parse(path.read_text())
            skip = _docstrings(tree) | _logger_names(tree)
            for node in ast.walk(tree):
                if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or id(node) in skip:
                    continue
                value = node.value
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                if value in vocab:
                    hits.append(f"{where}: {value!r} is names.{vocab[value]}")
                elif value.startswith((*prefixes, "mersweep.")) or _mlflow_system_tag(value):
                    hits.append(f"{where}: {value!r} looks like an MLflow name; add it to names.py")
    return hits


def test_scan_sees_the_vocabulary():
    vocab = _vocabulary()
    for value in ("mersweep.trial_id", "mlflow.parentRunId", "config.yaml", "val_logits.npz", "sweep.yaml"):
        assert value in vocab
    assert names.best_metric("val/weighted_f1") == "best/val/weighted_f1"
    assert names.final_metric("val/accuracy") == "final/val/accuracy"
    assert names.posthoc_weight_tag("fusion") == "mersweep.posthoc.weight.fusion"


def test_no_mlflow_name_is_spelled_outside_the_vocabulary():
    hits = _spelled_elsewhere()
    assert not hits, "MLflow names spelled outside sweeps/tracking/names.py:\n" + "\n".join(hits)


@pytest.mark.parametrize("path", USERS)
def test_writers_and_readers_import_the_vocabulary(path):
    tree = ast.parse((ROOT / path).read_text())
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "sweeps.tracking.names" in modules, f"{path} does not import sweeps.tracking.names"


def test_the_scan_finds_a_stray_literal(tmp_path):
    """The scan is not vacuous: a reader that spells a tag itself is reported."""
    tree = ast.parse('TAG = "mersweep.status"\nrun.tags.get("mersweep.new_tag")\nlogging.getLogger("mersweep.x")\n')
    skip = _docstrings(tree) | _logger_names(tree)
    seen = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in skip]
    assert seen == ["mersweep.status", "mersweep.new_tag"]
    assert "mersweep.status" in _vocabulary()

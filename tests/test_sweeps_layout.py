"""The `sweeps/` package layout: every package says what it holds, and the sweep YAMLs stay on top.

Import cycles (in `sweeps/` and everywhere else) are checked by tests/test_import_cycles.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sweeps"


def test_every_package_says_what_it_holds():
    for init in sorted([*PACKAGE.rglob("__init__.py"), *(ROOT / "mer_core").rglob("__init__.py")]):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 40 and "TODO" not in doc, f"{init.relative_to(ROOT)} needs a docstring saying what is inside"


def test_sweep_yamls_stay_at_the_top_of_sweeps():
    """README commands name `sweeps/<name>.yaml`; sub-packages hold code only."""
    assert (PACKAGE / "quickstart.yaml").is_file()
    assert not [p for p in PACKAGE.rglob("*.yaml") if p.parent != PACKAGE]

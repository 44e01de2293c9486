"""The `sweeps/` package layout: no import cycles, and every package says what it holds.

A cycle counts every import made when a module loads: top-level statements, `if TYPE_CHECKING:`
and `try:` blocks included (a type-only import still couples the two modules), and the package
`__init__` that importing a submodule runs. Imports inside function bodies are not module-level;
they are kept for heavy dependencies (Ray, MLflow), not to dodge a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sweeps"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(tree: ast.Module) -> list[str]:
    """Modules named by imports that run when the module loads (not inside functions or classes)."""
    out: list[str] = []

    def visit(stmts: list[ast.stmt]) -> None:
        for node in stmts:
            if isinstance(node, ast.Import):
                out.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out.append(node.module)
                out.extend(f"{node.module}.{a.name}" for a in node.names)  # `from pkg import submodule`
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "finalbody", []))

    visit(tree.body)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the sweeps modules loading it loads: each target and the packages above it that
    are not already above the importer (those are loading already)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        if path.name == "__init__.py":
            own.add(name)
        for target in _module_level_imports(ast.parse(path.read_text())):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                dep = ".".join(parts[:i])
                if dep in modules and dep not in own and dep != name:
                    graph[name].add(dep)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def test_no_import_cycles_in_sweeps():
    cycles = find_cycles(import_graph())
    assert not cycles, f"import cycles in sweeps/: {cycles}"


def test_the_cycle_finder_sees_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_a_type_only_import_counts():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from sweeps.spec import SweepSpec\n")
    assert "sweeps.spec" in _module_level_imports(tree)
    inside = ast.parse("def f():\n    from sweeps.spec import SweepSpec\n")
    assert _module_level_imports(inside) == []


def test_every_package_says_what_it_holds():
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 40 and "TODO" not in doc, f"{init.relative_to(ROOT)} needs a docstring saying what is inside"


def test_sweep_yamls_stay_at_the_top_of_sweeps():
    """README commands name `sweeps/<name>.yaml`; sub-packages hold code only."""
    assert (PACKAGE / "quickstart.yaml").is_file()
    assert not [p for p in PACKAGE.rglob("*.yaml") if p.parent != PACKAGE]

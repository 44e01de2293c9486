"""No import cycles between the project's modules at import time.

The packages are walked from the file tree, so a new sub-package is covered without touching this
file. Imports inside functions do not count; type-only imports under `if TYPE_CHECKING:` do (they
still couple the two modules); see `tests/import_graph.py`.
"""

from __future__ import annotations

from pathlib import Path

from tests.import_graph import discover_modules, find_cycles, format_cycle, import_graph

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mer_core", "sweeps", "analysis", "benchmarks")


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_project_has_no_module_level_import_cycles() -> None:
    graph = import_graph(ROOT, PACKAGES)
    assert {"mer_core", "sweeps", "analysis", "benchmarks"} <= graph.keys()  # the walk found the packages
    assert sum(len(edges) for edges in graph.values()) > 100  # and their imports: an empty graph has no cycles
    cycles = find_cycles(graph)
    listing = "\n".join(f"  {format_cycle(c)}" for c in cycles)
    assert not cycles, (
        f"{len(cycles)} module-level import cycle(s) (each the shortest through one of its modules); break them by "
        f"moving the shared names into a module both import, not by hiding the import in a function:\n{listing}"
    )


def test_discovery_walks_sub_packages(tmp_path: Path) -> None:
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "", "pkg/sub/__init__.py": "", "pkg/sub/deep/b.py": ""})
    assert set(discover_modules(tmp_path, ["pkg"])) == {"pkg", "pkg.a", "pkg.sub", "pkg.sub.deep.b"}


def test_a_module_level_cycle_is_found_through_every_import_form(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "import pkg.b\n",  # plain import
            "pkg/b.py": "from .sub import c\n",  # relative, naming a submodule
            "pkg/sub/__init__.py": "",
            "pkg/sub/c.py": "from pkg.a import thing\n",  # absolute, naming an attribute
            "pkg/ok.py": "from pkg import a\n",  # imports into the cycle, is not on it
        },
    )
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.sub", "pkg.sub.c"}  # `pkg.sub`'s __init__ runs on the way
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]]
    assert format_cycle(find_cycles(graph)[0]) == "pkg.a -> pkg.b -> pkg.sub.c -> pkg.a"


def test_imports_in_functions_do_not_count_and_type_checking_does(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import f\n",
            "pkg/b.py": (
                "from typing import TYPE_CHECKING\n"
                "import typing\n"
                "if TYPE_CHECKING:\n    from pkg.a import A\n"
                "if typing.TYPE_CHECKING:\n    import pkg.a\n"
                "else:\n    import pkg.c\n"  # the else branch does run
                "def f():\n    from pkg import a\n"
                "class K:\n    def m(self):\n        import pkg.a\n"
            ),
            "pkg/c.py": "",
        },
    )
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.b"] == {"pkg.a", "pkg.c"}  # type-only imports couple modules too
    assert [format_cycle(c) for c in find_cycles(graph)] in (["pkg.a -> pkg.b -> pkg.a"], ["pkg.b -> pkg.a -> pkg.b"])


def test_imports_in_module_level_blocks_and_class_bodies_count(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "try:\n    import pkg.b\nexcept ImportError:\n    import pkg.c\n",
            "pkg/b.py": "class K:\n    from pkg import a\n",
            "pkg/c.py": "",
        },
    )
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.a"] == {"pkg.b", "pkg.c"}
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_a_submodule_reaching_its_own_package_only_on_the_way_is_no_cycle(tmp_path: Path) -> None:
    # The everyday re-export: Python has started `pkg` before `pkg.a` runs, so `import pkg.b` in
    # `pkg.a` does not re-enter `pkg/__init__`; reading a name from `pkg` itself does.
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import f\nfrom .b import g\nNAME = 1\n",
            "pkg/a.py": "import pkg.b\nfrom pkg.b import g\n",
            "pkg/b.py": "",
            "pkg/c.py": "from pkg import NAME\n",
            "pkg/d.py": "from . import NAME\n",
        },
    )
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.c"] == graph["pkg.d"] == {"pkg"}
    assert find_cycles(graph) == []
    _write(tmp_path, {"pkg/__init__.py": "from pkg.a import f\n", "pkg/a.py": "from pkg import NAME\n"})
    assert find_cycles(import_graph(tmp_path, ["pkg"])) == [["pkg", "pkg.a", "pkg"]]


def test_every_module_of_a_larger_cycle_is_named(tmp_path: Path) -> None:
    # Two cycles sharing `a`: both are reported, each once.
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "import pkg.b\nimport pkg.c\n",
            "pkg/b.py": "import pkg.a\n",
            "pkg/c.py": "import pkg.d\n",
            "pkg/d.py": "import pkg.a\n",
        },
    )
    cycles = find_cycles(import_graph(tmp_path, ["pkg"]))
    assert cycles == [["pkg.a", "pkg.b", "pkg.a"], ["pkg.a", "pkg.c", "pkg.d", "pkg.a"]]

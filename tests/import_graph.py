"""The graph of module-level imports between a project's own modules, and the cycles in it.

Imports that couple two modules at load time count: statements at module level, in class bodies
and in module-level `if`/`try`/`with` blocks, and type-only imports under `if TYPE_CHECKING:`
(they never run, but they still make each module's meaning depend on the other's, which is the
coupling a layering rule is about). Imports inside functions run at call time, after every module
has finished loading; they are kept for heavy dependencies (Ray, MLflow), not to dodge a cycle.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path


def discover_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Every module of `packages` (folders under `root`), found from the file tree.

    Args:
        root: the folder that holds the packages (the one on `sys.path`).
        packages: top-level package folder names; sub-packages are found by walking them.

    Returns:
        Dotted module name -> source file; a package's name maps to its `__init__.py`.
    """
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _import_time_statements(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of `body` that couple modules at load time (not those in functions)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue  # its body runs when called, after the import finished
        else:
            # Class bodies, if/try/with/for/while/match blocks at module level: all run on import.
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                for child in getattr(node, field, None) or ():
                    if isinstance(child, ast.stmt):
                        yield from _import_time_statements([child])
                    elif isinstance(child, ast.ExceptHandler | ast.match_case):  # statements one level down
                        yield from _import_time_statements(child.body)


def _ancestors(name: str) -> list[str]:
    """`a.b.c` -> [`a`, `a.b`]: the packages Python imports before the module itself."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def module_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that module `name` imports at import time.

    `import a.b.c` runs `a`, `a.b` and `a.b.c`; `from a.b import z` runs `a`, `a.b` and, when `z`
    is a submodule, `a.b.z`. Python imports a module's own parent packages before the module, so
    when one of them is only implied on the way to a sibling it adds no edge; it does add one
    when names are read from it (`from mer_core.configs import ExperimentConfig` inside
    `mer_core.configs.loader` needs that `__init__` to have got that far).

    Args:
        name: the importing module's dotted name.
        path: its source file.
        modules: every project module (from `discover_modules`); other imports are ignored.
    """
    is_package = path.name == "__init__.py"
    own_ancestors = set(_ancestors(name))
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    explicit: set[str] = set()  # modules whose own code the statement needs
    implied: set[str] = set()  # parent packages run on the way to an explicit one
    for node in _import_time_statements(tree.body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                explicit.add(alias.name)
                implied.update(_ancestors(alias.name))
            continue
        if node.level:  # relative: `from .x import y` inside package p is `from p.x import y`
            package_parts = name.split(".") if is_package else name.split(".")[:-1]
            base_parts = package_parts[: len(package_parts) - (node.level - 1)]
            base = ".".join([*base_parts, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        implied.update(_ancestors(base))
        submodules = {f"{base}.{alias.name}" for alias in node.names} & modules.keys()
        explicit.update(submodules)
        implied.update([base] if submodules else [])
        if len(submodules) < len(node.names):  # some names are attributes of `base` itself
            explicit.add(base)
    edges = explicit | (implied - own_ancestors)
    return {m for m in edges if m in modules and m != name}


def import_graph(root: Path, packages: Iterable[str]) -> dict[str, set[str]]:
    """Module -> the project modules it imports at import time, for every module of `packages`."""
    modules = discover_modules(root, packages)
    return {name: module_imports(name, path, modules) for name, path in modules.items()}


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative: deep packages must not hit the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _shortest_cycle_through(start: str, graph: dict[str, set[str]], within: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one component (breadth first, sorted: deterministic)."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node] & within):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is in a strongly connected component but on no cycle")


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles, each as [a, b, ..., a]: the shortest one through each module that is on one.

    Listing every elementary cycle can explode combinatorially; one shortest cycle per module
    (duplicates removed) names every module involved and every cycle a newcomer has to break.
    """
    cycles: dict[tuple[str, ...], list[str]] = {}
    for component in _strongly_connected(graph):
        if len(component) < 2:
            continue  # self-imports are dropped when the graph is built
        within = set(component)
        for node in component:
            cycle = _shortest_cycle_through(node, graph, within)[:-1]
            first = cycle.index(min(cycle))  # rotate so that equal cycles compare equal
            rotated = cycle[first:] + cycle[:first]
            cycles[tuple(rotated)] = [*rotated, rotated[0]]
    return sorted(cycles.values())


def format_cycle(cycle: list[str]) -> str:
    """`a -> b -> c -> a`."""
    return " -> ".join(cycle)

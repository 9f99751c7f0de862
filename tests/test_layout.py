"""The package's shape: no module imports another that imports it back (at module level or
deferred inside a function), so data flows one way: data -> model -> train -> export -> use."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tfrnn"


def import_graph() -> dict[str, set[str]]:
    """tfrnn module -> the tfrnn modules it imports anywhere in its source."""
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module in modules:
        for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "tfrnn":
                    names = [a.name for a in node.names]
                elif node.module.startswith("tfrnn."):
                    names = [node.module.split(".")[1]]
            elif isinstance(node, ast.Import):
                names = [a.name.split(".")[1] for a in node.names if a.name.startswith("tfrnn.")]
            graph[module] |= {n for n in names if n in modules and n != module}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph``, or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()
    assert len(graph) > 30 and graph["cli"]  # the walk sees the package
    found = cycle(graph)
    assert found is None, " -> ".join(found)


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None

"""The package's import graph has no cycles: every `import` of a pid module anywhere in a file (also inside
functions) is an edge. `from package import submodule` is an edge to the submodule; `from package import name` an
edge to the package's __init__, which imports everything it re-exports."""

from __future__ import annotations

import ast
from pathlib import Path

import pid

PACKAGE = Path(pid.__file__).resolve().parent  # the package the tests import


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in files:  # `from pid.ops import attention`: the function's module is pid.ops
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for target in targets:
                if target == "pid" or target.startswith("pid."):
                    resolved = resolve(target)
                    if resolved and resolved != module:
                        edges.add(resolved)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_imports():
    graph = import_graph()
    assert {"pid.ops._face", "pid.ops.reference", "pid.timing"} <= graph["pid.ops._attention"]
    assert "pid.plan" in graph["pid.nn.layers"] and "pid.ops" in graph["pid.plan"]  # relative, and a package
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [m for m in graph if m == start or m.startswith(start + ".")]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += graph.get(m, ())
    return seen


# What a layer must not reach, directly or through others: the network reads no files and knows nothing above it;
# the samplers know no network; the kernels' faces know neither.
LAYERS = {
    "pid.nn": {"pid.checkpoint", "pid.tensor_file", "pid.hub", "pid.captions", "pid.decoder", "pid.decode",
               "pid.inputs", "pid.sampling", "pid.memory", "pid.cli", "pid.diffusers"},
    "pid.sampling": {"pid.nn", "pid.decoder", "pid.inputs", "pid.captions", "pid.checkpoint"},
    "pid.ops": {"pid.nn", "pid.decoder", "pid.sampling", "pid.plan", "pid.checkpoint"},
}


def test_the_layers_do_not_reach_up():
    graph = import_graph()
    for layer, forbidden in LAYERS.items():
        reached = _reachable(graph, layer)
        bad = sorted(m for m in reached for f in forbidden if m == f or m.startswith(f + "."))
        assert not bad, f"{layer} reaches {bad}"

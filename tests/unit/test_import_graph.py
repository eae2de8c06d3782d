"""The import graph of channelcast has no cycles, and confluent-kafka stays in its adapter.

Read from the source files with ``ast`` (nothing is imported): every ``import`` counts,
at module level and inside functions alike, except those under ``if TYPE_CHECKING:``
(they never run). ``import a.b`` and ``from a import b`` are edges to the module named
(``a.b`` when that is a module, else ``a``), not to the packages above it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
ROOT = "channelcast"

# Edges known to close a cycle that another change removes. Each entry is one edge
# (importer, imported); keep this list empty once they are gone.
ALLOWED_EDGES: frozenset[tuple[str, str]] = frozenset()

# Where confluent-kafka may be imported: the Kafka adapter and the benchmark package.
CONFLUENT_ALLOWED = ("channelcast.brokers.kafka", "channelcast.bench")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / ROOT).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run, skipping ``if TYPE_CHECKING:`` bodies."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _imported_names(module: str, path: Path, node: ast.Import | ast.ImportFrom,
                    known: set[str]) -> Iterator[str]:
    """Absolute names of what ``node`` imports (modules where they are modules)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    base = node.module or ""
    if node.level:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    for alias in node.names:
        candidate = f"{base}.{alias.name}"
        yield candidate if candidate in known else base


def _nearest_known(name: str, known: set[str]) -> str | None:
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            for name in _imported_names(module, path, node, known):
                if name != ROOT and not name.startswith(ROOT + "."):
                    continue
                target = _nearest_known(name, known)
                if target is not None and target != module:
                    graph[module].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    counter = 0

    def visit(v: str) -> None:  # Tarjan; the graph is a few dozen modules deep at most
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: set[str] = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)

    cycles = []
    for component in components:
        if len(component) < 2:
            continue
        start = min(component)
        # Shortest way back to start inside the component (breadth first).
        previous: dict[str, str] = {}
        frontier = [start]
        found = None
        while frontier and found is None:
            following = []
            for v in frontier:
                for w in sorted(graph[v] & component):
                    if w == start:
                        found = v
                        break
                    if w not in previous:
                        previous[w] = v
                        following.append(w)
                if found is not None:
                    break
            frontier = following
        assert found is not None
        path = [found]
        while path[-1] != start:
            path.append(previous[path[-1]])
        cycles.append([*reversed(path), start])
    return cycles


def test_the_graph_is_read_from_the_sources() -> None:
    graph = _graph()
    # A few edges that must be seen, so an empty graph cannot pass the cycle test.
    assert "channelcast.errors" in graph["channelcast.brokers.kafka.errors"]
    assert "channelcast.brokers.kafka.broker" in graph["channelcast.brokers.kafka"]
    # Imports inside functions count (create_broker imports config lazily).
    assert "channelcast.config" in graph["channelcast.brokers"]


def test_the_cycle_finder_finds_and_prints_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_type_checking_imports_do_not_count() -> None:
    tree = ast.parse("from typing import TYPE_CHECKING\n"
                     "if TYPE_CHECKING:\n    import channelcast.x\n"
                     "else:\n    import channelcast.y\n"
                     "def f():\n    import channelcast.z\n")
    names = {alias.name for node in _imports(tree) for alias in node.names}
    assert names == {"TYPE_CHECKING", "channelcast.y", "channelcast.z"}


def test_no_import_cycles_among_channelcast_modules() -> None:
    graph = _graph()
    for importer, imported in ALLOWED_EDGES:
        assert imported in graph[importer], (
            f"allow-listed edge {importer} -> {imported} is gone: remove it from "
            "ALLOWED_EDGES")
        graph[importer].discard(imported)
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_confluent_kafka_is_imported_only_in_the_adapter_and_the_benchmark() -> None:
    modules = _modules()
    known = set(modules)
    offenders = []
    for module, path in modules.items():
        if any(module == a or module.startswith(a + ".") for a in CONFLUENT_ALLOWED):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        # TYPE_CHECKING imports included here: the rule is about where the dependency
        # is named at all.
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for name in _imported_names(module, path, node, known):
                    if name == "confluent_kafka" or name.startswith("confluent_kafka."):
                        offenders.append(f"{module} (line {node.lineno})")
    assert not offenders, "confluent_kafka imported outside its adapter: " + ", ".join(
        offenders)


def _all_imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Modules ``module`` names in any import, ``if TYPE_CHECKING:`` ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            for name in _imported_names(module, path, node, known):
                target = _nearest_known(name, known)
                if target is not None:
                    out.add(target)
    return out


def test_the_kafka_adapter_parts_never_import_the_broker_or_each_other_back() -> None:
    # Arrows run one way: subscriptions, workers and their helpers are handed what they
    # need, so not even a type annotation names the broker; the error map and the shared
    # helpers sit below everything else.
    modules = _modules()
    known = set(modules)
    kafka = "channelcast.brokers.kafka"
    below = {f"{kafka}.errors": set(), f"{kafka}.client": {f"{kafka}.errors"}}
    for module, path in modules.items():
        if not module.startswith(kafka + ".") or module == f"{kafka}.broker":
            continue
        imported = {m for m in _all_imports(module, path, known)
                    if m == kafka or m.startswith(kafka + ".")}
        assert f"{kafka}.broker" not in imported, f"{module} imports the broker"
        assert kafka not in imported, f"{module} imports its own package"
        if module in below:
            assert imported <= below[module], (
                f"{module} imports {sorted(imported - below[module])}")

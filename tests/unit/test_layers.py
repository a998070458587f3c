"""The house in layers: no import circle, no import of a higher layer from a lower one."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Bottom to top; a module may import only from its own layer or the layers below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("offload",),
    ("certwatch.clock", "certwatch.ids", "certwatch.errors", "certwatch.config",
     "certwatch.private_files"),
    ("certwatch.pki",),
    ("certwatch.store",),
    ("certwatch.inventory",),
    ("certwatch.changes",),
    ("certwatch.alerts",),
    ("certwatch.metrics",),
    ("certwatch.node",),
    ("certwatch.scan",),
    ("certwatch.rotation",),
    ("certwatch.acme",),
    ("certwatch.api",),
    ("certwatch.console",),
    ("certwatch.app", "certwatch"),
)


def _modules() -> dict[str, Path]:
    found = {}
    for package in ("certwatch", "offload"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """Every project module `path` imports, TYPE_CHECKING blocks and functions included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: set(_imports(name, path, known)) for name, path in modules.items()}


def _layer(module: str) -> int:
    best, depth = -1, -1
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = index, len(prefix)
    assert best >= 0, f"{module} is in no layer; add it to LAYERS"
    return best


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_anywhere() -> None:
    """No set of modules of certwatch/ or offload/ imports itself round in a circle."""
    assert _circles(_graph()) == []


def test_no_module_imports_a_higher_layer() -> None:
    """Every import goes to the module's own layer or below (the order is LAYERS)."""
    upward = [
        f"{source} -> {target}"
        for source, targets in sorted(_graph().items())
        for target in sorted(targets)
        if _layer(target) > _layer(source)
    ]
    assert upward == []


def test_offload_imports_nothing_of_the_control_plane() -> None:
    """The data plane stands alone: no offload module imports certwatch."""
    graph = _graph()
    assert [
        f"{source} -> {target}"
        for source, targets in graph.items() if source.startswith("offload")
        for target in targets if target.startswith("certwatch")
    ] == []


def test_worker_processes_do_not_import_prometheus_client() -> None:
    """What a proxy worker process imports (offload.worker, transitively) leaves out
    prometheus_client: the counters are apart from their export."""
    modules, graph = _modules(), _graph()
    seen, todo = set(), ["offload.worker"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        tree = ast.parse(modules[name].read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                assert not any(n.startswith("prometheus_client") for n in names), name
        todo.extend(graph[name])

"""The package's layers point down and no module imports itself back.

The order below is the one docs/ARCHITECTURE.md states ("Layers"). A package may import only
packages before it in ``LAYERS``; within a package, the module import graph has no cycle. Every
import counts: module level, inside functions, and under ``if TYPE_CHECKING:`` (a cycle that only
the type checker sees is still a cycle a reader has to untangle).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

#: Bottom first. core: config, IO, manifests; ingest: raw files -> face crops; demo: the embedded
#: demo data (written with ingest's readers in mind); splits: variants, groups, audits, the gate;
#: features: spectra and encoder caches; models: the detectors; scoring: metrics, resampling
#: statistics, the Frank baseline; training: fitting; evaluation: the evaluate and report stages.
LAYERS = ("core", "ingest", "demo", "splits", "features", "models", "scoring", "training", "evaluation", "pipeline")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "dfpipe").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """``{module: {dfpipe modules it imports}}`` over every import statement of the package."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("dfpipe")}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                if module.startswith("dfpipe"):
                    for alias in node.names:
                        sub = f"{module}.{alias.name}"
                        targets.add(sub if sub in mods else module)
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_package_has_a_layer():
    packages = {_layer(m) for m in _modules()} - {None}
    assert packages == set(LAYERS), f"add {packages - set(LAYERS)} to LAYERS and docs/ARCHITECTURE.md"


def test_layers_import_downwards_only():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = sorted(f"{a} -> {b}" for a, targets in import_graph().items() for b in targets
                    if _layer(a) and _layer(b) and rank[_layer(b)] > rank[_layer(a)])
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
            visit(v)
    return cycles


def test_no_module_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_fires():
    """The control of the two tests above: a planted cycle and a planted upward edge are found."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    graph = import_graph()
    assert "dfpipe.scoring.metrics" in graph["dfpipe.training.engine"]  # the parser sees real edges

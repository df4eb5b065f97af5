"""The package's layers, read from its imports (ast): dependencies go one way, and no module cycles.

  node.crypto                          pure maths
  node.protocol, node.compute, node.cluster, node.futures,
  node.config, node.identity           sans-I/O machines and the node's own definitions
  node.storage, node.record,
  node.custody                         the database, the record, the custody files
  node.verifier                        the record's verifier
  node.services                        ceremonies, decryptions, custody behind the port
  node.daemon                          links, listener, control socket: knows services only by the port
  node.page                            the guardian's page, at the edge: calls the node's control commands
  node.app, node.metrics               the one place that wires services to the daemon, and /metrics
                                       (which reads both)
  node.cli                             every subcommand
  node.testing                         in-memory networks, node clusters, misbehaving guardians
  simulate                             uses node.testing and the CLI only
A module may import its own layer and the layers above it in this list, never one below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = [
    ("node.crypto",),
    ("node.protocol", "node.compute", "node.cluster", "node.futures", "node.config", "node.identity"),
    ("node.storage", "node.record", "node.custody"),
    ("node.verifier",),
    ("node.services",),
    ("node.daemon",),
    ("node.page",),
    ("node.app", "node.metrics"),
    ("node.cli",),
    ("node.testing",),
    ("simulate",),
]
# What each package may import besides its layer and those above it: nothing, except these.
SIMULATE_MAY_USE = ("node.testing", "node.cli", "node.crypto.errors")
DAEMON_MAY_USE_OF_SERVICES = ("node.services.port",)
# `python -m node` is the command itself; `guardian simulate` and `guardian demo` start the simulator.
ENTRY = ("node", "node.__main__")
ENTRY_TO = {"node.cli.simulate": "simulate.main", "node.cli.demo": "simulate.story"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in ("node", "simulate"):
        for path in (ROOT / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules this module imports (relative imports resolved), wherever the import stands."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                prefix = package[:len(package) - node.level + 1]
                base = ".".join(prefix + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            # the longest known module that the target names (a name imported from a module is not a module)
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def layer_of(name: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return rank
    return -1       # node itself (the package's __init__ and __main__)


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def layering_errors(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in graph.items():
        if module in ENTRY:
            continue
        for target in targets:
            if target in ("node", "simulate") or ENTRY_TO.get(module) == target:
                continue
            if layer_of(target) > layer_of(module):
                wrong.append(f"{module} -> {target}")
            elif under(module, ("simulate",)) and not under(target, ("simulate",) + SIMULATE_MAY_USE):
                wrong.append(f"{module} -> {target} (simulate uses node.testing and the CLI only)")
            elif under(module, ("node.services",)) and under(target, ("node.daemon",)):
                wrong.append(f"{module} -> {target} (a service imports the daemon)")
            elif under(module, ("node.daemon",)) and under(target, ("node.services",)) \
                    and not under(target, DAEMON_MAY_USE_OF_SERVICES):
                wrong.append(f"{module} -> {target} (the daemon knows services only by the port)")
    return wrong


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components: any component of more than one module is a cycle."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def test_every_module_has_a_layer(graph):
    assert [m for m in graph if layer_of(m) < 0 and m not in ENTRY] == []


def test_dependencies_go_one_way_and_the_daemon_knows_only_the_port(graph):
    assert layering_errors(graph) == []


def test_no_import_cycles(graph):
    assert cycles(graph) == []


@pytest.mark.parametrize("edge, named", [
    (("node.services.ceremonies", "node.daemon.node"), "node.services.ceremonies -> node.daemon.node"),
    (("node.daemon.node", "node.services.ceremonies"), "node.daemon.node -> node.services.ceremonies"),
    (("node.crypto.group", "node.protocol.envelope"), "node.crypto.group -> node.protocol.envelope"),
    (("node.record.layout", "node.verifier.steps"), "node.record.layout -> node.verifier.steps"),
    (("simulate.runner", "node.services.custody"), "simulate.runner -> node.services.custody"),
])
def test_a_wrong_edge_is_named(edge, named):
    module, target = edge
    assert any(e.startswith(named) for e in layering_errors({module: {target}}))


def test_a_cycle_is_found():
    assert cycles({"node.a": {"node.b"}, "node.b": {"node.c"}, "node.c": {"node.a"}, "node.d": set()}) \
        == [["node.a", "node.b", "node.c"]]

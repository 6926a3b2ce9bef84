"""Dependencies point one way: services -> shared -> contracts. Nothing imports services.

The Python client (jobtrail/) is a layer of its own above shared and contracts, beside the
services: it reads the API's answers with contracts' models and types job types by the
registry of shared/jobtypes.py, and talks to the services over HTTP only, never importing one.

The example job types (examples/) are loaded by name (JOBTRAIL_JOB_MODULES), never imported by
the product: production loads none unless told to.

Beyond the layers, four rules keep the code easy to change:

- no import cycle among the modules of shared/ and services/ (an import inside a function or
  under TYPE_CHECKING counts: hiding an import there does not remove the cycle);
- a service imports no other service (they share code through shared/, and talk over the bus);
- no module uses another module's private name (``from x import _y``, or ``something._y`` where
  ``_y`` is defined nowhere in the module that uses it);
- a module of shared/eventstore imports nothing inside a function (its package is free of
  cycles, so nothing there needs hiding).

Each rule has a self-test that feeds the checker a small tree breaking it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "contracts": {"shared", "services", "tests", "jobtrail"},
    "shared": {"services", "tests", "examples", "jobtrail"},
    "jobtrail": {"services", "tests", "examples"},
    "services": {"tests", "examples"},
    "examples": {"services", "tests"},
    "shared/domain": {
        "services",
        "tests",
        "redis",
        "faststream",
        "aio_pika",
        "psycopg",
        "contracts",
    },
}
CHECKED = ("contracts", "shared", "services", "jobtrail")
"""The product's packages: the cycle, service and private-name rules cover their modules."""

CROSS_SERVICE_ALLOWED = {
    # The contract generator is not a service: it reads every service's subscribers and the
    # API's app to write contracts/ (`python -m services.specs`).
    ("services.specs", "services.scheduler.subscribers"),
    ("services.specs", "services.submitter.subscribers"),
    ("services.specs", "services.submitter.app"),
    ("services.specs", "services.worker.settings"),
    ("services.specs", "services.worker.state"),
    ("services.specs", "services.worker.subscribers"),
    # `jobtrail rebuild` rebuilds the projection with the projector's own code, in the CLI's
    # process. To go when the rebuild moves to shared/.
    ("services.cli.replay", "services.projector.replay"),
}
"""(importer, imported) pairs of a service importing another service, each with its reason."""

PRIVATE_USE_ALLOWED: set[tuple[str, str]] = set()
"""(module, private name) pairs of a module using another module's private name, with reasons."""

NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}
"""Public despite the underscore: namedtuple's methods."""


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(package: str) -> None:
    files = list((ROOT / package).rglob("*.py"))
    assert files, f"no modules found under {package}"
    offenders = {
        f"{path.relative_to(ROOT)} imports {bad}"
        for path in files
        for bad in imported_roots(path) & FORBIDDEN[package]
    }
    assert not offenders


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from services.worker import handlers\nimport redis.asyncio\n")
    assert imported_roots(module) == {"services", "redis"}


# -- the module graph ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    in_function: bool


def modules(root: Path, packages: Iterable[str] = CHECKED) -> dict[str, Path]:
    """Every module under ``packages`` by its dotted name (a package by its own name)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _nodes_with_scope(tree: ast.AST) -> Iterator[tuple[ast.AST, bool]]:
    """Every node with whether it sits inside a function."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, in_function = stack.pop()
        yield node, in_function
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        stack.extend((child, inner) for child in ast.iter_child_nodes(node))


def edges(name: str, path: Path, known: dict[str, Path]) -> list[Edge]:
    """The imports of module ``name`` that name a module of ``known`` (``from a import b``
    names ``a.b`` when that is a module, else ``a``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node, in_function in _nodes_with_scope(ast.parse(path.read_text(), filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        for target in targets:
            while target and target not in known:  # import a.b.c of a package a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append(Edge(name, target, getattr(node, "lineno", 0), in_function))
    return found


def graph(root: Path, packages: Iterable[str] = CHECKED) -> dict[str, list[Edge]]:
    known = modules(root, packages)
    return {name: edges(name, path, known) for name, path in known.items()}


def cycles(edges_of: dict[str, list[Edge]]) -> list[list[str]]:
    """The import cycles: every strongly connected set of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in edges_of.get(node, []):
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
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

    for node in sorted(edges_of):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_among_the_product_s_modules() -> None:
    assert cycles(graph(ROOT)) == []


def test_the_checker_sees_an_import_cycle(tmp_path: Path) -> None:
    pkg = tmp_path / "shared" / "store"
    pkg.mkdir(parents=True)
    (tmp_path / "shared" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("from shared.store.a import A\n")
    (pkg / "a.py").write_text("from shared.store import b\nA = 1\n")
    (pkg / "b.py").write_text("def f():\n    from shared.store.c import C\n")  # hidden: counts
    (pkg / "c.py").write_text("from . import a\nC = 2\n")
    (pkg / "d.py").write_text("from shared.store.a import A\n")  # not part of the cycle
    assert cycles(graph(tmp_path, ["shared"])) == [
        ["shared.store.a", "shared.store.b", "shared.store.c"]
    ]


# -- services -----------------------------------------------------------------------------------


def service_of(module: str) -> str | None:
    """``services.worker.handlers`` -> ``worker``; None outside a service's package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "services" else None


def cross_service_imports(edges_of: dict[str, list[Edge]]) -> set[tuple[str, str]]:
    return {
        (edge.source, edge.target)
        for module_edges in edges_of.values()
        for edge in module_edges
        if edge.target.startswith("services.")
        and service_of(edge.target) != service_of(edge.source)
    }


def test_a_service_imports_no_other_service() -> None:
    found = cross_service_imports(graph(ROOT))
    assert found - CROSS_SERVICE_ALLOWED == set()
    assert CROSS_SERVICE_ALLOWED - found == set(), "an allowance no longer needed: remove it"


def test_the_checker_sees_a_service_importing_another(tmp_path: Path) -> None:
    for service in ("worker", "scheduler"):
        (tmp_path / "services" / service).mkdir(parents=True)
        (tmp_path / "services" / service / "__init__.py").write_text("")
    (tmp_path / "services" / "__init__.py").write_text("")
    (tmp_path / "services" / "worker" / "handlers.py").write_text("X = 1\n")
    (tmp_path / "services" / "worker" / "loops.py").write_text("from .handlers import X\n")
    (tmp_path / "services" / "scheduler" / "sweep.py").write_text(
        "from services.worker.handlers import X\n"
    )
    assert cross_service_imports(graph(tmp_path, ["services"])) == {
        ("services.scheduler.sweep", "services.worker.handlers")
    }


# -- private names ------------------------------------------------------------------------------


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and name not in NAMEDTUPLE_API


def _defined_here(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def private_uses(name: str, path: Path) -> set[tuple[str, str]]:
    """(module, name) for each private name of another module that ``name`` uses: imported
    (``from x import _y``), or read as an attribute (``x._y``) that the module itself never
    defines (``self._y`` and ``cls._y`` are the class's own)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    own = _defined_here(tree)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            found |= {(name, alias.name) for alias in node.names if _private(alias.name)}
        elif (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and node.attr not in own
            and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
        ):
            found.add((name, node.attr))
    return found


def test_no_module_uses_another_module_s_private_names() -> None:
    found = {use for name, path in modules(ROOT).items() for use in private_uses(name, path)}
    assert found - PRIVATE_USE_ALLOWED == set()
    assert PRIVATE_USE_ALLOWED - found == set(), "an allowance no longer needed: remove it"


def test_the_checker_sees_a_private_name_used_across_modules(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from shared.eventstore.integrity import _row\n"
        "from shared import store\n"
        "class Mine:\n"
        "    def __init__(self):\n"
        "        self._cache = {}\n"
        "    def run(self, other):\n"
        "        other._cache.clear()\n"  # the same name this module defines: its own
        "        return store._connect(self._cache), store.recorder._pool, parts._replace()\n"
    )
    assert private_uses("m", module) == {("m", "_row"), ("m", "_connect"), ("m", "_pool")}


# -- shared/eventstore --------------------------------------------------------------------------


def test_the_event_store_imports_nothing_inside_a_function() -> None:
    hidden = [
        f"{edge.source}:{edge.line} imports {edge.target}"
        for edge in (e for es in graph(ROOT, ["shared"]).values() for e in es)
        if edge.in_function and edge.source.startswith("shared.eventstore")
    ]
    assert hidden == []


def test_the_checker_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "a.py").write_text("def f():\n    from shared import b\n")
    (tmp_path / "shared" / "b.py").write_text("from shared import a\n")
    (found,) = graph(tmp_path, ["shared"])["shared.a"]
    assert (found.target, found.in_function) == ("shared.b", True)

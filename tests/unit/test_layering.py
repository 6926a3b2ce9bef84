"""Dependencies point one way: services -> shared -> contracts. Nothing imports services.

The example job types (examples/) are loaded by name (JOBTRAIL_JOB_MODULES), never imported by
the product: production loads none unless told to."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "contracts": {"shared", "services", "tests"},
    "shared": {"services", "tests", "examples"},
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

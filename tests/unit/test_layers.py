"""Dependencies point inward: the core imports no driver, Sanic stays in reference/api/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVERS = {"aiormq", "pamqp", "redis", "fakeredis", "locust", "adapters", "fakes", "gevent"}
WEB = {"sanic", "sanic_ext", "sanic_routing"}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


CORE_FILES = sorted((ROOT / "reference").rglob("*.py"))


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_driver(path: Path) -> None:
    """No module under reference/ imports a broker driver, an adapter or a fake."""
    assert imported_roots(path) & DRIVERS == set()


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_sanic_only_in_the_api_package(path: Path) -> None:
    """Sanic is imported only by reference/api/ (and the CLI that serves it)."""
    allowed = path.parent.name == "api" or path.name == "cli.py"
    if not allowed:
        assert imported_roots(path) & WEB == set()


def test_adapters_do_not_import_fakes() -> None:
    """Real adapters never depend on the fakes."""
    for path in (ROOT / "adapters").rglob("*.py"):
        assert "fakes" not in imported_roots(path), path


def test_the_scheme_tables_point_at_modules_that_exist() -> None:
    """Every lazy import path in the URL scheme tables resolves to a factory."""
    import importlib

    from reference.bootstrap import BROKER_SCHEMES, STORE_SCHEMES

    for target in {*BROKER_SCHEMES.values(), *STORE_SCHEMES.values()}:
        module, _, name = target.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), target


def test_locust_stays_out_of_the_test_process() -> None:
    """Scenarios and tests never import locust (it patches the standard library with gevent)."""
    import sys

    import scenarios  # noqa: F401  (the journeys locust runs are imported here too)

    assert "locust" not in sys.modules
    assert "gevent" not in sys.modules

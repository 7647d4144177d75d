"""Dependencies point inward: the core imports no driver, Sanic stays in reference/api/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVERS = {"aiormq", "pamqp", "redis", "fakeredis", "locust", "gevent",
           "reference.adapters", "reference.fakes", "reference.loadtests"}
# The folders of the layout that install as subpackages of `reference` (reference/<name> is a
# symlink to ../<name> in the source tree): they are not the core.
OUTER = ("adapters", "fakes", "scenarios", "loadtests", "conformance")
WEB = {"sanic", "sanic_ext", "sanic_routing"}


def imported_roots(path: Path) -> set[str]:
    """The top-level packages a module imports, and for `reference.x...` its subpackage too."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            roots.add(parts[0])
            if len(parts) > 1:
                roots.add(".".join(parts[:2]))
    return roots


CORE_FILES = sorted(
    p for p in (ROOT / "reference").rglob("*.py")
    if p.relative_to(ROOT / "reference").parts[0] not in OUTER
)


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
        assert "reference.fakes" not in imported_roots(path), path


@pytest.mark.parametrize("name", OUTER)
def test_outer_folders_install_under_reference(name: str) -> None:
    """Each layout folder is importable only as `reference.<name>`, never as a top-level name."""
    link = ROOT / "reference" / name
    assert link.is_symlink() and link.resolve() == (ROOT / name).resolve()
    for path in ROOT.rglob("*.py"):
        if ".venv" in path.parts or ".tox" in path.parts or path.is_relative_to(link):
            continue
        assert name not in imported_roots(path), path


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

    import reference.scenarios  # noqa: F401  (the journeys locust runs are imported here too)

    assert "locust" not in sys.modules
    assert "gevent" not in sys.modules

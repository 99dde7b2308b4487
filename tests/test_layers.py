"""The layers import only what DESIGN.md section 2 allows.

domain imports nothing of the other layers (and does no I/O); storage imports only domain;
actors import domain, the Engine *protocol* and its typed ops, never a concrete engine;
supervisors know nothing of jobs; execution (how jobs run) sits under the app, never
importing it: the app hands it its job definitions and storage. ``rota.errors`` is shared
by every layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rota"

#: layer -> rota modules (prefixes) it may import
ALLOWED: dict[str, tuple[str, ...]] = {
    "domain": ("rota.domain", "rota.errors"),
    "storage": ("rota.storage", "rota.domain", "rota.errors"),
    "actors": (
        "rota.actors",
        "rota.domain",
        "rota.errors",
        "rota.storage.engine",
        "rota.storage.ops",
    ),
    "supervisors": ("rota.supervisors", "rota.errors"),
    "execution": (
        "rota.execution",
        "rota.actors",
        "rota.config",
        "rota.domain",
        "rota.errors",
        "rota.storage.engine",
        "rota.storage.ops",
        "rota.storage.url",
        "rota.supervisors",
        "rota._encoding",
    ),
}

#: a process's entry point, and what above its layer it may import: a process-mode child's
#: main loads the app it runs jobs for (``Hello.app``), as ``rota worker`` does
ENTRY_POINTS: dict[str, tuple[str, ...]] = {"execution/child.py": ("rota.app.App",)}

#: third-party or stdlib modules a layer must not touch
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # pure: no I/O, no clock, no randomness, no concurrency
    "domain": (
        "anyio",
        "trio",
        "asyncio",
        "sqlite3",
        "psycopg",
        "threading",
        "socket",
        "subprocess",
        "os",
        "time",
        "random",
        "pykka",
    ),
    "storage": ("anyio", "trio", "asyncio", "pykka"),  # synchronous, runs on one thread
    "actors": ("trio", "asyncio", "sqlite3", "psycopg"),  # AnyIO only; no concrete engine
    "supervisors": ("trio", "asyncio", "sqlite3", "msgspec.json"),
    "execution": ("sqlite3", "psycopg"),  # no concrete engine: storage ops only
}


def imported_modules(source: str) -> set[str]:
    """Every absolute module a source file imports (``from x import y`` gives x and x.y)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def violations(layer: str, source: str, extra: tuple[str, ...] = ()) -> list[str]:
    """What ``source`` (a module of ``layer``) imports that it must not (``extra``: rota
    modules it may import besides its layer's)."""
    bad = []
    for module in sorted(imported_modules(source)):
        top = module.split(".")[0]
        if top == "rota":
            allowed = ALLOWED[layer] + extra
            inside = any(module == p or module.startswith(p + ".") for p in allowed)
            # "from rota.storage import engine" also yields the parent "rota.storage"
            parent = any(p.startswith(module + ".") for p in allowed)
            if not (inside or parent):
                bad.append(module)
        elif any(module == f or module.startswith(f + ".") for f in FORBIDDEN[layer]):
            bad.append(module)
    return bad


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_it_may(layer: str) -> None:
    files = sorted((SRC / layer).rglob("*.py"))
    assert files, f"no modules found for layer {layer}"
    problems = {
        name: found
        for path in files
        if (
            found := violations(
                layer, path.read_text(), ENTRY_POINTS.get(name := str(path.relative_to(SRC)), ())
            )
        )
    }
    assert problems == {}, f"layer {layer} imports what it must not: {problems}"


def test_checker_catches_violations() -> None:
    """The checker itself: each rule fires on a file that breaks it."""
    assert violations("domain", "import rota.storage.sqlite") == ["rota.storage.sqlite"]
    assert violations("domain", "import time") == ["time"]
    assert violations("domain", "from rota.domain.job import Job") == []
    assert violations("storage", "from rota.actors.kernel import Actor") == [
        "rota.actors.kernel",
        "rota.actors.kernel.Actor",
    ]
    assert violations("actors", "from rota.storage.sqlite import SqliteEngine") == [
        "rota.storage.sqlite",
        "rota.storage.sqlite.SqliteEngine",
    ]
    assert violations("actors", "from rota.storage.engine import Engine") == []
    assert violations("actors", "import trio") == ["trio"]
    assert violations("supervisors", "from rota.domain import Job") == [
        "rota.domain",
        "rota.domain.Job",
    ]


#: The modules of concrete engines and their drivers: only ``rota/storage/`` names them;
#: everything else opens a database through ``rota.storage.open_engine`` (from a URL).
CONCRETE_ENGINES: tuple[str, ...] = (
    "rota.storage.sqlite",
    "rota.storage.schema",
    "rota.storage.postgres",
    "sqlite3",
    "psycopg",
    "asyncpg",
)
#: Class names of concrete engines (a lazy import or an annotation names them too).
ENGINE_CLASSES: tuple[str, ...] = ("SqliteEngine", "PostgresEngine")


def concrete_engine_names(source: str) -> list[str]:
    """The concrete engine modules a source file imports and engine classes it names."""
    imported = sorted(
        module
        for module in imported_modules(source)
        if any(module == c or module.startswith(c + ".") for c in CONCRETE_ENGINES)
    )
    # "from rota.storage import sqlite" gives rota.storage.sqlite (imported_modules)
    return imported + [name for name in ENGINE_CLASSES if name in source]


def test_no_module_outside_storage_names_a_concrete_engine() -> None:
    files = [p for p in sorted(SRC.rglob("*.py")) if "storage" not in p.relative_to(SRC).parts]
    assert len(files) > 20
    problems = {
        str(path.relative_to(SRC)): found
        for path in files
        if (found := concrete_engine_names(path.read_text()))
    }
    assert problems == {}, f"a concrete engine named outside rota/storage/: {problems}"


def test_concrete_engine_checker_fires() -> None:
    assert concrete_engine_names("from rota.storage.sqlite import SqliteEngine") == [
        "rota.storage.sqlite",
        "rota.storage.sqlite.SqliteEngine",
        "SqliteEngine",
    ]
    assert concrete_engine_names("from rota.storage import sqlite") == ["rota.storage.sqlite"]
    assert concrete_engine_names("import sqlite3") == ["sqlite3"]
    assert concrete_engine_names("def f() -> 'SqliteEngine': ...") == ["SqliteEngine"]
    assert concrete_engine_names("from rota.storage import Engine, open_engine") == []
    assert concrete_engine_names("from rota.storage.engine import Engine") == []
    assert violations("execution", "from rota.app import App") == ["rota.app", "rota.app.App"]
    assert violations("execution", "from rota.app import App", ("rota.app.App",)) == []
    assert violations("execution", "from rota.app import App, Context", ("rota.app.App",)) == [
        "rota.app.Context"
    ]
    assert violations("execution", "from rota.storage.sqlite import SqliteEngine") == [
        "rota.storage.sqlite",
        "rota.storage.sqlite.SqliteEngine",
    ]
    assert violations("execution", "from rota.storage import ops") == []


def test_only_entry_points_import_above_their_layer() -> None:
    """The exceptions name modules that exist (a moved file does not keep its exception)."""
    for name in ENTRY_POINTS:
        assert (SRC / name).is_file(), f"{name}: no such module"

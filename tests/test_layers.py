"""Every area of rota imports only what the design allows (docs/architecture.md, "The layers").

An area is a package under ``src/rota`` (``domain/``, ``storage/``...) or a top-level module
(``app.py``, ``cli.py``...); every module belongs to one. The layers import only downwards:
domain imports nothing of the others (and does no I/O); storage imports only domain;
actors import domain, the Engine *protocol* and its typed ops; supervisors know nothing of
jobs; execution runs handlers and knows nothing of the facade (``rota.app``), the runtime
or the command line; the runtime knows nothing of the facade. ``rota.errors`` is shared by
every area. Outside ``storage/``, no module names a concrete engine.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rota"

#: area -> rota modules (prefixes) it may import. An area is a package under src/rota or
#: a top-level module, named without ".py".
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
    # the modes: below the runtime and the facade, beside the actors (the WorkerPool calls
    # an executor; the pools are supervised children)
    "execution": (
        "rota.execution",
        "rota.domain",
        "rota.errors",
        "rota.actors",
        "rota.supervisors",
        "rota.storage.engine",
        "rota.storage.ops",
        "rota.storage.url",
        "rota._encoding",
        "rota.config",
    ),
    # the supervision tree: builds actors and execution pools, never the facade
    "runtime": (
        "rota.runtime",
        "rota.actors",
        "rota.config",
        "rota.domain",
        "rota.errors",
        "rota.execution",
        "rota.storage",
        "rota.supervisors",
    ),
    # the facade: everything below it, nothing that uses it (cli, demo, testing)
    "app": (
        "rota.app",
        "rota._access",
        "rota._encoding",
        "rota.actors",
        "rota.config",
        "rota.domain",
        "rota.errors",
        "rota.execution",
        "rota.runtime",
        "rota.storage",
        "rota.supervisors",
    ),
    # the command line: an App's user, like any program (and the demo it runs)
    "cli": (
        "rota",
        "rota._log_format",
        "rota.actors",
        "rota.app",
        "rota.config",
        "rota.demo",
        "rota.domain",
        "rota.errors",
        "rota.runtime",
        "rota.storage",
    ),
    "__main__": ("rota.cli",),
    # the public names, re-exported: never the command line, the demo or the test helpers
    "__init__": ("rota.app", "rota.config", "rota.domain", "rota.errors", "rota.runtime"),
    # programs written against the public API
    "demo": ("rota", "rota.app", "rota.config", "rota.domain", "rota.errors", "rota.storage"),
    "testing": ("rota.app", "rota.config", "rota.domain", "rota.errors", "rota.storage"),
    # small modules every area may use: values and validation, no runtime
    "config": ("rota.config", "rota.domain", "rota.errors", "rota.storage"),
    "errors": (),
    "_encoding": (),
    "_log_format": (),
    # an App's door to its database: the Store of its runtime, or an engine of the thread's
    "_access": ("rota._access", "rota.errors", "rota.runtime", "rota.storage"),
}

#: rota modules no area outside storage/ may import: a concrete engine (the Engine port,
#: the ops and opening an engine are storage/'s public face)
CONCRETE_ENGINES = ("rota.storage.sqlite", "rota.storage.schema")

_PURE = ("anyio", "trio", "asyncio", "sqlite3", "psycopg", "threading", "socket")
_PURE += ("subprocess", "os", "time", "random", "pykka")
#: loops: AnyIO only (the backend is chosen at run time); a database driver only in storage/;
#: pykka only for execution's handler threads
_ANYIO_ONLY = ("trio", "asyncio", "sqlite3", "psycopg", "pykka")

#: third-party or stdlib modules an area must not touch
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "domain": _PURE,  # pure: no I/O, no clock, no randomness, no concurrency
    "storage": ("anyio", "trio", "asyncio", "pykka"),  # synchronous, runs on one thread
    "actors": _ANYIO_ONLY,
    "supervisors": ("trio", "asyncio", "sqlite3", "psycopg", "pykka", "msgspec.json"),
    "execution": ("trio", "asyncio", "sqlite3", "psycopg"),  # pykka: the handler threads
    "runtime": _ANYIO_ONLY,
    "app": _ANYIO_ONLY,
    "cli": _ANYIO_ONLY,
    "__main__": _ANYIO_ONLY,
    "__init__": _ANYIO_ONLY,
    "demo": _ANYIO_ONLY,
    "testing": _ANYIO_ONLY,
    "config": ("anyio", *_ANYIO_ONLY),
    "errors": _PURE,
    "_encoding": _PURE,
    "_log_format": ("anyio", *_ANYIO_ONLY),
    "_access": _ANYIO_ONLY,
}

#: a process's entry point, and what above its area it may import: a process-mode child's
#: main loads the App it runs (nothing else of rota.app: the contexts and the executor's
#: failure texts live in execution/)
ENTRY_POINTS: dict[str, tuple[str, ...]] = {"execution/child.py": ("rota.app",)}


def area_of(relative: Path) -> str:
    """The area of a module, from its path under src/rota: its package, or its name."""
    return relative.parts[0].removesuffix(".py")


def imported_modules(source: str) -> set[str]:
    """Every absolute module a source file imports, wherever the import is (in a function,
    under ``if TYPE_CHECKING``). ``from x import y`` gives x, and x.y when y is a module
    (a third-party one's y always: ``msgspec.json``); a name a rota package exports
    (``from rota.storage import Engine``) counts as that package. From the public package,
    ``from rota import __version__`` counts as ``rota``, ``from rota import _encoding`` as
    ``rota._encoding`` only."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "rota" and node.level == 0:
            found.update(
                f"rota.{alias.name}" if _is_module(f"rota.{alias.name}") else "rota"
                for alias in node.names
            )
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            for alias in node.names:
                dotted = f"{node.module}.{alias.name}"
                if not node.module.startswith("rota.") or _is_module(dotted):
                    found.add(dotted)
    return found


def _is_module(dotted: str) -> bool:
    """Whether ``rota.x.y`` names a module or package under src/rota."""
    path = SRC.joinpath(*dotted.split(".")[1:])
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(area: str, source: str) -> list[str]:
    bad = []
    for module in sorted(imported_modules(source)):
        top = module.split(".")[0]
        if module == "rota":  # the public package: for programs that use rota
            if "rota" not in ALLOWED[area]:
                bad.append(module)
        elif top == "rota":
            allowed = ALLOWED[area]
            inside = _under(module, allowed)
            # "from rota.storage import engine" also yields the parent "rota.storage"
            parent = any(p.startswith(module + ".") for p in allowed)
            concrete = area != "storage" and _under(module, CONCRETE_ENGINES)
            if concrete or not (inside or parent):
                bad.append(module)
        elif _under(module, FORBIDDEN[area]):
            bad.append(module)
    return bad


def _modules() -> list[Path]:
    return sorted(path.relative_to(SRC) for path in SRC.rglob("*.py"))


def test_every_module_belongs_to_an_area() -> None:
    """A new package or top-level module gets its rule here before it can be merged."""
    modules = _modules()
    assert len(modules) > 40
    homeless = [str(path) for path in modules if area_of(path) not in ALLOWED]
    assert homeless == [], f"modules in no area of ALLOWED (add their rule): {homeless}"
    assert sorted(FORBIDDEN) == sorted(ALLOWED)
    assert {area_of(path) for path in modules} == set(ALLOWED), "an area without modules"


@pytest.mark.parametrize("area", sorted(ALLOWED))
def test_area_imports_only_what_it_may(area: str) -> None:
    files = [path for path in _modules() if area_of(path) == area]
    assert files, f"no modules found for area {area}"
    problems = {}
    for path in files:
        found = violations(area, (SRC / path).read_text())
        found = [m for m in found if not _under(m, ENTRY_POINTS.get(str(path), ()))]
        if found:
            problems[str(path)] = found
    assert problems == {}, f"area {area} imports what it must not: {problems}"


def test_checker_catches_violations() -> None:
    """The checker itself: each rule fires on a file that breaks it."""
    assert violations("domain", "import rota.storage.sqlite") == ["rota.storage.sqlite"]
    assert violations("domain", "import time") == ["time"]
    assert violations("domain", "from rota.domain.job import Job") == []
    assert violations("storage", "from rota.actors.kernel import Actor") == ["rota.actors.kernel"]
    assert violations("storage", "from rota.storage.schema import MIGRATIONS") == []
    assert violations("actors", "from rota.storage.sqlite import SqliteEngine") == [
        "rota.storage.sqlite"
    ]
    assert violations("actors", "from rota.storage.engine import Engine") == []
    assert violations("actors", "import trio") == ["trio"]
    assert violations("supervisors", "from rota.domain import Job") == ["rota.domain"]
    # execution: never the facade, the runtime or the command line
    assert violations("execution", "from rota.actors.worker_pool import Executor") == []
    assert violations("execution", "from rota.app import App") == ["rota.app"]
    assert violations("execution", "import rota.runtime") == ["rota.runtime"]
    assert violations("execution", "from rota import cli") == ["rota.cli"]
    # the runtime never imports the facade; the facade never what uses it
    assert violations("runtime", "from rota.app import App") == ["rota.app"]
    assert violations("app", "from rota.runtime import Runtime") == []
    assert violations("app", "import rota.testing") == ["rota.testing"]
    assert violations("app", "from rota.cli import main") == ["rota.cli"]
    assert violations("__init__", "from rota.cli import main") == ["rota.cli"]
    assert violations("config", "from rota.runtime import Runtime") == ["rota.runtime"]
    assert violations("errors", "from rota.domain.job import Job") == ["rota.domain.job"]
    # no concrete engine outside storage/, even where rota.storage is allowed
    assert violations("app", "from rota.storage import ops") == []
    assert violations("app", "from rota.storage.sqlite import SqliteEngine") == [
        "rota.storage.sqlite"
    ]
    assert violations("cli", "from rota.storage import sqlite") == ["rota.storage.sqlite"]
    assert violations("runtime", "import rota.storage.schema") == ["rota.storage.schema"]
    # pykka only for execution's handler threads; no loop but AnyIO's
    assert violations("execution", "import pykka") == []
    assert violations("runtime", "import pykka") == ["pykka"]
    assert violations("app", "import asyncio") == ["asyncio"]
    # the public package is for programs that use rota, not for its own layers
    assert violations("cli", "from rota import __version__, _log_format") == []
    assert violations("demo", "import rota") == []
    assert violations("runtime", "from rota import App") == ["rota"]
    assert violations("app", "from rota import _encoding") == []
    assert violations("execution", "import rota") == ["rota"]
    # a name a package exports counts as the package; a module imported from it as itself
    assert violations("execution", "from rota.storage import Engine, ops") == []
    assert violations("execution", "from rota.storage import sqlite") == ["rota.storage.sqlite"]
    assert violations("supervisors", "from msgspec import json") == ["msgspec.json"]


#: The modules of concrete engines and their drivers: only ``rota/storage/`` names them;
#: everything else opens a database through ``rota.storage.open_engine`` (from a URL).
ENGINE_MODULES: tuple[str, ...] = (
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
        if any(module == c or module.startswith(c + ".") for c in ENGINE_MODULES)
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
        "SqliteEngine",
    ]
    assert concrete_engine_names("from rota.storage import sqlite") == ["rota.storage.sqlite"]
    assert concrete_engine_names("import sqlite3") == ["sqlite3"]
    assert concrete_engine_names("def f() -> 'SqliteEngine': ...") == ["SqliteEngine"]
    assert concrete_engine_names("from rota.storage import Engine, open_engine") == []
    assert concrete_engine_names("from rota.storage.engine import Engine") == []


def test_only_entry_points_import_above_their_area() -> None:
    """The exceptions name modules that exist (a moved file does not keep its exception),
    and each still needs its exception (a stale one would hide nothing, but mislead)."""
    for name, allowed in ENTRY_POINTS.items():
        assert (SRC / name).is_file(), f"{name}: no such module"
        found = violations(area_of(Path(name)), (SRC / name).read_text())
        assert any(_under(m, allowed) for m in found), f"{name} no longer needs {allowed}"

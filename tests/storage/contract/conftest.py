"""Fixtures of the Engine contract tests: every test here runs once per engine kind.

``engine_kind`` is parametrised over ``engine_kinds.KINDS`` (ids: the kind's name); a
test marked ``several_connections`` runs only on the kinds that can open several engines
on one database. ``engine_factory(**options)`` opens another engine on the test's
database, ``engine`` is the first one, and ``hooks`` reaches under the port for it. The
clock, the random draws and ``make_job`` are those of ``tests/storage/conftest.py``.

This folder is on ``sys.path`` (pytest runs with ``--import-mode=importlib``), so tests
import ``engine_kinds``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from engine_kinds import KINDS, EngineHooks, EngineKind  # noqa: E402

from rota.storage.engine import Engine  # noqa: E402

if TYPE_CHECKING:
    from tests.storage.conftest import FakeClock, FixedDraws

SEVERAL_CONNECTIONS = "several_connections"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{SEVERAL_CONNECTIONS}: opens several engines on one database (runs only on the "
        "engine kinds that can)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine_kind" not in metafunc.fixturenames:
        return
    kinds = KINDS
    if metafunc.definition.get_closest_marker(SEVERAL_CONNECTIONS) is not None:
        kinds = [kind for kind in KINDS if kind.several_connections]
    metafunc.parametrize("engine_kind", kinds, ids=[kind.name for kind in kinds])


@pytest.fixture
def database(engine_kind: EngineKind, tmp_path: Path) -> Iterator[str]:
    """The address of a fresh database of the test's engine kind."""
    with engine_kind.database(tmp_path) as address:
        yield address


@pytest.fixture
def engine_factory(
    request: pytest.FixtureRequest,
    engine_kind: EngineKind,
    database: str,
    clock: FakeClock,
    draws: FixedDraws,
) -> Iterator[Callable[..., Engine]]:
    """Opens (and later closes) engines on the test's database, migrated, with the test's
    clock and draws unless given (``rng=``) and the engine's own options."""
    opened: list[Engine] = []
    several = request.node.get_closest_marker(SEVERAL_CONNECTIONS) is not None

    def open_(**options: Any) -> Engine:
        if opened and not several:
            raise RuntimeError("a second engine on one database: mark the test several_connections")
        options.setdefault("rng", draws)
        engine = engine_kind.open(database, clock=clock, **options)
        opened.append(engine)
        return engine

    yield open_
    for engine in opened:
        engine.close()


@pytest.fixture
def engine(engine_factory: Callable[..., Engine]) -> Engine:
    """A migrated engine on a fresh database."""
    return engine_factory()


@pytest.fixture
def hooks(engine_kind: EngineKind, engine: Engine) -> EngineHooks:
    """``engine``'s hooks under the port (rows as stored, corrupting a column...)."""
    return engine_kind.hooks(engine)

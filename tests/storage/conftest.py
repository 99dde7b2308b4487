"""Fixtures for the storage tests: a fake clock, fixed random draws and ``make_job`` for
every test here; SQLite engines on a temp file and in memory for the SQLite-specific tests
(``test_sqlite_*.py``). The engine-neutral contract tests (``contract/``) open their engines
through ``contract/conftest.py``."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rota.domain import JobOptions, lifecycle
from rota.domain.job import NewJob
from rota.storage.sqlite import SqliteEngine

START_MS = 1_700_000_000_000


class FakeClock:
    """A clock the test moves by hand (ms since the epoch)."""

    def __init__(self, now_ms: int = START_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> int:
        self.now_ms += ms
        return self.now_ms


class FixedDraws(random.Random):
    """Every ``random()`` draw returns ``u``; counts the draws."""

    def __init__(self, u: float = 0.5) -> None:
        super().__init__(0)
        self.u = u
        self.draws = 0

    def random(self) -> float:
        self.draws += 1
        return self.u


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def draws() -> FixedDraws:
    return FixedDraws(0.5)


@pytest.fixture(params=["file", "memory"])
def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "rota.db") if request.param == "file" else ":memory:"


@pytest.fixture
def open_engine(clock: FakeClock, draws: FixedDraws) -> Iterator[Callable[..., SqliteEngine]]:
    """Opens (and later closes) engines with the test's clock and draws."""
    opened: list[SqliteEngine] = []

    def open_(path: str, **kwargs: Any) -> SqliteEngine:
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("rng", draws)
        engine = SqliteEngine(path, **kwargs)
        opened.append(engine)
        engine.migrate()
        return engine

    yield open_
    for engine in opened:
        engine.close()


@pytest.fixture
def engine(db_path: str, open_engine: Callable[..., SqliteEngine]) -> SqliteEngine:
    """A migrated engine, on a temp file and in memory."""
    return open_engine(db_path)


@pytest.fixture
def file_path(tmp_path: Path) -> str:
    return str(tmp_path / "rota.db")


@pytest.fixture
def file_engine(file_path: str, open_engine: Callable[..., SqliteEngine]) -> SqliteEngine:
    """A migrated engine on a temp file (for tests that need a second connection)."""
    return open_engine(file_path, busy_timeout_s=0.2)


@pytest.fixture
def make_job(clock: FakeClock) -> Callable[..., NewJob]:
    """``make_job(payload=b"{}", name="task", **JobOptions fields)`` at the clock's now."""

    def make(payload: bytes = b"{}", name: str = "task", **options: Any) -> NewJob:
        return lifecycle.new_job(name, payload, JobOptions(**options), clock.now_ms)

    return make

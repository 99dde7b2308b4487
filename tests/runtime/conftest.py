"""End-to-end tests of the job runtime: ``App`` + ``app.run()`` with real actors and SQLite.

The helpers of this folder are importable as ``rt_support`` (and the scripted test job of
``tests/support`` as ``scripted``): pytest runs with ``--import-mode=importlib``, so this
conftest puts both folders on ``sys.path``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
for _path in (_HERE.parent / "support", _HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from rt_support import AppFactory  # noqa: E402

from rota.app import App  # noqa: E402


@pytest.fixture
def make_app() -> Iterator[Callable[..., App]]:
    """``make_app(database=":memory:", **options)``: a fresh App with fast timings (see
    ``rt_support.FAST``), closed at the end of the test."""
    factory = AppFactory()
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    """A database file that several Apps (several "processes") can share."""
    return str(tmp_path / "jobs.db")

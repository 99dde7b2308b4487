"""SqliteEngine.data_version(): how the SQLite engine notices other connections' commits
(``PRAGMA data_version``: no I/O, its own commits never count)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from rota.domain.job import NewJob
from rota.storage.sqlite import SqliteEngine

MakeJob = Callable[..., NewJob]
OpenEngine = Callable[..., SqliteEngine]


def test_data_version_changes_when_another_connection_commits_not_for_our_own(
    file_engine: SqliteEngine, file_path: str, open_engine: OpenEngine, make_job: MakeJob
) -> None:
    other = open_engine(file_path)
    version = file_engine.data_version()
    file_engine.enqueue([make_job()])
    with file_engine.batch():
        file_engine.enqueue([make_job()])
        file_engine.set_paused("q", True)
    assert file_engine.data_version() == version  # our own commits
    other.enqueue([make_job()])
    changed = file_engine.data_version()
    assert changed != version
    assert file_engine.data_version() == changed  # stable until the next foreign commit
    raw = sqlite3.connect(file_path, isolation_level=None)
    try:
        raw.execute("INSERT INTO rota_meta (key, value) VALUES ('x', 1)")
    finally:
        raw.close()
    assert file_engine.data_version() != changed


def test_data_version_of_a_memory_database_never_changes(
    open_engine: OpenEngine, make_job: MakeJob
) -> None:
    engine = open_engine(":memory:")
    version = engine.data_version()
    engine.enqueue([make_job()])
    assert engine.data_version() == version

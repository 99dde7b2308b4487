"""SqliteEngine: set-up, migrations, and the failures an operator must be able to act on."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rota.domain import JobState
from rota.domain.job import NewJob
from rota.errors import ConfigError, StorageError
from rota.storage import schema as sql
from rota.storage.engine import Engine
from rota.storage.sqlite import SqliteEngine

MakeJob = Callable[..., NewJob]
OpenEngine = Callable[..., SqliteEngine]


# --- set-up ---------------------------------------------------------------------------


def test_sqlite_engine_is_an_engine() -> None:
    engine: Engine = SqliteEngine()  # mypy checks the structure here
    try:
        assert isinstance(engine, Engine)
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"synchronous": "OFF"}, "synchronous"),
        ({"synchronous": "full"}, "synchronous"),
        ({"busy_timeout_s": -1}, "busy_timeout_s"),
        ({"busy_timeout_s": float("inf")}, "busy_timeout_s"),
    ],
)
def test_bad_options_are_refused_by_name(kwargs: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        SqliteEngine(**kwargs)


@pytest.mark.parametrize(("synchronous", "level"), [("FULL", 2), ("NORMAL", 1)])
def test_a_file_database_uses_wal_and_the_chosen_synchronous(
    file_path: str, open_engine: OpenEngine, synchronous: str, level: int
) -> None:
    engine = open_engine(file_path, synchronous=synchronous)
    assert engine.journal_mode == "wal"
    assert engine._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert engine._conn.execute("PRAGMA synchronous").fetchone()[0] == level
    assert engine._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_close_is_idempotent_and_a_closed_engine_says_so(file_path: str) -> None:
    with SqliteEngine(file_path) as engine:
        engine.migrate()
    engine.close()
    with pytest.raises(StorageError, match="closed"):
        engine.get(1)
    with pytest.raises(StorageError, match="closed"):
        engine.enqueue([])


# --- migrations -----------------------------------------------------------------------


def test_migrations_are_numbered_in_order() -> None:
    versions = [m.version for m in sql.MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1))
    assert versions[-1] == sql.SCHEMA_VERSION


def test_migrate_is_idempotent_and_safe_from_two_engines(
    file_path: str, open_engine: OpenEngine
) -> None:
    engines = [SqliteEngine(file_path, busy_timeout_s=5) for _ in range(2)]
    versions: list[int] = []
    threads = [threading.Thread(target=lambda e=e: versions.append(e.migrate()))
               for e in engines]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert versions == [sql.SCHEMA_VERSION] * 2
    seen: list[str] = []
    engines[0]._conn.set_trace_callback(seen.append)
    assert engines[0].migrate() == sql.SCHEMA_VERSION
    assert not any("CREATE" in s or "BEGIN" in s for s in seen)  # nothing left to do
    for engine in engines:
        engine.close()


def test_a_database_from_a_newer_rota_is_refused(file_path: str, open_engine: OpenEngine) -> None:
    engine = open_engine(file_path)
    engine._conn.execute(
        "UPDATE rota_meta SET value = ? WHERE key = 'schema_version'", (sql.SCHEMA_VERSION + 1,)
    )
    with pytest.raises(StorageError, match="newer than this rota knows"):
        open_engine(file_path)


def test_another_programs_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    with sqlite3.connect(path) as theirs:
        theirs.execute("PRAGMA application_id = 42")
        theirs.execute("CREATE TABLE stuff (x)")
    theirs.close()
    engine = SqliteEngine(path)
    try:
        with pytest.raises(StorageError, match=r"not a rota database.*another program"):
            engine.migrate()
        assert not engine._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'rota_jobs'"
        ).fetchone()
    finally:
        engine.close()


def test_an_unmigrated_database_hints_at_migrate() -> None:
    with SqliteEngine() as engine, pytest.raises(StorageError, match=r"migrate\(\)"):
        engine.get(1)


# --- damaged files --------------------------------------------------------------------


def test_a_file_of_garbage_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database, just bytes " * 200)
    with pytest.raises(StorageError) as error:
        SqliteEngine(path).migrate()
    assert str(path) in str(error.value)
    assert "corrupt or is not a rota" in str(error.value)


def test_a_corrupted_rota_database_raises_storage_error_naming_the_file(
    file_path: str, make_job: MakeJob
) -> None:
    with SqliteEngine(file_path) as engine:
        engine.migrate()
        engine.enqueue([make_job(b"x" * 1000) for _ in range(200)])
        engine._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = os.path.getsize(file_path)
    with open(file_path, "r+b") as damaged:
        damaged.seek(4096 * 2)  # leave the header and the schema page, wreck the rest
        damaged.write(b"\xff" * (size - 4096 * 2))
    engine = SqliteEngine(file_path)
    try:
        with pytest.raises(StorageError) as error:
            engine.migrate()
            engine.list_jobs(limit=1000)
        assert file_path in str(error.value)
        assert "corrupt" in str(error.value)
        assert not engine._conn.in_transaction
    finally:
        engine.close()


def test_a_missing_directory_is_reported_clearly(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "rota.db"
    with pytest.raises(StorageError, match="cannot open database file") as error:
        SqliteEngine(path)
    assert str(path) in str(error.value)


# --- full disk ------------------------------------------------------------------------


def fill_up(engine: SqliteEngine) -> None:
    pages = engine._conn.execute("PRAGMA page_count").fetchone()[0]
    engine._conn.execute(f"PRAGMA max_page_count = {pages + 2}")


def test_a_full_disk_raises_a_clear_error_and_keeps_what_was_committed(
    engine: SqliteEngine, make_job: MakeJob
) -> None:
    kept = engine.enqueue([make_job(b"small") for _ in range(10)])
    fill_up(engine)
    with pytest.raises(StorageError) as error:
        engine.enqueue([make_job(b"x" * 100_000) for _ in range(10)])
    message = str(error.value)
    assert "full" in message and "nothing already committed was lost" in message
    assert not engine._conn.in_transaction
    assert [j.id for j in engine.list_jobs()] == kept
    assert engine.count()[JobState.WAITING] == 10
    engine._conn.execute("PRAGMA max_page_count = 1073741823")  # space freed
    assert len(engine.enqueue([make_job(b"x" * 100_000)])) == 1


def test_a_full_disk_inside_a_batch_fails_the_whole_batch_and_keeps_nothing_of_it(
    engine: SqliteEngine, make_job: MakeJob
) -> None:
    # SQLite rolls the whole transaction back on SQLITE_FULL (a one-row INSERT has no
    # statement journal to undo just itself): the batch cannot commit part of itself.
    [before] = engine.enqueue([make_job(b"before")])
    fill_up(engine)
    with pytest.raises(StorageError, match="not committed"), engine.batch():
        engine.enqueue([make_job(b"a")])
        with pytest.raises(StorageError, match="full"):
            # fewer than 8 rows: executemany of one-row INSERTs (see the next test)
            engine.enqueue([make_job(b"x" * 200_000) for _ in range(5)])
        with pytest.raises(StorageError, match=r"already rolled back.*full"):
            engine.enqueue([make_job(b"b")])
    assert not engine._conn.in_transaction
    assert [j.id for j in engine.list_jobs()] == [before]
    assert engine.enqueue([make_job(b"after")]) == [before + 1]


def test_a_full_disk_in_a_one_statement_batch_insert_undoes_that_enqueue_alone(
    engine: SqliteEngine, make_job: MakeJob
) -> None:
    # A batch of one job type is one multi-row INSERT: SQLite undoes that statement alone
    # (statement journal), so the batch goes on and its other operations commit.
    [before] = engine.enqueue([make_job(b"before")])
    fill_up(engine)
    with engine.batch():
        [a] = engine.enqueue([make_job(b"a")])
        with pytest.raises(StorageError, match="full"):
            engine.enqueue([make_job(b"x" * 100_000) for _ in range(10)])
    assert [j.id for j in engine.list_jobs()] == [before, a]
    assert engine.get(a).payload == b"a"


# --- locked database ------------------------------------------------------------------


def test_a_locked_database_raises_after_the_budget_then_works_once_released(
    file_engine: SqliteEngine, file_path: str, make_job: MakeJob
) -> None:
    [job_id] = file_engine.enqueue([make_job()])
    other = sqlite3.connect(file_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(StorageError, match=r"is locked: gave up after 0\.\d s") as error:
            file_engine.enqueue([make_job()])
        waited = time.monotonic() - started
        assert 0.2 <= waited < 2  # busy_timeout_s=0.2, retried meanwhile
        assert file_path in str(error.value)
        assert not file_engine._conn.in_transaction
        assert file_engine.get(job_id).id == job_id  # WAL: reads go on meanwhile
        with pytest.raises(StorageError, match="locked"), file_engine.batch():
            pass
    finally:
        other.rollback()
        other.close()
    assert len(file_engine.enqueue([make_job()])) == 1
    assert len(file_engine.list_jobs()) == 2


def test_a_lock_released_during_the_retry_window_lets_the_operation_through(
    file_path: str, open_engine: OpenEngine, make_job: MakeJob
) -> None:
    engine = open_engine(file_path, busy_timeout_s=5)
    other = sqlite3.connect(file_path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO rota_meta (key, value) VALUES ('other', 1)")
    release = threading.Timer(0.15, other.commit)
    release.start()
    try:
        started = time.monotonic()
        [job_id] = engine.enqueue([make_job()])
        assert time.monotonic() - started >= 0.1
    finally:
        release.join()
        other.close()
    assert engine.get(job_id).state is JobState.WAITING
    assert engine._conn.execute("SELECT value FROM rota_meta WHERE key = 'other'").fetchone()


def test_with_no_busy_budget_a_locked_database_fails_at_once(
    file_path: str, open_engine: OpenEngine, make_job: MakeJob
) -> None:
    engine = open_engine(file_path, busy_timeout_s=0)
    other = sqlite3.connect(file_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(StorageError, match="locked"):
            engine.claim("default", "w", 1, 1000)
        assert time.monotonic() - started < 0.5  # no retry budget: no waiting
    finally:
        other.rollback()
        other.close()


def test_probe_write_takes_the_write_lock_and_changes_nothing(
    file_engine: SqliteEngine, file_path: str, make_job: MakeJob
) -> None:
    """For ``rota health``: a real write, rolled back; a lock held past the busy budget or
    a full disk is a ``StorageError`` naming the database."""
    [job_id] = file_engine.enqueue([make_job()])
    watcher = SqliteEngine(file_path)
    try:
        before = watcher.data_version()
        file_engine.probe_write()
        assert watcher.data_version() == before  # nothing was committed
    finally:
        watcher.close()
    assert not file_engine._conn.in_transaction
    other = sqlite3.connect(file_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageError, match=f"database {file_path} is locked"):
            file_engine.probe_write()
    finally:
        other.rollback()
        other.close()
    assert not file_engine._conn.in_transaction
    file_engine.probe_write()
    assert file_engine.get(job_id).state is JobState.WAITING


def test_probe_write_reports_a_full_disk(
    file_engine: SqliteEngine, file_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.statvfs

    def full(path: Any) -> Any:
        stats = real(path)
        return os.statvfs_result((*stats[:4], 0, *stats[5:]))  # no block available

    monkeypatch.setattr(os, "statvfs", full)
    with pytest.raises(StorageError, match=f"the disk holding {file_path} is full"):
        file_engine.probe_write()


def test_an_sqlite_without_returning_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    with pytest.raises(StorageError, match=r"needs SQLite >= 3\.35"):
        SqliteEngine()

"""SqliteEngine: migrating a schema version 1 database to version 2 and on, a version 2
database to version 3 and on, and a version 3 database to version 4."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from rota.domain import JobState
from rota.domain.backoff import encode_backoff
from rota.domain.event import EventKind, Owner
from rota.domain.job import NewJob
from rota.errors import StorageError
from rota.storage import schema as sql
from rota.storage.sqlite import SqliteEngine

MakeJob = Callable[..., NewJob]
OpenEngine = Callable[..., SqliteEngine]

#: Migrations 1 to 3 as shipped: they must never change (add the next migration instead).
MIGRATION_1_SHA256 = "00df3c4690df6653fdf0f7e487fc5c71565307c5e0f6f6476745764ff7f1f490"
MIGRATION_2_SHA256 = "2a1619f17e891128221e279e9353cdb84098bc28b92606618fd41b69938cea26"
MIGRATION_3_SHA256 = "df1ae940d5d2d1fafc42964557db664ec4e2ab7b5059990c2bb439b66bff3bff"


def create_v1(path: str, jobs: list[NewJob]) -> None:
    """A database at schema version 1, as rota 1 left it, holding ``jobs`` (waiting or
    delayed) with ids 1..n; the first one is then completed, the second one failed."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for statement in sql.MIGRATIONS[0].statements:
            conn.execute(statement)
        conn.execute(sql.SET_SCHEMA_VERSION, (1,))
        conn.execute("COMMIT")
        for job_id, job in enumerate(jobs, start=1):
            conn.execute(
                sql.INSERT_JOB,
                (
                    job_id, job.key, job.name, job.queue,
                    "delayed" if job.delayed else "waiting", job.priority, job.run_at_ms,
                    job.payload, job.max_attempts, job.max_stalls,
                    encode_backoff(job.backoff).decode(), job.timeout_ms, job.created_at_ms,
                ),
            )  # fmt: skip
        conn.execute(
            "UPDATE rota_jobs SET state = 'completed', attempt = 1, finished_at_ms = 1, "
            "result = x'6f6b' WHERE id = 1"
        )
        conn.execute(
            "UPDATE rota_jobs SET state = 'failed', attempt = 1, finished_at_ms = 1, "
            "error = 'boom' WHERE id = 2"
        )
    finally:
        conn.close()


def test_migration_1_is_never_edited() -> None:
    # Databases in the field hold migration 1 as it shipped: a change to it would never
    # reach them. Change the schema with a new migration instead.
    text = "\n".join(sql.MIGRATIONS[0].statements)
    assert sql.MIGRATIONS[0].version == 1
    assert hashlib.sha256(text.encode()).hexdigest() == MIGRATION_1_SHA256
    text = "\n".join(sql.MIGRATIONS[1].statements)
    assert sql.MIGRATIONS[1].version == 2
    assert hashlib.sha256(text.encode()).hexdigest() == MIGRATION_2_SHA256
    text = "\n".join(sql.MIGRATIONS[2].statements)
    assert sql.MIGRATIONS[2].version == 3
    assert hashlib.sha256(text.encode()).hexdigest() == MIGRATION_3_SHA256


def test_a_v1_database_migrates_to_the_latest_version_and_keeps_its_jobs(
    file_path: str, open_engine: OpenEngine, make_job: MakeJob
) -> None:
    jobs = [make_job(b"1"), make_job(b"2"), make_job(b"3", queue="q"),
            make_job(b"4", delay_s=60, key="k")]  # fmt: skip
    create_v1(file_path, jobs)
    with sqlite3.connect(file_path) as raw:
        before = raw.execute("SELECT * FROM rota_jobs ORDER BY id").fetchall()
    raw.close()
    engine = SqliteEngine(file_path)
    try:
        assert engine._schema_version() == 1
        assert engine.migrate() == sql.SCHEMA_VERSION == 4
        assert engine.migrate() == 4
        after = engine._conn.execute("SELECT * FROM rota_jobs ORDER BY id").fetchall()
        assert [row[:-1] for row in after] == before  # every v1 column kept, to the byte
        assert [row[-1] for row in after] == [None] * 4  # progress is NULL
        stored = engine.list_jobs()
        assert [j.payload for j in stored] == [b"1", b"2", b"3", b"4"]
        assert [j.state for j in stored] == [
            JobState.COMPLETED, JobState.FAILED, JobState.WAITING, JobState.DELAYED,
        ]  # fmt: skip
        assert (stored[0].result, stored[1].error) == (b"ok", "boom")
        assert all(j.progress is None for j in stored)
        assert engine.get_by_key("k").id == 4
        assert engine.events() == []  # no history is made up for jobs of version 1
        tables = {
            name
            for (name,) in engine._conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'index')"
            )
        }
        assert {"rota_owners", "rota_queues", "rota_logs", "rota_events",
                "rota_logs_job"} <= tables  # fmt: skip
        # the migrated database works as a new one: ids go on, events are written
        [new] = engine.enqueue([make_job(b"5", queue="q")])
        assert new == 5
        [job] = engine.claim("q", "w", 1, 1000)
        assert job.id == 3 and job.token is not None
        engine.set_progress(job.id, job.token, b"{}")
        engine.add_log(job.id, job.token, "hi")
        assert [e.kind for e in engine.events()] == [
            EventKind.ENQUEUED, EventKind.ACTIVE, EventKind.PROGRESS,
        ]  # fmt: skip
        assert engine.prune() == 2
    finally:
        engine.close()


def test_migration_2_is_applied_once(
    file_path: str, open_engine: OpenEngine, make_job: MakeJob
) -> None:
    create_v1(file_path, [make_job(), make_job()])
    engine = open_engine(file_path)  # migrates
    seen: list[str] = []
    engine._conn.set_trace_callback(seen.append)
    assert engine.migrate() == sql.SCHEMA_VERSION
    assert not any("ALTER" in s or "CREATE" in s for s in seen)
    assert engine._conn.execute(sql.SELECT_SCHEMA_VERSION).fetchone()[0] == sql.SCHEMA_VERSION


def test_a_migration_2_that_fails_midway_leaves_the_database_at_version_1(
    file_path: str, make_job: MakeJob
) -> None:
    create_v1(file_path, [make_job()])
    with sqlite3.connect(file_path) as raw:  # a table in the way of migration 2's last ones
        raw.execute("CREATE TABLE rota_events (x)")
    raw.close()
    engine = SqliteEngine(file_path)
    try:
        with pytest.raises(StorageError, match="apply migration 2"):
            engine.migrate()
        assert not engine._conn.in_transaction
        assert engine._schema_version() == 1
        columns = [row[1] for row in engine._conn.execute("PRAGMA table_info(rota_jobs)")]
        assert "progress" not in columns  # the ALTER TABLE before the failure was undone
        names = {n for (n,) in engine._conn.execute("SELECT name FROM sqlite_master")}
        assert not names & {"rota_owners", "rota_queues", "rota_logs"}
    finally:
        engine.close()


# The owners table as schema version 2 wrote it (UPSERT_OWNER now also writes pools).
V2_INSERT_OWNER = (
    "INSERT INTO rota_owners (id, host, pid, started_at_ms, heartbeat_at_ms, queues) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def create_v2(path: str, owners: list[tuple[Any, ...]]) -> None:
    """A database at schema version 2, as rota left it, holding ``owners`` (rows of
    V2_INSERT_OWNER)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for migration in sql.MIGRATIONS[:2]:
            for statement in migration.statements:
                conn.execute(statement)
        conn.execute(sql.SET_SCHEMA_VERSION, (2,))
        conn.execute("COMMIT")
        conn.executemany(V2_INSERT_OWNER, owners)
    finally:
        conn.close()


def test_a_v2_database_migrates_to_the_latest_version_and_keeps_its_owners(
    file_path: str,
) -> None:
    create_v2(
        file_path,
        [("w1", "h1", 11, 100, 150, '["q1", "q2"]'), ("w2", "h2", 22, 200, 250, "[]")],
    )
    engine = SqliteEngine(file_path)
    try:
        assert engine._schema_version() == 2
        assert engine.migrate() == 4
        assert engine._schema_version() == 4
        columns = [row[1] for row in engine._conn.execute("PRAGMA table_info(rota_owners)")]
        assert columns[-2:] == ["pools", "doorbell"]
        assert engine.list_owners() == [
            Owner(id="w1", host="h1", pid=11, started_at_ms=100, heartbeat_at_ms=150,
                  queues=["q1", "q2"]),
            Owner(id="w2", host="h2", pid=22, started_at_ms=200, heartbeat_at_ms=250,
                  queues=[]),
        ]  # fmt: skip
        assert all(o.pools is None for o in engine.list_owners())
        engine.heartbeat("w2", {"q": {"running": 1}})  # the new column is in use
        assert [o.pools for o in engine.list_owners()] == [None, {"q": {"running": 1}}]
    finally:
        engine.close()


def test_a_migration_3_that_fails_leaves_the_database_at_version_2(file_path: str) -> None:
    create_v2(file_path, [("w1", "h1", 11, 100, 150, "[]")])
    with sqlite3.connect(file_path) as raw:  # a column in the way of migration 3
        raw.execute("ALTER TABLE rota_owners ADD COLUMN pools TEXT")
    raw.close()
    engine = SqliteEngine(file_path)
    try:
        with pytest.raises(StorageError, match="apply migration 3"):
            engine.migrate()
        assert engine._schema_version() == 2
    finally:
        engine.close()


def create_v3(path: str, owners: list[tuple[Any, ...]]) -> None:
    """A database at schema version 3, as rota left it, holding ``owners`` (rows of
    V3_INSERT_OWNER)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for migration in sql.MIGRATIONS[:3]:
            for statement in migration.statements:
                conn.execute(statement)
        conn.execute(sql.SET_SCHEMA_VERSION, (3,))
        conn.execute("COMMIT")
        conn.executemany(V3_INSERT_OWNER, owners)
    finally:
        conn.close()


# The owners table as schema version 3 wrote it (UPSERT_OWNER now also writes doorbell).
V3_INSERT_OWNER = (
    "INSERT INTO rota_owners (id, host, pid, started_at_ms, heartbeat_at_ms, queues, pools) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def test_a_v3_database_migrates_to_v4_and_its_owners_have_no_doorbell(file_path: str) -> None:
    create_v3(file_path, [("w1", "h1", 11, 100, 150, '["q1"]', b'{"q1": {"running": 2}}')])
    engine = SqliteEngine(file_path)
    try:
        assert engine._schema_version() == 3
        assert engine.migrate() == 4
        columns = [row[1] for row in engine._conn.execute("PRAGMA table_info(rota_owners)")]
        assert columns[-1] == "doorbell"
        assert engine.list_owners() == [
            Owner(id="w1", host="h1", pid=11, started_at_ms=100, heartbeat_at_ms=150,
                  queues=["q1"], pools={"q1": {"running": 2}}, doorbell=None),
        ]  # fmt: skip
        engine.register_owner(
            Owner(id="w2", host="h1", pid=12, started_at_ms=200, heartbeat_at_ms=200,
                  queues=["q2"], doorbell="@rota-test")
        )  # fmt: skip
        assert [o.doorbell for o in engine.list_owners()] == [None, "@rota-test"]
    finally:
        engine.close()


def test_a_migration_4_that_fails_leaves_the_database_at_version_3(file_path: str) -> None:
    create_v3(file_path, [("w1", "h1", 11, 100, 150, "[]", None)])
    with sqlite3.connect(file_path) as raw:  # a column in the way of migration 4
        raw.execute("ALTER TABLE rota_owners ADD COLUMN doorbell BLOB")
    raw.close()
    engine = SqliteEngine(file_path)
    try:
        with pytest.raises(StorageError, match="apply migration 4"):
            engine.migrate()
        assert engine._schema_version() == 3
    finally:
        engine.close()

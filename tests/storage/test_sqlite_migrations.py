"""SqliteEngine: migrating a schema version 1 database to version 2."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable

import pytest

from rota.domain import JobState
from rota.domain.backoff import encode_backoff
from rota.domain.event import EventKind
from rota.domain.job import NewJob
from rota.errors import StorageError
from rota.storage import schema as sql
from rota.storage.sqlite import SqliteEngine

MakeJob = Callable[..., NewJob]
OpenEngine = Callable[..., SqliteEngine]

#: Migration 1 as shipped: it must never change (add the next migration instead).
MIGRATION_1_SHA256 = "00df3c4690df6653fdf0f7e487fc5c71565307c5e0f6f6476745764ff7f1f490"


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


def test_a_v1_database_migrates_to_v2_and_keeps_its_jobs(
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
        assert engine.migrate() == sql.SCHEMA_VERSION == 2
        assert engine.migrate() == 2
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
    assert engine.migrate() == 2
    assert not any("ALTER" in s or "CREATE" in s for s in seen)
    assert engine._conn.execute(sql.SELECT_SCHEMA_VERSION).fetchone()[0] == 2


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

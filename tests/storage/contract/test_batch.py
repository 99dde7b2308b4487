"""SqliteEngine.batch(): group commit, each operation isolated in its own savepoint."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from rota.domain import JobState
from rota.domain.job import NewJob
from rota.errors import LeaseLost, StorageError
from rota.storage.engine import ClaimRequest, Completion
from rota.storage.sqlite import SqliteEngine

MakeJob = Callable[..., NewJob]


@contextmanager
def statements(engine: SqliteEngine) -> Iterator[list[str]]:
    """Every statement the engine's connection runs inside the block."""
    seen: list[str] = []
    engine._conn.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        engine._conn.set_trace_callback(None)


def begins_and_commits(seen: list[str]) -> tuple[int, int]:
    return seen.count("BEGIN IMMEDIATE"), seen.count("COMMIT")


def test_outside_a_batch_each_operation_is_its_own_transaction(
    engine: SqliteEngine, make_job: MakeJob
) -> None:
    with statements(engine) as seen:
        engine.enqueue([make_job()])
        engine.claim("default", "w", 1, 1000)
        engine.get(1)  # a read takes no write transaction
    assert begins_and_commits(seen) == (2, 2)


def test_operations_in_a_batch_share_one_commit(engine: SqliteEngine, make_job: MakeJob) -> None:
    with statements(engine) as seen, engine.batch():
        [job_id] = engine.enqueue([make_job()])
        [job] = engine.claim("default", "w", 1, 1000)
        assert job.token is not None
        engine.settle_and_claim([Completion(job_id, job.token)], [], None)
        engine.enqueue([make_job()])
    assert begins_and_commits(seen) == (1, 1)
    assert seen.count("SAVEPOINT rota_op") == 4
    assert engine.get(job_id).state is JobState.COMPLETED
    assert engine.count()[JobState.WAITING] == 1


def test_other_connections_see_a_batch_only_once_it_commits(
    file_engine: SqliteEngine, file_path: str, make_job: MakeJob
) -> None:
    other = sqlite3.connect(file_path, isolation_level=None)
    try:
        version = other.execute("PRAGMA data_version").fetchone()[0]
        with file_engine.batch():
            for _ in range(3):
                file_engine.enqueue([make_job()])
            assert other.execute("SELECT count(*) FROM rota_jobs").fetchone()[0] == 0
            assert other.execute("PRAGMA data_version").fetchone()[0] == version
        assert other.execute("SELECT count(*) FROM rota_jobs").fetchone()[0] == 3
        # one commit: data_version moved once for three enqueues
        assert other.execute("PRAGMA data_version").fetchone()[0] == version + 1
    finally:
        other.close()


def test_an_operation_that_raises_is_undone_alone_and_the_batch_commits_the_rest(
    engine: SqliteEngine, make_job: MakeJob
) -> None:
    fields = {f: getattr(make_job(), f) for f in NewJob.__struct_fields__}
    bad = NewJob(**{**fields, "payload": object()})  # binding it fails mid-enqueue
    with engine.batch():
        [kept] = engine.enqueue([make_job(b"kept")])
        with pytest.raises(StorageError):  # the first job was inserted, then undone
            engine.enqueue([make_job(b"undone"), bad])
        with pytest.raises(LeaseLost):
            engine.complete(kept, 12345, None)
        [also] = engine.enqueue([make_job(b"also")])
    payloads = [j.payload for j in engine.list_jobs()]
    assert payloads == [b"kept", b"also"]
    assert engine.get(kept).state is JobState.WAITING
    assert also > kept
    assert not engine._conn.in_transaction


def test_an_exception_out_of_the_block_rolls_the_whole_batch_back(
    engine: SqliteEngine, make_job: MakeJob
) -> None:
    with pytest.raises(KeyError), engine.batch():
        engine.enqueue([make_job()])
        raise KeyError("caller bug")
    assert engine.list_jobs() == []
    assert not engine._conn.in_transaction
    with engine.batch():  # and the engine is usable again
        engine.enqueue([make_job()])
    assert len(engine.list_jobs()) == 1


def test_batches_do_not_nest(engine: SqliteEngine, make_job: MakeJob) -> None:
    with engine.batch():
        engine.enqueue([make_job()])
        with pytest.raises(RuntimeError, match="does not nest"), engine.batch():
            pass
        with pytest.raises(RuntimeError, match="inside a batch"):
            engine.migrate()
        engine.enqueue([make_job()])
    assert len(engine.list_jobs()) == 2


def test_a_failed_commit_raises_storage_error_and_keeps_nothing(
    engine: SqliteEngine, make_job: MakeJob
) -> None:
    def no_commit(action: int, arg1: str | None, *_: Any) -> int:
        if action == sqlite3.SQLITE_TRANSACTION and arg1 == "COMMIT":
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    with pytest.raises(StorageError, match="commit a batch"), engine.batch():
        engine.enqueue([make_job(), make_job()])
        engine._conn.set_authorizer(no_commit)
    engine._conn.set_authorizer(None)
    assert not engine._conn.in_transaction
    assert engine.list_jobs() == []
    engine.enqueue([make_job()])
    assert len(engine.list_jobs()) == 1


def test_settle_and_claim_in_a_batch_reports_lost_without_failing_the_batch(
    engine: SqliteEngine, make_job: MakeJob
) -> None:
    engine.enqueue([make_job(), make_job()])
    with engine.batch():
        [job] = engine.claim("default", "w", 1, 1000)
        assert job.token is not None
        settled = engine.settle_and_claim(
            [Completion(job.id, job.token + 1), Completion(job.id, job.token)],
            [],
            ClaimRequest("default", "w", 5, 1000),
        )
    assert settled.lost == [job.id]
    assert engine.get(job.id).state is JobState.COMPLETED
    assert [j.state for j in settled.claimed] == [JobState.ACTIVE]

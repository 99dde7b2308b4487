"""SqliteEngine.batch(), what no other engine shares: one ``BEGIN IMMEDIATE`` and one
``COMMIT`` per batch, a savepoint per operation, and ``data_version`` moving once per
commit. What a batch promises is tested for every engine in ``contract/test_batch.py``."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rota.domain import JobState
from rota.domain.job import NewJob
from rota.storage.engine import Completion
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

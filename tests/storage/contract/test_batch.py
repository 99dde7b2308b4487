"""The Engine contract of ``batch()``: several operations in one transaction (group commit),
each isolated: one that raises is undone alone."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from engine_kinds import EngineHooks

from rota.domain import JobState
from rota.domain.job import NewJob
from rota.errors import LeaseLost, StorageError
from rota.storage.engine import ClaimRequest, Completion, Engine

MakeJob = Callable[..., NewJob]


@pytest.mark.several_connections
def test_another_engine_sees_a_batch_only_once_it_commits_and_all_of_it(
    engine: Engine, engine_factory: Callable[..., Engine], make_job: MakeJob
) -> None:
    other = engine_factory()
    start = other.last_event_id()
    with engine.batch():
        ids = [engine.enqueue([make_job()])[0] for _ in range(3)]
        [job] = engine.claim("default", "w", 1, 1000)
        assert other.count()[JobState.WAITING] == 0
        assert other.list_jobs() == []
        assert other.events(start) == []
    assert other.count()[JobState.WAITING] == 2
    assert [j.id for j in other.list_jobs()] == ids
    assert other.get(job.id).state is JobState.ACTIVE


def test_an_operation_that_raises_is_undone_alone_and_the_batch_commits_the_rest(
    engine: Engine, hooks: EngineHooks, make_job: MakeJob
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
    assert not hooks.in_transaction()


def test_an_exception_out_of_the_block_rolls_the_whole_batch_back(
    engine: Engine, hooks: EngineHooks, make_job: MakeJob
) -> None:
    with pytest.raises(KeyError), engine.batch():
        engine.enqueue([make_job()])
        raise KeyError("caller bug")
    assert engine.list_jobs() == []
    assert not hooks.in_transaction()
    with engine.batch():  # and the engine is usable again
        engine.enqueue([make_job()])
    assert len(engine.list_jobs()) == 1


def test_batches_do_not_nest(engine: Engine, make_job: MakeJob) -> None:
    with engine.batch():
        engine.enqueue([make_job()])
        with pytest.raises(RuntimeError, match="does not nest"), engine.batch():
            pass
        with pytest.raises(RuntimeError, match="inside a batch"):
            engine.migrate()
        engine.enqueue([make_job()])
    assert len(engine.list_jobs()) == 2


def test_a_failed_commit_raises_storage_error_and_keeps_nothing(
    engine: Engine, hooks: EngineHooks, make_job: MakeJob
) -> None:
    with (
        hooks.refusing_commits(),
        pytest.raises(StorageError, match="commit a batch"),
        engine.batch(),
    ):
        engine.enqueue([make_job(), make_job()])
    assert not hooks.in_transaction()
    assert engine.list_jobs() == []
    engine.enqueue([make_job()])
    assert len(engine.list_jobs()) == 1


def test_settle_and_claim_in_a_batch_reports_lost_without_failing_the_batch(
    engine: Engine, make_job: MakeJob
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


def test_a_read_inside_a_batch_sees_the_batch_and_a_closed_batch_engine_says_so(
    engine: Engine, make_job: MakeJob
) -> None:
    with engine.batch():
        [job_id] = engine.enqueue([make_job()])
        assert engine.get(job_id).state is JobState.WAITING
        assert engine.count()[JobState.WAITING] == 1
    with pytest.raises(StorageError, match="closed"), engine.batch():
        engine.enqueue([make_job()])
        engine.close()
    with pytest.raises(StorageError, match="closed"):
        engine.count()

"""The Engine contract: count, list_jobs, queues and prune."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from engine_kinds import EngineHooks

from rota.domain import JobState
from rota.domain.job import NewJob
from rota.storage.engine import Engine, Failure

if TYPE_CHECKING:
    from tests.storage.conftest import FakeClock

MakeJob = Callable[..., NewJob]


def settle(engine: Engine, queue: str, n: int, state: JobState) -> list[int]:
    """Claim n jobs of the queue and finish them in ``state``."""
    ids = []
    for job in engine.claim(queue, "w", n, 1000):
        assert job.token is not None
        if state is JobState.COMPLETED:
            engine.complete(job.id, job.token, None)
        else:
            engine.fail(Failure(job.id, job.token, "x", delay_ms=60_000))
        ids.append(job.id)
    return ids


@pytest.fixture
def mixed(engine: Engine, make_job: MakeJob) -> dict[str, list[int]]:
    """Queue a: 2 waiting, 1 delayed, 1 active, 2 completed, 1 delayed by retry,
    1 cancelled; queue b: 1 waiting, 1 failed."""
    engine.enqueue([make_job(queue="a") for _ in range(4)])
    completed = settle(engine, "a", 2, JobState.COMPLETED)
    retried = settle(engine, "a", 1, JobState.DELAYED)
    [active] = engine.claim("a", "w", 1, 1000)
    waiting = engine.enqueue([make_job(queue="a") for _ in range(2)])
    delayed = engine.enqueue([make_job(queue="a", delay_s=5)])
    [cancelled] = engine.enqueue([make_job(queue="a")])
    engine.cancel(cancelled)
    engine.enqueue([make_job(queue="b", max_attempts=1), make_job(queue="b")])
    failed = settle(engine, "b", 1, JobState.FAILED)
    return {
        "completed": completed, "retried": retried, "active": [active.id],
        "waiting": waiting, "delayed": delayed, "cancelled": [cancelled], "failed": failed,
    }  # fmt: skip


def test_count_reports_every_state_by_queue_and_in_all(
    engine: Engine, mixed: dict[str, list[int]]
) -> None:
    assert engine.count("a") == {
        JobState.WAITING: 2, JobState.DELAYED: 2, JobState.ACTIVE: 1,
        JobState.COMPLETED: 2, JobState.FAILED: 0, JobState.CANCELLED: 1,
    }  # fmt: skip
    assert engine.count("b") == {
        JobState.WAITING: 1, JobState.DELAYED: 0, JobState.ACTIVE: 0,
        JobState.COMPLETED: 0, JobState.FAILED: 1, JobState.CANCELLED: 0,
    }  # fmt: skip
    total = engine.count()
    assert list(total) == list(JobState)
    assert total == {s: engine.count("a")[s] + engine.count("b")[s] for s in JobState}
    assert engine.count("empty") == dict.fromkeys(JobState, 0)


def test_list_jobs_pages_in_id_order_with_filters(
    engine: Engine, mixed: dict[str, list[int]]
) -> None:
    everything = engine.list_jobs(limit=1000)
    ids = [j.id for j in everything]
    assert ids == sorted(ids) and len(ids) == 10
    assert [j.id for j in engine.list_jobs(limit=3, offset=2)] == ids[2:5]
    assert engine.list_jobs(limit=0) == []
    assert engine.list_jobs(offset=100) == []
    assert [j.id for j in engine.list_jobs(queue="b")] == [j.id for j in everything[-2:]]
    assert [j.id for j in engine.list_jobs(state=JobState.DELAYED)] == sorted(
        mixed["retried"] + mixed["delayed"]
    )
    assert [j.id for j in engine.list_jobs(queue="b", state=JobState.FAILED)] == mixed["failed"]
    assert engine.list_jobs(queue="a", state=JobState.FAILED) == []
    with pytest.raises(ValueError, match="limit and offset"):
        engine.list_jobs(limit=-1)
    with pytest.raises(ValueError, match="limit and offset"):
        engine.list_jobs(offset=-1)


def test_queues_lists_every_queue_with_jobs_once_sorted(
    engine: Engine, make_job: MakeJob, mixed: dict[str, list[int]]
) -> None:
    assert engine.queues() == ["a", "b"]
    engine.enqueue([make_job(queue="0-first", delay_s=1), make_job(queue="z")])
    assert engine.queues() == ["0-first", "a", "b", "z"]


def test_queues_with_work_lists_the_queues_with_unfinished_jobs(
    engine: Engine, make_job: MakeJob, clock: FakeClock, mixed: dict[str, list[int]]
) -> None:
    """For ``rota health``: the queues that need a worker (waiting, delayed or active
    jobs), not those whose jobs have all finished."""
    assert engine.queues_with_work() == ["a", "b"]
    engine.enqueue([make_job(queue="0-later", delay_s=60)])
    finish(engine, make_job, clock, "done", 2)
    engine.enqueue([make_job(queue="running")])
    engine.claim("running", "w", 1, 10_000)
    assert engine.queues_with_work() == ["0-later", "a", "b", "running"]
    assert "done" in engine.queues()


# --- prune ----------------------------------------------------------------------------


def finish(engine: Engine, make_job: MakeJob, clock: FakeClock, queue: str,
           n: int, step_ms: int = 1000) -> list[int]:  # fmt: skip
    """n completed jobs in the queue, finished step_ms apart (oldest first)."""
    ids = engine.enqueue([make_job(queue=queue) for _ in range(n)])
    for job in engine.claim(queue, "w", n, 10**9):
        assert job.token is not None
        engine.complete(job.id, job.token, None)
        clock.advance(step_ms)
    return ids


def remaining(engine: Engine) -> list[int]:
    return [j.id for j in engine.list_jobs(limit=1000)]


def test_prune_by_age_deletes_only_jobs_finished_before_the_cutoff(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    done = finish(engine, make_job, clock, "q", 5)  # finished at -5 s ... -1 s
    [live] = engine.enqueue([make_job(queue="q")])
    assert engine.prune(older_than_ms=2500) == 3
    assert remaining(engine) == [*done[3:], live]
    assert engine.prune(older_than_ms=2500) == 0


def test_prune_keep_last_keeps_the_newest_per_queue_and_state(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    a = finish(engine, make_job, clock, "a", 4)
    b = finish(engine, make_job, clock, "b", 3)
    [cancelled] = engine.enqueue([make_job(queue="a")])
    engine.cancel(cancelled)
    assert engine.prune(keep_last=2) == 3
    assert remaining(engine) == [*a[2:], *b[1:], cancelled]
    assert engine.prune(keep_last=0, queue="b") == 2
    assert remaining(engine) == [*a[2:], cancelled]


def test_prune_deletes_what_either_limit_selects_and_everything_without_limits(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    a = finish(engine, make_job, clock, "a", 4)  # finished at -4, -3, -2, -1 s
    # keep_last=3 selects a[0]; older_than 2.5 s selects a[0], a[1]
    assert engine.prune(keep_last=3, older_than_ms=2500) == 2
    assert remaining(engine) == a[2:]
    assert engine.prune(states=[JobState.FAILED]) == 0
    assert engine.prune() == 2
    assert remaining(engine) == []


def test_prune_only_touches_the_given_states(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    [done] = finish(engine, make_job, clock, "q", 1)
    [gone] = engine.enqueue([make_job(queue="q")])
    engine.cancel(gone)
    assert engine.prune(states={JobState.CANCELLED}) == 1
    assert remaining(engine) == [done]
    assert engine.prune(states=[]) == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"states": [JobState.WAITING]},
        {"states": [JobState.COMPLETED, JobState.ACTIVE]},
        {"older_than_ms": -1},
        {"keep_last": -1},
    ],
)
def test_prune_refuses_unfinished_states_and_bad_limits_and_changes_nothing(
    engine: Engine,
    make_job: MakeJob,
    clock: FakeClock,
    hooks: EngineHooks,
    kwargs: dict[str, Any],
) -> None:
    finish(engine, make_job, clock, "q", 2)
    engine.enqueue([make_job()])
    engine.claim("default", "w", 1, 1000)
    before = hooks.rows()
    with pytest.raises(ValueError, match=r"only finished jobs|must be >= 0"):
        engine.prune(**kwargs)
    assert hooks.rows() == before

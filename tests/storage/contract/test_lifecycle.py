"""The Engine contract: fail, rescue_expired, release_owner and cancel follow
rota.domain.lifecycle.

Each test checks the stored job against the pure rule applied to the job as it was, with
the same time and the same jitter draw, besides the facts the rule stands for.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from engine_kinds import EngineHooks

from rota.domain import FailureKind, JobState, backoff, lifecycle
from rota.domain.event import EventKind
from rota.domain.job import Job, NewJob
from rota.errors import JobNotFound
from rota.storage.engine import Engine, Failure, LeaseRef

if TYPE_CHECKING:
    from tests.storage.conftest import FakeClock, FixedDraws

MakeJob = Callable[..., NewJob]
TTL = 1000


def claimed(engine: Engine, make_job: MakeJob, owner: str = "w", **options: Any) -> Job:
    [job_id] = engine.enqueue([make_job(**options)])
    [job] = engine.claim(options.get("queue", "default"), owner, 1, TTL)
    assert job.id == job_id and job.token is not None
    return job


# --- fail -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "kind", "delay_ms", "state", "wait_ms"),
    [
        ({}, FailureKind.ERROR, None, JobState.DELAYED, 1000),  # default: exponential 1 s
        ({"backoff": backoff.fixed(0)}, FailureKind.ERROR, None, JobState.WAITING, 0),
        ({}, FailureKind.ERROR, 500, JobState.DELAYED, 500),  # Retry(delay) wins
        ({}, FailureKind.ERROR, 0, JobState.WAITING, 0),
        ({"max_attempts": 1}, FailureKind.ERROR, None, JobState.FAILED, None),
        ({}, FailureKind.UNRECOVERABLE, None, JobState.FAILED, None),
        ({}, FailureKind.CANCELLED, None, JobState.CANCELLED, None),
    ],
)
def test_fail_follows_the_lifecycle_rule(
    engine: Engine,
    make_job: MakeJob,
    clock: FakeClock,
    draws: FixedDraws,
    options: dict[str, Any],
    kind: FailureKind,
    delay_ms: int | None,
    state: JobState,
    wait_ms: int | None,
) -> None:
    job = claimed(engine, make_job, **options)
    assert job.token is not None
    clock.advance(10)
    got = engine.fail(Failure(job.id, job.token, "boom", kind=kind, delay_ms=delay_ms))
    assert got is state
    stored = engine.get(job.id)
    assert stored == lifecycle.fail(
        job, job.token, "boom", clock.now_ms, kind=kind, delay_ms=delay_ms, u=draws.u
    )
    assert stored.error == "boom"
    assert (stored.owner, stored.token, stored.lease_expires_at_ms) == (None, None, None)
    assert stored.attempt == 1
    if wait_ms is None:
        assert stored.finished_at_ms == clock.now_ms
    else:
        assert stored.run_at_ms == clock.now_ms + wait_ms
        assert stored.finished_at_ms is None
    assert draws.draws == 1  # one jitter draw per fail, used or not


def test_retries_follow_the_backoff_and_end_failed_when_attempts_run_out(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    job = claimed(engine, make_job, max_attempts=3, backoff=backoff.exponential(1.0))
    for attempt, wait_ms in ((1, 1000), (2, 2000)):
        assert job.token is not None and job.attempt == attempt
        assert engine.fail(Failure(job.id, job.token, f"e{attempt}")) is JobState.DELAYED
        assert engine.get(job.id).run_at_ms == clock.now_ms + wait_ms
        clock.advance(wait_ms - 1)
        assert engine.claim("default", "w", 1, TTL) == []
        clock.advance(1)
        [job] = engine.claim("default", "w", 1, TTL)
    assert job.token is not None and job.attempt == 3
    assert engine.fail(Failure(job.id, job.token, "e3")) is JobState.FAILED
    assert engine.get(job.id).error == "e3"


def test_fail_applies_jitter_with_the_engines_draw(
    engine: Engine, make_job: MakeJob, clock: FakeClock, draws: FixedDraws
) -> None:
    draws.u = 0.0  # the low end of the jitter range
    job = claimed(engine, make_job, backoff=backoff.fixed(10.0, jitter=0.5))
    assert job.token is not None
    engine.fail(Failure(job.id, job.token, "boom"))
    assert engine.get(job.id).run_at_ms == clock.now_ms + 5000  # 10 s * (1 - 0.5)


# --- rescue_expired -------------------------------------------------------------------


def test_rescue_requeues_an_expired_lease_as_a_stall_with_backoff(
    engine: Engine, make_job: MakeJob, clock: FakeClock, draws: FixedDraws
) -> None:
    job = claimed(engine, make_job, max_stalls=1)
    clock.advance(TTL - 1)
    assert engine.rescue_expired().requeued == []  # one ms before expiry: alive
    assert engine.get(job.id) == job
    clock.advance(1)
    rescued = engine.rescue_expired()
    assert (rescued.requeued, rescued.failed, rescued.cancelled) == ([job.id], [], [])
    stored = engine.get(job.id)
    assert stored == lifecycle.stall(job, clock.now_ms, u=draws.u)
    assert (stored.state, stored.stalls, stored.attempt) == (JobState.DELAYED, 1, 1)
    assert stored.run_at_ms == clock.now_ms + 1000
    assert stored.error == lifecycle.stall_error(job)
    assert "stalled" in (stored.error or "")
    again = engine.rescue_expired()  # idempotent
    assert (again.requeued, again.failed, again.cancelled) == ([], [], [])
    assert engine.get(job.id) == stored


def test_rescue_leaves_live_leases_alone(
    engine: Engine, make_job: MakeJob, clock: FakeClock, hooks: EngineHooks
) -> None:
    old = claimed(engine, make_job)
    clock.advance(500)
    young = claimed(engine, make_job)
    clock.advance(500)  # old expires now, young in 500 ms
    assert engine.rescue_expired().requeued == [old.id]
    assert engine.get(young.id) == young


@pytest.mark.parametrize(
    ("options", "cancel", "bucket", "state", "error_has"),
    [
        ({"max_stalls": 0}, False, "failed", JobState.FAILED, "poison after 1 stalls"),
        ({"max_stalls": 5, "max_attempts": 1}, False, "failed", JobState.FAILED, "stalled"),
        ({}, True, "cancelled", JobState.CANCELLED, "cancelled"),
    ],
)
def test_rescue_fails_poison_and_exhausted_jobs_and_cancels_requested_ones(
    engine: Engine,
    make_job: MakeJob,
    clock: FakeClock,
    draws: FixedDraws,
    options: dict[str, Any],
    cancel: bool,
    bucket: str,
    state: JobState,
    error_has: str,
) -> None:
    job = claimed(engine, make_job, **options)
    if cancel:
        assert engine.cancel(job.id) is JobState.ACTIVE
        job = engine.get(job.id)
        assert job.cancel_requested
    clock.advance(TTL)
    rescued = engine.rescue_expired()
    assert getattr(rescued, bucket) == [job.id]
    assert sum(len(ids) for ids in (rescued.requeued, rescued.failed, rescued.cancelled)) == 1
    stored = engine.get(job.id)
    assert stored == lifecycle.stall(job, clock.now_ms, u=draws.u)
    assert stored.state is state
    assert error_has in (stored.error or "")
    assert stored.finished_at_ms == clock.now_ms
    if "poison" in error_has:
        assert "poison" not in (lifecycle.stall_error(job))


@pytest.mark.several_connections
def test_rescue_from_two_engines_at_once_handles_each_lease_once(
    engine_factory: Callable[..., Engine], make_job: MakeJob, clock: FakeClock
) -> None:
    first = engine_factory()
    second = engine_factory(rng=random.Random(1))
    ids = first.enqueue([make_job(max_stalls=3) for _ in range(50)])
    first.claim("default", "w", 50, TTL)
    clock.advance(TTL)
    results = {}
    start = threading.Barrier(2)

    def sweep(name: str, engine: Engine) -> None:
        start.wait()
        results[name] = engine.rescue_expired().requeued

    threads = [threading.Thread(target=sweep, args=pair) for pair in
               (("first", first), ("second", second))]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results["first"] + results["second"]) == ids  # each exactly once
    assert all(j.stalls == 1 for j in first.list_jobs(limit=100))


# --- release_owner --------------------------------------------------------------------


def test_release_owner_as_stall_counts_a_stall_for_that_owners_jobs_only(
    engine: Engine, make_job: MakeJob, clock: FakeClock, draws: FixedDraws
) -> None:
    mine = [claimed(engine, make_job, owner="dead") for _ in range(2)]
    other = claimed(engine, make_job, owner="alive")
    clock.advance(100)  # the leases have not expired: release does not wait for that
    assert engine.release_owner("dead", as_stall=True) == [j.id for j in mine]
    for job in mine:
        stored = engine.get(job.id)
        assert stored == lifecycle.release(job, clock.now_ms, as_stall=True, u=draws.u)
        assert (stored.state, stored.stalls) == (JobState.DELAYED, 1)
    assert engine.get(other.id) == other
    assert engine.release_owner("dead", as_stall=True) == []
    assert draws.draws == 2


def test_release_owner_clean_requeues_at_once_without_counting(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    job = claimed(engine, make_job, max_stalls=0)
    clock.advance(100)
    assert engine.release_owner("w", as_stall=False) == [job.id]
    stored = engine.get(job.id)
    assert stored == lifecycle.release(job, clock.now_ms, as_stall=False)
    # the interrupted attempt is taken back: it runs again as attempt 1
    assert (stored.state, stored.stalls, stored.attempt) == (JobState.WAITING, 0, 0)
    assert (stored.owner, stored.token, stored.run_at_ms) == (None, None, job.run_at_ms)
    [again] = engine.claim("default", "w2", 1, TTL)
    assert (again.id, again.attempt) == (job.id, 1)


def test_unclaim_hands_back_unstarted_jobs_uncounted_and_skips_lost_leases(
    engine: Engine, make_job: MakeJob
) -> None:
    first = claimed(engine, make_job)
    second = claimed(engine, make_job)
    assert first.token is not None
    assert second.token is not None
    handed_back = engine.unclaim([LeaseRef(first.id, first.token), LeaseRef(second.id, 1)])
    assert handed_back == [first.id]  # the stale token of the second changes nothing
    stored = engine.get(first.id)
    assert (stored.state, stored.attempt, stored.owner) == (JobState.WAITING, 0, None)
    assert engine.get(second.id) == second


def test_release_takes_back_interrupted_attempts_uncounted_and_skips_lost_leases(
    engine: Engine, make_job: MakeJob
) -> None:
    first = claimed(engine, make_job)
    second = claimed(engine, make_job)
    assert first.token is not None
    released = engine.release([LeaseRef(first.id, first.token), LeaseRef(second.id, 1)])
    assert released == [first.id]  # the stale token of the second changes nothing
    stored = engine.get(first.id)
    # ready at once, in its old place; the interrupted attempt is taken back, no stall
    assert (stored.state, stored.attempt, stored.stalls) == (JobState.WAITING, 0, 0)
    assert (stored.owner, stored.run_at_ms) == (None, first.run_at_ms)
    assert engine.get(second.id) == second


def test_release_as_stall_counts_the_interrupted_attempt(engine: Engine, make_job: MakeJob) -> None:
    """A pool that crashed releases its running jobs as stalls: whatever crashed it may be
    one of them, so the attempt counts and ``max_stalls`` ends a job that keeps doing it."""
    job = claimed(engine, make_job, max_stalls=0)
    assert job.token is not None
    assert engine.release([LeaseRef(job.id, job.token)], as_stall=True) == [job.id]
    stored = engine.get(job.id)
    assert (stored.state, stored.attempt, stored.stalls) == (JobState.FAILED, 1, 1)
    assert stored.error is not None and "failed as poison after 1 stalls" in stored.error
    kinds = [e.kind for e in engine.events(0) if e.job_id == job.id]
    assert kinds[-2:] == [EventKind.STALLED, EventKind.FAILED]


def test_release_of_a_job_asked_to_cancel_ends_it_cancelled(
    engine: Engine, make_job: MakeJob
) -> None:
    job = claimed(engine, make_job)
    engine.cancel(job.id)
    assert engine.release_owner("w", as_stall=False) == [job.id]
    assert engine.get(job.id).state is JobState.CANCELLED


# --- cancel ---------------------------------------------------------------------------


def test_cancel_in_every_state(
    engine: Engine, make_job: MakeJob, clock: FakeClock, hooks: EngineHooks
) -> None:
    [waiting, delayed] = engine.enqueue([make_job(), make_job(delay_s=60)])
    clock.advance(5)
    for job_id in (waiting, delayed):
        before = engine.get(job_id)
        assert engine.cancel(job_id) is JobState.CANCELLED
        stored = engine.get(job_id)
        assert stored == lifecycle.cancel(before, clock.now_ms)
        assert (stored.finished_at_ms, stored.error) == (clock.now_ms, "cancelled")
    assert engine.claim("default", "w", 10, TTL) == []

    active = claimed(engine, make_job)
    assert active.token is not None
    assert engine.cancel(active.id) is JobState.ACTIVE
    stored = engine.get(active.id)
    assert stored == lifecycle.cancel(active, clock.now_ms)
    assert stored.cancel_requested and stored.token == active.token
    assert engine.cancel(active.id) is JobState.ACTIVE  # asking twice changes nothing more
    assert engine.renew([LeaseRef(active.id, active.token)], TTL).cancel_requested == [active.id]
    stop = Failure(active.id, active.token, "stopped", kind=FailureKind.CANCELLED)
    assert engine.fail(stop) is JobState.CANCELLED
    assert not engine.get(active.id).cancel_requested

    done = claimed(engine, make_job)
    assert done.token is not None
    engine.complete(done.id, done.token, None)
    failed = claimed(engine, make_job, max_attempts=1)
    assert failed.token is not None
    engine.fail(Failure(failed.id, failed.token, "boom"))
    table = hooks.rows()
    assert engine.cancel(done.id) is JobState.COMPLETED
    assert engine.cancel(failed.id) is JobState.FAILED
    assert engine.cancel(waiting) is JobState.CANCELLED
    assert hooks.rows() == table  # finished jobs are left as they are
    with pytest.raises(JobNotFound):
        engine.cancel(10**9)


def test_negative_retry_delay_is_refused_before_reaching_the_engine() -> None:
    with pytest.raises(ValueError, match="delay_ms"):
        Failure(1, 2, "x", delay_ms=-5)


def test_a_mixed_enqueue_batch_stores_every_job_exactly_whichever_insert_path_it_takes(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    # An engine may store a batch by more than one path (SqliteEngine: runs of one job
    # type, >= 8 rows, take a one-statement insert, the rest executemany); the stored rows
    # must not tell which.
    jobs = [
        *[make_job(b'{"i": %d, "s": "\\u00e9"}' % i) for i in range(10)],  # one statement
        make_job(b"\xff not UTF-8"),
        *[make_job(b"%d" % i, name="other", priority=i % 2) for i in range(9)],  # mixed
        *[make_job(b"k%d" % i, key=f"key-{i}") for i in range(3)],
        *[make_job(b"late", delay_s=5, timeout_s=2.5) for _ in range(8)],  # one statement
        *[make_job("é ✓".encode()) for _ in range(8)],
    ]
    ids = engine.enqueue(jobs)
    assert ids == list(range(ids[0], ids[0] + len(jobs)))
    stored = {job.id: job for job in engine.list_jobs(limit=1000)}
    assert sorted(stored) == ids
    for job_id, new in zip(ids, jobs, strict=True):
        job = stored[job_id]
        assert job.payload == new.payload
        assert (job.name, job.queue, job.key, job.priority) == (
            new.name, new.queue, new.key, new.priority,
        )  # fmt: skip
        assert (job.run_at_ms, job.timeout_ms, job.max_attempts, job.max_stalls) == (
            new.run_at_ms, new.timeout_ms, new.max_attempts, new.max_stalls,
        )  # fmt: skip
        assert job.state is (JobState.DELAYED if new.delayed else JobState.WAITING)
        assert job.backoff == new.backoff
        assert job.created_at_ms == new.created_at_ms == clock.now_ms

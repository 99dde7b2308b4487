"""The Engine contract: the event stream (schema version 2).

Every transition writes its event in the transaction of the change: exact kinds, order,
attempts and data per operation; nothing for a change that was rolled back; nothing at
all with ``record_events=False``; reading, paging and pruning the stream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from engine_kinds import EngineHooks

from rota.domain import FailureKind, JobState, backoff, lifecycle
from rota.domain.event import Event, EventKind
from rota.domain.job import Job, NewJob
from rota.storage.engine import ClaimRequest, Completion, Engine, Failure

if TYPE_CHECKING:
    from tests.storage.conftest import FakeClock

MakeJob = Callable[..., NewJob]
TTL = 1000

E = EventKind
Seen = tuple[EventKind, int, int, bytes | None]


def stream(engine: Engine, after: int = 0) -> list[Seen]:
    """(kind, job id, attempt, data) of every event after ``after``, in order."""
    return [(e.kind, e.job_id, e.attempt, e.data) for e in engine.events(after, limit=10_000)]


def claimed(engine: Engine, make_job: MakeJob, owner: str = "w", **options: Any) -> Job:
    [job_id] = engine.enqueue([make_job(**options)])
    [job] = engine.claim(options.get("queue", "default"), owner, 1, TTL)
    assert job.id == job_id and job.token is not None
    return job


def token(job: Job) -> int:
    assert job.token is not None
    return job.token


# --- each operation's events ----------------------------------------------------------


def test_enqueue_writes_one_enqueued_per_job_inserted_and_none_for_existing_keys(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    assert engine.last_event_id() == 0
    [keyed] = engine.enqueue([make_job(key="k")])
    clock.advance(5)
    jobs = [
        make_job(name="a", queue="q1"), make_job(key="k"), make_job(name="b", delay_s=9),
        make_job(key="new"), make_job(name="c", queue="q2"),
    ]  # fmt: skip
    ids = engine.enqueue(jobs)
    assert ids[1] == keyed
    events = engine.events()
    assert [(e.kind, e.job_id, e.attempt, e.data) for e in events] == [
        (E.ENQUEUED, keyed, 0, None),
        *((E.ENQUEUED, i, 0, None) for i in (ids[0], ids[2], ids[3], ids[4])),
    ]
    assert [(e.queue, e.name) for e in events[1:]] == [
        ("q1", "a"), ("default", "b"), ("default", "task"), ("q2", "c"),
    ]  # fmt: skip
    assert [e.at_ms for e in events] == [clock.now_ms - 5] + [clock.now_ms] * 4
    ids_seen = [e.id for e in events]
    assert ids_seen == sorted(ids_seen) and len(set(ids_seen)) == 5
    assert engine.last_event_id() == ids_seen[-1]
    before = engine.last_event_id()
    assert engine.enqueue([make_job(key="k")]) == [keyed]  # only a duplicate: no event
    assert engine.last_event_id() == before


def test_claim_writes_active_in_claim_order_with_the_attempt_starting(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    ids = engine.enqueue([make_job(priority=p, backoff=backoff.fixed(0)) for p in (2, 0, 1)])
    start = engine.last_event_id()
    jobs = engine.claim("default", "w", 3, TTL)
    assert [j.id for j in jobs] == [ids[1], ids[2], ids[0]]  # not id order
    assert stream(engine, start) == [(E.ACTIVE, j.id, 1, None) for j in jobs]
    engine.fail(Failure(ids[1], token(jobs[0]), "again"))
    mark = engine.last_event_id()
    assert [j.id for j in engine.claim("default", "w", 3, TTL)] == [ids[1]]
    assert stream(engine, mark) == [(E.ACTIVE, ids[1], 2, None)]
    assert engine.events(mark)[0].at_ms == clock.now_ms
    assert engine.claim("default", "w", 3, TTL) == []
    assert engine.last_event_id() == mark + 1  # an empty claim writes nothing


def test_complete_writes_completed(engine: Engine, make_job: MakeJob) -> None:
    job = claimed(engine, make_job)
    mark = engine.last_event_id()
    engine.complete(job.id, token(job), b"ok")
    [event] = engine.events(mark)
    assert (event.kind, event.job_id, event.attempt, event.data) == (E.COMPLETED, job.id, 1, None)
    assert (event.queue, event.name) == ("default", "task")


@pytest.mark.parametrize(
    ("options", "kind", "delay_ms", "event"),
    [
        ({}, FailureKind.ERROR, None, E.RETRYING),  # delayed by the backoff
        ({}, FailureKind.ERROR, 0, E.RETRYING),  # waiting at once
        ({"max_attempts": 1}, FailureKind.ERROR, None, E.FAILED),
        ({}, FailureKind.UNRECOVERABLE, None, E.FAILED),
        ({}, FailureKind.CANCELLED, None, E.CANCELLED),
    ],
)
def test_fail_writes_retrying_failed_or_cancelled_with_the_error(
    engine: Engine,
    make_job: MakeJob,
    options: dict[str, Any],
    kind: FailureKind,
    delay_ms: int | None,
    event: EventKind,
) -> None:
    job = claimed(engine, make_job, **options)
    mark = engine.last_event_id()
    engine.fail(Failure(job.id, token(job), "boom: é", kind=kind, delay_ms=delay_ms))
    assert stream(engine, mark) == [(event, job.id, 1, "boom: é".encode())]


def test_settle_and_claim_writes_completions_then_failures_then_claims_each_in_order(
    engine: Engine, make_job: MakeJob
) -> None:
    engine.enqueue([make_job(backoff=backoff.fixed(0)) for _ in range(4)])
    j1, j2, j3, j4 = engine.claim("default", "w", 4, TTL)
    [low, high] = engine.enqueue([make_job(priority=5), make_job(priority=-5)])
    mark = engine.last_event_id()
    settled = engine.settle_and_claim(
        [
            Completion(j3.id, token(j3)),
            Completion(j2.id, token(j2) + 1),  # lost: no event
            Completion(j1.id, token(j1)),
        ],
        [Failure(j4.id, token(j4), "x"), Failure(j2.id, 1, "stale")],
        ClaimRequest("default", "w", 10, TTL),
    )
    assert settled.lost == [j2.id, j2.id]
    assert [j.id for j in settled.claimed] == [high, j4.id, low]
    assert stream(engine, mark) == [
        (E.COMPLETED, j3.id, 1, None),
        (E.COMPLETED, j1.id, 1, None),
        (E.RETRYING, j4.id, 1, b"x"),
        (E.ACTIVE, high, 1, None),
        (E.ACTIVE, j4.id, 2, None),
        (E.ACTIVE, low, 1, None),
    ]


def test_a_large_batch_keeps_the_given_order_of_completions(
    engine: Engine, make_job: MakeJob
) -> None:
    # INSERT_JOB_EVENTS relies on CROSS JOIN to keep the array's order without a sort.
    engine.enqueue([make_job() for _ in range(300)])
    jobs = engine.claim("default", "w", 300, TTL)
    shuffled = jobs[1::2] + jobs[-2::-2]  # odd ids up, then even ids down
    mark = engine.last_event_id()
    engine.settle_and_claim([Completion(j.id, token(j)) for j in shuffled], [], None)
    assert [e.job_id for e in engine.events(mark)] == [j.id for j in shuffled]


def test_rescue_writes_stalled_then_the_outcome(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    retried = claimed(engine, make_job, max_stalls=1)
    poison = claimed(engine, make_job, max_stalls=0)
    stopped = claimed(engine, make_job)
    engine.cancel(stopped.id)  # an active job: a request, no event
    mark = engine.last_event_id()
    clock.advance(TTL)
    engine.rescue_expired()
    after = {j.id: engine.get(j.id) for j in (retried, poison, stopped)}
    assert after[retried.id].state is JobState.DELAYED
    assert stream(engine, mark) == [
        (E.STALLED, retried.id, 1, lifecycle.stall_error(retried).encode()),
        (E.RETRYING, retried.id, 1, lifecycle.stall_error(retried).encode()),
        (E.STALLED, poison.id, 1, lifecycle.stall_error(poison).encode()),
        (E.FAILED, poison.id, 1, (after[poison.id].error or "").encode()),
        (E.STALLED, stopped.id, 1, lifecycle.stall_error(stopped).encode()),
        (E.CANCELLED, stopped.id, 1, b"cancelled while its owner was lost"),
    ]
    assert b"poison" in (stream(engine, mark)[3][3] or b"")
    assert all(e.at_ms == clock.now_ms for e in engine.events(mark))


def test_release_owner_as_stall_writes_stalled_and_the_outcome_and_a_clean_release_nothing(
    engine: Engine, make_job: MakeJob
) -> None:
    dead = claimed(engine, make_job, owner="dead", max_attempts=1)
    mark = engine.last_event_id()
    assert engine.release_owner("dead", as_stall=True) == [dead.id]
    error = lifecycle.stall_error(dead).encode()
    assert stream(engine, mark) == [(E.STALLED, dead.id, 1, error), (E.FAILED, dead.id, 1, error)]

    leaving = claimed(engine, make_job, owner="leaving")
    stopping = claimed(engine, make_job, owner="leaving")
    engine.cancel(stopping.id)
    mark = engine.last_event_id()
    assert engine.release_owner("leaving", as_stall=False) == [leaving.id, stopping.id]
    assert engine.get(leaving.id).state is JobState.WAITING
    # back to waiting: no event (its next ACTIVE follows); asked to cancel: CANCELLED
    assert stream(engine, mark) == [
        (E.CANCELLED, stopping.id, 1, b"cancelled while its owner was lost")
    ]


def test_cancel_writes_cancelled_for_waiting_and_delayed_jobs_only(
    engine: Engine, make_job: MakeJob
) -> None:
    active = claimed(engine, make_job)
    done = claimed(engine, make_job)
    engine.complete(done.id, token(done), None)
    waiting, delayed = engine.enqueue([make_job(), make_job(delay_s=60)])
    mark = engine.last_event_id()
    for job_id in (waiting, delayed, active.id, active.id, done.id, waiting):
        engine.cancel(job_id)
    assert stream(engine, mark) == [
        (E.CANCELLED, waiting, 0, b"cancelled"),
        (E.CANCELLED, delayed, 0, b"cancelled"),
    ]
    engine.fail(Failure(active.id, token(active), "stopped", kind=FailureKind.CANCELLED))
    assert stream(engine, mark)[-1] == (E.CANCELLED, active.id, 1, b"stopped")


def test_progress_retry_and_the_silent_operations(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    job = claimed(engine, make_job, max_attempts=1)
    mark = engine.last_event_id()
    engine.set_progress(job.id, token(job), b'{"value":0.5}')
    engine.add_log(job.id, token(job), "halfway")  # a log line is not an event
    engine.fail(Failure(job.id, token(job), "boom"))
    assert engine.retry(job.id) is JobState.WAITING
    [delayed] = engine.enqueue([make_job(delay_s=5)])
    [other] = engine.enqueue([make_job(queue="other")])
    mark2 = engine.last_event_id()
    engine.promote(delayed)
    engine.remove(other)
    engine.purge("default")
    engine.set_paused("default", True)
    clock.advance(10_000)
    engine.promote_due()
    assert stream(engine, mark2) == []
    assert stream(engine, mark)[:3] == [
        (E.PROGRESS, job.id, 1, b'{"value":0.5}'),
        (E.FAILED, job.id, 1, b"boom"),
        (E.ENQUEUED, job.id, 0, None),
    ]


# --- rollback -------------------------------------------------------------------------


def test_an_operation_rolled_back_in_a_batch_leaves_no_event(
    engine: Engine, make_job: MakeJob, hooks: EngineHooks
) -> None:
    engine.enqueue([make_job(backoff=backoff.fixed(0)) for _ in range(3)])
    j1, j2, j3 = engine.claim("default", "w", 3, TTL)
    mark = engine.last_event_id()
    before = hooks.rows()
    with engine.batch():
        # completions, a failure and a claim are written, then the claim's ttl is refused:
        # the whole operation, events included, is undone
        with pytest.raises(ValueError, match="ttl_ms"):
            engine.settle_and_claim(
                [Completion(j1.id, token(j1))],
                [Failure(j2.id, token(j2), "x")],
                ClaimRequest("default", "w", 10, 0),
            )
        assert engine.last_event_id() == mark
        engine.complete(j3.id, token(j3), None)  # the batch goes on
    assert hooks.rows()[:2] == before[:2]
    assert stream(engine, mark) == [(E.COMPLETED, j3.id, 1, None)]


def test_a_batch_rolled_back_as_a_whole_leaves_no_event(engine: Engine, make_job: MakeJob) -> None:
    with pytest.raises(KeyError), engine.batch():
        [job_id] = engine.enqueue([make_job()])
        engine.claim("default", "w", 1, TTL)
        engine.cancel(job_id)
        raise KeyError("caller bug")
    assert engine.events() == []
    assert engine.last_event_id() == 0


def test_a_lost_lease_writes_no_event(engine: Engine, make_job: MakeJob) -> None:
    job = claimed(engine, make_job)
    mark = engine.last_event_id()
    for call in (
        lambda: engine.complete(job.id, token(job) + 1, None),
        lambda: engine.fail(Failure(job.id, token(job) + 1, "x")),
        lambda: engine.set_progress(job.id, token(job) + 1, b"{}"),
    ):
        with pytest.raises(Exception, match="lease"):
            call()
    assert engine.last_event_id() == mark


# --- record_events=False --------------------------------------------------------------


def test_record_events_false_writes_no_event(
    engine_factory: Callable[..., Engine], make_job: MakeJob, clock: FakeClock
) -> None:
    engine = engine_factory(record_events=False)
    ids = engine.enqueue([make_job(max_stalls=0) for _ in range(4)] + [make_job(delay_s=1)])
    a, b, c, d = engine.claim("default", "w", 4, TTL)
    engine.set_progress(a.id, token(a), b"{}")
    engine.settle_and_claim(
        [Completion(a.id, token(a))], [Failure(b.id, token(b), "x", kind=FailureKind.CANCELLED)],
        ClaimRequest("default", "w", 1, TTL),
    )  # fmt: skip
    engine.complete(c.id, token(c), None)
    engine.cancel(ids[4])
    engine.retry(b.id)
    clock.advance(TTL)
    engine.rescue_expired()
    engine.release_owner("w", as_stall=True)
    assert engine.count()[JobState.COMPLETED] == 2
    assert engine.events() == []
    assert engine.last_event_id() == 0
    assert d.id in ids


# --- reading and pruning --------------------------------------------------------------


def test_events_pages_by_id_and_filters_by_queue(engine: Engine, make_job: MakeJob) -> None:
    ids = engine.enqueue([make_job(queue="ab"[i % 2]) for i in range(10)])
    everything = engine.events()
    assert [e.job_id for e in everything] == ids
    assert all(isinstance(e, Event) and e.kind is E.ENQUEUED for e in everything)
    first = everything[0].id
    assert [e.job_id for e in engine.events(first + 2, limit=3)] == ids[3:6]
    assert [e.job_id for e in engine.events(queue="b")] == ids[1::2]
    assert [e.job_id for e in engine.events(everything[4].id, queue="a", limit=2)] == [
        ids[6],
        ids[8],
    ]
    assert engine.events(engine.last_event_id()) == []
    assert engine.events(limit=0) == []
    assert engine.events(queue="none") == []
    with pytest.raises(ValueError, match="limit"):
        engine.events(limit=-1)


def test_prune_events_deletes_the_old_ones_keeps_the_newest_and_never_reuses_ids(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    engine.enqueue([make_job() for _ in range(3)])  # at t0
    clock.advance(1000)
    engine.enqueue([make_job() for _ in range(2)])  # at t0 + 1 s
    clock.advance(1000)
    newest = engine.last_event_id()
    assert engine.prune_events(older_than_ms=1500) == 3
    assert [e.at_ms for e in engine.events()] == [clock.now_ms - 1000] * 2
    assert engine.prune_events(older_than_ms=1500) == 0
    # every event is old: all go but the newest, so the next id is still above it
    assert engine.prune_events(older_than_ms=0) == 1
    assert [e.id for e in engine.events()] == [newest]
    assert engine.last_event_id() == newest
    engine.enqueue([make_job()])
    assert [e.id for e in engine.events()] == [newest, newest + 1]
    with pytest.raises(ValueError, match="older_than_ms"):
        engine.prune_events(-1)
    assert engine.prune_events(older_than_ms=0) == 1


def test_events_outlive_their_jobs(engine: Engine, make_job: MakeJob) -> None:
    job = claimed(engine, make_job)
    engine.complete(job.id, token(job), None)
    assert engine.prune() == 1
    assert [e.kind for e in engine.events()] == [E.ENQUEUED, E.ACTIVE, E.COMPLETED]


@pytest.mark.several_connections
def test_events_written_by_one_engine_are_read_by_another(
    engine: Engine, engine_factory: Callable[..., Engine], make_job: MakeJob
) -> None:
    reader = engine_factory()
    start = reader.last_event_id()
    with engine.batch():
        ids = engine.enqueue([make_job(), make_job()])
        assert reader.events(start) == []  # not committed yet
    assert [e.job_id for e in reader.events(start)] == ids

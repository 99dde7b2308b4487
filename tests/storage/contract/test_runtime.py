"""The Engine contract, schema version 2: paused queues, progress and logs, retry /
promote / remove / purge, owners."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from engine_kinds import EngineHooks

from rota.domain import FailureKind, JobState, backoff
from rota.domain.event import EventKind, LogEntry, Owner
from rota.domain.job import Job, NewJob
from rota.errors import JobNotFound, LeaseLost
from rota.storage.engine import ClaimRequest, Completion, Engine, Failure

if TYPE_CHECKING:
    from tests.storage.conftest import FakeClock

MakeJob = Callable[..., NewJob]
TTL = 1000


def claimed(engine: Engine, make_job: MakeJob, owner: str = "w", **options: Any) -> Job:
    [job_id] = engine.enqueue([make_job(**options)])
    [job] = engine.claim(options.get("queue", "default"), owner, 1, TTL)
    assert job.id == job_id and job.token is not None
    return job


def token(job: Job) -> int:
    assert job.token is not None
    return job.token


def in_states(engine: Engine, make_job: MakeJob) -> dict[JobState, int]:
    """One job in each state, in queue "default"; returns their ids by state."""
    ids = {}
    for state, fail in ((JobState.COMPLETED, None), (JobState.FAILED, FailureKind.UNRECOVERABLE),
                        (JobState.CANCELLED, FailureKind.CANCELLED)):  # fmt: skip
        job = claimed(engine, make_job)
        if fail is None:
            engine.complete(job.id, token(job), b"result")
        else:
            engine.fail(Failure(job.id, token(job), "boom", kind=fail))
        ids[state] = job.id
    ids[JobState.ACTIVE] = claimed(engine, make_job).id
    ids[JobState.WAITING], ids[JobState.DELAYED] = engine.enqueue(
        [make_job(), make_job(delay_s=60)]
    )
    assert {engine.get(i).state for i in ids.values()} == set(JobState)
    assert all(engine.get(i).state is s for s, i in ids.items())
    return ids


# --- pause ----------------------------------------------------------------------------


def test_a_paused_queue_claims_nothing_and_a_resumed_one_claims_again(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    a = engine.enqueue([make_job(queue="a") for _ in range(3)])
    [due] = engine.enqueue([make_job(queue="a", delay_s=1)])
    [b] = engine.enqueue([make_job(queue="b")])
    assert engine.paused_queues() == set()
    engine.set_paused("a", True)
    engine.set_paused("a", True)  # idempotent
    assert engine.paused_queues() == {"a"}
    clock.advance(1000)
    assert engine.claim("a", "w", 10, TTL) == []
    assert engine.settle_and_claim([], [], ClaimRequest("a", "w", 10, TTL)).claimed == []
    assert engine.count("a")[JobState.ACTIVE] == 0
    assert [j.id for j in engine.claim("b", "w", 10, TTL)] == [b]  # other queues run
    engine.set_paused("a", False)
    assert engine.paused_queues() == set()
    assert [j.id for j in engine.claim("a", "w", 10, TTL)] == [*a, due]


def test_settlements_of_a_paused_queue_still_apply(engine: Engine, make_job: MakeJob) -> None:
    engine.enqueue([make_job(queue="p", backoff=backoff.fixed(0)) for _ in range(3)])
    j1, j2, j3 = engine.claim("p", "w", 3, TTL)
    engine.set_paused("p", True)
    settled = engine.settle_and_claim(
        [Completion(j1.id, token(j1))],
        [Failure(j2.id, token(j2), "again")],
        ClaimRequest("p", "w", 10, TTL),
    )
    assert (settled.lost, settled.claimed) == ([], [])
    assert engine.get(j1.id).state is JobState.COMPLETED
    assert engine.get(j2.id).state is JobState.WAITING  # requeued, not claimed
    engine.complete(j3.id, token(j3), None)
    assert engine.cancel(j2.id) is JobState.CANCELLED


@pytest.mark.several_connections
def test_a_pause_is_seen_by_another_engine_and_survives_a_reopen(
    engine: Engine, engine_factory: Callable[..., Engine], make_job: MakeJob
) -> None:
    other = engine_factory()
    engine.enqueue([make_job(queue="q") for _ in range(2)])
    engine.set_paused("q", True)
    assert other.paused_queues() == {"q"}
    assert other.claim("q", "w", 10, TTL) == []
    engine.close()
    reopened = engine_factory()
    assert reopened.paused_queues() == {"q"}
    assert reopened.claim("q", "w", 10, TTL) == []
    other.set_paused("q", False)
    assert len(reopened.claim("q", "w", 10, TTL)) == 2


# --- progress and logs ----------------------------------------------------------------


def test_set_progress_stores_it_on_the_job_and_keeps_it_after_the_job_ends(
    engine: Engine, make_job: MakeJob
) -> None:
    job = claimed(engine, make_job)
    assert job.progress is None
    engine.set_progress(job.id, token(job), b'{"value":10.0}')
    engine.set_progress(job.id, token(job), b'{"value":50.0,"step":2,"total":4}')
    stored = engine.get(job.id)
    assert stored.progress == b'{"value":50.0,"step":2,"total":4}'
    assert stored.lease == job.lease  # nothing else changed
    engine.complete(job.id, token(job), None)
    assert engine.get(job.id).progress == b'{"value":50.0,"step":2,"total":4}'
    assert [j.progress for j in engine.list_jobs()] == [b'{"value":50.0,"step":2,"total":4}']


def test_add_log_appends_lines_with_the_current_attempt_read_oldest_first(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    job = claimed(engine, make_job, backoff=backoff.fixed(0))
    engine.add_log(job.id, token(job), "one")
    clock.advance(5)
    engine.add_log(job.id, token(job), "two")
    engine.fail(Failure(job.id, token(job), "again"))
    [second] = engine.claim("default", "w", 1, TTL)
    engine.add_log(job.id, token(second), "three")
    other = claimed(engine, make_job)
    engine.add_log(other.id, token(other), "elsewhere")
    start = clock.now_ms - 5
    assert engine.logs(job.id) == [
        LogEntry(job_id=job.id, at_ms=start, attempt=1, message="one"),
        LogEntry(job_id=job.id, at_ms=start + 5, attempt=1, message="two"),
        LogEntry(job_id=job.id, at_ms=start + 5, attempt=2, message="three"),
    ]
    assert [e.message for e in engine.logs(job.id, limit=2)] == ["one", "two"]
    assert [e.message for e in engine.logs(job.id, limit=5, offset=1)] == ["two", "three"]
    assert engine.logs(job.id, offset=3) == []
    assert [e.message for e in engine.logs(other.id)] == ["elsewhere"]
    assert engine.logs(10**9) == []
    with pytest.raises(ValueError, match="limit and offset"):
        engine.logs(job.id, limit=-1)


@pytest.mark.parametrize("situation", ["stale token", "completed", "waiting", "unknown job"])
def test_set_progress_and_add_log_are_fenced_by_the_lease(
    engine: Engine, make_job: MakeJob, hooks: EngineHooks, situation: str
) -> None:
    job = claimed(engine, make_job)
    job_id, held = job.id, token(job)
    if situation == "stale token":
        held += 1
    elif situation == "completed":
        engine.complete(job_id, held, None)
    elif situation == "waiting":
        engine.release_owner("w", as_stall=False)
    else:
        job_id = 10**9
    before, events = hooks.rows(), engine.last_event_id()
    with pytest.raises(LeaseLost) as lost:
        engine.set_progress(job_id, held, b"{}")
    assert (lost.value.job_id, lost.value.token) == (job_id, held)
    with pytest.raises(LeaseLost):
        engine.add_log(job_id, held, "nope")
    assert hooks.rows() == before
    assert engine.last_event_id() == events
    assert hooks.log_count() == 0


# --- retry ----------------------------------------------------------------------------


@pytest.mark.parametrize("state", [JobState.FAILED, JobState.CANCELLED])
def test_retry_puts_a_failed_or_cancelled_job_back_as_new(
    engine: Engine, make_job: MakeJob, clock: FakeClock, state: JobState
) -> None:
    job = claimed(engine, make_job, max_attempts=1, max_stalls=0, priority=3)
    engine.set_progress(job.id, token(job), b'{"value":1.0}')
    kind = FailureKind.ERROR if state is JobState.FAILED else FailureKind.CANCELLED
    engine.fail(Failure(job.id, token(job), "boom", kind=kind))
    gone = engine.get(job.id)
    clock.advance(500)
    assert engine.retry(job.id) is JobState.WAITING
    stored = engine.get(job.id)
    assert (stored.state, stored.run_at_ms, stored.attempt, stored.stalls) == (
        JobState.WAITING, clock.now_ms, 0, 0,
    )  # fmt: skip
    assert (stored.finished_at_ms, stored.result, stored.cancel_requested) == (None, None, False)
    assert (stored.owner, stored.token, stored.lease_expires_at_ms) == (None, None, None)
    assert stored.error == "boom"  # kept: why it was retried
    assert (stored.priority, stored.progress, stored.payload) == (3, gone.progress, gone.payload)
    [again] = engine.claim("default", "w", 1, TTL)
    assert (again.id, again.attempt) == (job.id, 1)  # a full set of attempts again


def test_retry_of_a_stalled_poison_job_resets_its_stalls(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    job = claimed(engine, make_job, max_stalls=0)
    clock.advance(TTL)
    assert engine.rescue_expired().failed == [job.id]
    assert engine.get(job.id).stalls == 1
    engine.retry(job.id)
    assert engine.get(job.id).stalls == 0


def test_retry_failed_retries_a_queues_failed_and_cancelled_jobs_oldest_first(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    first = claimed(engine, make_job)
    engine.fail(Failure(first.id, token(first), "boom", kind=FailureKind.CANCELLED))
    elsewhere = claimed(engine, make_job, queue="other")
    engine.fail(Failure(elsewhere.id, token(elsewhere), "boom", kind=FailureKind.UNRECOVERABLE))
    ids = in_states(engine, make_job)
    clock.advance(500)
    events = engine.last_event_id()

    assert engine.retry_failed("default", limit=2) == [first.id, ids[JobState.FAILED]]
    assert engine.retry_failed("default") == [ids[JobState.CANCELLED]]
    assert engine.retry_failed("default") == []
    for job_id in (first.id, ids[JobState.FAILED], ids[JobState.CANCELLED]):
        job = engine.get(job_id)
        assert (job.state, job.run_at_ms, job.attempt, job.stalls) == (
            JobState.WAITING, clock.now_ms, 0, 0,
        )  # fmt: skip
    # every other state, and every other queue, untouched
    for state in (JobState.COMPLETED, JobState.ACTIVE, JobState.WAITING, JobState.DELAYED):
        assert engine.get(ids[state]).state is state
    assert engine.get(elsewhere.id).state is JobState.FAILED
    assert [(e.kind, e.job_id, e.attempt) for e in engine.events(events)] == [
        (EventKind.ENQUEUED, first.id, 0),
        (EventKind.ENQUEUED, ids[JobState.FAILED], 0),
        (EventKind.ENQUEUED, ids[JobState.CANCELLED], 0),
    ]
    with pytest.raises(ValueError, match="limit"):
        engine.retry_failed("default", limit=-1)


@pytest.mark.parametrize(
    "state", [JobState.WAITING, JobState.DELAYED, JobState.ACTIVE, JobState.COMPLETED]
)
def test_retry_refuses_other_states_naming_them_and_changes_nothing(
    engine: Engine, make_job: MakeJob, hooks: EngineHooks, state: JobState
) -> None:
    ids = in_states(engine, make_job)
    before, events = hooks.rows(), engine.last_event_id()
    with pytest.raises(ValueError, match=f"it is {state}"):
        engine.retry(ids[state])
    assert hooks.rows() == before
    assert engine.last_event_id() == events
    with pytest.raises(JobNotFound):
        engine.retry(10**9)


# --- promote --------------------------------------------------------------------------


def test_promote_makes_a_delayed_job_ready_now(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    [first, late] = engine.enqueue([make_job(), make_job(delay_s=3600)])
    clock.advance(10)
    assert engine.promote(late) is JobState.WAITING
    stored = engine.get(late)
    assert (stored.state, stored.run_at_ms) == (JobState.WAITING, clock.now_ms)
    assert [j.id for j in engine.claim("default", "w", 5, TTL)] == [first, late]


def test_promote_of_a_due_delayed_job_keeps_its_place(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    [due] = engine.enqueue([make_job(delay_s=1)])
    run_at = engine.get(due).run_at_ms
    clock.advance(5000)
    engine.promote(due)
    assert engine.get(due).run_at_ms == run_at


@pytest.mark.parametrize(
    "state",
    [JobState.WAITING, JobState.ACTIVE, JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED],
)
def test_promote_refuses_jobs_that_are_not_delayed(
    engine: Engine, make_job: MakeJob, hooks: EngineHooks, state: JobState
) -> None:
    ids = in_states(engine, make_job)
    before = hooks.rows()
    with pytest.raises(ValueError, match=f"it is {state}, not delayed"):
        engine.promote(ids[state])
    assert hooks.rows() == before
    with pytest.raises(JobNotFound):
        engine.promote(10**9)


# --- remove and purge ------------------------------------------------------------------


@pytest.mark.parametrize(
    "state",
    [JobState.WAITING, JobState.DELAYED, JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED],
)
def test_remove_deletes_a_job_that_is_not_active_with_its_logs(
    engine: Engine, hooks: EngineHooks, make_job: MakeJob, state: JobState
) -> None:
    ids = in_states(engine, make_job)
    logged = claimed(engine, make_job, queue="logged", backoff=backoff.fixed(0))
    engine.add_log(logged.id, token(logged), "ran once")
    engine.fail(Failure(logged.id, token(logged), "x"))  # waiting again, with a log line
    ids[JobState.WAITING] = logged.id
    everything = {j.id for j in engine.list_jobs()}
    engine.remove(ids[state])
    with pytest.raises(JobNotFound):
        engine.get(ids[state])
    assert {j.id for j in engine.list_jobs()} == everything - {ids[state]}
    assert hooks.log_count() == (0 if state is JobState.WAITING else 1)
    with pytest.raises(JobNotFound):
        engine.remove(ids[state])


def test_remove_refuses_an_active_job_and_unknown_ids(
    engine: Engine, make_job: MakeJob, hooks: EngineHooks
) -> None:
    job = claimed(engine, make_job)
    before = hooks.rows()
    with pytest.raises(ValueError, match="it is active; cancel it first"):
        engine.remove(job.id)
    assert hooks.rows() == before
    with pytest.raises(JobNotFound):
        engine.remove(10**9)


def test_ids_are_never_reused_after_the_newest_job_is_removed_or_purged(
    engine: Engine, make_job: MakeJob
) -> None:
    [old, newest] = engine.enqueue([make_job(), make_job()])
    engine.remove(newest)
    [again] = engine.enqueue([make_job()])
    assert again > newest
    assert engine.purge("default") == 2
    [later] = engine.enqueue([make_job()])
    assert later > again > old


def test_purge_deletes_a_queues_waiting_and_delayed_jobs_only(
    engine: Engine, hooks: EngineHooks, make_job: MakeJob, clock: FakeClock
) -> None:
    ran = claimed(engine, make_job, queue="q")
    engine.add_log(ran.id, token(ran), "first attempt")
    engine.fail(Failure(ran.id, token(ran), "x", delay_ms=60_000))  # delayed, with a log
    active = claimed(engine, make_job, queue="q")
    engine.add_log(active.id, token(active), "running")
    done = claimed(engine, make_job, queue="q")
    engine.complete(done.id, token(done), None)
    engine.enqueue([make_job(queue="q"), make_job(queue="q", delay_s=5)])
    others = engine.enqueue([make_job(queue="other"), make_job(queue="other", delay_s=5)])
    assert engine.purge("q") == 3
    assert {j.id for j in engine.list_jobs()} == {active.id, done.id, *others}
    assert [e.message for e in engine.logs(active.id)] == ["running"]
    assert hooks.log_count() == 1
    assert engine.purge("q") == 0
    assert engine.purge("nothing here") == 0


def test_prune_deletes_the_logs_of_the_jobs_it_deletes(
    engine: Engine, hooks: EngineHooks, make_job: MakeJob
) -> None:
    jobs = [claimed(engine, make_job) for _ in range(3)]
    for job in jobs:
        engine.add_log(job.id, token(job), f"line of {job.id}")
        engine.complete(job.id, token(job), None)
    assert engine.prune(keep_last=1) == 2
    assert hooks.log_count() == 1
    assert engine.logs(jobs[-1].id)[0].message == f"line of {jobs[-1].id}"


# --- owners ---------------------------------------------------------------------------


def owner(id_: str, started: int, **fields: Any) -> Owner:
    values: dict[str, Any] = {
        "host": "h1", "pid": 100, "started_at_ms": started, "heartbeat_at_ms": started,
        "queues": ["default"],
    }  # fmt: skip
    return Owner(id=id_, **{**values, **fields})


def test_owners_are_registered_replaced_heartbeaten_and_removed(
    engine: Engine, clock: FakeClock
) -> None:
    assert engine.list_owners() == []
    engine.register_owner(owner("b", 20, queues=["q1", "q2"]))
    engine.register_owner(owner("a", 30, queues=[]))
    engine.register_owner(owner("c", 10))
    assert [o.id for o in engine.list_owners()] == ["c", "b", "a"]  # oldest first
    assert engine.list_owners()[1] == owner("b", 20, queues=["q1", "q2"])
    engine.register_owner(owner("b", 40, host="h2", pid=7, queues=["x"]))  # replaced
    assert engine.list_owners()[-1] == owner("b", 40, host="h2", pid=7, queues=["x"])
    clock.advance(123)
    engine.heartbeat("c")
    engine.heartbeat("unknown")  # no-op, no error
    assert engine.list_owners()[0].heartbeat_at_ms == clock.now_ms
    assert [o.id for o in engine.list_owners()] == ["c", "a", "b"]
    engine.remove_owner("a")
    engine.remove_owner("a")  # idempotent
    engine.remove_owner("never")
    assert [o.id for o in engine.list_owners()] == ["c", "b"]


POOLS: dict[str, Any] = {
    "images": {
        "concurrency": 10, "running": 3,
        "threads": {"size": 10, "alive": 4, "busy": 1, "abandoned": 0},
        "processes": {"size": 2, "pids": [123, 124], "busy": 1, "jobs": 57,
                      "restarts": 1, "recycled": 0, "killed": 0},
    },
}  # fmt: skip


def test_a_heartbeat_with_pools_stores_them_and_one_without_keeps_them(
    engine: Engine, clock: FakeClock
) -> None:
    engine.register_owner(owner("a", 10))
    engine.register_owner(owner("b", 20, pools={"q": {"running": 0}}))
    assert [o.pools for o in engine.list_owners()] == [None, {"q": {"running": 0}}]
    clock.advance(100)
    engine.heartbeat("a", POOLS)
    [a, b] = engine.list_owners()
    assert (a.heartbeat_at_ms, a.pools) == (clock.now_ms, POOLS)
    assert b.pools == {"q": {"running": 0}}  # another owner's pools are untouched
    clock.advance(100)
    engine.heartbeat("a")  # no pools: the last ones reported stay
    assert (engine.list_owners()[0].heartbeat_at_ms, engine.list_owners()[0].pools) == (
        clock.now_ms, POOLS,
    )  # fmt: skip
    engine.heartbeat("a", {})  # an empty report replaces them
    assert engine.list_owners()[0].pools == {}
    engine.heartbeat("unknown", POOLS)  # no-op, no error
    assert [o.id for o in engine.list_owners()] == ["a", "b"]
    engine.register_owner(owner("b", 20))  # registering again replaces the pools too
    assert engine.list_owners()[1].pools is None


def test_an_owner_is_registered_with_its_doorbell_and_registering_again_replaces_it(
    engine: Engine,
) -> None:
    engine.register_owner(owner("a", 10, doorbell="@rota-a"))
    engine.register_owner(owner("b", 20))
    assert [o.doorbell for o in engine.list_owners()] == ["@rota-a", None]
    assert engine.list_owners()[0] == owner("a", 10, doorbell="@rota-a")
    engine.heartbeat("a", POOLS)  # a heartbeat keeps it
    assert engine.list_owners()[0].doorbell == "@rota-a"
    engine.register_owner(owner("a", 10, doorbell="/tmp/rota-a.sock"))
    assert engine.list_owners()[0].doorbell == "/tmp/rota-a.sock"
    [record, _] = engine.owner_records()
    assert (record.doorbell, record.corrupt) == ("/tmp/rota-a.sock", ())
    engine.remove_owner("a")  # the doorbell goes with its owner
    assert [(o.id, o.doorbell) for o in engine.list_owners()] == [("b", None)]


def test_an_unreadable_doorbell_reads_as_none_and_keeps_its_owner(
    engine: Engine, hooks: EngineHooks, caplog: pytest.LogCaptureFixture
) -> None:
    engine.register_owner(owner("a", 10, doorbell="@rota-a"))
    hooks.set_owner_column("a", "doorbell", b"\xff\x00")
    with caplog.at_level("WARNING", logger="rota.storage"):
        owners = engine.list_owners()
    assert owners == [owner("a", 10)]  # the owner stays, without a doorbell
    assert any("owner 'a'" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "stored", [b"{not json", b"[1, 2]", b'"text"', 42], ids=["garbage", "array", "string", "int"]
)
def test_unreadable_pools_read_as_none_with_a_warning(
    engine: Engine, hooks: EngineHooks, stored: object, caplog: pytest.LogCaptureFixture
) -> None:
    engine.register_owner(owner("a", 10, pools=POOLS))
    engine.register_owner(owner("b", 20, pools=POOLS))
    hooks.set_owner_column("a", "pools", stored)
    with caplog.at_level("WARNING", logger="rota.storage"):
        owners = engine.list_owners()
    assert [(o.id, o.pools) for o in owners] == [("a", None), ("b", POOLS)]
    assert owners[0] == owner("a", 10)  # every other field read as usual
    assert [r.getMessage() for r in caplog.records if "owner 'a'" in r.getMessage()] != []

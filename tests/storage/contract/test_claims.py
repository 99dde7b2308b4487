"""The Engine contract: enqueue, claim, promote, renew, complete, fencing, settle_and_claim."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from engine_kinds import EngineHooks

from rota.domain import FailureKind, JobState, backoff, lifecycle
from rota.domain.job import NewJob
from rota.errors import JobNotFound, LeaseLost
from rota.storage.engine import ClaimRequest, Completion, Engine, Failure, LeaseRef

if TYPE_CHECKING:
    from tests.storage.conftest import FakeClock

MakeJob = Callable[..., NewJob]


# --- enqueue --------------------------------------------------------------------------


def test_enqueue_stores_every_field_and_returns_increasing_ids(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    jobs = [
        make_job(b'{"n": 1}', name="a", priority=3, max_attempts=5, max_stalls=2,
                 backoff=backoff.linear(2.0, max_s=9.0, jitter=0.1), timeout_s=1.5),
        make_job(b'{"n": 2}', name="b", queue="other", delay_s=2.0),
        make_job(b'{"n": 3}', name="c", key="k1"),
    ]  # fmt: skip
    ids = engine.enqueue(jobs)
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    for job_id, new in zip(ids, jobs, strict=True):
        got = engine.get(job_id)
        assert (got.name, got.queue, got.payload, got.priority) == (
            new.name,
            new.queue,
            new.payload,
            new.priority,
        )
        assert (got.run_at_ms, got.max_attempts, got.max_stalls, got.backoff) == (
            new.run_at_ms,
            new.max_attempts,
            new.max_stalls,
            new.backoff,
        )
        assert (got.timeout_ms, got.key, got.created_at_ms) == (
            new.timeout_ms,
            new.key,
            new.created_at_ms,
        )
        assert (got.attempt, got.stalls, got.owner, got.token, got.result, got.error) == (
            0,
            0,
            None,
            None,
            None,
            None,
        )
    assert engine.get(ids[0]).state is JobState.WAITING
    assert engine.get(ids[0]).timeout_ms == 1500
    assert engine.get(ids[1]).state is JobState.DELAYED
    assert engine.get(ids[1]).run_at_ms == clock.now_ms + 2000
    assert engine.get_by_key("k1").id == ids[2]
    assert engine.enqueue([]) == []


def test_enqueue_many_keeps_the_order_of_ids_across_keyed_and_keyless_jobs(
    engine: Engine, make_job: MakeJob
) -> None:
    jobs = [
        make_job(b"0"), make_job(b"1", key="k"), make_job(b"2"), make_job(b"3", key="k"),
        make_job(b"4"), make_job(b"5", key="j"),
    ]  # fmt: skip
    ids = engine.enqueue(jobs)
    first = ids[0]
    # the duplicate key returns the first job's id and takes no id of its own
    assert ids == [first, first + 1, first + 2, first + 1, first + 3, first + 4]
    assert [engine.get(i).payload for i in ids] == [b"0", b"1", b"2", b"1", b"4", b"5"]
    assert sum(engine.count().values()) == 5


def test_enqueue_with_an_existing_key_returns_the_existing_job_and_adds_nothing(
    engine: Engine, make_job: MakeJob, hooks: EngineHooks
) -> None:
    [job_id] = engine.enqueue([make_job(b"first", key="once")])
    [job] = engine.claim("default", "w", 1, 1000)
    assert job.token is not None
    engine.complete(job_id, job.token, b"done")
    before = hooks.rows()
    assert engine.enqueue([make_job(b"second", key="once")]) == [job_id]
    assert hooks.rows() == before
    assert engine.get_by_key("once").payload == b"first"
    with pytest.raises(JobNotFound):
        engine.get_by_key("never")
    with pytest.raises(JobNotFound):
        engine.get(10**9)


def test_ids_are_never_reused_after_the_newest_job_is_pruned(
    engine: Engine, make_job: MakeJob
) -> None:
    ids = engine.enqueue([make_job(), make_job()])
    for job in engine.claim("default", "w", 2, 1000):
        assert job.token is not None
        engine.complete(job.id, job.token, None)
    assert engine.prune() == 2
    [new_id] = engine.enqueue([make_job()])
    assert new_id > max(ids)


# --- claim ----------------------------------------------------------------------------


def test_claim_takes_smaller_priority_first_then_fifo(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    ids = engine.enqueue([make_job(priority=p) for p in (5, 0, 5, -1, 0)])
    claimed = engine.claim("default", "w", 10, 30_000)
    assert [j.id for j in claimed] == [ids[3], ids[1], ids[4], ids[0], ids[2]]
    for job in claimed:
        assert job.state is JobState.ACTIVE
        assert (job.attempt, job.owner, job.lease_expires_at_ms) == (
            1,
            "w",
            clock.now_ms + 30_000,
        )
        assert job.token is not None
        assert 0 < job.token < 2**63
    assert len({j.token for j in claimed}) == len(claimed)
    assert engine.claim("default", "w", 10, 30_000) == []


def test_claim_orders_by_run_at_before_id(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    [late] = engine.enqueue([make_job(delay_s=0.1)])  # older id, due later
    clock.advance(50)
    [early] = engine.enqueue([make_job()])
    clock.advance(100)
    assert [j.id for j in engine.claim("default", "w", 2, 1000)] == [early, late]


def test_claim_takes_at_most_n_and_only_from_its_queue(engine: Engine, make_job: MakeJob) -> None:
    a = engine.enqueue([make_job(queue="a") for _ in range(5)])
    b = engine.enqueue([make_job(queue="b") for _ in range(2)])
    assert [j.id for j in engine.claim("a", "w", 2, 1000)] == a[:2]
    assert [j.id for j in engine.claim("a", "w", 10, 1000)] == a[2:]
    assert engine.claim("a", "w", 10, 1000) == []
    assert engine.count("b")[JobState.WAITING] == 2
    assert [j.id for j in engine.claim("b", "w", 10, 1000)] == b
    assert engine.claim("nope", "w", 10, 1000) == []
    assert engine.claim("a", "w", 0, 1000) == []


@pytest.mark.parametrize(("n", "ttl_ms"), [(-1, 1000), (1, 0), (1, -5)])
def test_claim_rejects_bad_arguments_and_changes_nothing(
    engine: Engine, make_job: MakeJob, hooks: EngineHooks, n: int, ttl_ms: int
) -> None:
    engine.enqueue([make_job()])
    before = hooks.rows()
    with pytest.raises(ValueError, match=r"n must be|ttl_ms must be"):
        engine.claim("default", "w", n, ttl_ms)
    assert hooks.rows() == before


def test_delayed_job_is_claimable_only_once_due(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    [job_id] = engine.enqueue([make_job(delay_s=10)])
    assert engine.claim("default", "w", 1, 1000) == []
    clock.advance(9_999)
    assert engine.claim("default", "w", 1, 1000) == []
    assert engine.get(job_id).state is JobState.DELAYED
    clock.advance(1)
    [job] = engine.claim("default", "w", 1, 1000)  # promoted inside the claim
    assert (job.id, job.state, job.attempt) == (job_id, JobState.ACTIVE, 1)


def test_claim_promotes_only_its_own_queue_and_promote_due_the_rest(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    [a] = engine.enqueue([make_job(queue="a", delay_s=1)])
    [b] = engine.enqueue([make_job(queue="b", delay_s=1)])
    [c] = engine.enqueue([make_job(queue="c", delay_s=1)])
    [later] = engine.enqueue([make_job(queue="c", delay_s=5)])
    clock.advance(1000)
    assert [j.id for j in engine.claim("a", "w", 5, 1000)] == [a]
    assert engine.get(b).state is JobState.DELAYED
    assert engine.promote_due("b") == 1
    assert engine.get(b).state is JobState.WAITING
    assert engine.get(c).state is JobState.DELAYED
    assert engine.promote_due() == 1
    assert engine.get(c).state is JobState.WAITING
    assert engine.get(c).run_at_ms == clock.now_ms  # promotion keeps the due time
    assert engine.get(later).state is JobState.DELAYED
    assert engine.promote_due() == 0


# --- renew ----------------------------------------------------------------------------


def test_renew_extends_held_leases_and_reports_lost_and_cancel_requested(
    engine: Engine, make_job: MakeJob, clock: FakeClock, hooks: EngineHooks
) -> None:
    ids = engine.enqueue([make_job() for _ in range(3)])
    jobs = engine.claim("default", "w", 3, 1000)
    tokens = {j.id: j.token for j in jobs}
    assert engine.cancel(ids[2]) is JobState.ACTIVE
    clock.advance(700)
    leases = [LeaseRef(i, t) for i, t in tokens.items() if t is not None]
    stale = LeaseRef(ids[1], 12345)
    renewed = engine.renew([leases[0], stale, leases[2]], 1000)
    assert renewed.renewed == [ids[0], ids[2]]
    assert renewed.lost == [ids[1]]
    assert renewed.cancel_requested == [ids[2]]
    assert engine.get(ids[0]).lease_expires_at_ms == clock.now_ms + 1000
    assert engine.get(ids[2]).lease_expires_at_ms == clock.now_ms + 1000
    assert engine.get(ids[1]).lease_expires_at_ms == clock.now_ms - 700 + 1000  # untouched
    empty = engine.renew([], 1000)
    assert (empty.renewed, empty.lost, empty.cancel_requested) == ([], [], [])
    before = hooks.rows()
    with pytest.raises(ValueError, match="ttl_ms"):
        engine.renew(leases, 0)
    assert hooks.rows() == before


def test_cancel_requested_reports_held_leases_asked_to_cancel_and_changes_nothing(
    engine: Engine, make_job: MakeJob, hooks: EngineHooks
) -> None:
    ids = engine.enqueue([make_job() for _ in range(4)])
    jobs = {j.id: j for j in engine.claim("default", "w", 4, 1000)}
    leases = [LeaseRef(i, jobs[i].token or 0) for i in ids]
    for job_id in (ids[3], ids[1], ids[2]):
        assert engine.cancel(job_id) is JobState.ACTIVE
    engine.fail(Failure(ids[2], leases[2].token, "cancelled", kind=FailureKind.CANCELLED))
    before, events = hooks.rows(), engine.last_event_id()
    stale = LeaseRef(ids[1], leases[1].token + 1)  # another attempt's token
    assert engine.cancel_requested(leases) == [ids[1], ids[3]]  # in the leases' order
    assert engine.cancel_requested([leases[3], leases[0], leases[1]]) == [ids[3], ids[1]]
    assert engine.cancel_requested([stale, leases[2], LeaseRef(10**9, 1)]) == []
    assert engine.cancel_requested([]) == []
    assert hooks.rows() == before  # a read: no lease extended, nothing written
    assert engine.last_event_id() == events


def test_an_expired_but_unrescued_lease_can_still_be_renewed_and_completed(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    engine.enqueue([make_job(), make_job()])
    first, second = engine.claim("default", "w", 2, 1000)
    assert first.token is not None and second.token is not None
    clock.advance(5000)  # long past expiry; no rescue ran: the token still fences
    assert engine.renew([LeaseRef(first.id, first.token)], 1000).renewed == [first.id]
    engine.complete(second.id, second.token, b"late")
    assert engine.get(second.id).state is JobState.COMPLETED


# --- complete -------------------------------------------------------------------------


def test_complete_settles_the_attempt_like_the_lifecycle_rule(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    engine.enqueue([make_job()])
    [job] = engine.claim("default", "w", 1, 1000)
    assert job.token is not None
    clock.advance(10)
    engine.complete(job.id, job.token, b'"ok"')
    assert engine.get(job.id) == lifecycle.complete(job, job.token, b'"ok"', clock.now_ms)
    with pytest.raises(LeaseLost):  # settled once only
        engine.complete(job.id, job.token, b'"again"')
    assert engine.get(job.id).result == b'"ok"'


# --- fencing --------------------------------------------------------------------------


def taken_over(engine: Engine, make_job: MakeJob, clock: FakeClock) -> tuple[int, int, int]:
    """A claims a job, its lease expires, the sweep requeues it, B claims it again.
    Returns (job id, A's stale token, B's token)."""
    [job_id] = engine.enqueue([make_job(backoff=backoff.fixed(0), max_stalls=3)])
    [a] = engine.claim("default", "owner-a", 1, 1000)
    clock.advance(1000)
    assert engine.rescue_expired().requeued == [job_id]
    [b] = engine.claim("default", "owner-b", 1, 1000)
    assert a.token is not None and b.token is not None and a.token != b.token
    return job_id, a.token, b.token


def test_a_stale_holder_cannot_renew_complete_or_fail(
    engine: Engine, make_job: MakeJob, clock: FakeClock, hooks: EngineHooks
) -> None:
    job_id, stale, held = taken_over(engine, make_job, clock)
    before = hooks.rows()
    assert engine.renew([LeaseRef(job_id, stale)], 5000).lost == [job_id]
    with pytest.raises(LeaseLost) as lost:
        engine.complete(job_id, stale, b"x")
    assert (lost.value.job_id, lost.value.token) == (job_id, stale)
    with pytest.raises(LeaseLost):
        engine.fail(Failure(job_id, stale, "boom"))
    settled = engine.settle_and_claim(
        [Completion(job_id, stale, b"x")], [Failure(job_id, stale, "boom")], None
    )
    assert settled.lost == [job_id, job_id]
    assert hooks.rows() == before  # nothing changed, to the byte
    job = engine.get(job_id)
    assert (job.owner, job.token, job.attempt) == ("owner-b", held, 2)
    engine.complete(job_id, held, b"ok")  # the real holder still can
    assert engine.get(job_id).state is JobState.COMPLETED


# --- settle_and_claim -----------------------------------------------------------------


def test_settle_and_claim_settles_a_mix_reports_lost_and_claims_in_order(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    engine.enqueue([make_job(backoff=backoff.fixed(0)) for _ in range(4)])
    j1, j2, j3, j4 = engine.claim("default", "w", 4, 1000)
    assert j1.token and j2.token and j3.token and j4.token
    later = engine.enqueue([make_job(priority=1), make_job(priority=0)])
    [due] = engine.enqueue([make_job(priority=0, delay_s=1)])
    clock.advance(1000)
    settled = engine.settle_and_claim(
        [
            Completion(j1.id, j1.token, b"1"),
            Completion(j2.id, j2.token + 1, b"stale"),  # lost, between two good ones
            Completion(j3.id, j3.token, b"3"),
            Completion(j3.id, j3.token, b"twice"),  # already settled just above: lost
        ],
        [Failure(j4.id, j4.token, "boom"), Failure(j1.id, 99, "stale")],
        ClaimRequest("default", "w2", 10, 5000),
    )
    assert settled.lost == [j2.id, j3.id, j1.id]
    assert engine.get(j1.id).result == b"1"
    assert engine.get(j3.id).result == b"3"
    assert engine.get(j2.id).state is JobState.ACTIVE  # untouched, still j2's holder's
    # j4 failed with no backoff: waiting at now, so it is claimed in the same transaction
    assert [j.id for j in settled.claimed] == [later[1], j4.id, due, later[0]]
    assert all(j.owner == "w2" and j.state is JobState.ACTIVE for j in settled.claimed)
    assert engine.get(j4.id).attempt == 2
    assert engine.settle_and_claim([], [], None).claimed == []


def test_a_short_claim_says_when_the_queues_next_delayed_job_is_due(
    engine: Engine, make_job: MakeJob, clock: FakeClock
) -> None:
    start = clock.now_ms
    engine.enqueue([make_job(), make_job(delay_s=5), make_job(delay_s=2), make_job(delay_s=9)])
    engine.enqueue([make_job(queue="other", delay_s=1)])
    # full: nothing said (the pool claims again anyway)
    full = engine.settle_and_claim([], [], ClaimRequest("default", "w", 1, 1000))
    assert (len(full.claimed), full.next_due_ms, full.now_ms) == (1, None, start)
    # short: the earliest delayed job of this queue
    short = engine.settle_and_claim([], [], ClaimRequest("default", "w", 5, 1000))
    assert (short.claimed, short.next_due_ms, short.now_ms) == ([], start + 2000, start)
    clock.advance(2000)  # due now: promoted and claimed by the claim itself
    short = engine.settle_and_claim([], [], ClaimRequest("default", "w", 5, 1000))
    assert (len(short.claimed), short.next_due_ms) == (1, start + 5000)
    clock.advance(10_000)
    short = engine.settle_and_claim([], [], ClaimRequest("default", "w", 5, 1000))
    assert (len(short.claimed), short.next_due_ms) == (2, None)  # no delayed job left
    assert engine.settle_and_claim([], [], None).next_due_ms is None  # no claim, no read


@pytest.mark.parametrize(
    "results",
    [
        [None, b'{"a": [1, 2.5e100, "\\u00e9\\n\\"q\\""]}', "é ✓ 😀".encode(), b"", b"null"],
        [b"\xff\xfe not UTF-8", b"1"],  # not JSON text: the per-row path, same outcome
    ],
)
def test_settled_completions_store_each_result_byte_for_byte(
    engine: Engine, make_job: MakeJob, results: list[bytes | None]
) -> None:
    engine.enqueue([make_job() for _ in results])
    jobs = engine.claim("default", "w", len(results), 1000)
    completions = [Completion(j.id, j.token or 0, r) for j, r in zip(jobs, results, strict=True)]
    assert engine.settle_and_claim(completions, [], None).lost == []
    for job, result in zip(jobs, results, strict=True):
        stored = engine.get(job.id)
        assert stored.state is JobState.COMPLETED
        assert stored.result == result
        assert stored.token is None and stored.owner is None

"""SqliteEngine: enqueue, claim, promote, renew, complete, fencing, settle_and_claim."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from rota.domain import FailureKind, JobState, backoff, lifecycle
from rota.domain.job import NewJob
from rota.errors import JobNotFound, LeaseLost
from rota.storage import schema as sql
from rota.storage.engine import ClaimRequest, Completion, Failure, LeaseRef
from rota.storage.sqlite import SqliteEngine

if TYPE_CHECKING:
    from tests.storage.conftest import FakeClock

MakeJob = Callable[..., NewJob]
Rows = Callable[[SqliteEngine], list[tuple[Any, ...]]]


# --- enqueue --------------------------------------------------------------------------


def test_enqueue_stores_every_field_and_returns_increasing_ids(
    engine: SqliteEngine, make_job: MakeJob, clock: FakeClock
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
    engine: SqliteEngine, make_job: MakeJob
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
    engine: SqliteEngine, make_job: MakeJob, rows: Rows
) -> None:
    [job_id] = engine.enqueue([make_job(b"first", key="once")])
    [job] = engine.claim("default", "w", 1, 1000)
    assert job.token is not None
    engine.complete(job_id, job.token, b"done")
    before = rows(engine)
    assert engine.enqueue([make_job(b"second", key="once")]) == [job_id]
    assert rows(engine) == before
    assert engine.get_by_key("once").payload == b"first"
    with pytest.raises(JobNotFound):
        engine.get_by_key("never")
    with pytest.raises(JobNotFound):
        engine.get(10**9)


def test_ids_are_never_reused_after_the_newest_job_is_pruned(
    engine: SqliteEngine, make_job: MakeJob
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
    engine: SqliteEngine, make_job: MakeJob, clock: FakeClock
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
    engine: SqliteEngine, make_job: MakeJob, clock: FakeClock
) -> None:
    [late] = engine.enqueue([make_job(delay_s=0.1)])  # older id, due later
    clock.advance(50)
    [early] = engine.enqueue([make_job()])
    clock.advance(100)
    assert [j.id for j in engine.claim("default", "w", 2, 1000)] == [early, late]


def test_claim_takes_at_most_n_and_only_from_its_queue(
    engine: SqliteEngine, make_job: MakeJob
) -> None:
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
    engine: SqliteEngine, make_job: MakeJob, rows: Rows, n: int, ttl_ms: int
) -> None:
    engine.enqueue([make_job()])
    before = rows(engine)
    with pytest.raises(ValueError, match=r"n must be|ttl_ms must be"):
        engine.claim("default", "w", n, ttl_ms)
    assert rows(engine) == before


def test_delayed_job_is_claimable_only_once_due(
    engine: SqliteEngine, make_job: MakeJob, clock: FakeClock
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
    engine: SqliteEngine, make_job: MakeJob, clock: FakeClock
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


@pytest.mark.parametrize(
    ("statement", "params", "index"),
    [
        (sql.CLAIM_JOBS, ("w", 1, "q", 10), "rota_jobs_ready"),
        (sql.PROMOTE_DUE_IN_QUEUE, ("q", 1), "rota_jobs_due_in_queue"),
        (sql.PROMOTE_DUE, (1,), "rota_jobs_due"),
        (sql.SELECT_EXPIRED, (1,), "rota_jobs_leases"),
        (sql.SELECT_OWNED, ("w",), "rota_jobs_leases"),
        (sql.SELECT_JOB_BY_KEY, ("k",), "rota_jobs_key"),
        (sql.COMPLETE_JOB, (1, None, 1, 1), "INTEGER PRIMARY KEY"),
        (sql.RENEW_LEASES, (1, "[[1, 2]]"), "INTEGER PRIMARY KEY"),
        (sql.COUNT_JOBS_IN_QUEUE, ("q",), "rota_jobs_finished"),
        # the events of the hot paths: read back the rows just written, by primary key
        (sql.INSERT_JOB_EVENTS, (1, "active", "[1, 2]"), "INTEGER PRIMARY KEY (rowid=?)"),
        (sql.INSERT_ENQUEUED_EVENTS, (1, 1, 100), "INTEGER PRIMARY KEY (rowid>? AND rowid<?)"),
        (sql.SET_PROGRESS, (b"{}", 1, 1), "INTEGER PRIMARY KEY"),
        (sql.INSERT_LOG, (1, "m", 1, 1), "INTEGER PRIMARY KEY"),
    ],
)
def test_hot_statements_use_their_index_and_never_scan_or_sort(
    engine: SqliteEngine,
    make_job: MakeJob,
    statement: str,
    params: tuple[object, ...],
    index: str,
) -> None:
    engine.enqueue([make_job(queue="q", priority=i % 3) for i in range(200)])
    plan = engine._conn.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
    details = [str(row[3]) for row in plan]
    assert any(index in d for d in details), details
    assert not any(d.startswith("SCAN rota_jobs") and "INDEX" not in d for d in details), details
    if statement is not sql.COUNT_JOBS_IN_QUEUE:  # GROUP BY state of finished jobs: small
        assert not any("TEMP B-TREE" in d for d in details), details


def test_claim_subquery_searches_the_ready_index_in_its_order(engine: SqliteEngine) -> None:
    plan = engine._conn.execute(
        f"EXPLAIN QUERY PLAN {sql.CLAIM_JOBS}", ("w", 1, "q", 10)
    ).fetchall()
    details = [str(row[3]) for row in plan]
    assert "SEARCH rota_jobs USING INDEX rota_jobs_ready (queue=?)" in details
    assert not any("TEMP B-TREE" in d or d == "SCAN rota_jobs" for d in details)
    # the pause guard: one primary-key seek, as a scalar subquery (evaluated once, not per
    # row: it does not depend on the row)
    assert "SEARCH rota_queues USING PRIMARY KEY (name=?)" in details
    assert not any("CORRELATED" in d for d in details)


@pytest.mark.parametrize(
    ("statement", "params", "expected"),
    [
        (sql.SELECT_EVENTS, (0, 10), ["SEARCH rota_events USING INTEGER PRIMARY KEY (rowid>?)"]),
        (sql.SELECT_EVENTS_IN_QUEUE, (0, "q", 10),
         ["SEARCH rota_events USING INTEGER PRIMARY KEY (rowid>?)"]),
        (sql.PRUNE_EVENTS, (1,), ["SEARCH rota_events USING INTEGER PRIMARY KEY (rowid<?)"]),
        (sql.SELECT_LOGS, (1, 10, 0), ["SEARCH rota_logs USING INDEX rota_logs_job (job_id=?)"]),
        (sql.PURGE_QUEUE, ("q",), [
            "SEARCH rota_jobs USING INDEX rota_jobs_ready (queue=?)",
            "SEARCH rota_jobs USING INDEX rota_jobs_due_in_queue (queue=?)",
            "SEARCH rota_logs USING COVERING INDEX rota_logs_job (job_id=?)",  # the cascade
        ]),
        (sql.REMOVE_JOB, (1,), [
            "SEARCH rota_jobs USING INTEGER PRIMARY KEY (rowid=?)",
            "SEARCH rota_logs USING COVERING INDEX rota_logs_job (job_id=?)",
        ]),
        (sql.PROMOTE_JOB, (1, 1), ["SEARCH rota_jobs USING INTEGER PRIMARY KEY (rowid=?)"]),
        (sql.COMPLETE_JOBS, (1, "[[1, 2, null]]"),
         ["SCAN c VIRTUAL TABLE INDEX 1:",  # the json_each batch, once
          "SEARCH rota_jobs USING INTEGER PRIMARY KEY (rowid=?)"]),
    ],
)  # fmt: skip
def test_statements_of_schema_2_seek_and_never_sort(
    engine: SqliteEngine, statement: str, params: tuple[object, ...], expected: list[str]
) -> None:
    plan = engine._conn.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
    details = [str(row[3]) for row in plan]
    for detail in expected:
        assert detail in details, details
    assert not any("TEMP B-TREE" in d for d in details), details
    # PRUNE_EVENTS' subquery walks the id order up to the first event at the cutoff
    scans = [d for d in details if d.startswith("SCAN") and "VIRTUAL TABLE" not in d]
    assert scans == (["SCAN rota_events"] if statement is sql.PRUNE_EVENTS else []), details


# --- renew ----------------------------------------------------------------------------


def test_renew_extends_held_leases_and_reports_lost_and_cancel_requested(
    engine: SqliteEngine, make_job: MakeJob, clock: FakeClock, rows: Rows
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
    before = rows(engine)
    with pytest.raises(ValueError, match="ttl_ms"):
        engine.renew(leases, 0)
    assert rows(engine) == before


def test_cancel_requested_reports_held_leases_asked_to_cancel_and_changes_nothing(
    engine: SqliteEngine, make_job: MakeJob, rows: Rows
) -> None:
    ids = engine.enqueue([make_job() for _ in range(4)])
    jobs = {j.id: j for j in engine.claim("default", "w", 4, 1000)}
    leases = [LeaseRef(i, jobs[i].token or 0) for i in ids]
    for job_id in (ids[3], ids[1], ids[2]):
        assert engine.cancel(job_id) is JobState.ACTIVE
    engine.fail(Failure(ids[2], leases[2].token, "cancelled", kind=FailureKind.CANCELLED))
    before, events = rows(engine), engine.last_event_id()
    stale = LeaseRef(ids[1], leases[1].token + 1)  # another attempt's token
    assert engine.cancel_requested(leases) == [ids[1], ids[3]]  # in the leases' order
    assert engine.cancel_requested([leases[3], leases[0], leases[1]]) == [ids[3], ids[1]]
    assert engine.cancel_requested([stale, leases[2], LeaseRef(10**9, 1)]) == []
    assert engine.cancel_requested([]) == []
    assert rows(engine) == before  # a read: no lease extended, nothing written
    assert engine.last_event_id() == events


def test_an_expired_but_unrescued_lease_can_still_be_renewed_and_completed(
    engine: SqliteEngine, make_job: MakeJob, clock: FakeClock
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
    engine: SqliteEngine, make_job: MakeJob, clock: FakeClock
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


def taken_over(engine: SqliteEngine, make_job: MakeJob, clock: FakeClock) -> tuple[int, int, int]:
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
    engine: SqliteEngine, make_job: MakeJob, clock: FakeClock, rows: Rows
) -> None:
    job_id, stale, held = taken_over(engine, make_job, clock)
    before = rows(engine)
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
    assert rows(engine) == before  # nothing changed, to the byte
    job = engine.get(job_id)
    assert (job.owner, job.token, job.attempt) == ("owner-b", held, 2)
    engine.complete(job_id, held, b"ok")  # the real holder still can
    assert engine.get(job_id).state is JobState.COMPLETED


# --- settle_and_claim -----------------------------------------------------------------


def test_settle_and_claim_settles_a_mix_reports_lost_and_claims_in_order(
    engine: SqliteEngine, make_job: MakeJob, clock: FakeClock
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
    engine: SqliteEngine, make_job: MakeJob, clock: FakeClock
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
def test_settled_completions_store_each_result_byte_for_byte_as_a_blob(
    engine: SqliteEngine, make_job: MakeJob, results: list[bytes | None]
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
    kinds = engine._conn.execute(
        "SELECT DISTINCT typeof(result) FROM rota_jobs WHERE result IS NOT NULL"
    ).fetchall()
    assert kinds == [("blob",)]

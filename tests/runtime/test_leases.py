"""Leases end to end: graceful shutdown releases what is held, renewal keeps a long job
from being rescued, and a dead runtime's job is taken over by a live one, whose
completion the dead one's stale token cannot overwrite (fencing)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest
from rt_support import Item, wait_for, wait_state

import rota
from rota.app import App, Context
from rota.domain.event import EventKind, Owner
from rota.domain.job import JobState
from rota.domain.outcome import FailureKind
from rota.errors import LeaseLost
from rota.storage.engine import Failure, LeaseRef
from rota.storage.sqlite import SqliteEngine

pytestmark = pytest.mark.anyio

#: Above any Linux pid_max (2**22): a process that cannot exist.
DEAD_PID = 2**22 + 12345


def kinds_of(app: App, job_id: int) -> list[tuple[EventKind, int]]:
    engine = app.engine()
    try:
        return [(e.kind, e.attempt) for e in engine.events(0) if e.job_id == job_id]
    finally:
        engine.close()


# -- graceful shutdown -------------------------------------------------------------------------


async def test_shutdown_cancels_and_releases_a_job_past_the_grace(
    make_app: Callable[..., App],
) -> None:
    app = make_app(shutdown_grace_s=0.3)
    started: list[int] = []
    interrupted: list[int] = []

    @app.job(queue="q", max_attempts=3)
    async def slow(args: Item, ctx: Context) -> int:
        started.append(ctx.attempt)
        if len(started) == 1:  # the first run only
            try:
                await anyio.sleep(30)
            finally:
                interrupted.append(ctx.attempt)
        return ctx.attempt

    handle = await slow.enqueue(Item(1))
    async with app.run():
        await wait_for(lambda: started == [1], what="the job to start")
        t0 = time.monotonic()
    shutdown_s = time.monotonic() - t0
    assert 0.25 <= shutdown_s < 2.0  # the grace, then a cancel: not the job's 30 s
    assert interrupted == [1]
    job = await handle.info()
    # the interrupted attempt is taken back (it does not count against max_attempts)
    assert (job.state, job.attempt, job.stalls) == (JobState.WAITING, 0, 0)
    assert (job.owner, job.token, job.error) == (None, None, None)
    # no stall or retry was recorded: a clean hand-back
    assert kinds_of(app, handle.id) == [(EventKind.ENQUEUED, 0), (EventKind.ACTIVE, 1)]

    async with app.run():
        assert await handle.result(timeout=5) == 1
    assert started == [1, 1]  # it ran again as attempt 1
    job = await handle.info()
    assert (job.state, job.attempt, job.stalls) == (JobState.COMPLETED, 1, 0)


async def test_shutdown_releases_claimed_jobs_that_had_not_started(
    make_app: Callable[..., App],
) -> None:
    app = make_app(shutdown_grace_s=0.2, concurrency=1, prefetch=3)
    started: list[tuple[int, int]] = []

    @app.job(queue="q", max_attempts=1)
    async def slow(args: Item, ctx: Context) -> int:
        started.append((args.n, ctx.attempt))
        if started == [(0, 1)]:  # the first run of the first job
            await anyio.sleep(30)
        return args.n

    handles = await slow.enqueue_many([Item(i) for i in range(3)])
    async with app.run():
        await wait_for(lambda: bool(started), what="the first job to start")
        # the other two are claimed ahead (prefetch) but wait for the only worker
        await wait_for(lambda: _all_active(app, [h.id for h in handles]), what="all three claimed")
    assert started == [(0, 1)]
    jobs = [await handle.info() for handle in handles]
    assert {(j.state, j.owner, j.token, j.stalls) for j in jobs} == {
        (JobState.WAITING, None, None, 0)
    }
    # none was charged an attempt: not the interrupted one, nor those that never started
    assert [j.attempt for j in jobs] == [0, 0, 0]
    async with app.run():
        with anyio.fail_after(10):
            assert [await h.result() for h in handles] == [0, 1, 2]
    # the interrupted job ran again as attempt 1: max_attempts=1 is never exceeded
    assert sorted(started) == [(0, 1), (0, 1), (1, 1), (2, 1)]


async def _all_active(app: App, ids: list[int]) -> bool:
    states = [await app.handle(i).status() for i in ids]
    return states == [JobState.ACTIVE] * len(ids)


async def test_job_finishing_within_the_grace_completes_during_shutdown(
    make_app: Callable[..., App],
) -> None:
    app = make_app(shutdown_grace_s=3.0)
    started: list[int] = []

    @app.job(queue="q")
    async def short(args: Item, ctx: Context) -> str:
        started.append(ctx.attempt)
        await anyio.sleep(0.3)
        return "finished"

    handle = await short.enqueue(Item(1))
    async with app.run():
        await wait_for(lambda: bool(started), what="the job to start")
        assert await handle.status() is JobState.ACTIVE
        t0 = time.monotonic()
    shutdown_s = time.monotonic() - t0
    assert 0.2 <= shutdown_s < 2.5  # waited for the job, not for the whole grace
    job = await handle.info()
    assert (job.state, job.attempt) == (JobState.COMPLETED, 1)
    assert await handle.result(timeout=1) == "finished"


# -- renewal -----------------------------------------------------------------------------------


async def test_job_longer_than_the_ttl_is_renewed_not_rescued(
    make_app: Callable[..., App],
) -> None:
    app = make_app(lease_ttl_s=0.6, scheduler_interval_s=0.05)
    runs: list[int] = []

    @app.job(queue="q", max_attempts=3, backoff=rota.fixed(0))
    async def long(args: Item, ctx: Context) -> int:
        runs.append(ctx.attempt)
        await anyio.sleep(2.0)
        return ctx.attempt

    handle = await long.enqueue(Item(1))
    async with app.run():
        first = await wait_state(handle, JobState.ACTIVE)
        await anyio.sleep(1.0)  # past the first lease's expiry
        later = await handle.info()
        assert later.state is JobState.ACTIVE
        assert later.token == first.token  # the same lease...
        assert first.lease_expires_at_ms is not None
        assert later.lease_expires_at_ms is not None
        assert later.lease_expires_at_ms > first.lease_expires_at_ms  # ...renewed
        assert await handle.result(timeout=5) == 1
    assert runs == [1]
    job = await handle.info()
    assert (job.state, job.attempt, job.stalls) == (JobState.COMPLETED, 1, 0)
    assert kinds_of(app, handle.id) == [
        (EventKind.ENQUEUED, 0),
        (EventKind.ACTIVE, 1),
        (EventKind.COMPLETED, 1),
    ]


# -- takeover and fencing ----------------------------------------------------------------------


async def test_live_runtime_takes_over_an_expired_lease_and_fences_the_dead_one(
    make_app: Callable[..., App],
) -> None:
    app = make_app(lease_ttl_s=2.0, scheduler_interval_s=0.05)
    runs: list[int] = []
    checked = None  # set by the test once it has tried the stale token mid-run

    @app.job(queue="q", max_attempts=3, backoff=rota.fixed(0))
    async def work(args: Item, ctx: Context) -> str:
        runs.append(ctx.attempt)
        assert checked is not None
        await checked.wait()
        return f"done by attempt {ctx.attempt}"

    handle = await work.enqueue(Item(1))
    dead = app.engine()  # the "dead runtime": it claims, then never renews
    try:
        dead.migrate()
        [claimed] = dead.claim("q", "dead-owner", 1, 300)
        stale_token = claimed.token
        assert stale_token is not None
        claimed_at = time.monotonic()
        checked = anyio.Event()
        async with app.run():
            with anyio.fail_after(10):
                job = await wait_state(handle, JobState.ACTIVE)
                assert job.owner == "dead-owner"
                await wait_for(lambda: runs == [2], what="the takeover attempt")
                took_over_s = time.monotonic() - claimed_at
                # mid-run: the stale holder can neither renew, settle nor fail it
                assert dead.renew([LeaseRef(handle.id, stale_token)], 1000).lost == [handle.id]
                with pytest.raises(LeaseLost):
                    dead.complete(handle.id, stale_token, b'"stale"')
                with pytest.raises(LeaseLost):
                    dead.fail(Failure(handle.id, stale_token, "stale", FailureKind.ERROR))
                checked.set()
                assert await handle.result() == "done by attempt 2"
        # after the takeover completed it: still refused, and nothing changed
        before = await handle.info()
        with pytest.raises(LeaseLost):
            dead.complete(handle.id, stale_token, b'"x"')
        assert await handle.info() == before
    finally:
        dead.close()
    assert took_over_s >= 0.29  # not before the dead lease expired
    assert runs == [2]  # attempt 1 was the dead runtime's
    assert (before.state, before.attempt, before.stalls) == (JobState.COMPLETED, 2, 1)
    assert before.result == b'"done by attempt 2"'
    assert kinds_of(app, handle.id) == [
        (EventKind.ENQUEUED, 0),
        (EventKind.ACTIVE, 1),
        (EventKind.STALLED, 1),
        (EventKind.RETRYING, 1),
        (EventKind.ACTIVE, 2),
        (EventKind.COMPLETED, 2),
    ]


async def test_dead_owner_on_this_host_is_released_at_start_without_waiting_for_the_ttl(
    make_app: Callable[..., App],
) -> None:
    app = make_app(lease_ttl_s=2.0)

    @app.job(queue="q", backoff=rota.fixed(0))
    async def work(args: Item, ctx: Context) -> int:
        return ctx.attempt

    handle = await work.enqueue(Item(1))
    runtime_engine: SqliteEngine = app.engine()
    try:
        runtime_engine.migrate()
        now = app.clock()
        runtime_engine.register_owner(
            Owner(
                id="crashed",
                host=socket.gethostname(),
                pid=DEAD_PID,
                started_at_ms=now,
                heartbeat_at_ms=now,
            )
        )
        runtime_engine.claim("q", "crashed", 1, 60_000)  # a lease far from expiring
    finally:
        runtime_engine.close()
    t0 = time.monotonic()
    async with app.run():
        assert await handle.result(timeout=5) == 2
    assert time.monotonic() - t0 < 2.0  # long before the 60 s lease would expire
    job = await handle.info()
    assert (job.attempt, job.stalls) == (2, 1)


@pytest.mark.parametrize("case", ["cancel-requested", "poison"])
async def test_rescue_of_a_dead_runtimes_job_ends_it_when_it_must_not_run_again(
    make_app: Callable[..., App], case: str
) -> None:
    app = make_app(lease_ttl_s=2.0, scheduler_interval_s=0.05)
    runs: list[int] = []

    @app.job(queue="q", max_attempts=3, backoff=rota.fixed(0), max_stalls=1)
    async def work(args: Item, ctx: Context) -> int:
        runs.append(ctx.attempt)
        return ctx.attempt

    handle = await work.enqueue(Item(1), max_stalls=0 if case == "poison" else 1)
    dead = app.engine()
    try:
        dead.migrate()
        dead.claim("q", "dead-owner", 1, 300)
    finally:
        dead.close()
    if case == "cancel-requested":
        assert await handle.cancel() is JobState.ACTIVE  # nobody alive to stop it
    async with app.run():
        job = await wait_state(handle, JobState.CANCELLED, JobState.FAILED, timeout=5)
    assert runs == []  # never ran again
    assert job.attempt == 1
    if case == "cancel-requested":
        assert (job.state, job.stalls) == (JobState.CANCELLED, 0)
        assert job.error == "cancelled while its owner was lost"
    else:
        assert (job.state, job.stalls) == (JobState.FAILED, 1)
        assert "failed as poison after 1 stalls" in (job.error or "")


# -- a pool that crashes while its Store call is in flight -------------------------------------


class _PoolCrash(RuntimeError):
    """Raised in a task of the pool's own: the pool actor crashes."""


async def test_jobs_claimed_by_a_call_in_flight_when_the_pool_crashed_run_at_once(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Store commits a claim whose caller, the pool, crashed meanwhile: the jobs it
    claimed are taken by the pool before it stops, and handed back uncounted, so the
    restarted pool runs them at once (not after their lease expired, as a stall)."""
    app = make_app(concurrency=1, prefetch=0, lease_ttl_s=30.0)
    go = anyio.Event()
    ran: list[tuple[int, int]] = []

    @app.job(queue="q")
    async def job(args: Item, ctx: Context) -> int:
        ran.append((args.n, ctx.attempt))
        if args.n == 1:
            await go.wait()
        return args.n

    first, second = await job.enqueue(Item(1)), await job.enqueue(Item(2))
    hold, entered, release = threading.Event(), threading.Event(), threading.Event()
    settle_and_claim = SqliteEngine.settle_and_claim

    def held_up(engine: SqliteEngine, *args: Any, **kwargs: Any) -> Any:
        if hold.is_set():  # the Store's thread waits here, before the transaction
            hold.clear()
            entered.set()
            release.wait(10)
        return settle_and_claim(engine, *args, **kwargs)

    monkeypatch.setattr(SqliteEngine, "settle_and_claim", held_up)
    async with app.run() as runtime:
        await wait_for(lambda: ran == [(1, 1)], what="the first job to run")
        pool: Any = runtime.pools["q"].actor
        hold.set()
        go.set()  # the first job completes: settled together with a claim (the second job)
        await anyio.to_thread.run_sync(entered.wait, 10)

        async def crash() -> None:
            raise _PoolCrash("the pool itself breaks")

        pool.tasks.start_soon(crash)
        await anyio.sleep(0.05)  # the crash cancels the pool's tasks, its feeder's call too
        release.set()  # the claim commits now
        assert await second.result(timeout=5) == 2
    assert await first.result(timeout=1) == 1
    assert ran == [(1, 1), (2, 1)]  # attempt 1: handed back, never counted
    assert (await second.info()).stalls == 0
    assert runtime.statistics()["actors"]["pool[q]"].crashes == 1

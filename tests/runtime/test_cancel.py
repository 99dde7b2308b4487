"""Cancelling jobs: waiting and delayed ones at once; a running one is stopped by its
worker (at once: a cancel check; at the latest at the LockRenewer's next renewal, a third
of the lease ttl), whether the request comes from this process or from another App on the
same database. How fast, with the default timings: ``test_timeliness.py``."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import pytest
from rt_support import Item, counts, wait_for, wait_state

from rota.app import App, Context
from rota.domain.event import EventKind
from rota.domain.job import JobState
from rota.errors import JobFailed

pytestmark = pytest.mark.anyio

TTL_S = 0.9  # renewals (and so cancel checks) every 0.3 s


async def test_cancel_waiting_and_delayed_jobs_at_once(make_app: Callable[..., App]) -> None:
    app = make_app()
    ran: list[int] = []

    @app.job(queue="q")
    async def record(args: Item) -> int:
        ran.append(args.n)
        return args.n

    waiting = await record.enqueue(Item(1))
    delayed = await record.enqueue(Item(2), delay=60)
    assert await waiting.cancel() is JobState.CANCELLED
    assert await app.queue("q").cancel(delayed.id) is JobState.CANCELLED
    assert await counts(app, "q") == {"cancelled": 2}
    for handle in (waiting, delayed):
        with pytest.raises(JobFailed) as caught:
            await handle.result(timeout=5)
        assert caught.value.state == JobState.CANCELLED
        assert (await handle.info()).error == "cancelled"

    marker = await record.enqueue(Item(3))
    async with app.run():
        assert await marker.result(timeout=5) == 3
        # a second cancel of a finished job changes nothing
        assert await waiting.cancel() is JobState.CANCELLED
        assert await marker.cancel() is JobState.COMPLETED
    assert ran == [3]  # the cancelled jobs never ran
    assert (await marker.info()).state is JobState.COMPLETED


@pytest.mark.parametrize("from_where", ["same-app", "other-app"])
async def test_cancel_a_running_job_stops_it_within_a_third_of_the_ttl(
    make_app: Callable[..., App], db_path: str, from_where: str
) -> None:
    app = make_app(db_path, lease_ttl_s=TTL_S)
    other = make_app(db_path)  # another "process": no runtime, its own connection
    started: list[int] = []
    stopped: list[int] = []

    @app.job(queue="q", max_attempts=3)
    async def hang(args: Item, ctx: Context) -> None:
        started.append(ctx.attempt)
        try:
            await anyio.sleep_forever()
        finally:
            stopped.append(ctx.attempt)

    handle = await hang.enqueue(Item(1))
    async with app.run():
        with anyio.fail_after(10):
            await wait_for(lambda: bool(started), what="the job to start")
            canceller = app if from_where == "same-app" else other
            t0 = time.monotonic()
            # a running job is only asked to stop: its worker settles it as cancelled
            assert await canceller.handle(handle.id).cancel() is JobState.ACTIVE
            job = await wait_state(handle, JobState.CANCELLED, timeout=5)
            elapsed = time.monotonic() - t0
            with pytest.raises(JobFailed) as caught:
                await handle.result()
            assert caught.value.state == JobState.CANCELLED
    assert elapsed < TTL_S / 3 + 0.35  # the next renewal tick, not a lease expiry
    assert started == [1]
    assert stopped == [1]  # the handler was really cancelled
    assert (job.attempt, job.stalls) == (1, 0)
    assert job.error == "cancelled on request"  # by its worker, not by a rescue
    engine = app.engine()
    try:
        kinds = [e.kind for e in engine.events(0) if e.job_id == handle.id]
    finally:
        engine.close()
    assert kinds == [EventKind.ENQUEUED, EventKind.ACTIVE, EventKind.CANCELLED]


async def test_cancelled_running_job_does_not_block_the_others(
    make_app: Callable[..., App],
) -> None:
    app = make_app(lease_ttl_s=TTL_S, concurrency=1)
    started: list[int] = []

    @app.job(queue="q")
    async def work(args: Item) -> int:
        started.append(args.n)
        if args.n == 0:
            await anyio.sleep_forever()
        return args.n

    hanging = await work.enqueue(Item(0))
    after = await work.enqueue(Item(1))
    async with app.run():
        with anyio.fail_after(10):
            await wait_for(lambda: started == [0], what="the hanging job to start")
            await hanging.cancel()
            assert await after.result() == 1  # the only worker slot came free
    assert (await hanging.status()) is JobState.CANCELLED

"""``app.queue(name)``: counts, listing by state with paging, get, retry (one and all
failed), promote, remove, drain, clean; used with and without a running runtime."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest
from rt_support import Item, counts, wait_for, wait_state

import rota
from rota.app import App, Context
from rota.domain.job import JobState
from rota.errors import JobNotFound

pytestmark = pytest.mark.anyio


async def test_counts_and_paged_listing_by_state(make_app: Callable[..., App]) -> None:
    app = make_app()

    @app.job(queue="q")
    async def record(args: Item) -> None:
        return None

    @app.job(queue="other")
    async def elsewhere(args: Item) -> None:
        return None

    waiting = await record.enqueue_many([Item(i) for i in range(7)])
    delayed = await record.enqueue_many([Item(i) for i in range(2)], delay=3600)
    await elsewhere.enqueue(Item(0))
    queue = app.queue("q")
    assert await counts(app, "q") == {"waiting": 7, "delayed": 2}
    assert await counts(app, "other") == {"waiting": 1}

    ids = [h.id for h in waiting]
    page1 = await queue.jobs(JobState.WAITING, limit=3)
    page2 = await queue.jobs("waiting", limit=3, offset=3)
    page3 = await queue.jobs("waiting", limit=3, offset=6)
    assert [j.id for j in page1] == ids[:3]
    assert [j.id for j in page2] == ids[3:6]
    assert [j.id for j in page3] == ids[6:]
    assert [j.id for j in await queue.jobs("delayed")] == [h.id for h in delayed]
    assert len(await queue.jobs()) == 9  # every state, this queue only
    assert await queue.jobs(JobState.FAILED) == []
    got = await queue.get(ids[4])
    assert (got.id, got.queue, got.state) == (ids[4], "q", JobState.WAITING)
    assert record.decode(got.payload) == Item(4)
    with pytest.raises(ValueError, match="not-a-state"):
        await queue.jobs("not-a-state")
    with pytest.raises(JobNotFound):
        await queue.get(10_000)

    async with app.run():
        with anyio.fail_after(10):
            for handle in waiting:
                await handle.result()
            assert await counts(app, "q") == {"completed": 7, "delayed": 2}
            # the same calls work through the runtime's Store
            assert [j.id for j in await queue.jobs("completed", limit=2, offset=5)] == ids[5:]


async def test_retry_a_failed_job_and_retry_all_failed(make_app: Callable[..., App]) -> None:
    app = make_app()
    calls: dict[int, int] = {}

    @app.job(queue="q", max_attempts=1)
    async def fragile(args: Item, ctx: Context) -> str:
        calls[args.n] = calls.get(args.n, 0) + 1
        if calls[args.n] == 1:
            raise RuntimeError("first call fails")
        return f"{args.n} ok on attempt {ctx.attempt}"

    handles = await fragile.enqueue_many([Item(i) for i in range(3)])
    queue = app.queue("q")
    async with app.run():
        with anyio.fail_after(10):
            for handle in handles:
                with pytest.raises(rota.JobFailed):
                    await handle.result()
            assert await counts(app, "q") == {"failed": 3}

            # one job, while the runtime runs: it is woken at once
            assert await queue.retry(handles[0].id) is JobState.WAITING
            assert await handles[0].result() == "0 ok on attempt 1"  # attempts start over
            # a completed job cannot be retried
            with pytest.raises(ValueError, match="completed"):
                await queue.retry(handles[0].id)
            # every failed job of the queue
            assert await queue.retry_failed() == 2
            assert [await h.result() for h in handles[1:]] == [
                "1 ok on attempt 1",
                "2 ok on attempt 1",
            ]
    assert calls == {0: 2, 1: 2, 2: 2}
    assert await counts(app, "q") == {"completed": 3}


@pytest.mark.parametrize("with_runtime", [False, True])
async def test_retry_failed_retries_failed_and_cancelled_jobs_not_completed_ones(
    make_app: Callable[..., App], with_runtime: bool
) -> None:
    """As the README says (and BullMQ and Oban users expect): failed *and* cancelled jobs
    go back to waiting, attempts reset, in one call that says how many."""
    app = make_app()

    @app.job(queue="q", max_attempts=1)
    async def fragile(args: Item) -> int:
        if args.n < 2:
            raise RuntimeError("fails")
        return args.n

    @app.job(queue="other", max_attempts=1)
    async def elsewhere(args: Item) -> None:
        raise RuntimeError("fails too")

    failed = await fragile.enqueue_many([Item(0), Item(1)])
    completed = await fragile.enqueue(Item(2))
    other_failed = await elsewhere.enqueue(Item(0))
    async with app.run():
        with anyio.fail_after(10):
            for handle in [*failed, other_failed]:
                with pytest.raises(rota.JobFailed):
                    await handle.result()
            assert await completed.result() == 2
            await app.queue("q").pause()  # so that retried jobs stay waiting, to be seen
    cancelled = await fragile.enqueue_many([Item(3), Item(4)])
    for handle in cancelled:
        assert await handle.cancel() is JobState.CANCELLED
    delayed = await fragile.enqueue(Item(5), delay=3600)
    assert await counts(app, "q") == {"completed": 1, "failed": 2, "cancelled": 2, "delayed": 1}

    queue = app.queue("q")
    if with_runtime:
        async with app.run():
            assert await queue.retry_failed() == 4
            assert await counts(app, "q") == {"completed": 1, "waiting": 4, "delayed": 1}
    else:
        assert await queue.retry_failed() == 4
    assert await counts(app, "q") == {"completed": 1, "waiting": 4, "delayed": 1}
    for handle in [*failed, *cancelled]:
        job = await handle.info()
        assert (job.state, job.attempt, job.stalls) == (JobState.WAITING, 0, 0)
    assert (await completed.info()).state is JobState.COMPLETED
    assert (await delayed.info()).state is JobState.DELAYED
    assert (await other_failed.info()).state is JobState.FAILED  # another queue: untouched
    assert await queue.retry_failed() == 0  # nothing left to retry


async def test_retry_failed_stops_at_the_limit(make_app: Callable[..., App]) -> None:
    app = make_app()

    @app.job(queue="q")
    async def record(args: Item) -> None:
        return None

    handles = await record.enqueue_many([Item(i) for i in range(5)])
    for handle in handles:
        await handle.cancel()
    queue = app.queue("q")
    assert await queue.retry_failed(limit=3) == 3
    assert [await h.status() for h in handles] == [JobState.WAITING] * 3 + [
        JobState.CANCELLED
    ] * 2  # oldest first
    assert await queue.retry_failed(limit=3) == 2


async def test_retry_before_the_runtime_starts(make_app: Callable[..., App]) -> None:
    app = make_app()

    @app.job(queue="q")
    async def record(args: Item) -> int:
        return args.n

    handle = await record.enqueue(Item(5))
    await handle.cancel()
    assert await app.queue("q").retry(handle.id) is JobState.WAITING  # cancelled → waiting
    async with app.run():
        assert await handle.result(timeout=5) == 5


async def test_promote_a_delayed_job_runs_it_at_once(make_app: Callable[..., App]) -> None:
    app = make_app()
    ran: list[int] = []

    @app.job(queue="q")
    async def record(args: Item) -> int:
        ran.append(args.n)
        return args.n

    later = await record.enqueue(Item(1), delay=3600)
    before = await record.enqueue(Item(2), delay=3600)
    queue = app.queue("q")
    assert await queue.promote(before.id) is JobState.WAITING  # without a runtime
    async with app.run():
        with anyio.fail_after(5):
            assert await before.result() == 2
            assert await later.status() is JobState.DELAYED
            assert await queue.promote(later.id) is JobState.WAITING
            assert await later.result() == 1
            with pytest.raises(ValueError, match="not delayed"):
                await queue.promote(later.id)
    assert ran == [2, 1]


async def test_remove_purge_and_clean(make_app: Callable[..., App]) -> None:
    app = make_app(concurrency=1, prefetch=0, shutdown_grace_s=0.1)
    started: list[int] = []

    @app.job(queue="q", max_attempts=1)
    async def work(args: Item) -> int:
        started.append(args.n)
        if args.n == 99:
            await anyio.sleep_forever()
        if args.n < 0:
            raise RuntimeError("negative")
        return args.n

    done = await work.enqueue_many([Item(1), Item(2)])
    failed = await work.enqueue(Item(-1))
    queue = app.queue("q")
    async with app.run():
        with anyio.fail_after(10):
            for handle in done:
                await handle.result()
            with pytest.raises(rota.JobFailed):
                await failed.result()
            blocker = await work.enqueue(Item(99))
            await wait_for(lambda: 99 in started, what="the blocker to start")
            waiting = await work.enqueue_many([Item(3), Item(4)])  # behind the blocker
            delayed = await work.enqueue(Item(5), delay=3600)
            assert await counts(app, "q") == {
                "completed": 2,
                "failed": 1,
                "active": 1,
                "waiting": 2,
                "delayed": 1,
            }
            # remove: a job that is not running; a running one must be cancelled first
            await queue.remove(waiting[0].id)
            with pytest.raises(JobNotFound):
                await waiting[0].info()
            with pytest.raises(ValueError, match="cancel it first"):
                await queue.remove(blocker.id)
            # purge: every waiting and delayed job, nothing else
            assert await queue.purge() == 2
            for handle in (waiting[1], delayed):
                with pytest.raises(JobNotFound):
                    await handle.info()
            assert await counts(app, "q") == {"completed": 2, "failed": 1, "active": 1}
            # clean: finished jobs by state
            assert await queue.clean(JobState.COMPLETED, older_than_s=3600) == 0  # too new
            assert await queue.clean(JobState.COMPLETED, older_than_s=0) == 2
            assert await counts(app, "q") == {"failed": 1, "active": 1}
            assert await queue.clean("failed") == 1
            assert await counts(app, "q") == {"active": 1}
            with pytest.raises(ValueError, match="only finished jobs"):
                await queue.clean("active")
            await blocker.cancel()
            await wait_state(blocker, JobState.CANCELLED)
    assert sorted(started) == [-1, 1, 2, 99]  # the removed and purged jobs never ran


async def test_drain_was_renamed_purge_and_deletes_nothing(make_app: Callable[..., App]) -> None:
    app = make_app()

    @app.job(queue="q")
    async def record(args: Item) -> int:
        return args.n

    handle = await record.enqueue(Item(1))
    queue = app.queue("q")
    with pytest.raises(rota.errors.UsageError) as caught:
        await queue.drain()
    assert str(caught.value) == (
        "QueueHandle.drain() was renamed purge() (it deletes the queue's waiting and "
        "delayed jobs); nothing was deleted"
    )
    assert (await handle.info()).state is JobState.WAITING

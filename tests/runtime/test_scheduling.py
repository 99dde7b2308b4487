"""When jobs run: delays (``delay=`` / ``run_at=``), priorities (smaller first, FIFO within
one), and paused queues (persisted, seen by every "process" on the database)."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

import anyio
import pytest
from rt_support import Item, counts, wait_for

from rota.app import App
from rota.domain.job import JobState

pytestmark = pytest.mark.anyio

DELAY_S = 0.3


@pytest.mark.parametrize("how", ["delay", "run_at_datetime", "run_at_ms"])
async def test_delayed_job_does_not_start_before_its_time(
    make_app: Callable[..., App], how: str
) -> None:
    app = make_app()
    started: dict[int, float] = {}

    @app.job(queue="q")
    async def record(args: Item) -> None:
        started[args.n] = time.monotonic()

    async with app.run():
        with anyio.fail_after(10):
            now = datetime.datetime.now(datetime.UTC)
            t0 = time.monotonic()
            if how == "delay":
                delayed = await record.enqueue(Item(1), delay=DELAY_S)
            elif how == "run_at_datetime":
                at = now + datetime.timedelta(seconds=DELAY_S)
                delayed = await record.enqueue(Item(1), run_at=at)
            else:
                at_ms = round(now.timestamp() * 1000) + round(DELAY_S * 1000)
                delayed = await record.enqueue(Item(1), run_at=at_ms)
            ready = await record.enqueue(Item(2))
            assert await delayed.status() is JobState.DELAYED
            await delayed.result()
            await ready.result()
    # wall-clock ms vs monotonic s: allow a few ms of rounding
    assert started[1] - t0 >= DELAY_S - 0.01
    assert started[1] - t0 < DELAY_S + 1.0  # promoted by the next sweep, not much later
    assert started[2] - t0 < DELAY_S  # the ready job was not held back
    job = await delayed.info()
    assert (job.state, job.attempt) == (JobState.COMPLETED, 1)


async def test_delay_in_the_past_runs_at_once(make_app: Callable[..., App]) -> None:
    app = make_app()

    @app.job(queue="q")
    async def record(args: Item) -> int:
        return args.n

    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    handle = await record.enqueue(Item(3), run_at=past)
    assert await handle.status() is JobState.WAITING
    async with app.run():
        assert await handle.result(timeout=5) == 3


async def test_priority_smaller_first_fifo_within_one(make_app: Callable[..., App]) -> None:
    app = make_app(concurrency=1)
    order: list[str] = []

    @app.job(queue="q", priority=2)
    async def record(args: Item) -> None:
        order.append(args.label)

    plan = [("a", 5), ("b", 0), ("c", -1), ("d", 5), ("e", 0), ("f", None), ("g", -1)]
    handles = []
    for label, priority in plan:
        options = {} if priority is None else {"priority": priority}
        handles.append(await record.enqueue(Item(0, label=label), **options))
        await anyio.sleep(0.002)  # distinct enqueue times, so FIFO is by time and by id
    assert (await handles[5].info()).priority == 2  # the job's default priority
    async with app.run():
        with anyio.fail_after(10):
            for handle in handles:
                await handle.result()
    assert order == ["c", "g", "b", "e", "f", "a", "d"]


async def test_at_most_concurrency_jobs_run_at_once(make_app: Callable[..., App]) -> None:
    app = make_app(concurrency=3)
    running = 0
    peak = 0

    @app.job(queue="q")
    async def work(args: Item) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.1)
        running -= 1

    handles = await work.enqueue_many([Item(i) for i in range(9)])
    t0 = time.monotonic()
    async with app.run():
        with anyio.fail_after(10):
            for handle in handles:
                await handle.result()
    elapsed = time.monotonic() - t0
    assert peak == 3
    assert 0.29 <= elapsed < 1.5  # three waves of three, not nine in a row


# -- pause / resume ----------------------------------------------------------------------------


async def test_pause_is_persisted_and_holds_jobs_until_resume(
    make_app: Callable[..., App], db_path: str
) -> None:
    app = make_app(db_path)
    other = make_app(db_path)  # another "process" on the same database
    started: list[int] = []

    @app.job(queue="q")
    async def record(args: Item) -> None:
        started.append(args.n)

    await app.queue("q").pause()
    assert await other.queue("q").is_paused()
    assert not await other.queue("elsewhere").is_paused()
    async with app.run():
        with anyio.fail_after(10):
            handles = await record.enqueue_many([Item(i) for i in range(3)])
            await anyio.sleep(0.4)  # several sweeps and wake-ups: nothing may start
            assert started == []
            assert await counts(app, "q") == {"waiting": 3}
            await app.queue("q").resume()
            assert not await other.queue("q").is_paused()
            for handle in handles:
                await handle.result()
    assert sorted(started) == [0, 1, 2]


async def test_pause_from_another_process_stops_claims_and_resume_there_restarts_them(
    make_app: Callable[..., App], db_path: str
) -> None:
    app = make_app(db_path)
    other = make_app(db_path)
    started: list[int] = []

    @app.job(queue="q")
    async def record(args: Item) -> None:
        started.append(args.n)

    async with app.run():
        with anyio.fail_after(10):
            await (await record.enqueue(Item(0))).result()
            await other.queue("q").pause()
            handles = await record.enqueue_many([Item(i) for i in range(1, 4)])
            await anyio.sleep(0.4)
            assert started == [0]
            assert await app.queue("q").is_paused()
            await other.queue("q").resume()
            for handle in handles:
                await handle.result()
    assert sorted(started) == [0, 1, 2, 3]


async def test_runtime_paused_locally_resumes_when_another_process_resumes(
    make_app: Callable[..., App], db_path: str
) -> None:
    app = make_app(db_path)
    other = make_app(db_path)
    started: list[int] = []

    @app.job(queue="q")
    async def record(args: Item) -> None:
        started.append(args.n)

    async with app.run():
        await app.queue("q").pause()  # through this runtime (Queue actor → pool)
        assert await other.queue("q").is_paused()
        handle = await record.enqueue(Item(1))
        await anyio.sleep(0.3)
        assert started == []
        await other.queue("q").resume()  # e.g. an operator's CLI
        assert not await app.queue("q").is_paused()
        try:
            await wait_for(lambda: bool(started), timeout=2.0, what="the job to start")
        finally:
            await app.queue("q").resume()  # unblock, so the runtime stops cleanly
        await handle.result(timeout=5)


async def test_pause_stops_jobs_claimed_ahead_from_starting(
    make_app: Callable[..., App],
) -> None:
    app = make_app(concurrency=1, prefetch=3)
    started: list[int] = []
    gate = anyio.Event()

    @app.job(queue="q")
    async def work(args: Item) -> int:
        started.append(args.n)
        if args.n == 0:
            await gate.wait()
        return args.n

    handles = await work.enqueue_many([Item(i) for i in range(3)])
    async with app.run():
        with anyio.fail_after(10):
            await wait_for(lambda: started == [0], what="the first job to start")
            await app.queue("q").pause()
            gate.set()  # the running job finishes: "running ones finish"
            await handles[0].result()
            await anyio.sleep(0.3)
            started_while_paused = list(started)
            await app.queue("q").resume()
            for handle in handles:
                await handle.result()
    assert started_while_paused == [0]

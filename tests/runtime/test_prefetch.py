"""Prefetch in a running runtime: ``"auto"`` (the default) claims ahead while the queue is
deep and stops as soon as it is shallow, so runtimes sharing a queue share it; a number is
fixed. ``concurrency`` stays the number of jobs that run at once either way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from rt_support import Item, wait_for

from rota.actors.prefetch import AUTO_PREFETCH_MAX
from rota.actors.worker_pool import WorkerPool, WorkerPoolStatistics
from rota.app import App

pytestmark = pytest.mark.anyio


def pool_of(runtime: Any, queue: str = "q") -> WorkerPool:
    pool = runtime.pools[queue].actor
    assert isinstance(pool, WorkerPool)
    return pool


async def drain_recording_the_pool(
    app: App, jobs: int, *, after: Callable[[WorkerPool], Any] | None = None
) -> list[WorkerPoolStatistics]:
    """Run ``jobs`` no-op jobs enqueued before the runtime starts (a deep queue); each
    records its pool's statistics as it starts."""
    seen: list[WorkerPoolStatistics] = []
    runtimes: list[Any] = []

    @app.job(queue="q")
    async def record(args: Item) -> None:
        seen.append(pool_of(runtimes[0]).statistics())

    await record.enqueue_many([Item(n) for n in range(jobs)])
    async with app.run() as runtime:
        runtimes.append(runtime)
        await wait_for(lambda: len(seen) == jobs, timeout=30, what=f"{jobs} jobs to run")
        if after is not None:
            await after(pool_of(runtime))
    return seen


async def test_auto_prefetch_grows_while_the_queue_is_deep_and_drops_to_0_when_it_empties(
    make_app: Callable[..., App],
) -> None:
    app = make_app(concurrency=4)  # prefetch: the default, "auto"

    async def back_to_zero(pool: WorkerPool) -> None:
        # the claim after the last jobs comes up short: free slots only again
        await wait_for(lambda: pool.statistics().prefetch == 0, what="prefetch back to 0")

    seen = await drain_recording_the_pool(app, 3000, after=back_to_zero)
    assert seen[0].prefetch == 0  # nothing claimed ahead before the queue proved deep
    sizes = [s.prefetch for s in seen]
    assert max(sizes) >= 4 * 4, sizes[::100]  # doubled from concurrency, more than once
    assert max(sizes) <= AUTO_PREFETCH_MAX
    # concurrency is still the number of jobs that run at once
    assert max(s.running for s in seen) <= 4
    assert max(s.running + s.buffered for s in seen) <= 4 + AUTO_PREFETCH_MAX


@pytest.mark.parametrize("prefetch", [0, 6])
async def test_a_prefetch_set_to_a_number_stays_that_number(
    make_app: Callable[..., App], prefetch: int
) -> None:
    app = make_app(concurrency=4, prefetch=prefetch)
    seen = await drain_recording_the_pool(app, 1000)
    assert {s.prefetch for s in seen} == {prefetch}
    assert max(s.running for s in seen) <= 4
    assert max(s.running + s.buffered for s in seen) <= 4 + prefetch


async def test_two_runtimes_share_a_shallow_queue_fairly(
    make_app: Callable[..., App], db_path: str
) -> None:
    """Two runtimes (as two worker processes would) on one database, both running before
    the jobs come. First a deep queue (both claim ahead), then waves a little deeper than
    their slots together: a prefetch that stayed up after the deep queue (or kept growing)
    would let the runtime that notices a wave first take all of it."""
    waves, per_wave = 12, 24
    ran = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0}  # the largest prefetch each runtime's pool had
    runtimes: dict[str, Any] = {}

    def worker(name: str) -> App:
        app = make_app(db_path, concurrency=4)

        @app.job(name="work", queue="q")
        async def work(args: Item) -> None:
            ran[name] += 1
            peak[name] = max(peak[name], pool_of(runtimes[name]).prefetch)
            await anyio.sleep(0.002)

        return app

    a, b = worker("a"), worker("b")
    producer = make_app(db_path)  # no runtime: enqueues as another process would

    @producer.job(name="work", queue="q")
    async def work(args: Item) -> None:
        raise AssertionError("the producer runs nothing")

    async def run(jobs: int) -> dict[str, int]:
        before = dict(ran)
        handles = await work.enqueue_many([Item(n) for n in range(jobs)])
        for handle in handles:
            await handle.result(timeout=30)
        return {k: ran[k] - before[k] for k in ran}

    async with a.run() as runtimes["a"], b.run() as runtimes["b"]:
        deep = await run(1000)
        assert min(peak.values()) >= 8, (deep, peak)  # both claimed ahead
        shares = []
        for _ in range(waves):
            await anyio.sleep(0.01)
            shares.append(await run(per_wave))
    total = {k: sum(share[k] for share in shares) for k in ran}
    assert sum(total.values()) == waves * per_wave
    assert min(total.values()) >= waves * per_wave // 4, shares
    # and wave by wave: both took part in most of them
    assert sum(min(share.values()) > 0 for share in shares) >= waves // 2, shares

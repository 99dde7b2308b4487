"""The runtime rides out its environment: a full disk (it waits, degraded, and goes on
when space returns), a database file deleted or replaced under it (it stops, saying so),
two runtimes in one process (not taken for dead), a forward step of the wall clock (no
live lease is rescued)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from rt_support import Item, wait_for, wait_state

import rota
from rota.app import App, Context
from rota.domain.job import JobOptions, JobState
from rota.domain.lifecycle import new_job
from rota.errors import StorageError
from rota.runtime import Runtime
from rota.storage.engine import LeaseRef
from rota.storage.sqlite import SqliteEngine
from rota.testing import Clock

pytestmark = pytest.mark.anyio


async def on_store_thread(runtime: Runtime, sql: str) -> None:
    """Run one statement on the Store's own connection, on its thread."""
    store: Any = runtime.store_ref.actor
    await store._thread.run(lambda engine: engine._conn.execute(sql).fetchall())


# -- a full disk --------------------------------------------------------------------------------


async def test_a_full_disk_degrades_the_worker_which_goes_on_when_space_returns(
    make_app: Callable[..., App], db_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(db_path, concurrency=4)
    runs: list[int] = []

    @app.job(name="work", queue="q", backoff=rota.fixed(0))
    async def work(args: Item) -> str:
        runs.append(args.n)
        return "x" * 2000  # results need pages: a full disk stops completions

    async with app.run() as runtime:
        assert runtime.health().status == "ok"
        # No page may be added to the file any more: the disk is full for this worker.
        await on_store_thread(runtime, "PRAGMA max_page_count = 1")
        caplog.clear()
        # another connection (another process) has room: it enqueues
        handles = work.enqueue_many_sync([Item(n) for n in range(40)])
        await wait_for(
            lambda: runtime.health().status == "degraded", what="the Store degraded", timeout=10
        )
        health = runtime.health()
        assert "full" in health.problems[0] and db_path in health.problems[0]
        # The worker stays up past the point where restarts used to give up (1.5 s).
        await anyio.sleep(2.5)
        assert runtime.health().status == "degraded"
        assert runtime.root.statistics().total_restarts == 0
        errors = [
            r for r in caplog.records if r.name == "rota.store" and r.levelno >= logging.ERROR
        ]
        assert len(errors) == 1, [r.getMessage() for r in errors]  # rate-limited
        assert "full" in errors[0].getMessage() and db_path in errors[0].getMessage()
        # Space returns: the same worker goes on, nothing lost.
        await on_store_thread(runtime, "PRAGMA max_page_count = 1073741823")
        for handle in handles:
            assert await handle.result(timeout=20) == "x" * 2000
        assert runtime.health().status == "ok"
    assert sorted(set(runs)) == list(range(40))
    counts = {s: n for s, n in (await app.queue("q").counts()).items() if n}
    assert counts == {JobState.COMPLETED: 40}


# -- the database file deleted or replaced --------------------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_database_deleted_or_replaced_under_a_worker_stops_it_naming_the_file(
    make_app: Callable[..., App], db_path: str, tmp_path: Any, how: str
) -> None:
    app = make_app(db_path)

    @app.job(name="work", queue="q")
    async def work(args: Item) -> int:
        return args.n

    assert await work.enqueue(Item(1))
    with pytest.raises(ExceptionGroup) as caught:
        with anyio.fail_after(10):
            async with app.run() as runtime:
                assert runtime.health().status == "ok"
                if how == "deleted":
                    for suffix in ("", "-wal", "-shm"):
                        os.remove(db_path + suffix)
                else:
                    other = str(tmp_path / "other.db")
                    shutil.copy(db_path, other)
                    os.replace(other, db_path)
                await anyio.sleep_forever()
    assert caught.group_contains(
        StorageError, match=f"database file {db_path} was {how}.* while this process"
    )
    assert runtime.health().status == "failed"


# -- two runtimes in one process ------------------------------------------------------------------


def two_apps(
    make_app: Callable[..., App], db_path: str, **options: Any
) -> tuple[App, App, anyio.Event, anyio.Event]:
    """Two apps on one database: the first's job ``long`` (queue q, max_stalls 0) sets
    ``started`` and runs until ``go_on``; the second's ``other`` (queue r) echoes."""
    first = make_app(db_path, **options)
    second = make_app(db_path, **options)
    started = anyio.Event()
    go_on = anyio.Event()

    @first.job(name="long", queue="q", max_stalls=0)
    async def long(args: Item, ctx: Context) -> int:
        started.set()
        await go_on.wait()
        return ctx.attempt

    @second.job(name="other", queue="r")
    async def other(args: Item) -> int:
        return args.n

    return first, second, started, go_on


async def test_two_runtimes_in_one_process_do_not_take_each_other_for_dead(
    make_app: Callable[..., App], db_path: str
) -> None:
    first, second, started, go_on = two_apps(make_app, db_path)
    handle = await first.definition("long").enqueue(Item(1))
    async with first.run():
        await started.wait()
        before = await handle.info()
        async with second.run():  # its start must not release the first one's leases
            assert await (await second.definition("other").enqueue(Item(5))).result(5) == 5
            job = await handle.info()
            assert (job.state, job.token, job.stalls) == (JobState.ACTIVE, before.token, 0)
            go_on.set()
            assert await handle.result(timeout=5) == 1
    job = await handle.info()
    assert (job.state, job.attempt, job.stalls) == (JobState.COMPLETED, 1, 0)


# -- the wall clock steps forward ----------------------------------------------------------


async def test_a_forward_clock_step_never_makes_a_runtime_rescue_live_leases(
    make_app: Callable[..., App], db_path: str
) -> None:
    clock = Clock()  # the second app is another runtime on this host, with the same clock
    first, second, started, go_on = two_apps(make_app, db_path, clock=clock, lease_ttl_s=1.0)
    handle = await first.definition("long").enqueue(Item(1))
    async with first.run() as runtime, second.run() as other_runtime:
        await started.wait()
        before = await wait_state(handle, JobState.ACTIVE)
        clock.advance(120)  # NTP steps the clock two minutes forward: every lease expired
        # Its own sweep, now and after one ttl (monotonic), spares the leases it holds...
        assert (await runtime.sweep()).requeued == []
        await anyio.sleep(1.5)  # sweeps every 50 ms, renewals every ttl/3 meanwhile
        assert (await runtime.sweep()).requeued == []
        assert (await other_runtime.sweep()).requeued == []
        # ...and the other runtime waited one ttl before rescuing anything: renewed by then.
        job = await handle.info()
        assert (job.state, job.token, job.stalls) == (JobState.ACTIVE, before.token, 0)
        assert job.lease_expires_at_ms is not None and job.lease_expires_at_ms > clock.now_ms
        go_on.set()
        assert await handle.result(timeout=5) == 1
    job = await handle.info()
    assert (job.state, job.attempt, job.stalls) == (JobState.COMPLETED, 1, 0)


def test_rescue_spares_the_leases_its_caller_holds(db_path: str) -> None:
    now = [1_700_000_000_000]
    with SqliteEngine(db_path, clock=lambda: now[0]) as engine:
        engine.migrate()
        engine.enqueue([new_job("t", b"{}", JobOptions(), now[0]) for _ in range(2)])
        mine, theirs = engine.claim("default", "me", 2, 1000)
        assert mine.token is not None
        now[0] += 5000
        rescued = engine.rescue_expired([LeaseRef(mine.id, mine.token)])
        assert rescued.requeued == [theirs.id]
        assert engine.get(mine.id).state is JobState.ACTIVE
        # a spared id with another token (an older attempt) is not spared
        assert engine.rescue_expired([LeaseRef(mine.id, mine.token + 1)]).requeued == [mine.id]

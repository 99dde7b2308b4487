"""Thread mode: plain ``def`` handlers run on the queue's pykka handler threads.

Per-thread start and stop hooks, leases renewed by the loop while a handler blocks, an
event loop that never waits for a thread, timeouts and cancels that abandon a thread (it
cannot be killed) and give its slot to a fresh one, progress and logs from a thread, the
same outcomes as async handlers, ``mode=`` validation, and one ``concurrency`` shared by
async and sync jobs of a queue."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import pytest
from rt_support import Doubled, Item, heartbeat, wait_for, wait_state

import rota
from rota.app import App, Context, SyncContext
from rota.domain.event import EventKind, Progress
from rota.domain.job import JobState
from rota.errors import ConfigError, JobFailed
from rota.testing import Clock, drain

pytestmark = pytest.mark.anyio

#: Threading primitives shared with handler threads never wait for longer than this.
BLOCK_S = 5.0


def events_of(app: App, job_id: int) -> list[tuple[EventKind, int, bytes | None]]:
    engine = app.engine()
    try:
        return [(e.kind, e.attempt, e.data) for e in engine.events(0) if e.job_id == job_id]
    finally:
        engine.close()


def threads_of(runtime: Any, queue: str) -> dict[str, int]:
    pools = runtime.statistics()["pools"]
    assert pools == runtime.describe_pools()
    threads: dict[str, int] = pools[queue]["threads"]
    return threads


# -- per-thread hooks --------------------------------------------------------------------------


async def test_start_hook_runs_once_per_thread_and_stop_hook_at_shutdown(
    make_app: Callable[..., App],
) -> None:
    app = make_app(concurrency=3)
    local = threading.local()
    lock = threading.Lock()
    started: list[int] = []
    stopped: list[tuple[int, bool]] = []
    ran: list[tuple[int, int, bool]] = []
    together = threading.Barrier(3, timeout=BLOCK_S)  # the first three jobs overlap

    @app.on_thread_start
    def connect() -> None:
        local.connected = True
        with lock:
            started.append(threading.get_ident())

    @app.on_thread_stop
    def disconnect() -> None:
        with lock:
            stopped.append((threading.get_ident(), getattr(local, "connected", False)))

    @app.job(queue="q")
    def work(args: Item, ctx: SyncContext) -> int:
        if args.n < 3:
            together.wait()
        with lock:
            ran.append((args.n, threading.get_ident(), getattr(local, "connected", False)))
        return args.n

    handles = await work.enqueue_many([Item(n) for n in range(9)])
    async with app.run() as runtime:
        for n, handle in enumerate(handles):
            assert await handle.result(timeout=BLOCK_S) == n
        threads = threads_of(runtime, "q")
        assert (threads["size"], threads["alive"], threads["busy"]) == (3, 3, 0)
        assert (threads["abandoned"], threads["jobs"]) == (0, 9)
        assert stopped == []  # the threads live until the runtime stops
    assert sorted(n for n, _, _ in ran) == list(range(9))
    assert len(started) == 3  # once per thread...
    assert len(set(started)) == 3
    assert {ident for _, ident, _ in ran} == set(started)  # ...on the threads that ran jobs
    assert all(connected for _, _, connected in ran)  # each after its thread's start hook
    # at shutdown: each thread's stop hook ran once, on that thread
    assert sorted(ident for ident, _ in stopped) == sorted(started)
    assert all(connected for _, connected in stopped)


async def test_a_failing_start_hook_runs_again_before_the_next_job_on_its_thread(
    make_app: Callable[..., App],
) -> None:
    app = make_app(concurrency=1)
    hook_threads: list[int] = []
    job_threads: list[int] = []

    @app.on_thread_start
    def connect() -> None:
        hook_threads.append(threading.get_ident())
        if len(hook_threads) == 1:
            raise ConnectionError("database is down")

    @app.job(queue="q", max_attempts=1)
    def work(args: Item) -> int:
        job_threads.append(threading.get_ident())
        return args.n

    await work.enqueue(Item(1))
    second = await work.enqueue(Item(2))
    async with app.run():
        assert await second.result(timeout=BLOCK_S) == 2
    assert len(hook_threads) == 2  # failed, then tried again before the next job
    assert job_threads == [hook_threads[0]]  # the second job, on the same thread
    assert hook_threads[1] == hook_threads[0]


async def test_a_failing_start_hook_fails_the_job_with_its_exception(
    make_app: Callable[..., App],
) -> None:
    app = make_app(concurrency=1, lease_ttl_s=0.6)
    calls: list[int] = []

    @app.on_thread_start
    def connect() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database is down")

    @app.job(queue="q", max_attempts=1)
    def work(args: Item) -> int:
        return args.n

    first = await work.enqueue(Item(1))
    async with app.run():
        with pytest.raises(JobFailed) as caught:
            await first.result(timeout=BLOCK_S)
    job = await first.info()
    assert (job.state, job.attempt, job.stalls) == (JobState.FAILED, 1, 0)
    assert "ConnectionError: database is down" in (caught.value.error or "")


# -- leases and the event loop -----------------------------------------------------------------


async def test_a_sync_handler_blocking_longer_than_the_ttl_is_not_rescued(
    make_app: Callable[..., App],
) -> None:
    app = make_app(lease_ttl_s=0.6, scheduler_interval_s=0.05)
    runs: list[int] = []

    @app.job(queue="q", max_attempts=3, backoff=rota.fixed(0))
    def long(args: Item, ctx: SyncContext) -> int:
        runs.append(ctx.attempt)
        time.sleep(1.8)  # three lease ttls, without a single await
        return ctx.attempt

    handle = await long.enqueue(Item(1))
    async with app.run():
        first = await wait_state(handle, JobState.ACTIVE)
        await anyio.sleep(1.0)  # past the first lease's expiry, the handler still blocking
        later = await handle.info()
        assert (later.state, later.token) == (JobState.ACTIVE, first.token)  # the same lease
        assert first.lease_expires_at_ms is not None
        assert later.lease_expires_at_ms is not None
        assert later.lease_expires_at_ms > first.lease_expires_at_ms  # ...renewed
        assert await handle.result(timeout=BLOCK_S) == 1
    assert runs == [1]
    job = await handle.info()
    assert (job.state, job.attempt, job.stalls) == (JobState.COMPLETED, 1, 0)
    assert [(kind, attempt) for kind, attempt, _ in events_of(app, handle.id)] == [
        (EventKind.ENQUEUED, 0),
        (EventKind.ACTIVE, 1),
        (EventKind.COMPLETED, 1),
    ]


async def test_the_event_loop_keeps_ticking_while_a_sync_handler_blocks(
    make_app: Callable[..., App],
) -> None:
    app = make_app()
    entered = threading.Event()

    @app.job(queue="q")
    def block(args: Item) -> int:
        entered.set()
        time.sleep(0.5)
        return args.n

    gaps: list[float] = []
    handle = await block.enqueue(Item(7))
    async with app.run(), heartbeat(gaps):
        await wait_for(entered.is_set, timeout=BLOCK_S, what="the handler blocking")
        ticks_before = len(gaps)
        assert await handle.result(timeout=BLOCK_S) == 7
    ticks_during = len(gaps) - ticks_before
    assert ticks_during >= 10  # the loop ran all along the 0.5 s the handler blocked
    assert max(gaps) < 0.25


# -- timeout and cancel ------------------------------------------------------------------------


async def test_timeout_abandons_the_thread_retries_and_refills_the_slot(
    make_app: Callable[..., App],
) -> None:
    app = make_app(concurrency=1)
    release = threading.Event()
    lock = threading.Lock()
    saw_cancelled: list[tuple[int, int]] = []  # (attempt, thread)
    returned: list[int] = []
    started: list[int] = []
    stopped: list[int] = []

    @app.on_thread_start
    def connect() -> None:
        with lock:
            started.append(threading.get_ident())

    @app.on_thread_stop
    def disconnect() -> None:
        with lock:
            stopped.append(threading.get_ident())

    @app.job(queue="q", max_attempts=2, backoff=rota.fixed(0), timeout=0.2)
    def hang(args: Item, ctx: SyncContext) -> int:
        deadline = time.monotonic() + BLOCK_S
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        with lock:
            saw_cancelled.append((ctx.attempt, threading.get_ident()))
        release.wait(BLOCK_S)  # still running after the worker gave up on it
        with lock:
            returned.append(threading.get_ident())
        return ctx.attempt

    @app.job(queue="q")
    def quick(args: Item) -> int:
        return threading.get_ident()

    handle = await hang.enqueue(Item(1))
    async with app.run() as runtime:
        with pytest.raises(JobFailed, match=r"timed out after 0\.2 s") as caught:
            await handle.result(timeout=BLOCK_S)
        # both attempts' threads were told, and are still running their handler
        await wait_for(lambda: len(saw_cancelled) == 2, what="both handlers to see cancelled")
        assert [attempt for attempt, _ in saw_cancelled] == [1, 2]
        abandoned = [ident for _, ident in saw_cancelled]
        assert len(set(abandoned)) == 2
        threads = threads_of(runtime, "q")
        assert (threads["abandoned"], threads["alive"], threads["busy"]) == (2, 0, 0)
        assert stopped == []
        # the slot was refilled: a later job runs, on a fresh thread
        later = await quick.enqueue(Item(0))
        fresh = await later.result(timeout=BLOCK_S)
        assert fresh not in abandoned
        assert (threads_of(runtime, "q")["abandoned"], threads_of(runtime, "q")["alive"]) == (
            2,
            1,
        )
        # an abandoned thread stops (its stop hook runs on it) once its handler returns
        release.set()
        await wait_for(lambda: len(stopped) == 2, what="the abandoned threads' stop hooks")
        assert sorted(stopped) == sorted(abandoned)
        assert sorted(returned) == sorted(abandoned)
        await wait_for(
            lambda: threads_of(runtime, "q")["abandoned"] == 0, what="no abandoned threads"
        )
    assert sorted(started) == sorted([*abandoned, fresh])
    assert sorted(stopped) == sorted(started)  # the fresh one's at shutdown
    assert "its thread cannot be killed" in (caught.value.error or "")
    job = await handle.info()
    assert (job.state, job.attempt, job.stalls) == (JobState.FAILED, 2, 0)
    assert (job.error or "").startswith("timed out after 0.2 s")
    assert job.result is None  # what the abandoned handlers returned was dropped
    kinds = events_of(app, handle.id)
    assert [(kind, attempt) for kind, attempt, _ in kinds] == [
        (EventKind.ENQUEUED, 0),
        (EventKind.ACTIVE, 1),
        (EventKind.RETRYING, 1),
        (EventKind.ACTIVE, 2),
        (EventKind.FAILED, 2),
    ]
    assert b"timed out after 0.2 s" in (kinds[2][2] or b"")


TTL_S = 0.9  # renewals (and so cancel checks) every 0.3 s


async def test_cancelling_a_running_sync_job_stops_waiting_for_it_within_a_third_of_the_ttl(
    make_app: Callable[..., App],
) -> None:
    app = make_app(lease_ttl_s=TTL_S)
    entered = threading.Event()
    noticed = threading.Event()

    @app.job(queue="q", max_attempts=3)
    def hang(args: Item, ctx: SyncContext) -> None:
        entered.set()
        deadline = time.monotonic() + BLOCK_S
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        if ctx.cancelled:
            noticed.set()

    handle = await hang.enqueue(Item(1))
    async with app.run():
        with anyio.fail_after(BLOCK_S):
            await wait_for(entered.is_set, what="the handler to start")
            t0 = time.monotonic()
            assert await handle.cancel() is JobState.ACTIVE
            job = await wait_state(handle, JobState.CANCELLED)
            elapsed = time.monotonic() - t0
            await wait_for(noticed.is_set, what="the handler to see ctx.cancelled")
    assert elapsed < TTL_S / 3 + 0.35  # the next renewal tick, not a lease expiry
    assert (job.attempt, job.stalls) == (1, 0)
    assert job.error == "cancelled on request"
    assert [kind for kind, _, _ in events_of(app, handle.id)] == [
        EventKind.ENQUEUED,
        EventKind.ACTIVE,
        EventKind.CANCELLED,
    ]


# -- what a sync handler reports and returns ---------------------------------------------------


async def test_progress_and_logs_from_a_sync_handler_are_stored_and_emitted(
    make_app: Callable[..., App],
) -> None:
    app = make_app()
    seen_stored: list[Progress | None] = []

    @app.job(queue="q")
    def steps(args: Item, ctx: SyncContext) -> str:
        for step in range(1, args.n + 1):
            ctx.log(f"step {step}")
            ctx.progress(step * 100 / args.n, step=step, total=args.n, message=f"at {step}")
            engine = app.engine()  # progress() returned: the report is already stored
            try:
                stored = engine.get(ctx.job_id).progress
            finally:
                engine.close()
            seen_stored.append(
                None if stored is None else msgspec.json.decode(stored, type=Progress)
            )
        ctx.log("done")  # after the last report: stored when the attempt ends
        return "ok"

    handle = await steps.enqueue(Item(2))
    async with app.run():
        assert await handle.result(timeout=BLOCK_S) == "ok"
    assert seen_stored == [
        Progress(value=50.0, step=1, total=2, message="at 1"),
        Progress(value=100.0, step=2, total=2, message="at 2"),
    ]
    assert await handle.progress() == Progress(value=100.0, step=2, total=2, message="at 2")
    logs = await handle.logs()
    assert [entry.message for entry in logs] == ["step 1", "step 2", "done"]
    assert {(entry.job_id, entry.attempt) for entry in logs} == {(handle.id, 1)}
    events = events_of(app, handle.id)
    assert [kind for kind, _, _ in events] == [
        EventKind.ENQUEUED,
        EventKind.ACTIVE,
        EventKind.PROGRESS,
        EventKind.PROGRESS,
        EventKind.COMPLETED,
    ]
    reported = [
        msgspec.json.decode(data or b"", type=Progress)
        for kind, _, data in events
        if kind is EventKind.PROGRESS
    ]
    assert [(p.step, p.message) for p in reported] == [(1, "at 1"), (2, "at 2")]


async def test_sync_handler_outcomes_match_async_ones(make_app: Callable[..., App]) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    attempts: list[tuple[str, int, int]] = []

    @app.job(queue="q", max_attempts=5, backoff=rota.fixed(30))
    def polite(args: Item, ctx: SyncContext) -> Doubled:
        attempts.append(("polite", ctx.attempt, clock.now_ms))
        if ctx.attempt == 1:
            raise rota.Retry(delay_s=5, reason="rate limited")
        return Doubled(value=args.n * 2, label=args.label)

    @app.job(queue="q", max_attempts=5, backoff=rota.fixed(1))
    def doomed(args: Item, ctx: SyncContext) -> None:
        attempts.append(("doomed", ctx.attempt, clock.now_ms))
        raise rota.Unrecoverable("bad address")

    @app.job(queue="q", max_attempts=2, backoff=rota.fixed(10))
    def broken(args: Item, ctx: SyncContext) -> None:
        attempts.append(("broken", ctx.attempt, clock.now_ms))
        raise ValueError(f"still broken on attempt {ctx.attempt}")

    @app.job(queue="q")
    def listing(args: Item) -> list[int]:
        return list(range(args.n))

    ok = await polite.enqueue(Item(21, "x"))
    bad = await doomed.enqueue(Item(1))
    failing = await broken.enqueue(Item(1))
    plain = await listing.enqueue(Item(3))
    t0 = clock.now_ms
    result = await drain(app, clock=clock, timeout_s=10)
    assert (result.completed, result.failed) == (2, 2)
    # Retry(delay_s=5) overrides the backoff of 30 s; Unrecoverable is never retried
    assert sorted((name, attempt, at - t0) for name, attempt, at in attempts) == [
        ("broken", 1, 0),
        ("broken", 2, 10_000),
        ("doomed", 1, 0),
        ("polite", 1, 0),
        ("polite", 2, 5_000),
    ]
    assert await ok.result(timeout=5) == Doubled(value=42, label="x")  # decoded
    assert await plain.result(timeout=5) == [0, 1, 2]
    with pytest.raises(JobFailed, match="failed: unrecoverable: bad address"):
        await bad.result(timeout=5)
    assert (await bad.info()).attempt == 1
    job = await failing.info()
    assert (job.state, job.attempt) == (JobState.FAILED, 2)
    error = job.error or ""
    assert error.startswith("Traceback (most recent call last):")
    assert "in broken" in error  # the handler's frame
    assert error.rstrip().endswith("ValueError: still broken on attempt 2")
    retrying = [data for kind, _, data in events_of(app, ok.id) if kind is EventKind.RETRYING]
    assert len(retrying) == 1
    assert b"rate limited" in (retrying[0] or b"")


# -- configuration -----------------------------------------------------------------------------


async def test_mode_is_checked_against_the_handler(make_app: Callable[..., App]) -> None:
    app = make_app()

    async def coroutine(args: Item) -> None:
        return None

    def plain(args: Item) -> None:
        return None

    with pytest.raises(ConfigError, match="mode 'thread' is for plain def handlers"):
        app.job(mode="thread")(coroutine)
    with pytest.raises(ConfigError, match="mode 'async' needs an 'async def' handler"):
        app.job(mode="async")(plain)
    with pytest.raises(ConfigError, match="unknown mode 'threads', did you mean 'thread'"):
        app.job(mode="threads")(plain)  # type: ignore[call-overload]
    assert app.registry.jobs == {}  # nothing was registered by the refused ones

    by_default = app.job(name="by_default")(plain)
    explicit = app.job(name="explicit", mode="thread")(plain)
    on_loop = app.job(name="on_loop", mode="async")(coroutine)
    assert (app.mode(by_default), app.mode(explicit), app.mode(on_loop)) == (
        "thread",
        "thread",
        "async",
    )


# -- one concurrency for both modes ------------------------------------------------------------


async def test_async_and_sync_jobs_of_a_queue_share_its_concurrency(
    make_app: Callable[..., App],
) -> None:
    app = make_app(concurrency=3)
    lock = threading.Lock()
    running = 0
    peak = 0
    seen: list[int] = []

    def enter() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)

    def leave() -> None:
        nonlocal running
        with lock:
            running -= 1

    @app.job(queue="q")
    async def on_loop(args: Item, ctx: Context) -> str:
        enter()
        try:
            await anyio.sleep(0.05)
        finally:
            leave()
        return "async"

    @app.job(queue="q")
    def on_thread(args: Item, ctx: SyncContext) -> str:
        enter()
        try:
            time.sleep(0.05)
        finally:
            leave()
        return "thread"

    handles = []
    for n in range(8):
        handles.append(await on_loop.enqueue(Item(n)))
        handles.append(await on_thread.enqueue(Item(n)))
    results: list[str | None] = [None] * len(handles)
    async with app.run() as runtime:

        def sample() -> bool:  # the WorkerPool's own count of running jobs, as it goes
            seen.append(runtime.describe_pools()["q"]["running"])
            return all(result is not None for result in results)

        async def collect(i: int) -> None:
            results[i] = await handles[i].result(timeout=BLOCK_S)

        async with anyio.create_task_group() as tg:
            for i in range(len(handles)):
                tg.start_soon(collect, i)
            await wait_for(sample, timeout=BLOCK_S, interval=0.005, what="every job")
        pool = runtime.describe_pools()["q"]
    assert results == ["async", "thread"] * 8
    assert 2 <= peak <= 3  # they overlapped, never beyond the queue's concurrency
    assert max(seen) <= 3
    assert pool["concurrency"] == 3
    assert pool["threads"]["size"] == 3
    assert pool["threads"]["alive"] <= 3
    assert pool["threads"]["jobs"] == 8

"""Failed attempts: retries and their backoff (exact, under ``rota.testing.Clock`` and
``drain``), ``Retry(delay_s=...)``, ``Unrecoverable``, exhausted attempts, timeouts; and
``drain`` on a job that enqueues another."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from rt_support import Item, Other, counts, wait_for

import rota
from rota.app import App, Context
from rota.domain.event import EventKind
from rota.domain.job import JobState
from rota.errors import JobFailed
from rota.testing import Clock, drain

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("backoff", "offsets_s"),
    [
        pytest.param(rota.fixed(30), [0, 30, 60], id="fixed-30"),
        pytest.param(rota.exponential(10), [0, 10, 30], id="exponential-10"),
        pytest.param(rota.exponential(1, factor=3, max_s=2), [0, 1, 3], id="exponential-capped"),
        pytest.param(rota.linear(5), [0, 5, 15], id="linear-5"),
        pytest.param(rota.custom(lambda attempt: 7 * attempt), [0, 7, 21], id="custom"),
    ],
)
async def test_failing_twice_runs_three_times_spaced_by_the_backoff(
    make_app: Callable[..., App], backoff: Any, offsets_s: list[int]
) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    attempts: list[tuple[int, int]] = []

    @app.job(queue="q", max_attempts=5, backoff=backoff)
    async def flaky(args: Item, ctx: Context) -> str:
        attempts.append((ctx.attempt, clock.now_ms))
        if ctx.attempt <= 2:
            raise RuntimeError(f"boom {ctx.attempt}")
        return "third time lucky"

    handle = await flaky.enqueue(Item(1))
    t0 = clock.now_ms
    result = await drain(app, clock=clock, timeout_s=10)
    assert (result.completed, result.failed) == (1, 0)
    assert result.skipped_s == offsets_s[-1]
    assert [a for a, _ in attempts] == [1, 2, 3]
    assert [at - t0 for _, at in attempts] == [s * 1000 for s in offsets_s]
    assert await handle.result(timeout=5) == "third time lucky"
    job = await handle.info()
    assert (job.state, job.attempt, job.stalls) == (JobState.COMPLETED, 3, 0)


async def test_retry_delay_overrides_the_backoff(make_app: Callable[..., App]) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    attempts: list[int] = []

    @app.job(queue="q", max_attempts=5, backoff=rota.fixed(30))
    async def polite(args: Item, ctx: Context) -> int:
        attempts.append(clock.now_ms)
        if ctx.attempt == 1:
            raise rota.Retry(delay_s=5, reason="rate limited")
        if ctx.attempt == 2:
            raise rota.Retry()  # no delay given: the job's backoff
        return ctx.attempt

    handle = await polite.enqueue(Item(1))
    t0 = clock.now_ms
    result = await drain(app, clock=clock, timeout_s=10)
    assert result.completed == 1
    assert [at - t0 for at in attempts] == [0, 5_000, 35_000]
    assert await handle.result(timeout=5) == 3


async def test_retry_with_zero_delay_runs_again_at_once(make_app: Callable[..., App]) -> None:
    app = make_app()  # real time: no backoff to wait for
    attempts: list[int] = []

    @app.job(queue="q", max_attempts=3, backoff=rota.fixed(3600))
    async def again(args: Item, ctx: Context) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise rota.Retry(delay_s=0)
        return ctx.attempt

    handle = await again.enqueue(Item(1))
    async with app.run():
        assert await handle.result(timeout=5) == 3
    assert attempts == [1, 2, 3]


async def test_unrecoverable_fails_at_once(make_app: Callable[..., App]) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    calls: list[int] = []

    @app.job(queue="q", max_attempts=5, backoff=rota.fixed(1))
    async def doomed(args: Item, ctx: Context) -> None:
        calls.append(ctx.attempt)
        raise rota.Unrecoverable("bad address")

    handle = await doomed.enqueue(Item(1))
    result = await drain(app, clock=clock, timeout_s=10)
    assert (result.completed, result.failed, result.skipped_s) == (0, 1, 0)
    assert calls == [1]
    job = await handle.info()
    assert (job.state, job.attempt) == (JobState.FAILED, 1)
    assert job.error == "unrecoverable: bad address"
    with pytest.raises(JobFailed, match="failed: unrecoverable: bad address") as caught:
        await handle.result(timeout=5)
    assert caught.value.state == JobState.FAILED
    assert caught.value.job_id == handle.id


async def test_exhausted_attempts_fail_and_result_raises_job_failed(
    make_app: Callable[..., App],
) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    calls: list[int] = []

    @app.job(queue="q", max_attempts=3, backoff=rota.fixed(30))
    async def always(args: Item, ctx: Context) -> None:
        calls.append(ctx.attempt)
        raise ValueError(f"still broken on attempt {ctx.attempt}")

    handle = await always.enqueue(Item(1))
    ok = await always.enqueue(Item(2), max_attempts=1)  # a per-call override
    result = await drain(app, clock=clock, timeout_s=10)
    assert (result.completed, result.failed, result.skipped_s) == (0, 2, 60)
    assert sorted(calls) == [1, 1, 2, 3]
    job = await handle.info()
    assert (job.state, job.attempt) == (JobState.FAILED, 3)
    assert "ValueError: still broken on attempt 3" in (job.error or "")
    with pytest.raises(JobFailed, match="ValueError: still broken on attempt 3") as caught:
        await handle.result(timeout=5)
    assert caught.value.state == JobState.FAILED
    assert (await ok.info()).attempt == 1
    # every failed attempt but the last was a "retrying" event, the last one "failed"
    engine = app.engine()
    try:
        kinds = [e.kind for e in engine.events(0) if e.job_id == handle.id]
    finally:
        engine.close()
    assert kinds == [
        EventKind.ENQUEUED,
        EventKind.ACTIVE,
        EventKind.RETRYING,
        EventKind.ACTIVE,
        EventKind.RETRYING,
        EventKind.ACTIVE,
        EventKind.FAILED,
    ]


# -- timeouts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["definition", "enqueue"])
async def test_timeout_cancels_a_hanging_attempt_retries_then_fails(
    make_app: Callable[..., App], where: str
) -> None:
    app = make_app()
    attempts: list[float] = []
    stopped: list[int] = []

    @app.job(
        queue="q",
        max_attempts=2,
        backoff=rota.fixed(0),
        timeout=0.2 if where == "definition" else None,
    )
    async def hang(args: Item, ctx: Context) -> None:
        attempts.append(time.monotonic())
        try:
            await anyio.sleep_forever()
        finally:
            stopped.append(ctx.attempt)

    options = {"timeout": 0.2} if where == "enqueue" else {}
    t0 = time.monotonic()
    handle = await hang.enqueue(Item(1), **options)
    async with app.run():
        with pytest.raises(JobFailed, match=r"timed out after 0\.2 s"):
            await handle.result(timeout=10)
    elapsed = time.monotonic() - t0
    assert stopped == [1, 2]  # each attempt was really cancelled
    assert attempts[1] - attempts[0] >= 0.19
    assert 0.39 <= elapsed < 3.0
    job = await handle.info()
    assert (job.state, job.attempt, job.stalls) == (JobState.FAILED, 2, 0)
    assert job.error == "timed out after 0.2 s"


async def test_a_job_within_its_timeout_completes(make_app: Callable[..., App]) -> None:
    app = make_app()

    @app.job(queue="q", timeout=2.0)
    async def quick(args: Item) -> int:
        await anyio.sleep(0.05)
        return args.n

    handle = await quick.enqueue(Item(4))
    async with app.run():
        assert await handle.result(timeout=5) == 4


# -- drain -------------------------------------------------------------------------------------


async def test_drain_with_a_clock_completes_a_job_chain(make_app: Callable[..., App]) -> None:
    clock = Clock()
    app = make_app(clock=clock)
    ran: list[tuple[str, int]] = []

    @app.job(queue="q")
    async def second(args: Other) -> str:
        ran.append(("second", clock.now_ms))
        return args.text.upper()

    @app.job(queue="q")
    async def first(args: Item) -> int:
        ran.append(("first", clock.now_ms))
        # a follow-up job, an hour from now: drain moves the clock instead of waiting
        follow = await second.enqueue(Other(f"follow-up of {args.n}"), delay=3600)
        return follow.id

    handle = await first.enqueue(Item(9))
    t0 = clock.now_ms
    started = time.monotonic()
    result = await drain(app, clock=clock, timeout_s=10)
    assert time.monotonic() - started < 5
    assert (result.completed, result.failed, result.cancelled) == (2, 0, 0)
    assert result.skipped_s == 3600
    assert ran == [("first", t0), ("second", t0 + 3_600_000)]
    follow_id = await handle.result(timeout=5)
    assert await app.handle(follow_id).result(timeout=5) == "FOLLOW-UP OF 9"
    assert await counts(app, "q") == {"completed": 2}


async def test_a_retry_settled_while_the_feeder_waited_for_the_store_is_claimed(
    make_app: Callable[..., App],
) -> None:
    """A failure that ends while the pool's feeder waits to hand in other settlements is
    stored in that call (with no claim): its retry, due at once, is then claimed, not left
    waiting until something else wakes the pool."""
    app = make_app(concurrency=3, prefetch=0)
    finish = {"a": anyio.Event(), "b": anyio.Event()}
    attempts: list[int] = []

    @app.job(queue="q", backoff=rota.fixed(0))
    async def job(args: Other, ctx: Context) -> str:
        if args.text == "b":
            attempts.append(ctx.attempt)
            if ctx.attempt > 1:
                return "b again"
        await finish[args.text].wait()
        if args.text == "b":
            raise RuntimeError("b fails once")
        return args.text

    a, b = await job.enqueue(Other("a")), await job.enqueue(Other("b"))
    async with app.run() as runtime:
        pool: Any = runtime.pools["q"].actor
        # both run; the claim for 3 came up short: the pool waits to be told of work
        await wait_for(
            lambda: bool(attempts) and pool.running == 2 and not pool.maybe_work,
            what="both jobs running, the queue found empty",
        )
        async with pool.store_lock:  # the Store call is held up...
            finish["a"].set()  # ...while a completion asks for it
            await wait_for(
                lambda: pool.store_lock.statistics().tasks_waiting > 0,
                what="the feeder waiting for the store lock",
            )
            finish["b"].set()  # and b fails meanwhile: it rides along, unclaimed
            await wait_for(lambda: bool(pool.failures), what="b's failure")
        assert await a.result(timeout=5) == "a"
        assert await b.result(timeout=5) == "b again"
    assert attempts == [1, 2]

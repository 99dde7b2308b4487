"""``rota.Instrument``: one hook around every storage batch and one per ended attempt,
called only where an instrument overrides it; one that raises is removed, never the
runtime's problem."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from rt_support import Item, wait_for

import rota
from rota.actors._instruments import Instruments
from rota.app import App, Context
from rota.domain.instrument import AttemptEnded
from rota.testing import Clock, drain

pytestmark = pytest.mark.anyio


class Recorder(rota.Instrument):
    def __init__(self) -> None:
        self.batches: list[tuple[str, int, float | None, BaseException | None]] = []
        self.attempts: list[AttemptEnded] = []

    def storage_batch_started(self, operations: int) -> None:
        self.batches.append(("started", operations, None, None))

    def storage_batch_ended(
        self, operations: int, seconds: float, error: BaseException | None
    ) -> None:
        self.batches.append(("ended", operations, seconds, error))

    def attempt_ended(self, attempt: AttemptEnded) -> None:
        self.attempts.append(attempt)


async def test_every_attempt_and_storage_batch_reaches_the_instrument(
    make_app: Callable[..., App],
) -> None:
    recorder = Recorder()
    clock = Clock()
    app = make_app(clock=clock, instruments=[recorder])

    @app.job(name="flaky", queue="q", max_attempts=2, backoff=rota.fixed(1))
    async def flaky(args: Item, ctx: Context) -> int:
        if args.n == 1 and ctx.attempt == 1:
            raise ValueError("first try fails")
        if args.n == 2:
            raise rota.Unrecoverable("never")
        return args.n

    handles = [await flaky.enqueue(Item(n)) for n in (0, 1, 2)]
    result = await drain(app, clock=clock)
    assert (result.completed, result.failed) == (2, 1)
    seen = sorted((a.job_id, a.attempt, a.outcome, a.error) for a in recorder.attempts)
    ids = [h.id for h in handles]
    assert seen == [
        (ids[0], 1, "completed", None),
        (ids[1], 1, "retrying", "ValueError: first try fails"),
        (ids[1], 2, "completed", None),
        (ids[2], 1, "failed", "unrecoverable: never"),
    ]
    assert all(
        a.name == "flaky" and a.queue == "q" and a.max_attempts == 2
        for a in seen and recorder.attempts
    )
    assert all(a.seconds is not None and a.seconds >= 0 for a in recorder.attempts)
    # every batch is bracketed: started, then ended with its size, its time and no error
    assert recorder.batches
    kinds = [kind for kind, *_ in recorder.batches]
    assert kinds == ["started", "ended"] * (len(kinds) // 2)
    for started, ended in zip(recorder.batches[::2], recorder.batches[1::2], strict=True):
        assert started[1] == ended[1] >= 1
        assert ended[2] is not None and ended[2] >= 0 and ended[3] is None


async def test_a_failed_storage_batch_is_reported_with_its_error(
    make_app: Callable[..., App], db_path: str
) -> None:
    recorder = Recorder()
    app = make_app(db_path, instruments=[recorder])

    @app.job(name="work", queue="q")
    async def work(args: Item) -> str:
        return "x" * 2000  # results need pages

    def failed_batches() -> list[BaseException]:
        return [b[3] for b in recorder.batches if b[0] == "ended" and b[3] is not None]

    async with app.run() as runtime:
        store: object = runtime.store_ref.actor
        limit = "PRAGMA max_page_count = 1"  # the disk is full for the worker
        await store._thread.run(lambda engine: engine._conn.execute(limit).fetchall())  # type: ignore[attr-defined]
        handles = work.enqueue_many_sync([Item(n) for n in range(40)])  # another connection
        await wait_for(lambda: bool(failed_batches()), what="a failed batch", timeout=10)
        room = "PRAGMA max_page_count = 1073741823"
        await store._thread.run(lambda engine: engine._conn.execute(room).fetchall())  # type: ignore[attr-defined]
        for handle in handles:
            await handle.result(timeout=20)
    error = failed_batches()[0]
    assert isinstance(error, rota.StorageError) and "full" in str(error)


class Broken(rota.Instrument):
    def __init__(self) -> None:
        self.calls = 0

    def attempt_ended(self, attempt: AttemptEnded) -> None:
        self.calls += 1
        raise RuntimeError("a bug in my metrics")


async def test_an_instrument_that_raises_is_removed_and_the_jobs_go_on(
    make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    broken, recorder = Broken(), Recorder()
    app = make_app(instruments=[broken, recorder])

    @app.job(name="ok", queue="q")
    async def ok(args: Item) -> int:
        return args.n

    handles = [await ok.enqueue(Item(n)) for n in range(5)]
    with caplog.at_level(logging.ERROR, logger="rota.instrument"):
        result = await drain(app)
    assert result.completed == 5
    assert [await h.result(timeout=1) for h in handles] == list(range(5))
    assert broken.calls == 1  # removed after the first failure
    assert len(recorder.attempts) == 5  # the others still see everything
    assert any("a bug in my metrics" in r.getMessage() for r in caplog.records)


def test_only_the_hooks_an_instrument_overrides_are_called() -> None:
    class AttemptsOnly(rota.Instrument):
        def attempt_ended(self, attempt: AttemptEnded) -> None:
            pass

    assert (Instruments([]).storage, Instruments([]).attempts) == (False, False)
    watching = Instruments([AttemptsOnly()])
    assert (watching.storage, watching.attempts) == (False, True)
    with pytest.raises(TypeError, match=r"not a rota\.Instrument"):
        Instruments([object()])  # type: ignore[list-item]
    with pytest.raises(rota.ConfigError, match=r"not a rota\.Instrument"):
        rota.App(":memory:", instruments=[object()])  # type: ignore[list-item]


async def test_a_stall_rescued_by_the_scheduler_reaches_the_instrument(
    make_app: Callable[..., App],
) -> None:
    recorder = Recorder()
    clock = Clock()
    app = make_app(clock=clock, instruments=[recorder])

    @app.job(name="work", queue="q", max_stalls=0)
    async def work(args: Item) -> int:
        return args.n

    handle = await work.enqueue(Item(1))
    dead = app.engine()  # a worker that claims the job and dies
    try:
        dead.migrate()
        [claimed] = dead.claim("q", "dead-owner", 1, 100)
    finally:
        dead.close()
    async with app.run() as runtime:
        clock.advance(0.5)  # past its 100 ms lease (not a clock jump)
        assert (await runtime.sweep()).failed == [handle.id]
    [ended] = recorder.attempts
    assert (ended.job_id, ended.attempt, ended.outcome) == (claimed.id, 1, "failed")
    assert ended.error is not None and "failed as poison after 1 stalls" in ended.error

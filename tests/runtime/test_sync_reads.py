"""The blocking reads of a ``JobHandle`` (``result_sync``, ``status_sync``, ``info_sync``,
``cancel_sync``, ``progress_sync``, ``logs_sync``), for code that is not async (a Flask or
Django view, a script): they work from a plain thread, with or without a runtime in the
process, on a connection of that thread's own; ``result_sync`` polls the database with a
backoff (2 ms doubling to 100 ms). Called on the thread that runs the app's runtime, where
blocking would stop the very jobs they wait for, they raise ``RuntimeError`` naming the
async method to await instead."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import pytest
from rt_support import Item, wait_for

from rota.app import App, Context, JobHandle
from rota.domain.event import Progress
from rota.domain.job import JobState
from rota.errors import JobFailed
from rota.storage.sqlite import SqliteEngine

ALL_SYNC = ["result_sync", "status_sync", "info_sync", "cancel_sync", "progress_sync", "logs_sync"]


def define(app: App) -> Any:
    @app.job(queue="q", max_attempts=1)
    async def work(args: Item, ctx: Context) -> int:
        if args.label == "fail":
            raise RuntimeError("asked to fail")
        if args.label == "hang":
            await anyio.sleep_forever()
        await ctx.progress(50, message="half")
        ctx.log(f"working on {args.n}")
        return args.n * 2

    return work


# --- no runtime anywhere in this process --------------------------------------------------


def test_without_a_runtime_the_reads_poll_the_database(
    make_app: Callable[..., App], db_path: str
) -> None:
    app = make_app(db_path)
    work = define(app)
    handle = work.enqueue_sync(Item(21))
    assert handle.status_sync() is JobState.WAITING
    assert handle.info_sync().id == handle.id
    assert handle.progress_sync() is None
    assert handle.logs_sync() == []

    # Another "process" claims and completes the job while result_sync waits for it.
    def worker() -> None:
        time.sleep(0.1)
        with SqliteEngine(db_path) as engine:
            [job] = engine.claim("q", "elsewhere", 1, 60_000)
            engine.set_progress(job.id, job.token or 0, b'{"value": 100.0}')
            engine.add_log(job.id, job.token or 0, "done elsewhere")
            engine.complete(job.id, job.token or 0, b"42")

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert handle.result_sync(timeout=10) == 42
    finally:
        thread.join()
    assert handle.status_sync() is JobState.COMPLETED
    assert handle.progress_sync() == Progress(value=100.0)
    assert [entry.message for entry in handle.logs_sync()] == ["done elsewhere"]


def test_result_sync_times_out_with_a_message_and_raises_job_failed(
    make_app: Callable[..., App],
) -> None:
    app = make_app()
    work = define(app)
    handle = work.enqueue_sync(Item(1))
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=f"job {handle.id} did not finish within 0.2 s"):
        handle.result_sync(timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 1.0
    with pytest.raises(TimeoutError):
        handle.result_sync(timeout=0)  # one read, no wait

    assert handle.cancel_sync() is JobState.CANCELLED
    with pytest.raises(JobFailed) as caught:
        handle.result_sync(timeout=1)
    assert caught.value.state is JobState.CANCELLED


def test_result_sync_polls_with_a_backoff(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    work = define(app)
    handle = work.enqueue_sync(Item(1))
    reads: list[float] = []
    get = SqliteEngine.get

    def counted(engine: SqliteEngine, job_id: int) -> Any:
        reads.append(time.monotonic())
        return get(engine, job_id)

    monkeypatch.setattr(SqliteEngine, "get", counted)
    with pytest.raises(TimeoutError):
        handle.result_sync(timeout=0.6)
    gaps = [b - a for a, b in itertools.pairwise(reads)]
    # 2, 4, 8, 16, 32, 64 ms, then every 100 ms: about 11 reads in 0.6 s (not 300)
    assert 8 <= len(reads) <= 14, gaps
    assert gaps[0] < 0.05
    assert all(gap < 0.15 for gap in gaps), gaps
    assert max(gaps) >= 0.09


# --- from a thread while app.run() runs in this process -------------------------------------


@pytest.mark.anyio
async def test_from_a_thread_while_the_runtime_runs(make_app: Callable[..., App]) -> None:
    app = make_app()
    work = define(app)
    async with app.run():
        done = await work.enqueue(Item(21))
        failed = await work.enqueue(Item(1, label="fail"))

        def read() -> tuple[Any, ...]:
            result = done.result_sync(timeout=10)
            with pytest.raises(JobFailed) as caught:
                failed.result_sync(timeout=10)
            return (
                result,
                done.status_sync(),
                done.progress_sync(),
                [entry.message for entry in done.logs_sync()],
                caught.value.state,
                "asked to fail" in (failed.info_sync().error or ""),
            )

        with anyio.fail_after(15):
            got = await anyio.to_thread.run_sync(read)
    assert got == (
        42,
        JobState.COMPLETED,
        Progress(value=50.0, message="half"),
        ["working on 21"],
        JobState.FAILED,
        True,
    )


@pytest.mark.anyio
async def test_cancel_sync_from_a_thread_stops_a_running_job(
    make_app: Callable[..., App],
) -> None:
    app = make_app()
    work = define(app)
    async with app.run():
        handle = await work.enqueue(Item(1, label="hang"))
        with anyio.fail_after(15):

            async def running() -> bool:
                return await handle.status() is JobState.ACTIVE

            await wait_for(running, what="the job to start")

            def cancel_and_wait() -> tuple[JobState, JobState]:
                asked = handle.cancel_sync()
                with pytest.raises(JobFailed) as caught:
                    handle.result_sync(timeout=5)
                return asked, caught.value.state

            assert await anyio.to_thread.run_sync(cancel_and_wait) == (
                JobState.ACTIVE,  # asked to stop: its worker settles it
                JobState.CANCELLED,
            )


# --- on the runtime's own event loop thread: refused ------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("method", ALL_SYNC)
async def test_on_the_runtime_loop_thread_they_raise_and_name_the_async_method(
    make_app: Callable[..., App], method: str
) -> None:
    app = make_app()
    work = define(app)
    handle: JobHandle[int] = await work.enqueue(Item(1))
    async with app.run():
        with pytest.raises(RuntimeError) as caught:
            getattr(handle, method)()
        assert await handle.result(timeout=10) == 2
    async_name = method.removesuffix("_sync")
    assert str(caught.value) == (
        f"JobHandle.{method}() blocks this thread, which runs the event loop of the app's "
        f"runtime: the jobs it waits for could not run. Use `await handle.{async_name}()` "
        "here"
    )
    # Once the runtime has stopped, the same thread may block.
    assert handle.status_sync() is JobState.COMPLETED

"""One shutdown, embedded as in ``rota worker``: a job that outlives ``shutdown_grace_s``
is stopped waiting for at the grace, in every mode (async, thread, process) and on both
backends, and handed back uncounted; until then it goes on as usual (its progress reports
are stored); ``app.run()``'s exit returns at about the grace.

The embedding mimics an ASGI lifespan (FastAPI, Starlette under uvicorn): ``app.run()`` is
entered in a task of its own, which is then either left (the lifespan's shutdown) or
cancelled (its task group torn down). The same through real ``rota worker`` processes:
``tests/process/test_shutdown_backends.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import modes_app
import pytest
from modes_app import Linger
from rt_support import wait_for

from rota.app import App, Context, JobDefinition, SyncContext
from rota.domain.job import JobState
from rota.testing import drain

pytestmark = pytest.mark.anyio

GRACE_S = 0.5
#: How long a lingering job would run: far beyond the grace.
LINGER_S = 20.0
#: What the exit may take beyond the grace (a loaded 2-core machine; a child's SIGTERM).
SLACK_S = 1.5


def lingering_job(app: App, mode: str, starts: list[int]) -> JobDefinition[Linger, int]:
    """A job that, on its first start only, runs ``args.seconds`` reporting progress every
    50 ms and never looks at ``ctx.cancelled``: in ``mode``."""
    if mode == "process":
        return modes_app.linger

    def beats(args: Linger, attempt: int) -> int:
        starts.append(attempt)
        return round(args.seconds / 0.05) if len(starts) == 1 else 0

    if mode == "thread":

        @app.job(name="linger.thread", queue=modes_app.QUEUE, max_attempts=1)
        def linger_thread(args: Linger, ctx: SyncContext) -> int:
            n = beats(args, ctx.attempt)
            for beat in range(n):
                time.sleep(0.05)
                ctx.progress(beat + 1, step=beat + 1, total=n)
            return 0

        return linger_thread

    @app.job(name="linger.async", queue=modes_app.QUEUE, max_attempts=1)
    async def linger_async(args: Linger, ctx: Context) -> int:
        n = beats(args, ctx.attempt)
        for beat in range(n):
            await anyio.sleep(0.05)
            await ctx.progress(beat + 1, step=beat + 1, total=n)
        return 0

    return linger_async


@pytest.mark.parametrize("how", ["leave", "cancel"])
@pytest.mark.parametrize("mode", ["async", "thread", "process"])
async def test_a_job_outliving_the_grace_is_handed_back_and_run_exits_at_the_grace(
    make_app: Callable[..., App], tmp_path: Path, anyio_backend: str, mode: str, how: str
) -> None:
    app = make_app(
        str(tmp_path / "jobs.db"),
        import_name="modes_app:app",
        shutdown_grace_s=GRACE_S,
        processes=1,
    )
    app.include(modes_app.registry)
    starts: list[int] = []
    log = tmp_path / "starts.log"
    job = lingering_job(app, mode, starts)
    leave = anyio.Event()

    async def lifespan(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with app.run():
            task_status.started()
            await leave.wait()

    async with anyio.create_task_group() as tg:
        await tg.start(lifespan)
        handle = await job.enqueue(Linger(str(log), LINGER_S))
        await wait_for(lambda: bool(starts) or log.exists(), timeout=20, what="the job's start")
        await wait_for(lambda: _stepped(handle), timeout=5, what="a progress report")
        before = await handle.progress()
        t0 = time.monotonic()
        if how == "leave":
            leave.set()
        else:
            tg.cancel_scope.cancel()
    took = time.monotonic() - t0
    print(f"\n{anyio_backend} {mode} {how}: app.run() exited {took:.2f} s after (grace {GRACE_S})")
    assert GRACE_S - 0.05 <= took <= GRACE_S + SLACK_S

    interrupted = await handle.info()
    # handed back, uncounted: not failed by anything the shutdown did to it
    assert (interrupted.state, interrupted.attempt, interrupted.stalls, interrupted.error) == (
        JobState.WAITING,
        0,
        0,
        None,
    )
    # it ran on as usual during the grace: its progress reports were stored
    after = await handle.progress()
    assert before is not None and after is not None and before.step is not None
    assert after.step is not None and after.step >= before.step + 3, (before, after)

    # the next run takes it up at once, as attempt 1 of 1
    result = await drain(app)
    assert (result.completed, result.failed) == (1, 0)
    done = await handle.info()
    assert (done.state, done.attempt, done.max_attempts) == (JobState.COMPLETED, 1, 1)


async def _stepped(handle: Any) -> bool:
    progress = await handle.progress()
    return progress is not None


async def test_a_handler_that_ignores_its_cancellation_is_named_in_the_log(
    make_app: Callable[..., App], anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    # An async handler waiting for a thread it cannot abandon (anyio.to_thread.run_sync's
    # default) cannot be stopped: the shutdown waits for it, and says which job it waits for.
    app = make_app(shutdown_grace_s=0.2)
    started = threading.Event()

    def blocking() -> None:
        started.set()
        time.sleep(2.5)

    @app.job(name="stubborn", queue="q", max_attempts=1)
    async def stubborn(args: Linger) -> None:
        await anyio.to_thread.run_sync(blocking)

    handle = await stubborn.enqueue(Linger("", 0))
    with caplog.at_level(logging.WARNING, logger="rota"):
        async with app.run():
            await wait_for(started.is_set, what="the job's start")
            t0 = time.monotonic()
    took = time.monotonic() - t0
    assert took >= 2.0  # it could not be stopped
    [warning] = [r.getMessage() for r in caplog.records if "ignores" in r.getMessage()]
    assert warning.startswith(
        f"queue q: job {handle.id} has not stopped 1.0 s after it was cancelled at the end of "
        "the shutdown grace period: its handler ignores cancellation, and the shutdown waits "
        "for it"
    ), warning
    assert "anyio.to_thread.run_sync without abandon_on_cancel=True" in warning
    assert (await handle.info()).state is JobState.WAITING  # handed back when it ended

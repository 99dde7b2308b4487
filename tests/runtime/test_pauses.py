"""A worker that was paused for longer than its lease (SIGSTOP, a long GC, a laptop lid)
or whose wall clock stepped: leases name one attempt (job *and* token), so a notice about
an old attempt never stops the attempt that runs now, and a runtime never rescues the
leases it still holds."""

from __future__ import annotations

import threading
from collections.abc import Callable

import anyio
import pytest
from rt_support import Item, wait_for, wait_state

import rota
from rota.actors.worker_pool import CancelJobs
from rota.app import App, SyncContext
from rota.domain.job import JobState
from rota.storage.engine import LeaseRef
from rota.storage.sqlite import SqliteEngine

pytestmark = pytest.mark.anyio

BLOCK_S = 10.0


async def test_a_job_reclaimed_after_a_pause_is_not_stopped_by_notices_about_its_old_lease(
    make_app: Callable[..., App], db_path: str
) -> None:
    app = make_app(db_path, lease_ttl_s=2.0)
    release = [threading.Event(), threading.Event()]
    started: list[int] = []

    @app.job(queue="q", max_attempts=3, max_stalls=3, backoff=rota.fixed(0))
    def work(args: Item, ctx: SyncContext) -> int:
        started.append(ctx.attempt)
        release[ctx.attempt - 1].wait(BLOCK_S)
        return ctx.attempt

    handle = await work.enqueue(Item(1))
    async with app.run() as runtime:
        first = await wait_state(handle, JobState.ACTIVE)
        assert first.token is not None and first.lease_expires_at_ms is not None
        # The worker "sleeps" past its lease: another runtime, whose clock is past the
        # expiry, rescues the job (a stall), and the woken worker claims it again.
        late = first.lease_expires_at_ms + 1
        with SqliteEngine(db_path, clock=lambda: late) as other:
            assert other.rescue_expired().requeued == [handle.id]
        runtime.wake(["q"])
        await wait_for(lambda: started == [1, 2], what="the second attempt")
        second = await handle.info()
        assert second.token is not None and second.token != first.token
        # A notice about the first attempt's lease (a renewal that was in flight) must
        # not stop the second attempt, which holds a new token.
        await runtime.pools["q"].cast(CancelJobs([LeaseRef(handle.id, first.token)], "lost"))
        release[0].set()  # the first attempt returns: its result is dropped
        await anyio.sleep(0.2)
        assert (await handle.info()).state is JobState.ACTIVE
        release[1].set()
        assert await handle.result(timeout=5) == 2
    job = await handle.info()
    assert (job.state, job.attempt, job.stalls) == (JobState.COMPLETED, 2, 1)

"""Testing your own jobs: run everything enqueued to completion, with time under control.

::

    from rota.testing import Clock, drain

    async def test_welcome_mail_is_retried() -> None:
        clock = Clock()
        app = rota.App(":memory:", clock=clock)
        app.include(mail.registry)
        handle = await mail.send_welcome.enqueue(Welcome(user_id=7))
        result = await drain(app, clock=clock)      # retries' backoff is skipped, not slept
        assert result.completed == 1
        assert await handle.result() == "sent"

``drain`` runs the real runtime (the same actors, the same SQLite engine) until no job is
waiting, active or delayed. With a ``Clock``, when only delayed jobs are left it moves the
clock to the next one's time instead of waiting, so a test of retries with a 10-minute
backoff takes milliseconds, and the delays are exactly the ones your policy computed.

Jobs declared on your own ``App`` (``app = rota.App("jobs.db")`` in ``jobs.py``) are tested
on a private database with ``isolated``: nothing touches ``jobs.db``::

    async def test_resize_retries() -> None:
        clock = Clock()
        with isolated(jobs.app, clock=clock) as app:
            handle = await jobs.resize.enqueue(jobs.Resize(url="https://x/y.png"))
            assert (await drain(app, clock=clock)).completed == 1
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec

from rota.app import App
from rota.domain.job import JobState
from rota.errors import ConfigError, UsageError, WaitTimeout
from rota.storage import DatabaseUrl

__all__ = ["Clock", "DrainResult", "drain", "isolated"]


class Clock:
    """A wall clock (ms since the epoch) that only moves when told to."""

    def __init__(self, start_ms: int | None = None) -> None:
        self.now_ms = time.time_ns() // 1_000_000 if start_ms is None else start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, seconds: float) -> None:
        """Move forward ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ConfigError(f"a clock does not go backwards ({seconds} s)")
        self.now_ms += round(seconds * 1000)

    def advance_to(self, at_ms: int) -> None:
        """Move forward to ``at_ms`` (ms since the epoch); a time already passed is a no-op."""
        self.now_ms = max(self.now_ms, at_ms)


class DrainResult(msgspec.Struct, frozen=True, kw_only=True):
    """The jobs of the drained queues by final state, and the time the clock skipped."""

    completed: int
    failed: int
    cancelled: int
    skipped_s: float


async def drain(
    app: App,
    *,
    clock: Clock | None = None,
    queues: list[str] | None = None,
    timeout_s: float = 30.0,
) -> DrainResult:
    """Run the app's runtime until every job of its queues has finished.

    Without a ``clock``, delayed jobs are waited for in real time. ``WaitTimeout`` (a
    ``TimeoutError``) after ``timeout_s`` seconds of real time, naming what is left.
    """
    skipped_ms = 0
    options: dict[str, object] = {"scheduler_interval_s": 0.02, "poll_interval_s": 0.002}
    if queues is not None:
        options["queues"] = queues
    totals = dict.fromkeys(JobState, 0)
    async with app.run(**options) as runtime:
        names = runtime.queues
        with anyio.move_on_after(timeout_s) as scope:
            while True:
                counted = dict.fromkeys(JobState, 0)
                for name in names:
                    for state, n in (await app.queue(name).counts()).items():
                        counted[state] += n
                totals = counted
                busy = totals[JobState.WAITING] + totals[JobState.ACTIVE]
                if busy == 0 and totals[JobState.DELAYED] == 0:
                    break
                if busy == 0 and clock is not None:
                    delayed = []
                    for name in names:
                        delayed += await app.queue(name).jobs(JobState.DELAYED, limit=10_000)
                    due = min(job.run_at_ms for job in delayed)
                    if due > clock.now_ms:
                        skipped_ms += due - clock.now_ms
                        clock.advance_to(due)
                    await runtime.sweep()
                    runtime.wake()
                await runtime.wait_for_commit(0.02)
        if scope.cancelled_caught:
            left = ", ".join(
                f"{totals[state]} {state.value}"
                for state in (JobState.WAITING, JobState.ACTIVE, JobState.DELAYED)
            )
            raise WaitTimeout(f"drain: jobs still unfinished after {timeout_s:g} s ({left})")
    return DrainResult(
        completed=totals[JobState.COMPLETED],
        failed=totals[JobState.FAILED],
        cancelled=totals[JobState.CANCELLED],
        skipped_s=skipped_ms / 1000,
    )


@contextlib.contextmanager
def isolated(app: App, *, clock: Clock | None = None) -> Iterator[App]:
    """Point ``app`` at a fresh private database (and, with ``clock``, at that clock) for
    the ``with`` block: its jobs, producers and runtime use them; the app's own database is
    not touched. Restored on exit; the private database is removed. Not while the app's
    runtime runs."""
    if app._runtime is not None:
        raise UsageError("isolated() needs the app's runtime stopped (leave app.run() first)")
    saved = (app.config, app.database_url, app.clock)
    app._close_engines()
    with tempfile.TemporaryDirectory(prefix="rota-test-") as tmp:
        app.config = app.config.replace(where="rota.testing.isolated", database=":memory:")
        app.database_url = DatabaseUrl.parse(str(Path(tmp) / "isolated.db"))
        if clock is not None:
            app.clock = clock
        try:
            yield app
        finally:
            app._close_engines()
            app.config, app.database_url, app.clock = saved

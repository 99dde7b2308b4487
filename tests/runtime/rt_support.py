"""Helpers of the runtime tests: an App factory with fast timings, payload types, waits.

Payload and result types live at module level: a handler's annotations are resolved with
``typing.get_type_hints`` against its module's globals, so a Struct defined inside a test
function could not be found.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final

import anyio
import msgspec

from rota.app import App, JobHandle
from rota.domain.job import Job, JobState

#: Options that keep the runtime tests fast: sweeps every 50 ms, a short shutdown grace.
FAST: Final[dict[str, Any]] = {
    "lease_ttl_s": 2.0,
    "scheduler_interval_s": 0.05,
    "poll_interval_s": 0.005,
    "heartbeat_interval_s": 1.0,
    "shutdown_grace_s": 0.5,
}


class Item(msgspec.Struct):
    n: int
    label: str = ""


class Inner(msgspec.Struct):
    x: int


class Nested(msgspec.Struct):
    n: int
    inner: Inner


class Other(msgspec.Struct):
    text: str


class Doubled(msgspec.Struct):
    value: int
    label: str


class AppFactory:
    """Builds Apps with ``FAST`` options (overridable) and closes them all at the end."""

    def __init__(self) -> None:
        self.apps: list[App] = []

    def __call__(self, database: str = ":memory:", **options: Any) -> App:
        app = App(database, **{**FAST, **options})
        self.apps.append(app)
        return app

    def close(self) -> None:
        for app in reversed(self.apps):
            app.close()


async def wait_for(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    timeout: float = 5.0,
    interval: float = 0.01,
    what: str = "condition",
) -> None:
    """Poll ``check`` (sync or async) until it is true; ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        await anyio.sleep(interval)


async def wait_state(handle: JobHandle[Any], *states: JobState, timeout: float = 5.0) -> Job:
    """Poll the job until it is in one of ``states``; returns it."""
    job: Job | None = None

    async def reached() -> bool:
        nonlocal job
        job = await handle.info()
        return job.state in states

    await wait_for(reached, timeout=timeout, what=f"job {handle.id} in {states}")
    assert job is not None
    return job


async def counts(app: App, queue: str) -> dict[str, int]:
    """The queue's counts keyed by state name, without the zeros."""
    return {str(state): n for state, n in (await app.queue(queue).counts()).items() if n}


@asynccontextmanager
async def heartbeat(gaps: list[float]) -> AsyncIterator[None]:
    """A task that ticks every 10 ms meanwhile; appends each gap between ticks."""

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await anyio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        try:
            yield
        finally:
            tg.cancel_scope.cancel()

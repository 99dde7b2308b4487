"""The one backend shim: schedule a callback on the event loop from another thread.

``anyio.from_thread.run_sync`` blocks the calling thread until the loop has run the
function (~110 µs a round trip measured on trio). The Store's thread must not wait for the
loop, only tell it "this batch is done", so this uses each backend's own non-blocking entry
point, found through AnyIO's event-loop token rather than by importing trio or asyncio:
``TrioToken.run_sync_soon`` (~20 µs) or ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import anyio
import anyio.lowlevel

__all__ = ["LoopScheduler", "current_backend", "current_loop_scheduler", "is_cancellation"]


class LoopScheduler(Protocol):
    """Run ``fn(*args)`` soon on the event loop; callable from any thread, never blocks."""

    def __call__(self, fn: Callable[..., object], *args: Any) -> None: ...


def current_loop_scheduler() -> LoopScheduler:
    """The thread-safe, non-blocking scheduler of the running event loop."""
    native = anyio.lowlevel.current_token().native_token
    schedule = getattr(native, "run_sync_soon", None)  # trio.lowlevel.TrioToken
    if schedule is None:
        schedule = getattr(native, "call_soon_threadsafe", None)  # asyncio loop
    if schedule is None:  # pragma: no cover - a backend AnyIO may add later
        raise RuntimeError(f"no thread-safe scheduler on event loop token {native!r}")
    return schedule  # type: ignore[no-any-return]


def current_backend() -> str:
    """The running event loop's AnyIO backend name: ``"trio"`` or ``"asyncio"``."""
    native = anyio.lowlevel.current_token().native_token
    return "trio" if hasattr(native, "run_sync_soon") else "asyncio"


def is_cancellation(exc: BaseException) -> bool:
    """The event loop's cancellation (alone, or a group of nothing else): it must
    propagate, never become a job attempt's outcome."""
    cancelled = anyio.get_cancelled_exc_class()
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(cancelled)[1] is None
    return isinstance(exc, cancelled)

"""How an App reaches its database: one door, ``run(op)``, for every storage operation.

Called on the event loop of the app's runtime (once its Store runs), an op goes through
the Store: it joins the next batch (group commit) and sees what the runtime committed.
Called anywhere else (another loop, a producer thread, before the runtime started or once
its Store stops), it runs on the calling thread's own engine, opened and migrated on first
use, so producers never wait on each other's connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from rota.errors import ActorNotRunning, CallTimeout, StorageError
from rota.storage.engine import Engine
from rota.storage.ops import Op

if TYPE_CHECKING:
    from rota.runtime import Runtime

__all__ = ["StorageAccess"]

T = TypeVar("T")


class StorageAccess:
    """An app's way into its database (see the module docstring)."""

    def __init__(self, open_engine: Callable[[], Engine]) -> None:
        self._open_engine = open_engine
        self.runtime: Runtime | None = None
        """The app's runtime, once started (until it stopped)."""
        self.token: anyio.lowlevel.EventLoopToken | None = None
        """The event loop the runtime runs on (set before it starts, so that sync handlers
        can report progress as soon as jobs run)."""
        self.thread: int | None = None
        """The thread that runs the runtime's event loop (``threading.get_ident``)."""
        self._local = threading.local()
        self._engines: list[Engine] = []
        self._lock = threading.Lock()

    # -- the runtime's loop --

    def bind_loop(self) -> None:
        """The runtime is starting on the current event loop."""
        self.token = anyio.lowlevel.current_token()
        self.thread = threading.get_ident()

    def attach(self, runtime: Runtime) -> None:
        """The runtime started: ops on its loop go through its Store from now on."""
        self.runtime = runtime

    def detach(self) -> None:
        """The runtime stopped (or failed to start)."""
        self.runtime = None
        self.token = self.thread = None

    def in_runtime_loop(self) -> bool:
        """Whether this is the runtime's loop and its Store takes calls (once the Store is
        stopping, ops go to the database directly)."""
        runtime = self.runtime
        if runtime is None or not runtime.store_ref.running:
            return False
        try:
            return anyio.lowlevel.current_token() == self.token
        except Exception:
            return False

    def on_runtime_thread(self) -> bool:
        """Whether the calling thread runs the runtime's event loop (it must not block)."""
        return self.thread == threading.get_ident()

    # -- running operations --

    async def run(self, op: Op[T]) -> T:
        """Run ``op``: through the runtime's Store on its loop, else on a worker thread
        with a connection of its own. A Store that stops before answering (it restarts
        after a crash) or does not answer in time is a transient ``StorageError`` here:
        the actor kernel's errors never reach an App's caller."""
        if self.in_runtime_loop():
            assert self.runtime is not None
            try:
                return await self.runtime.store.run(op)
            except ActorNotRunning as exc:
                raise StorageError(
                    f"{type(op).__name__}: the runtime's Store stopped before answering "
                    f"(it restarts after a crash; try again): {exc}",
                    transient=True,
                ) from exc
            except CallTimeout as exc:
                raise StorageError(
                    f"{type(op).__name__}: the runtime's Store did not answer in time "
                    f"(it may still apply it): {exc}",
                    transient=True,
                ) from exc
        return await anyio.to_thread.run_sync(self.run_sync, op)

    def run_sync(self, op: Op[T]) -> T:
        """Run ``op`` on this thread's own engine (blocks this thread)."""
        engine: Engine | None = getattr(self._local, "engine", None)
        if engine is None:
            engine = self._open_engine()
            try:
                engine.migrate()
            except BaseException:
                engine.close()
                raise
            self._local.engine = engine
            with self._lock:
                self._engines.append(engine)
        return op.apply(engine)

    def close(self) -> None:
        """Close every thread's engine (the next use opens new ones)."""
        with self._lock:
            engines, self._engines = self._engines, []
        for engine in engines:
            engine.close()
        self._local = threading.local()

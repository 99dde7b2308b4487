"""Thread mode: plain ``def`` handlers run on a pool of ``pykka.ThreadingActor`` threads.

One pool per queue, up to ``concurrency`` threads (one per slot), started when a sync
job first needs one and kept until the runtime stops. Each thread runs the app's
per-thread hooks: the start hooks before its first job (a connection opened once per
thread), the stop hooks when it stops (at shutdown, or when it is retired).

The event loop never waits for a thread: a job is handed over with ``tell`` (a queue put)
and the thread's reply is scheduled on the loop with the backend's non-blocking
``run_sync_soon`` / ``call_soon_threadsafe`` (``rota.actors._backend``), which sets an
event the job's worker task awaits. Meanwhile the loop goes on serving (renewing this
job's lease among other things), so a handler that blocks for longer than the lease ttl
is not mistaken for a stalled one.

**A Python thread cannot be killed.** When a sync job times out or is cancelled, its
worker stops waiting for it at once (the attempt is failed or cancelled and settled), the
thread is *abandoned* (``ctx.cancelled`` turns true, so a handler that checks it can stop
early), and a fresh thread takes its slot. The abandoned thread runs its handler to the
end, then its stop hooks, then exits; whatever the handler returns is dropped. Threads
are daemon threads: a handler stuck forever does not keep the process alive at exit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
import pykka

from rota.actors._backend import LoopScheduler, current_loop_scheduler

__all__ = ["ThreadHooks", "ThreadPool"]

log = logging.getLogger("rota.worker")

T = TypeVar("T")


class ThreadHooks:
    """The app's per-thread hooks: start hooks run in order before a thread's first job,
    stop hooks in reverse order when it stops (only if its start hooks all ran)."""

    def __init__(
        self,
        start: Sequence[Callable[[], object]] = (),
        stop: Sequence[Callable[[], object]] = (),
    ) -> None:
        self.start = list(start)
        self.stop = list(stop)

    def run_start(self) -> None:
        """Run the start hooks on this thread; the first that raises stops them (its
        exception propagates: it fails the job about to run, and they run again before
        the next one)."""
        for hook in self.start:
            hook()

    def run_stop(self, where: str) -> None:
        """Run the stop hooks on this thread, in reverse order; one that raises is logged
        and the others still run."""
        for hook in reversed(self.stop):
            try:
                hook()
            except Exception:
                log.exception("%s: a per-thread stop hook failed", where)


class _Call:
    """One job handed to a thread, and the way back to the loop."""

    __slots__ = ("abandoned", "cancelled", "done", "error", "fn", "result")

    def __init__(self, fn: Callable[[], Any], cancelled: threading.Event) -> None:
        self.fn = fn
        self.cancelled = cancelled
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.abandoned = False


class _HandlerThread(pykka.ThreadingActor):
    use_daemon_thread = True

    def __init__(self, pool: ThreadPool, index: int) -> None:
        super().__init__()
        self.pool = pool
        self.index = index
        self.set_up = False

    def _set_up(self) -> None:
        threading.current_thread().name = f"rota-thread-{self.pool.queue}-{self.index}"
        self.pool.hooks.run_start()
        self.set_up = True

    def on_stop(self) -> None:
        if self.set_up:
            self.pool.hooks.run_stop(f"queue {self.pool.queue}")

    def on_receive(self, message: Any) -> None:
        call: _Call = message
        try:
            if not self.set_up:
                self._set_up()  # raises into the job: a failed start hook fails it
            result, error = call.fn(), None
        except BaseException as exc:  # reported to the job's worker, never kills the thread
            result, error = None, exc
        try:
            self.pool.schedule(self.pool._finished, call, result, error)
        except RuntimeError:  # the event loop is gone (the process is exiting)
            pass


class ThreadPool:
    """Runs sync callables on up to ``size`` handler threads; see the module docstring."""

    def __init__(self, *, queue: str, size: int, hooks: ThreadHooks) -> None:
        self.queue = queue
        self.size = size
        self.hooks = hooks
        self.schedule: LoopScheduler
        self._idle: list[pykka.ActorRef[Any]] = []
        self._all: set[pykka.ActorRef[Any]] = set()
        self._abandoned: dict[pykka.ActorRef[Any], _Call] = {}
        self._next_index = 0
        """Threads started so far (also the next one's index in its name)."""
        self._stopped = False
        self.jobs = 0

    # -- lifetime (a supervised child of the queue's supervisor) ------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled (the supervisor's stop); then stop every thread."""
        self.schedule = current_loop_scheduler()
        self._stopped = False
        try:
            task_status.started()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await self.close()

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop the threads: idle ones at once (their stop hooks run), busy and abandoned
        ones once their handler returns. Waits up to ``grace_s`` for them."""
        self._stopped = True
        refs = list(self._all)
        self._all.clear()
        self._idle.clear()
        if not refs:
            return
        futures = [ref.stop(block=False) for ref in refs]

        def wait() -> int:
            late = 0
            for future in futures:
                try:
                    future.get(timeout=grace_s)
                except pykka.Timeout:
                    late += 1
                except Exception:  # already stopped: nothing to wait for
                    pass
            return late

        late = await anyio.to_thread.run_sync(wait, abandon_on_cancel=True)
        if late:
            log.warning(
                "queue %s: %d handler threads were still running a sync handler at "
                "shutdown; they are daemon threads and end with the process",
                self.queue,
                late,
            )

    # -- running ---------------------------------------------------------------------

    def _thread(self) -> pykka.ActorRef[Any]:
        if self._idle:
            return self._idle.pop()
        if self._stopped:
            raise RuntimeError(f"queue {self.queue!r}: the thread pool is stopped")
        index, self._next_index = self._next_index, self._next_index + 1
        ref = _HandlerThread.start(self, index)
        self._all.add(ref)
        return ref

    async def run_sync(
        self, fn: Callable[[], T], *, cancelled: threading.Event, timeout_s: float | None
    ) -> tuple[bool, T | None]:
        """Run ``fn`` on a handler thread; ``(True, its result)``, or ``(False, None)``
        if ``timeout_s`` passed first (the thread is then abandoned). A cancellation of the
        caller abandons the thread too, and propagates. ``fn`` must not raise: an
        exception escaping it is re-raised here."""
        ref = self._thread()
        call = _Call(fn, cancelled)
        ref.tell(call)
        try:
            with anyio.move_on_after(timeout_s):
                await call.done.wait()
        except BaseException:  # cancelled: the job is stopped, its thread left behind
            self._abandon(ref, call)
            raise
        if not call.done.is_set():
            self._abandon(ref, call)
            return False, None
        self.jobs += 1
        if not self._stopped:
            self._idle.append(ref)
        if call.error is not None:
            raise call.error
        return True, call.result

    def _finished(self, call: _Call, result: Any, error: BaseException | None) -> None:
        """On the loop: a thread's reply."""
        call.result, call.error = result, error
        call.done.set()
        if call.abandoned:
            for ref, abandoned in list(self._abandoned.items()):
                if abandoned is call:
                    del self._abandoned[ref]
            if error is not None:
                log.warning("queue %s: an abandoned sync handler ended with %r", self.queue, error)

    def _abandon(self, ref: pykka.ActorRef[Any], call: _Call) -> None:
        """Leave a thread to finish its handler alone; a fresh one takes its slot."""
        call.abandoned = True
        call.cancelled.set()
        self._all.discard(ref)
        if not call.done.is_set():
            self._abandoned[ref] = call
            log.warning(
                "queue %s: a sync handler was stopped waiting for; its thread cannot be "
                "killed and runs on until the handler returns (%d such threads now)",
                self.queue,
                len(self._abandoned),
            )
        ref.stop(block=False)  # after its current message: stop hooks, then the thread ends

    def statistics(self) -> dict[str, int]:
        """The pool at a glance: threads alive, busy and abandoned (``rota info``)."""
        return {
            "size": self.size,
            "alive": len(self._all),
            "busy": len(self._all) - len(self._idle),
            "abandoned": len(self._abandoned),
            "jobs": self.jobs,
        }

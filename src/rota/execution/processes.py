"""Process mode: handlers run in a supervised pool of child processes.

One pool per queue that needs it, of ``processes`` children, each a fresh Python
(``python -m rota.execution.child``) running one job at a time, fed msgspec messages over
pipes (``rota.execution.wire``), never pickle. The pool is a ``Supervisor`` in the queue's
subtree, started before its WorkerPool::

    processes[q]     one_for_one, child_max_restarts in child_restart_period_s
    ├── process[q:0] keeps one child process alive
    └── process[q:1] ...

What a crash, a deliberate replacement (timeout, cancel, recycling) and a failed start
each do: docs/internals.md, "Process mode".
"""

from __future__ import annotations

import logging
import signal
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import anyio
import anyio.abc
import msgspec
from anyio.streams.buffered import BufferedByteReceiveStream

from rota.domain.job import Job
from rota.errors import ChildStartFailed
from rota.execution import wire
from rota.supervisors import ChildSpec, Restart, Strategy, Supervisor

__all__ = [
    "ChildCrashed",
    "ChildStartFailed",
    "Interrupted",
    "ProcessPool",
    "ProcessSettings",
    "describe_exit",
]

log = logging.getLogger("rota.worker")


class ChildCrashed(Exception):
    """A child process died while the pool did not expect it to."""


class Interrupted(NamedTuple):
    """A job that did not end by itself in its child: ``timed_out`` (its timeout stopped
    the child), else its child died or broke the protocol. ``error`` says which."""

    error: str
    timed_out: bool


class ProcessSettings(msgspec.Struct, frozen=True, kw_only=True):
    """A process pool's settings, from the queue's config (``processes``, ``kill_grace_s``...)."""

    size: int
    max_jobs_per_child: int | None = None
    kill_grace_s: float = 5.0
    start_timeout_s: float = 60.0
    max_restarts: int = 10
    restart_period_s: float = 60.0


def describe_exit(returncode: int | None) -> str:
    """How a child ended, in words (``killed by SIGKILL``, ``exited with code 3``)."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


class _Child:
    """One live child process and its pipes."""

    __slots__ = ("exited", "jobs", "pid", "process", "reader", "retiring", "returncode")

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.pid = process.pid
        assert process.stdout is not None
        self.reader = BufferedByteReceiveStream(process.stdout)
        self.jobs = 0
        self.retiring: str | None = None
        """Why the pool is ending this child on purpose (None: it is not)."""
        self.exited = anyio.Event()
        self.returncode: int | None = None

    async def send(self, message: wire.ParentMessage) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(wire.encode(message))

    async def receive(self) -> wire.ChildMessage | None:
        """The next message; None once the child's end of the pipe is closed (it died)."""
        try:
            header = await self.reader.receive_exactly(wire.HEADER_SIZE)
            body = await self.reader.receive_exactly(wire.frame_length(header))
        except (
            anyio.EndOfStream,
            anyio.IncompleteRead,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
        ):
            return None
        return wire.decode_child(body)

    def signal(self, signum: signal.Signals) -> None:
        if self.returncode is None:
            try:
                self.process.send_signal(signum)
            except ProcessLookupError:
                pass


class _Waiter:
    __slots__ = ("child", "event")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.child: _Child | None = None


class _Slot:
    """A supervised child of the pool's supervisor: keeps one child process alive."""

    def __init__(self, pool: ProcessPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.name = f"process[{pool.queue}:{index}]"
        self.child: _Child | None = None
        self.stopping = False

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self.stopping = False
        started = False
        pool = self.pool
        try:
            while True:
                child = self.child = await pool._spawn()
                if not started:
                    task_status.started()
                    started = True
                if self.stopping:
                    # Asked to stop while this child was starting (request_stop found no
                    # child to end): it gets no job; the finally ends it. Otherwise the
                    # stop would wait out its whole grace for a child that never exits.
                    return
                pool._add_idle(child)
                child.returncode = await child.process.wait()
                child.exited.set()
                pool._discard(child)
                if self.stopping:
                    return
                if child.retiring is not None:
                    log.info(
                        "queue %s: child %d %s (%s); starting another",
                        pool.queue,
                        child.pid,
                        describe_exit(child.returncode),
                        child.retiring,
                    )
                    continue
                raise ChildCrashed(
                    f"queue {pool.queue!r}: child process {child.pid} "
                    f"{describe_exit(child.returncode)}"
                )
        finally:
            last, self.child = self.child, None
            if last is not None and last.returncode is None:
                pool._discard(last)
                with anyio.CancelScope(shield=True):
                    await pool._end(last, "stopped")

    async def request_stop(self) -> None:
        """Ask the child to exit (after its job, if it has one: the WorkerPool, stopped
        first, has already ended every job)."""
        self.stopping = True
        child = self.child
        if child is None or child.returncode is not None:
            return
        child.retiring = "stopped"
        if self.pool._take_idle(child):
            try:
                await child.send(wire.Exit())
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
        else:
            child.signal(signal.SIGTERM)


class ProcessPool:
    """A queue's child processes; see the module docstring."""

    def __init__(self, *, queue: str, settings: ProcessSettings, hello: wire.Hello) -> None:
        self.queue = queue
        self.settings = settings
        self.hello = hello
        self._idle: deque[_Child] = deque()
        self._waiters: deque[_Waiter] = deque()
        self._children: set[_Child] = set()
        self.slots = [_Slot(self, i) for i in range(settings.size)]
        self.supervisor = Supervisor(
            f"processes[{queue}]",
            [
                ChildSpec(
                    slot.name,
                    slot.run,
                    restart=Restart.PERMANENT,
                    stop=slot.request_stop,
                    grace_s=settings.kill_grace_s + 1.0,
                )
                for slot in self.slots
            ],
            strategy=Strategy.ONE_FOR_ONE,
            max_restarts=settings.max_restarts,
            period_s=settings.restart_period_s,
        )
        self.counts = {"jobs": 0, "killed": 0, "recycled": 0, "crashed_jobs": 0}

    def child_spec(self) -> ChildSpec:
        """The pool's supervisor as a child of the queue's supervisor."""
        return self.supervisor.child_spec(grace_s=self.settings.kill_grace_s + 5.0)

    # -- children ----------------------------------------------------------------------

    async def _spawn(self) -> _Child:
        try:
            process = await anyio.open_process(
                [sys.executable, "-m", "rota.execution.child"],
                stdin=-1,
                stdout=-1,
                stderr=None,  # the child's stderr (and its stdout, moved there) is ours
                # Its own session: a signal meant for the worker's process group (Ctrl-C
                # in a terminal, `timeout`, `kill -- -PGID`) must not kill a child in the
                # middle of a job the worker is still finishing gracefully. The worker ends
                # its children itself; a child whose worker is gone exits on its own.
                start_new_session=True,
            )
        except OSError as exc:
            raise ChildStartFailed(f"queue {self.queue!r}: cannot start a child: {exc}") from exc
        child = _Child(process)
        try:
            with anyio.fail_after(self.settings.start_timeout_s):
                await child.send(self.hello)
                answer = await child.receive()
        except TimeoutError:
            await self._end(child, "start timeout", grace_s=0)
            raise ChildStartFailed(
                f"queue {self.queue!r}: child {child.pid} did not start within "
                f"{self.settings.start_timeout_s:g} s"
            ) from None
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._end(child, "start cancelled", grace_s=0)
            raise
        if isinstance(answer, wire.Ready):
            self._children.add(child)
            log.debug("queue %s: child %d ready", self.queue, child.pid)
            return child
        await self._end(child, "start failed", grace_s=1.0)
        if isinstance(answer, wire.StartFailed):
            raise ChildStartFailed(
                f"queue {self.queue!r}: a child process could not load the app:\n{answer.error}"
            )
        raise ChildStartFailed(
            f"queue {self.queue!r}: child {child.pid} {describe_exit(child.returncode)} "
            f"before it was ready (answer: {answer!r})"
        )

    async def _end(self, child: _Child, reason: str, grace_s: float | None = None) -> None:
        """Make a child exit: SIGTERM, ``grace_s`` (default ``kill_grace_s``), SIGKILL;
        returns once it is gone."""
        if child.retiring is None:
            child.retiring = reason
        grace_s = self.settings.kill_grace_s if grace_s is None else grace_s
        if child.returncode is None:
            child.signal(signal.SIGTERM)
            with anyio.move_on_after(grace_s):
                child.returncode = await child.process.wait()
            if child.returncode is None:
                child.signal(signal.SIGKILL)
                child.returncode = await child.process.wait()
        child.exited.set()
        for stream in (child.process.stdin, child.process.stdout):
            if stream is not None:
                await stream.aclose()

    def _add_idle(self, child: _Child) -> None:
        """A child is free: hand it to the longest-waiting job, else keep it idle."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.event.is_set():
                waiter.child = child
                waiter.event.set()
                return
        self._idle.append(child)

    def _take_idle(self, child: _Child) -> bool:
        try:
            self._idle.remove(child)
        except ValueError:
            return False
        return True

    def _discard(self, child: _Child) -> None:
        self._take_idle(child)
        self._children.discard(child)

    async def _acquire(self) -> _Child:
        """A live child for one job: an idle one, else the first to come free (jobs are
        served in the order they asked)."""
        while True:
            if self._idle:
                child = self._idle.popleft()
            else:
                waiter = _Waiter()
                self._waiters.append(waiter)
                try:
                    await waiter.event.wait()
                except BaseException:
                    if waiter.child is not None:  # handed over as we were cancelled
                        self._add_idle(waiter.child)
                    else:
                        waiter.event.set()  # skipped by _add_idle from now on
                    raise
                assert waiter.child is not None
                child = waiter.child
            if child.returncode is None and child.retiring is None:
                return child

    # -- running jobs ------------------------------------------------------------------

    async def run_job(
        self,
        job: Job,
        *,
        on_progress: Callable[[bytes], Awaitable[None]],
        on_log: Callable[[str], None],
    ) -> wire.JobDone | Interrupted:
        """Run one job in a child, under the job's timeout: its ``JobDone``, or why it did
        not end by itself. Cancelling the caller ends the child (SIGTERM, grace, SIGKILL)
        and propagates."""
        child = await self._acquire()
        message = wire.RunJob(job)
        try:
            with anyio.move_on_after(job.timeout_s):
                try:
                    await child.send(message)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass  # it died already: the read below sees the end of its pipe
                done = await self._converse(child, on_progress, on_log)
                if done is None:
                    return await self._died(child, job)
                await self._done(child)
                return done
        except wire.FrameError as exc:
            with anyio.CancelScope(shield=True):
                await self._end(child, "protocol error")
            return Interrupted(f"child process {child.pid} broke the protocol: {exc}", False)
        except BaseException:
            self.counts["killed"] += 1
            with anyio.CancelScope(shield=True):
                await self._end(child, "job cancelled")
            raise
        # the timeout
        self.counts["killed"] += 1
        with anyio.CancelScope(shield=True):
            await self._end(child, "timeout")
        return Interrupted(
            f"timed out after {job.timeout_s:g} s: child process {child.pid} was stopped "
            f"({describe_exit(child.returncode)})",
            timed_out=True,
        )

    async def _converse(
        self,
        child: _Child,
        on_progress: Callable[[bytes], Awaitable[None]],
        on_log: Callable[[str], None],
    ) -> wire.JobDone | None:
        """Relay a running job's reports until its ``JobDone`` (None: the child died)."""
        while True:
            answer = await child.receive()
            if answer is None or isinstance(answer, wire.JobDone):
                return answer
            if isinstance(answer, wire.ProgressReport):
                await on_progress(answer.progress)
            elif isinstance(answer, wire.LogLine):
                on_log(answer.message)
            else:
                raise wire.FrameError(f"unexpected message during a job: {answer!r}")

    async def _died(self, child: _Child, job: Job) -> Interrupted:
        with anyio.move_on_after(self.settings.kill_grace_s):
            await child.exited.wait()
        self.counts["crashed_jobs"] += 1
        text = (
            f"child process {child.pid} {describe_exit(child.returncode)} while running "
            f"job {job.id} (attempt {job.attempt})"
        )
        log.warning("queue %s: %s; the job runs again at once", self.queue, text)
        return Interrupted(text, timed_out=False)

    async def _done(self, child: _Child) -> None:
        child.jobs += 1
        self.counts["jobs"] += 1
        limit = self.settings.max_jobs_per_child
        if limit is None or child.jobs < limit:
            self._add_idle(child)
            return
        # Recycle: it exits between jobs; its slot starts another (not a restart).
        child.retiring = "recycled"
        self.counts["recycled"] += 1
        try:
            await child.send(wire.Exit())
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            child.signal(signal.SIGTERM)

    # -- observing ---------------------------------------------------------------------

    def statistics(self) -> dict[str, Any]:
        """The pool at a glance, as JSON-able data (``rota info``, the owner's heartbeat)."""
        sup = self.supervisor.statistics()
        return {
            "size": self.settings.size,
            "pids": sorted(child.pid for child in self._children if child.returncode is None),
            "busy": len(self._children) - len(self._idle),
            "jobs": self.counts["jobs"],
            "restarts": sup.total_restarts,
            "recycled": self.counts["recycled"],
            "killed": self.counts["killed"],
            "crashed_jobs": self.counts["crashed_jobs"],
            "gave_up": sup.gave_up,
        }

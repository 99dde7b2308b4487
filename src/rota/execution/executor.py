"""``JobExecutor``: runs one queue's jobs for its WorkerPool, in whichever mode each job
takes (on the event loop, on a handler thread, in a child process), and says how each
attempt ended: a ``Completion`` (its result encoded) or a ``Failure`` classified once
(``Retry``, ``Unrecoverable``, a timeout, an unknown job name, a payload that no longer
decodes...). Cancellation is never swallowed: the pool's cancel scope decides what a
cancelled attempt becomes.

It knows the app only through what it is given: the job definitions by name, the queue's
pools, and a ``JobStorage`` that stores what a running job reports (its log lines and
progress, through storage ops).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import threading
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, Final, Literal, Protocol, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import msgspec

from rota._encoding import type_name
from rota.actors._backend import is_cancellation
from rota.actors._throttle import Throttled
from rota.actors.worker_pool import JobRun
from rota.domain import lifecycle
from rota.domain.backoff import Custom
from rota.domain.job import Job, JobOptions
from rota.domain.outcome import FailureKind
from rota.domain.report import JOB_LOG
from rota.errors import CorruptRow, did_you_mean
from rota.execution import attempt
from rota.execution.context import Context, SyncContext, job_extra, log_line
from rota.execution.processes import Interrupted, ProcessPool
from rota.execution.threads import ThreadPool
from rota.execution.wire import JobDone
from rota.storage import ops
from rota.storage.engine import Completion, Failure

__all__ = [
    "UNKNOWN_JOB_DELAY_S",
    "Definition",
    "JobExecutor",
    "JobStorage",
    "bad_payload",
    "unknown_job",
    "unknown_job_warnings",
]

T = TypeVar("T")

#: A job whose name a worker has no handler for runs again after its backoff, but not
#: sooner than this: a rolling deploy may have enqueued a job type that this worker does
#: not have yet, and the job must neither spin nor use up its attempts in a moment.
UNKNOWN_JOB_DELAY_S: Final = 5.0
#: How often the warning about one unknown job name repeats (with a count) per worker.
_UNKNOWN_JOB_LOG_EVERY_S: Final = 60.0


class Definition(Protocol):
    """What the executor needs of a job type (``rota.app.JobDefinition``)."""

    @property
    def name(self) -> str:
        """The job's name."""

    @property
    def payload_type(self) -> Any:
        """The type its payloads decode to."""

    @property
    def options(self) -> JobOptions:
        """Its default options."""

    def mode_on(self, queue_mode: Literal["process"] | None) -> str:
        """Where its jobs run on a queue of that mode: async, thread or process."""

    def decode(self, payload: bytes) -> Any:
        """A stored payload as its type (``msgspec.DecodeError`` if it does not match)."""

    def encode_result(self, value: Any) -> bytes | None:
        """What the handler returned, as stored (checked against its annotation)."""

    def __call__(self, args: Any, ctx: Context) -> Awaitable[Any]:
        """Call an ``async def`` handler."""

    def call_sync(self, args: Any, ctx: SyncContext) -> Any:
        """Call a plain ``def`` handler."""


class JobStorage(Protocol):
    """Where a running job's reports are stored (an app's ``rota._access.StorageAccess``)."""

    @property
    def token(self) -> anyio.lowlevel.EventLoopToken | None:
        """The runtime's event loop (None once it stopped): where a handler thread's
        reports are stored from."""

    async def run(self, op: ops.Op[T]) -> T:
        """Run one storage operation."""


def unknown_job_warnings() -> Throttled:
    """The warnings about jobs with a name a worker has no handler for (``unknown_job``):
    one per name, then at most every minute."""
    return Throttled(logging.getLogger(JOB_LOG), _UNKNOWN_JOB_LOG_EVERY_S)


class JobExecutor:
    """Runs one queue's jobs (see the module docstring); the WorkerPool calls ``execute``."""

    def __init__(
        self,
        *,
        mode: Literal["process"] | None,
        jobs: Mapping[str, Definition],
        threads: ThreadPool,
        processes: ProcessPool | None,
        storage: JobStorage,
        backend: str,
        unknown: Throttled,
    ) -> None:
        self.mode = mode
        """The queue's configured mode (``QueueConfig.mode``), None if not set."""
        self.jobs = jobs
        """The job definitions by name (the app's registry, as it is when a job runs)."""
        self.threads = threads
        self.processes = processes
        self.storage = storage
        self.backend = backend
        """The event loop async handlers run on (``attempt.backend_hint``)."""
        self.unknown = unknown

    async def execute(self, run: JobRun) -> Completion | Failure:
        """Run ``run``'s job to the outcome to store. Raises only cancellation."""
        job = run.job
        definition = self.jobs.get(job.name)
        if definition is None:  # a newer version's job, or a name another app uses
            error, delay_ms = unknown_job(job, "this worker", self.jobs, self.unknown)
            return Failure(job.id, run.token, error, FailureKind.ERROR, delay_ms)
        # (a pool claims only its own queue's jobs: the queue's mode is this executor's)
        mode = definition.mode_on(self.mode)
        if mode == "process":
            return await self._execute_in_child(run, definition)
        try:
            args = definition.decode(job.payload)
        except msgspec.DecodeError as exc:
            error = bad_payload(job, definition, exc)
            return Failure(job.id, run.token, error, FailureKind.UNRECOVERABLE)
        if mode == "thread":
            return await self._execute_on_thread(run, definition, args)
        ctx = Context(_Stored(self, run), job)
        timeout_s = job.timeout_s
        try:
            if timeout_s is None:  # the common case: no scope to open and close per job
                result = await definition(args, ctx)
            else:
                with anyio.move_on_after(timeout_s) as scope:
                    result = await definition(args, ctx)
                if scope.cancelled_caught:
                    return self._failure(definition, run, f"timed out after {timeout_s:g} s")
            data = definition.encode_result(result)
        except BaseException as exc:  # SystemExit too: it ends the attempt, not the worker
            if is_cancellation(exc):
                raise
            return self._settle(definition, run, attempt.failed(job.id, exc, backend=self.backend))
        finally:
            if run.logs:
                await self._flush_logs_at_end(run)
        return Completion(job.id, run.token, data)

    async def _execute_on_thread(
        self, run: JobRun, definition: Definition, args: Any
    ) -> Completion | Failure:
        job = run.job
        stop = threading.Event()
        ctx = SyncContext(_Stored(self, run), job, stop)
        timeout_s = job.timeout_s
        try:
            finished, done = await self.threads.run_sync(
                functools.partial(
                    attempt.run_sync,
                    job.id,
                    lambda: definition.call_sync(args, ctx),
                    definition.encode_result,
                ),
                cancelled=stop,
                timeout_s=timeout_s,
            )
        except BaseException as exc:  # a per-thread start hook failed: this attempt fails
            if is_cancellation(exc):
                raise
            finished, done = True, attempt.failed(job.id, exc)
        finally:
            if run.logs:
                await self._flush_logs_at_end(run)
        if not finished or done is None:
            return self._failure(
                definition,
                run,
                f"timed out after {timeout_s:g} s (its thread cannot be killed: it was left "
                "to finish alone and its result will be dropped)",
            )
        return self._settle(definition, run, done)

    async def _execute_in_child(self, run: JobRun, definition: Definition) -> Completion | Failure:
        job = run.job
        pool = self.processes
        if pool is None:
            return Failure(
                job.id,
                run.token,
                f"job {job.name!r} runs in process mode, but queue {job.queue!r} has no "
                "process pool in this worker (set mode='process' on the job's own queue, "
                "or queue_config={...: {'mode': 'process'}})",
                FailureKind.ERROR,
            )

        async def on_progress(data: bytes) -> None:
            await self.report_progress(run, data)

        def on_log(line: str) -> None:
            run.logs.append(line)
            log_line(job, line)

        try:
            done = await pool.run_job(job, on_progress=on_progress, on_log=on_log)
        finally:
            if run.logs:
                await self._flush_logs_at_end(run)
        if isinstance(done, Interrupted):
            if done.timed_out:
                return self._failure(definition, run, done.error)
            # The child died: run the job again at once (it counts as an attempt).
            return Failure(job.id, run.token, done.error, FailureKind.ERROR, 0)
        return self._settle(definition, run, done)

    def _settle(self, definition: Definition, run: JobRun, done: JobDone) -> Completion | Failure:
        """The outcome to store for an attempt that ended by itself, in any mode (the
        worker pool logs it once it is stored, with what the engine made of it)."""
        job = run.job
        status = done.status
        if status == "ok":
            return Completion(job.id, run.token, done.result)
        error = done.error or status
        if status == "unrecoverable":
            return Failure(job.id, run.token, error, FailureKind.UNRECOVERABLE)
        return self._failure(definition, run, error, done.delay_ms)

    @staticmethod
    def _failure(
        definition: Definition, run: JobRun, error: str, delay_ms: int | None = None
    ) -> Failure:
        backoff = definition.options.backoff
        if (
            delay_ms is None
            and isinstance(backoff, Custom)
            and run.job.attempt < run.job.max_attempts
        ):
            try:
                delay_ms = round(backoff.delay_s(run.job.attempt) * 1000)
            except Exception as exc:  # a broken policy fails the job, never the pool
                text = (  # its last line: what the log line of the failure shows
                    f"{error.rstrip()}\nno retry: the backoff policy {backoff.fn!r} of job "
                    f"{definition.name!r} failed for attempt {run.job.attempt}: {exc!r}"
                )
                return Failure(run.job.id, run.token, text, FailureKind.UNRECOVERABLE)
        return Failure(run.job.id, run.token, error, FailureKind.ERROR, delay_ms)

    # -- what a running job reports --

    async def report_progress(self, run: JobRun, data: bytes) -> None:
        """Store a progress report of a running job (its pending log lines first)."""
        await self._flush_logs(run)
        await self.storage.run(ops.SetProgress(run.job.id, run.token, data))

    async def _flush_logs(self, run: JobRun) -> None:
        logs, run.logs = run.logs, []
        for line in logs:
            await self.storage.run(ops.AddLog(run.job.id, run.token, line))

    async def _flush_logs_at_end(self, run: JobRun) -> None:
        """Store an ended attempt's last log lines, even while it is being cancelled; a
        failure to store them must not change how the attempt ended."""
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await self._flush_logs(run)


class _Stored:
    """A running job's ``Reports`` in a worker: log lines wait on its ``JobRun`` until the
    next progress report or the attempt's end; both are stored by the executor."""

    __slots__ = ("executor", "run")

    def __init__(self, executor: JobExecutor, run: JobRun) -> None:
        self.executor = executor
        self.run = run

    def add_log(self, line: str) -> None:
        self.run.logs.append(line)

    async def progress(self, data: bytes) -> None:
        await self.executor.report_progress(self.run, data)

    def progress_from_thread(self, data: bytes) -> None:
        token = self.executor.storage.token
        if token is None:
            raise RuntimeError("progress() needs the runtime this job runs in; it has stopped")
        anyio.from_thread.run(self.executor.report_progress, self.run, data, token=token)


def bad_payload(job: Job, definition: Definition, exc: msgspec.DecodeError) -> str:
    """Why a stored payload cannot be run: it does not match the job's schema (e.g. the
    schema changed since it was enqueued), or the row is corrupt (not JSON at all)."""
    if isinstance(exc, msgspec.ValidationError):
        return f"payload does not match {type_name(definition.payload_type)}: {exc}"
    return str(CorruptRow(job.id, "payload", f"not valid JSON ({exc})"))


def unknown_job(job: Job, where: str, known: Iterable[str], warnings: Throttled) -> tuple[str, int]:
    """A job whose name has no handler ``where`` ("this worker", or its child process):
    the error its attempt fails with, and the delay (ms) before it runs again (its stored
    backoff, at least ``UNKNOWN_JOB_DELAY_S``). Logs a WARNING naming the job, its id and
    queue, with the closest name known here: once per name, then at most every minute."""
    known = sorted(known)
    close = did_you_mean(job.name, known) if known else " (it has no jobs)"
    if not close.startswith(","):  # no close match: some of the names it knows
        shown = ", ".join(repr(name) for name in known[:10])
        close = f" (it knows {len(known)}: {shown}{', ...' if len(known) > 10 else ''})"
    error = f"no handler for job {job.name!r} in {where}{close}"
    warnings.warning(
        job.name,
        "job %d (queue %r, attempt %d of %d): %s; retried per its policy, so that a worker "
        "that has it (a newer version, during a deploy) runs it",
        job.id,
        job.queue,
        job.attempt,
        job.max_attempts,
        error,
        extra=job_extra(job),
    )
    delay_ms = lifecycle.retry_delay_ms(job.backoff, job.attempt, random.random())
    return error, max(delay_ms, round(UNKNOWN_JOB_DELAY_S * 1000))

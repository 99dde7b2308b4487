"""``JobExecutor`` on its own: no App, no runtime, no database. It is given job definitions
and a storage that records the ops it is asked to run, and says how each attempt ended."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar, cast

import anyio
import anyio.lowlevel
import msgspec
import pytest

import rota
from rota.actors.worker_pool import JobRun
from rota.domain.job import Job, JobState
from rota.domain.outcome import FailureKind
from rota.execution.executor import UNKNOWN_JOB_DELAY_S, JobExecutor, unknown_job_warnings
from rota.execution.threads import ThreadHooks, ThreadPool
from rota.storage import ops
from rota.storage.engine import Completion, Failure

T = TypeVar("T")


class Recorded:
    """A ``JobStorage`` that keeps the ops it runs."""

    def __init__(self) -> None:
        self.ops: list[ops.Op[Any]] = []
        self.token: anyio.lowlevel.EventLoopToken | None = None

    async def run(self, op: ops.Op[T]) -> T:
        self.ops.append(op)
        return cast(T, None)


def claimed(definition: rota.app.JobDefinition[Any, Any], args: Any, **options: Any) -> JobRun:
    """A job of ``definition`` as a pool holds it once claimed (attempt 1, token 7)."""
    new = definition.new_job(args, 0, **options)
    return JobRun(
        Job(
            id=1,
            name=new.name,
            queue=new.queue,
            state=JobState.ACTIVE,
            payload=new.payload,
            priority=new.priority,
            run_at_ms=new.run_at_ms,
            attempt=1,
            max_attempts=new.max_attempts,
            stalls=0,
            max_stalls=new.max_stalls,
            backoff=new.backoff,
            timeout_ms=new.timeout_ms,
            key=new.key,
            created_at_ms=0,
            owner="me",
            token=7,
            lease_expires_at_ms=60_000,
        )
    )


@pytest.fixture
def registry() -> rota.Registry:
    return rota.Registry()


@pytest.fixture
def storage() -> Recorded:
    return Recorded()


@pytest.fixture
async def threads() -> AsyncIterator[ThreadPool]:
    pool = ThreadPool(queue="default", size=2, hooks=ThreadHooks())
    async with anyio.create_task_group() as tg:
        await tg.start(pool.run)
        yield pool
        tg.cancel_scope.cancel()


@pytest.fixture
def executor(
    registry: rota.Registry, storage: Recorded, threads: ThreadPool
) -> Callable[..., JobExecutor]:
    warnings = unknown_job_warnings()  # one per app: shared by its queues' executors

    def make() -> JobExecutor:
        return JobExecutor(
            mode=None,
            jobs=registry.jobs,
            threads=threads,
            processes=None,
            storage=storage,
            backend="trio",
            unknown=warnings,
        )

    return make


@pytest.mark.trio
async def test_an_async_job_completes_with_its_result_encoded(
    registry: rota.Registry, executor: Callable[..., JobExecutor]
) -> None:
    @registry.job
    async def double(n: int) -> list[int]:
        return [n, n]

    outcome = await executor().execute(claimed(double, 21))
    assert outcome == Completion(1, 7, b"[21,21]")


@pytest.mark.trio
async def test_log_lines_are_stored_before_each_progress_report_and_at_the_end(
    registry: rota.Registry, executor: Callable[..., JobExecutor], storage: Recorded
) -> None:
    @registry.job
    async def report(n: int, ctx: rota.Context) -> None:
        ctx.log("first")
        await ctx.progress(50, message="half")
        ctx.log("last")

    outcome = await executor().execute(claimed(report, 1))
    assert outcome == Completion(1, 7, None)
    assert storage.ops == [
        ops.AddLog(1, 7, "first"),
        ops.SetProgress(1, 7, b'{"value":50.0,"message":"half"}'),
        ops.AddLog(1, 7, "last"),
    ]


@pytest.mark.trio
async def test_a_sync_handler_reports_from_its_thread_through_the_runtime_loop(
    registry: rota.Registry, executor: Callable[..., JobExecutor], storage: Recorded
) -> None:
    @registry.job
    def report(n: int, ctx: rota.SyncContext) -> int:
        ctx.log("on a thread")
        ctx.progress(step=1, total=2)
        return n + 1

    storage.token = anyio.lowlevel.current_token()
    outcome = await executor().execute(claimed(report, 1))
    assert outcome == Completion(1, 7, b"2")
    assert [type(op) for op in storage.ops] == [ops.AddLog, ops.SetProgress]


@pytest.mark.trio
async def test_a_sync_handler_reporting_once_the_runtime_stopped_fails_its_attempt(
    registry: rota.Registry, executor: Callable[..., JobExecutor], storage: Recorded
) -> None:
    @registry.job
    def report(n: int, ctx: rota.SyncContext) -> None:
        ctx.progress(1)

    outcome = await executor().execute(claimed(report, 1))  # storage.token is None
    assert isinstance(outcome, Failure)
    assert outcome.kind is FailureKind.ERROR
    assert "progress() needs the runtime this job runs in; it has stopped" in outcome.error


@pytest.mark.trio
async def test_an_unknown_job_name_fails_its_attempt_to_run_again_later_and_warns(
    registry: rota.Registry,
    executor: Callable[..., JobExecutor],
    caplog: pytest.LogCaptureFixture,
) -> None:
    @registry.job(name="known")
    async def known(n: int) -> None:
        pass

    run = claimed(known, 1)
    run.job = msgspec.structs.replace(run.job, name="knwon")
    with caplog.at_level(logging.WARNING, logger="rota.job"):
        outcome = await executor().execute(run)
        assert await executor().execute(run) == outcome  # warned once: then throttled
    assert isinstance(outcome, Failure)
    assert outcome.kind is FailureKind.ERROR
    assert outcome.error.startswith("no handler for job 'knwon' in this worker, did you mean")
    assert outcome.delay_ms is not None and outcome.delay_ms >= UNKNOWN_JOB_DELAY_S * 1000
    assert [r.name for r in caplog.records] == ["rota.job"]


@pytest.mark.trio
async def test_a_payload_that_no_longer_matches_fails_the_job_for_good(
    registry: rota.Registry, executor: Callable[..., JobExecutor]
) -> None:
    @registry.job
    async def take(n: int) -> None:
        pass

    run = claimed(take, 1)
    run.job = msgspec.structs.replace(run.job, payload=b'"one"')
    outcome = await executor().execute(run)
    assert isinstance(outcome, Failure)
    assert outcome.kind is FailureKind.UNRECOVERABLE
    assert outcome.error.startswith("payload does not match int: Expected `int`, got `str`")


def _raise(exc: BaseException) -> Any:
    raise exc


@pytest.mark.trio
@pytest.mark.parametrize("mode", ["async", "thread"])
@pytest.mark.parametrize(
    ("raised", "kind", "delay_ms", "error"),
    [
        (rota.Retry(2.5, "busy"), FailureKind.ERROR, 2500, "retry requested: busy"),
        (rota.Unrecoverable("gone"), FailureKind.UNRECOVERABLE, None, "unrecoverable: gone"),
        (OSError("down"), FailureKind.ERROR, None, "OSError: down"),
        (SystemExit(2), FailureKind.ERROR, None, "a job cannot stop its worker"),
    ],
)
async def test_what_a_handler_raises_is_classified_alike_in_every_mode(
    registry: rota.Registry,
    executor: Callable[..., JobExecutor],
    storage: Recorded,
    mode: str,
    raised: BaseException,
    kind: FailureKind,
    delay_ms: int | None,
    error: str,
) -> None:
    if mode == "async":

        @registry.job(name="fail")
        async def fail_async(n: int) -> None:
            _raise(raised)

    else:

        @registry.job(name="fail")
        def fail_sync(n: int) -> None:
            _raise(raised)

    storage.token = anyio.lowlevel.current_token()
    outcome = await executor().execute(claimed(registry.jobs["fail"], 1))
    assert isinstance(outcome, Failure)
    assert (outcome.kind, outcome.delay_ms) == (kind, delay_ms)
    assert error in outcome.error


@pytest.mark.trio
@pytest.mark.parametrize("mode", ["async", "thread"])
async def test_a_timeout_fails_the_attempt_saying_so(
    registry: rota.Registry, executor: Callable[..., JobExecutor], mode: str
) -> None:
    if mode == "async":

        @registry.job(name="slow", timeout=0.05)
        async def slow_async(n: int) -> None:
            await anyio.sleep(10)

    else:

        @registry.job(name="slow", timeout=0.05)
        def slow_sync(n: int, ctx: rota.SyncContext) -> None:
            while not ctx.cancelled:  # left to finish alone: it stops once abandoned
                time.sleep(0.005)

    outcome = await executor().execute(claimed(registry.jobs["slow"], 1))
    assert isinstance(outcome, Failure)
    assert outcome.kind is FailureKind.ERROR
    assert outcome.error.startswith("timed out after 0.05 s")


@pytest.mark.trio
async def test_a_cancelled_attempt_is_never_swallowed(
    registry: rota.Registry, executor: Callable[..., JobExecutor]
) -> None:
    @registry.job
    async def forever(n: int) -> None:
        await anyio.sleep_forever()

    outcome: Any = "unset"
    with anyio.move_on_after(0.05) as scope:
        outcome = await executor().execute(claimed(forever, 1))
    assert scope.cancelled_caught
    assert outcome == "unset"


@pytest.mark.trio
async def test_a_process_job_on_a_queue_without_child_processes_fails_saying_how_to_fix_it(
    registry: rota.Registry, executor: Callable[..., JobExecutor]
) -> None:
    @registry.job(mode="process")
    async def elsewhere(n: int) -> None:
        pass

    outcome = await executor().execute(claimed(elsewhere, 1))
    assert isinstance(outcome, Failure)
    assert outcome.kind is FailureKind.ERROR
    assert "has no process pool in this worker (set mode='process'" in outcome.error

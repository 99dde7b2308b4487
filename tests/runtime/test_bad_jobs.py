"""Nothing a job does stops its worker: a handler that calls ``sys.exit()`` (or raises
``KeyboardInterrupt``, ``GeneratorExit``), a backoff policy that raises or returns
nonsense, a row that does not decode. Each ends that job's attempt (or the job) with an
error that says what happened; the pool never crashes, the jobs behind it run, and no
attempt number goes past ``max_attempts``."""

from __future__ import annotations

import argparse
import math
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from rt_support import Item, wait_for

import rota
from rota.actors.scheduler import RunDuty
from rota.app import App
from rota.domain.job import JobState
from rota.errors import CorruptRow, JobFailed

pytestmark = pytest.mark.anyio


def _exit() -> None:
    sys.exit(2)


def _argparse_error() -> None:
    parser = argparse.ArgumentParser(prog="job")
    parser.error("bad option")  # prints usage to stderr and raises SystemExit(2)


def _interrupt() -> None:
    raise KeyboardInterrupt


def _generator_exit() -> None:
    raise GeneratorExit


EXITS: dict[str, tuple[Callable[[], None], str]] = {
    "sys.exit": (_exit, "SystemExit(2)"),
    "argparse": (_argparse_error, "SystemExit(2)"),
    "KeyboardInterrupt": (_interrupt, "KeyboardInterrupt()"),
    "GeneratorExit": (_generator_exit, "GeneratorExit()"),
}


async def run_until_finished(app: App, handles: list[Any], timeout: float = 20) -> Any:
    """Run the app's runtime until every handle's job has finished; returns the runtime's
    statistics at that point."""
    async with app.run() as runtime:
        with anyio.fail_after(timeout):
            for handle in handles:
                await wait_for(
                    lambda h=handle: _finished(h), what=f"job {handle.id} finished", timeout=timeout
                )
        return runtime.statistics()


async def _finished(handle: Any) -> bool:
    return bool((await handle.info()).finished)


def assert_no_crash(stats: dict[str, Any]) -> None:
    crashed = {name: a.crashes for name, a in stats["actors"].items() if a.crashes}
    assert crashed == {}, f"actors crashed: {crashed}"


@pytest.mark.parametrize("how", list(EXITS))
@pytest.mark.parametrize("mode", ["async", "thread"])
async def test_a_handler_that_exits_fails_its_attempt_and_the_worker_goes_on(
    make_app: Callable[..., App], how: str, mode: str
) -> None:
    app = make_app(concurrency=1)
    leave, shown = EXITS[how]
    attempts: list[int] = []

    if mode == "async":

        @app.job(name="exits", queue="q", max_attempts=3, backoff=rota.fixed(0))
        async def exits_async(args: Item, ctx: rota.Context) -> None:
            attempts.append(ctx.attempt)
            leave()

        bad = exits_async
    else:

        @app.job(name="exits", queue="q", max_attempts=3, backoff=rota.fixed(0))
        def exits_sync(args: Item, ctx: rota.SyncContext) -> None:
            attempts.append(ctx.attempt)
            leave()

        bad = exits_sync

    @app.job(name="fine", queue="q")
    async def fine(args: Item) -> int:
        return args.n

    first = await bad.enqueue(Item(0))
    behind = [await fine.enqueue(Item(n)) for n in range(1, 6)]
    stats = await run_until_finished(app, [first, *behind])
    assert_no_crash(stats)
    assert attempts == [1, 2, 3]  # counted every time, never past max_attempts
    job = await first.info()
    assert (job.state, job.attempt) == (JobState.FAILED, 3)
    assert job.error is not None
    last = job.error.strip().splitlines()[-1]
    assert f"the handler raised {shown}" in last
    assert "a job cannot stop its worker" in last
    with pytest.raises(JobFailed, match="a job cannot stop its worker"):
        await first.result(timeout=1)
    assert [await h.result(timeout=1) for h in behind] == [1, 2, 3, 4, 5]


# -- backoff policies that fail ---------------------------------------------------------------


def _raises(attempt: int) -> float:
    raise ZeroDivisionError("division by zero in the policy")


@pytest.mark.parametrize(
    ("policy", "named"),
    [
        pytest.param(_raises, "ZeroDivisionError", id="raises"),
        pytest.param(lambda attempt: -1.0, "-1.0", id="negative"),
        pytest.param(lambda attempt: math.nan, "nan", id="nan"),
        pytest.param(lambda attempt: math.inf, "inf", id="inf"),
        pytest.param(lambda attempt: "soon", "'soon'", id="not-a-number"),
    ],
)
@pytest.mark.parametrize("mode", ["async", "thread"])
async def test_a_backoff_policy_that_fails_fails_the_job_without_retry_never_the_pool(
    make_app: Callable[..., App], policy: Callable[[int], Any], named: str, mode: str
) -> None:
    app = make_app(concurrency=1)
    attempts: list[int] = []

    if mode == "async":

        @app.job(name="flaky", queue="q", max_attempts=3, backoff=rota.custom(policy))
        async def flaky_async(args: Item, ctx: rota.Context) -> None:
            attempts.append(ctx.attempt)
            raise RuntimeError("boom")

        flaky = flaky_async
    else:

        @app.job(name="flaky", queue="q", max_attempts=3, backoff=rota.custom(policy))
        def flaky_sync(args: Item, ctx: rota.SyncContext) -> None:
            attempts.append(ctx.attempt)
            raise RuntimeError("boom")

        flaky = flaky_sync

    @app.job(name="fine", queue="q")
    async def fine(args: Item) -> int:
        return args.n

    handle = await flaky.enqueue(Item(0))
    behind = await fine.enqueue(Item(1))
    stats = await run_until_finished(app, [handle, behind])
    assert_no_crash(stats)
    assert attempts == [1]  # no retry: its delay cannot be known
    job = await handle.info()
    assert (job.state, job.attempt) == (JobState.FAILED, 1)
    assert job.error is not None
    assert "RuntimeError: boom" in job.error  # the attempt's own error is kept
    last = job.error.strip().splitlines()[-1]
    assert "no retry: the backoff policy" in last and "'flaky'" in last and named in last
    assert await behind.result(timeout=1) == 1


# -- rows that do not decode ---------------------------------------------------------------------


def corrupt(db_path: str, job_id: int, column: str, value: object) -> None:
    """Write ``value`` into one column of a stored job, as a foreign writer (or a damaged
    page) could, bypassing the CHECK constraints."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute(f"UPDATE rota_jobs SET {column} = ? WHERE id = ?", (value, job_id))
    finally:
        conn.close()


@pytest.mark.parametrize("prefetch", [0, 10])
async def test_corrupt_rows_are_failed_and_the_rest_of_the_claim_runs_untouched(
    make_app: Callable[..., App], db_path: str, prefetch: int
) -> None:
    app = make_app(db_path, concurrency=4, prefetch=prefetch)
    ran: list[int] = []

    @app.job(name="work", queue="q", backoff=rota.fixed(0))
    async def work(args: Item) -> int:
        ran.append(args.n)
        return args.n

    handles = await work.enqueue_many([Item(n) for n in range(8)])
    not_json, bad_backoff, bad_state = handles[1], handles[3], handles[5]
    corrupt(db_path, not_json.id, "payload", b"\xff{ not json")
    corrupt(db_path, bad_backoff.id, "backoff", "garbage")
    corrupt(db_path, bad_state.id, "state", "bogus")
    good = [h for h in handles if h not in (not_json, bad_backoff, bad_state)]
    stats = await run_until_finished(app, [*good, not_json, bad_backoff])
    assert_no_crash(stats)
    assert sorted(ran) == [h.id - handles[0].id for h in good]
    for handle in good:  # the other jobs of the same claims burnt no attempt
        job = await handle.info()
        assert (job.state, job.attempt) == (JobState.COMPLETED, 1)
    payload_job = await not_json.info()
    assert payload_job.state is JobState.FAILED
    assert payload_job.error == (
        f"corrupt row: job {not_json.id}, column 'payload': not valid JSON "
        "(JSON is malformed: invalid character (byte 0))"
    )
    backoff_job = await bad_backoff.info()  # readable again: the backoff was replaced
    assert backoff_job.state is JobState.FAILED
    assert backoff_job.error is not None
    assert backoff_job.error.startswith(f"corrupt row: job {bad_backoff.id}, column 'backoff': ")
    assert backoff_job.error.endswith("its backoff was replaced by the default policy")
    # A row in a state rota does not know is never claimed, and reading it is a clear error,
    with pytest.raises(CorruptRow, match=f"job {bad_state.id}, column 'state': 'bogus'"):
        await bad_state.info()
    # until the retention pass fails it for good.
    async with app.run() as runtime:
        await runtime.scheduler_ref.call(RunDuty("retention"))
    state_job = await bad_state.info()
    assert state_job.state is JobState.FAILED
    assert state_job.error == (
        f"corrupt row: job {bad_state.id}, column 'state': 'bogus' is not a job state"
    )


async def test_a_failing_job_whose_row_went_corrupt_is_failed_for_good(
    make_app: Callable[..., App], db_path: str
) -> None:
    app = make_app(db_path, concurrency=1)
    started = anyio.Event()
    go_on = anyio.Event()

    @app.job(name="flaky", queue="q", max_attempts=5, backoff=rota.fixed(0))
    async def flaky(args: Item) -> None:
        started.set()
        await go_on.wait()
        raise RuntimeError("boom")

    @app.job(name="fine", queue="q")
    async def fine(args: Item) -> int:
        return args.n

    handle = await flaky.enqueue(Item(0))
    behind = await fine.enqueue(Item(1))
    async with app.run() as runtime:
        await started.wait()
        corrupt(db_path, handle.id, "backoff", "{not a policy")
        go_on.set()
        assert await behind.result(timeout=10) == 1
        stats = runtime.statistics()
    assert_no_crash(stats)
    job = await handle.info()
    assert (job.state, job.attempt) == (JobState.FAILED, 1)
    assert job.error is not None and "RuntimeError: boom" in job.error
    assert f"failed for good: corrupt row: job {handle.id}, column 'backoff'" in job.error

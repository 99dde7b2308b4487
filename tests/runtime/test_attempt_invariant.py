"""The attempt invariant, as a property of the whole runtime: whatever mix of outcomes a
job's attempts have (return, raise, ``sys.exit``, ``KeyboardInterrupt``, ``Retry``,
``Unrecoverable``, a backoff policy that fails, a crash of the pool that runs it, which
its supervisor restarts), every attempt counts exactly once, none runs past
``max_attempts``, a crash counts a stall, and every job ends as the rules say.

(The same invariant is checked step by step against the storage engine, with owners
that die and pools that stop or crash, in ``tests/storage/contract/test_lease_state_machine.py``.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rota
from rota.app import App, Context
from rota.domain.job import JobState
from rota.testing import Clock, drain

ACTIONS = ("ok", "raise", "exit", "interrupt", "retry", "unrecoverable", "crash")


class Step(msgspec.Struct):
    script: list[str]


class _PoolCrash(RuntimeError):
    """Raised in a task of the pool's own: the pool actor crashes (not the job)."""


def expected(
    script: list[str], max_attempts: int, max_stalls: int, broken_backoff: bool
) -> tuple[JobState, int, int]:
    """(final state, attempts, stalls) by the rules."""
    stalls = 0
    for attempt in range(1, max_attempts + 1):
        action = script[attempt - 1] if attempt <= len(script) else "ok"
        if action == "ok":
            return JobState.COMPLETED, attempt, stalls
        if action == "unrecoverable":
            return JobState.FAILED, attempt, stalls
        if action == "crash":
            stalls += 1
            if stalls > max_stalls:
                return JobState.FAILED, attempt, stalls
        elif action != "retry" and broken_backoff:
            return JobState.FAILED, attempt, stalls  # its delay cannot be known: no retry
    return JobState.FAILED, max_attempts, stalls


def _broken(attempt: int) -> float:
    raise ArithmeticError("a broken backoff policy")


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    jobs=st.lists(
        st.tuples(
            st.lists(st.sampled_from(ACTIONS), max_size=4),
            st.integers(1, 3),  # max_attempts
            st.integers(0, 2),  # max_stalls
            st.booleans(),  # a backoff policy that fails
        ),
        min_size=1,
        max_size=5,
    ).filter(lambda jobs: sum(script.count("crash") for script, *_ in jobs) <= 2)
)
def test_every_attempt_counts_once_and_none_runs_past_max_attempts(
    jobs: list[tuple[list[str], int, int, bool]],
) -> None:
    anyio.run(_run, jobs, backend="trio")


async def _run(jobs: list[tuple[list[str], int, int, bool]]) -> None:
    clock = Clock()
    app = App(":memory:", clock=clock, lease_ttl_s=30.0, shutdown_grace_s=0.5)
    ran: dict[int, list[int]] = {}

    def act(action: str) -> Any:
        if action == "raise":
            raise ValueError("boom")
        if action == "exit":
            sys.exit(1)
        if action == "interrupt":
            raise KeyboardInterrupt
        if action == "retry":
            raise rota.Retry(delay_s=0)
        if action == "unrecoverable":
            raise rota.Unrecoverable("no")
        if action == "crash":

            async def crash() -> None:
                raise _PoolCrash("the pool itself breaks")

            assert app._runtime is not None
            app._runtime.pools["q"].actor.tasks.start_soon(crash)
            return anyio.sleep_forever()
        return None

    defs: list[Callable[..., Any]] = []
    for i, (_, max_attempts, max_stalls, broken) in enumerate(jobs):
        policy = rota.custom(_broken, fallback=rota.fixed(0)) if broken else rota.fixed(0)

        @app.job(
            name=f"job{i}",
            queue="q",
            max_attempts=max_attempts,
            max_stalls=max_stalls,
            backoff=policy,
        )
        async def handler(args: Step, ctx: Context) -> int:
            ran.setdefault(ctx.job_id, []).append(ctx.attempt)
            action = args.script[ctx.attempt - 1] if ctx.attempt <= len(args.script) else "ok"
            waiting = act(action)
            if waiting is not None:
                await waiting
            return ctx.attempt

        defs.append(handler)

    handles = [await d.enqueue(Step(script)) for d, (script, *_) in zip(defs, jobs, strict=True)]
    try:
        await drain(app, clock=clock, timeout_s=30)
        for handle, (script, max_attempts, max_stalls, broken) in zip(handles, jobs, strict=True):
            job = await handle.info()
            state, attempts, stalls = expected(script, max_attempts, max_stalls, broken)
            assert job.attempt <= max_attempts, job
            assert (job.state, job.attempt, job.stalls) == (state, attempts, stalls), (script, job)
            # every attempt ran once, in order: none uncounted, none twice
            assert ran.get(handle.id) == list(range(1, attempts + 1)), (script, ran)
    finally:
        app.close()


@pytest.mark.anyio
async def test_a_claim_in_flight_when_the_pool_crashes_reaches_the_pool_and_is_handed_back() -> (
    None
):
    """A pool that crashes while its feeder waits for a claim: the Store commits the claim
    all the same, so the jobs it leased must reach the pool (and go back, uncounted, with
    its unstarted jobs) instead of staying leased by nobody until the lease expires, and
    then counting a stall for an attempt that never ran. (Found by the property above:
    the lease of 30 s never expired on its test clock and the drain timed out.)"""
    clock = Clock()
    app = App(":memory:", clock=clock, lease_ttl_s=30.0, shutdown_grace_s=0.5)
    ran: list[tuple[int, int]] = []
    all_ran = anyio.Event()

    @app.job(name="task", queue="q")
    async def task(args: Step, ctx: Context) -> None:
        ran.append((ctx.job_id, ctx.attempt))
        if len(ran) == 3:
            all_ran.set()

    crashed = False

    async def crash() -> None:
        raise _PoolCrash("the pool itself breaks")

    try:
        async with app.run(scheduler_interval_s=0.02, poll_interval_s=0.002) as runtime:
            store = runtime.store
            real_run = store.run

            async def run(op: Any) -> Any:
                nonlocal crashed
                claim = getattr(op, "claim", None)
                if not crashed and type(op).__name__ == "SettleAndClaim" and claim is not None:
                    crashed = True  # the pool crashes while this claim is in the Store
                    pool = runtime.pools["q"].actor
                    assert pool is not None
                    pool.tasks.start_soon(crash)
                return await real_run(op)

            store.run = run  # type: ignore[method-assign]
            ids = await anyio.to_thread.run_sync(
                lambda: [h.id for h in task.enqueue_many_sync([Step([]) for _ in range(3)])]
            )
            runtime.wake()
            with anyio.fail_after(10):
                await all_ran.wait()
                for job_id in ids:  # and settled
                    await app.handle(job_id).result()
            assert crashed
            for job_id in ids:
                job = await app.handle(job_id).info()
                assert (job.state, job.attempt, job.stalls) == (JobState.COMPLETED, 1, 0), job
            assert sorted(ran) == [(job_id, 1) for job_id in ids]  # each ran once, attempt 1
    finally:
        app.close()

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

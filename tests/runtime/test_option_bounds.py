"""Key property of the option bounds: a ``Config`` that ``App()`` accepts never kills
``app.run()``: for any options (drawn with their extremes), either ``App(...)`` raises
``ConfigError``, or a runtime with them starts, runs jobs and stops cleanly. And a
handler's ``Retry`` with an absurd delay fails its attempt; it does not stop the worker."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from rt_support import FAST, Item

import rota
from rota.app import App
from rota.config import BOUNDS, Config
from rota.domain.event import EventKind
from rota.errors import ConfigError
from rota.storage import ops


def _extremes(low: float, high: float, is_float: bool) -> st.SearchStrategy[Any]:
    edges: list[Any] = [low, high, -1, 0, 2**63, 2**64, -(2**63) - 1]
    if is_float:
        edges += [math.nan, math.inf, -math.inf, 1e300, 1e-9, low * 0.999, high * 1.001]
        inside = st.floats(min_value=low, max_value=high)
    else:
        edges += [low - 1, high + 1]
        inside = st.integers(min_value=int(low), max_value=int(high))
    return st.one_of(st.sampled_from(edges), inside, inside)  # mostly valid: more runs


_FLOATS = {f.name for f in msgspec.structs.fields(Config) if "float" in str(f.type)}
# Process-mode options are left out: no job here runs in a child process.
_DRAWN = [
    name
    for name in (f.name for f in msgspec.structs.fields(Config))
    if name in BOUNDS and name not in ("processes", "max_jobs_per_child")
]
OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        name: _extremes(BOUNDS[name].low, BOUNDS[name].high, name in _FLOATS) for name in _DRAWN
    },
)


async def _run_jobs(app: App) -> None:
    """Start the runtime, run two jobs one after the other, stop (the jobs may be gone by
    the time they are looked at: retention may be 0)."""
    ran: list[int] = []
    done = anyio.Event()

    @app.job(queue="q")
    async def echo(args: Item) -> int:
        ran.append(args.n)
        if len(ran) == 2:
            done.set()
        return args.n

    with anyio.fail_after(20):
        async with app.run():
            await echo.enqueue(Item(1))
            await echo.enqueue(Item(2))
            await done.wait()
    assert sorted(ran) == [1, 2]


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(options=OPTIONS)
@example(options={name: BOUNDS[name].low for name in _DRAWN})
@example(options={name: BOUNDS[name].high for name in _DRAWN})
@example(options={"lease_ttl_s": math.inf})
def test_a_config_that_app_accepts_never_kills_the_runtime(options: dict[str, Any]) -> None:
    try:
        app = App(":memory:", **{**FAST, **options})
    except ConfigError:
        event("refused")
        return
    event("ran")
    try:
        anyio.run(_run_jobs, app, backend="trio")
    finally:
        app.close()


@pytest.mark.anyio
async def test_a_retry_with_an_absurd_delay_fails_the_attempt_not_the_worker(
    make_app: Callable[..., App],
) -> None:
    app = make_app()

    @app.job(queue="q", max_attempts=2, backoff=rota.fixed(0))
    async def absurd(args: Item, ctx: rota.Context) -> int:
        if ctx.attempt == 1:
            raise rota.Retry(delay_s=math.inf if args.n else 1e300)
        return ctx.attempt

    async with app.run():
        with anyio.fail_after(10):
            handles = [await absurd.enqueue(Item(n)) for n in (0, 1)]
            assert [await h.result() for h in handles] == [2, 2]  # retried per the backoff
    retrying = [
        event for event in app._storage.run_sync(ops.Events(0)) if event.kind is EventKind.RETRYING
    ]
    assert sorted(e.job_id for e in retrying) == sorted(h.id for h in handles)
    for e in retrying:
        assert b"Retry delay_s must be between 0" in (e.data or b"")

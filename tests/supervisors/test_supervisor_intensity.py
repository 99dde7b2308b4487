"""Restart intensity: the boundary, the sliding window, and escalation through a tree."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.abc
import pytest
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from rota.errors import SupervisorGaveUp
from rota.supervisors import Restart, Strategy, Supervisor
from rota.supervisors._intensity import Intensity

if TYPE_CHECKING:
    from conftest import World


# -- the window itself (pure) ----------------------------------------------------------------


def test_intensity_allows_n_and_refuses_the_next_within_the_window() -> None:
    window = Intensity(max_restarts=3, period_s=5.0)
    assert [window.try_record(t) for t in (0.0, 1.0, 2.0)] == [True, True, True]
    assert window.try_record(4.9) is False  # a 4th within 5 s
    assert window.in_window(4.9) == 3  # a refused restart is not recorded
    assert window.try_record(5.0) is True  # the one at 0.0 is exactly 5 s old: out
    assert window.in_window(5.0) == 3


def test_intensity_zero_refuses_every_restart() -> None:
    assert Intensity(max_restarts=0, period_s=5.0).try_record(0.0) is False


@given(
    max_restarts=st.integers(0, 5),
    period_s=st.floats(0.5, 20),
    gaps=st.lists(st.floats(0, 10), max_size=40),
)
def test_intensity_matches_a_brute_force_model(
    max_restarts: int, period_s: float, gaps: list[float]
) -> None:
    window = Intensity(max_restarts, period_s)
    recorded: list[float] = []
    now = 0.0
    for gap in gaps:
        now += gap
        in_window = [t for t in recorded if now - t < period_s]
        expected = len(in_window) < max_restarts
        assert window.try_record(now) is expected
        if expected:
            recorded.append(now)
        assert window.in_window(now) == len([t for t in recorded if now - t < period_s])


# -- a running supervisor (trio, MockClock) --------------------------------------------------


@pytest.mark.trio
async def test_n_restarts_in_the_window_are_allowed_the_next_escalates(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.probe("a", [("crash", 0)] * 3)
    b = world.probe("b")
    sup = Supervisor("s", [a.spec, b.spec], max_restarts=3, period_s=5)
    errors: list[SupervisorGaveUp] = []

    async def supervise(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            await sup.run(task_status=task_status)
        except SupervisorGaveUp as exc:
            errors.append(exc)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(supervise)
            await world.settle()
            stats = sup.statistics()
            assert (stats.total_restarts, stats.restarts_in_window) == (3, 3)
            assert stats.running and not stats.gave_up
            assert stats.children == ("a", "b")
            world.clear()
            a.crash()  # the 4th within 5 s (still at t=0)
    assert anyio.current_time() == 0.0
    [error] = errors
    assert (error.supervisor, error.restarts, error.period_s) == ("s", 3, 5.0)
    assert error.__cause__ is a.errors[-1]
    assert a.starts == 4
    # gave up: every child still running stopped, reverse order
    assert world.log() == [("crash", "a"), ("ask", "b"), ("return", "b")]
    stats = sup.statistics()
    assert stats.gave_up and not stats.running and stats.total_restarts == 3


@pytest.mark.trio
async def test_a_permanent_child_returning_counts_as_a_restart(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.probe("a", [("return", 1)] * 2)
    sup = Supervisor("s", [a.spec], max_restarts=1, period_s=5)
    with anyio.fail_after(60), pytest.raises(SupervisorGaveUp) as info:
        await sup.run()
    assert anyio.current_time() == 2.0
    assert info.value.__cause__ is None  # a normal return has no exception to chain
    assert a.starts == 2


@pytest.mark.trio
@pytest.mark.parametrize("interval", [2.5, 3.0, 7.0])
async def test_restarts_spaced_out_slide_out_of_the_window(
    autojump_clock: trio.testing.MockClock, world: World, interval: float
) -> None:
    """2 restarts per 5 s: crashing every 2.5 s or more never escalates, because the restart
    from 5 s ago (or earlier) has left the window each time."""
    a = world.probe("a", [("crash", interval)] * 10)
    sup = Supervisor("s", [a.spec], max_restarts=2, period_s=5)
    with anyio.fail_after(200):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await anyio.sleep(interval * 10 + 1)
            stats = sup.statistics()
            assert (stats.total_restarts, stats.gave_up, a.starts) == (10, False, 11)
            assert stats.restarts_in_window == (1 if interval >= 5 else 2)
            await sup.stop()


@pytest.mark.trio
async def test_restarts_slightly_too_close_escalate_at_the_third(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.probe("a", [("crash", 2.4)] * 10)
    sup = Supervisor("s", [a.spec], max_restarts=2, period_s=5)
    with anyio.fail_after(200), pytest.raises(SupervisorGaveUp):
        await sup.run()
    # restarts at 2.4 and 4.8; at 7.2 the one at 2.4 is only 4.8 s old: a 3rd in 5 s
    assert anyio.current_time() == pytest.approx(7.2)
    assert a.starts == 3


@pytest.mark.trio
async def test_the_window_is_fresh_for_each_run(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.probe("a", [("crash", 0)] * 2)
    sup = Supervisor("s", [a.spec], max_restarts=1, period_s=60)
    with anyio.fail_after(60):
        with pytest.raises(SupervisorGaveUp):
            await sup.run()
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            stats = sup.statistics()
            assert (stats.gave_up, stats.restarts_in_window, stats.total_restarts) == (False, 0, 1)
            await sup.stop()


# -- escalation through two levels --------------------------------------------------------------


@pytest.mark.trio
async def test_inner_gives_up_and_the_outer_restarts_it(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    x = world.probe("x", [("crash", 0)] * 2)  # 2 crashes: more than inner allows
    inner = Supervisor("inner", [x.spec], max_restarts=1, period_s=60)
    s = world.probe("s")
    t = world.probe("t")
    outer = Supervisor("outer", [s.spec, inner.child_spec(), t.spec], max_restarts=1, period_s=60)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(outer.run)
            await world.settle()
            stats = outer.statistics()
            assert stats.restarts == {"s": 0, "inner": 1, "t": 0}  # one_for_one
            assert stats.children == ("s", "inner", "t")
            assert (s.starts, x.starts, t.starts) == (1, 3, 1)  # x: 2 in the first inner run
            assert inner.running and not inner.statistics().gave_up
            world.clear()
            await outer.stop()
    # the whole tree stops depth-first in reverse order
    assert world.log("ask") == [("ask", "t"), ("ask", "x"), ("ask", "s")]


@pytest.mark.trio
async def test_escalation_reaches_the_top_when_the_outer_gives_up_too(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    x = world.probe("x", [("crash", 0)] * 10)
    inner = Supervisor("inner", [x.spec], max_restarts=1, period_s=60)
    s = world.probe("s")
    t = world.probe("t")
    outer = Supervisor(
        "outer",
        [s.spec, inner.child_spec(), t.spec],
        strategy=Strategy.REST_FOR_ONE,
        max_restarts=1,
        period_s=60,
    )
    with anyio.fail_after(60), pytest.raises(SupervisorGaveUp) as info:
        await outer.run()
    top = info.value
    assert top.supervisor == "outer"
    assert isinstance(top.__cause__, SupervisorGaveUp)
    assert top.__cause__.supervisor == "inner"
    assert top.__cause__.__cause__ is x.errors[-1]
    assert x.starts == 4  # two inner runs of 2 starts each
    assert (s.starts, t.starts) == (1, 2)  # rest_for_one restarted t along with inner once
    assert world.log("ask")[-2:] == [("ask", "t"), ("ask", "s")]
    assert outer.statistics().gave_up and inner.statistics().gave_up


@pytest.mark.trio
async def test_temporary_nested_supervisor_that_gives_up_is_dropped(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    x = world.probe("x", [("crash", 0)])
    inner = Supervisor("inner", [x.spec], max_restarts=0)
    s = world.probe("s")
    outer = Supervisor("outer", [inner.child_spec(restart=Restart.TEMPORARY), s.spec])
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(outer.run)
            await world.settle()
            stats = outer.statistics()
            assert (stats.children, stats.total_restarts) == (("s",), 0)
            await outer.stop()

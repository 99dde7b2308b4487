"""Starting (started-handshake, failed starts), stopping (reverse order, grace) and backoff.

trio with ``MockClock(autojump_threshold=0)``: every time below is exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
import trio.testing

from rota.errors import SupervisorGaveUp
from rota.supervisors import ChildSpec, RestartBackoff, Strategy, Supervisor

if TYPE_CHECKING:
    from conftest import World

pytestmark = pytest.mark.trio


# -- starting ---------------------------------------------------------------------------------


async def test_children_start_in_order_each_after_the_previous_signalled_started(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.probe("a", start_delay_s=1)
    b = world.probe("b", start_delay_s=2)
    c = world.probe("c")
    sup = Supervisor("s", [a.spec, b.spec, c.spec])
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            # run() itself signalled started only once the last child had
            assert anyio.current_time() == 3.0
            assert world.timed() == [
                ("start", "a", 0.0),
                ("up", "a", 1.0),
                ("start", "b", 1.0),  # not before a signalled started
                ("up", "b", 3.0),
                ("start", "c", 3.0),
                ("up", "c", 3.0),
            ]
            assert sup.statistics().children == ("a", "b", "c")
            await sup.stop()


async def test_failed_initial_start_stops_the_started_children_and_raises(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.probe("a")
    b = world.probe("b", [("fail_start", 1)])
    c = world.probe("c")
    sup = Supervisor("s", [a.spec, b.spec, c.spec])
    with anyio.fail_after(60), pytest.raises(Exception) as info:  # noqa: PT011 - identity below
        await sup.run()
    # the child's own exception, unwrapped, with a note naming it
    assert info.value is b.errors[0]
    assert "while starting child 'b' of supervisor 's'" in info.value.__notes__
    assert world.log() == [
        ("start", "a"),
        ("up", "a"),
        ("start", "b"),
        ("fail_start", "b"),
        ("ask", "a"),
        ("return", "a"),
    ]
    assert c.starts == 0
    assert not sup.running
    assert sup.statistics().total_restarts == 0


async def test_child_returning_before_started_is_a_failed_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def lazy(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        return

    sup = Supervisor("s", [ChildSpec("lazy", lazy)])
    with anyio.fail_after(60), pytest.raises(RuntimeError, match="without calling"):
        await sup.run()


async def test_failed_start_during_a_restart_counts_as_a_restart(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.probe("a", [("crash", 1), ("fail_start", 0), ("fail_start", 0)])
    sup = Supervisor("s", [a.spec], max_restarts=3)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await anyio.sleep(2)
            stats = sup.statistics()
            assert (a.starts, stats.total_restarts, stats.children) == (4, 3, ("a",))
            await sup.stop()


async def test_failed_start_during_a_restart_can_make_the_supervisor_give_up(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.probe("a", [("crash", 1), ("fail_start", 0), ("fail_start", 0)])
    sup = Supervisor("s", [a.spec], max_restarts=2)
    with anyio.fail_after(60), pytest.raises(SupervisorGaveUp) as info:
        await sup.run()
    assert info.value.__cause__ is a.errors[-1]  # the failed start broke the limit
    assert a.starts == 3


async def test_one_for_all_restart_with_a_failed_start_stops_the_restarted_ones_again(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.probe("a")
    b = world.probe("b", ["run", ("fail_start", 0)])
    sup = Supervisor("s", [a.spec, b.spec], strategy=Strategy.ONE_FOR_ALL)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            world.clear()
            a.crash()
            await world.settle()
            assert world.log() == [
                ("crash", "a"),
                ("ask", "b"),
                ("return", "b"),
                ("start", "a"),
                ("up", "a"),
                ("start", "b"),
                ("fail_start", "b"),
                ("ask", "a"),  # b's failed start is handled like a crash of b: all again
                ("return", "a"),
                ("start", "a"),
                ("up", "a"),
                ("start", "b"),
                ("up", "b"),
            ]
            assert sup.statistics().total_restarts == 2
            await sup.stop()


# -- how exits are classified ------------------------------------------------------------------


def crashing_child(
    exc: BaseException, after_s: float = 1.0
) -> Callable[..., Coroutine[Any, Any, None]]:
    async def run(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await anyio.sleep(after_s)
        raise exc

    return run


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


async def test_an_exception_group_from_a_child_is_a_crash(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    group = ExceptionGroup("two tasks failed", [ValueError(1), KeyError(2)])
    a = world.probe("a")
    sup = Supervisor("s", [a.spec, ChildSpec("g", crashing_child(group))], max_restarts=0)
    with anyio.fail_after(60), pytest.raises(SupervisorGaveUp) as info:
        await sup.run()
    assert info.value.__cause__ is group  # handled like any crash, then chained as it is
    assert world.log("ask", "return") == [("ask", "a"), ("return", "a")]


@pytest.mark.parametrize(
    "fatal",
    [
        KeyboardInterrupt(),
        BaseExceptionGroup("mixed", [ValueError("crash"), SystemExit(3)]),
    ],
)
async def test_keyboard_interrupt_or_system_exit_is_not_absorbed(
    autojump_clock: trio.testing.MockClock, world: World, fatal: BaseException
) -> None:
    """Not a crash to restart: the siblings are stopped in order, then it propagates."""
    a = world.probe("a", cooperative=False, grace_s=2)
    sup = Supervisor("s", [a.spec, ChildSpec("k", crashing_child(fatal))], max_restarts=10)
    with anyio.fail_after(60), pytest.raises(BaseExceptionGroup) as info:
        await sup.run()
    # what the child raised comes out (in the task group's group), nothing absorbed
    assert leaves(info.value) == leaves(fatal)
    assert world.timed("ask", "cancelled") == [("ask", "a", 1.0), ("cancelled", "a", 3.0)]
    assert sup.statistics().total_restarts == 0


# -- stopping ---------------------------------------------------------------------------------


async def test_stop_is_reverse_order_with_grace_then_cancel(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.probe("a", cooperative=False, grace_s=2)
    b = world.probe("b", cooperative=True, grace_s=3)
    c = world.probe("c", cooperative=False, grace_s=4)
    sup = Supervisor("s", [a.spec, b.spec, c.spec])
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            world.clear()
            await sup.stop()
            assert anyio.current_time() == 6.0
    assert world.timed() == [
        ("ask", "c", 0.0),
        ("cancelled", "c", 4.0),  # ignored the ask: cancelled exactly after its grace
        ("ask", "b", 4.0),
        ("return", "b", 4.0),  # cooperative: gone at once, no waiting
        ("ask", "a", 4.0),
        ("cancelled", "a", 6.0),
    ]
    assert sup.statistics().running is False


async def test_child_without_stop_callable_is_cancelled_at_once(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.probe("a", with_stop=False, grace_s=10)
    b = world.probe("b", with_stop=False, grace_s=10)
    sup = Supervisor("s", [a.spec, b.spec])
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            world.clear()
            await sup.stop()
    assert world.timed() == [("cancelled", "b", 0.0), ("cancelled", "a", 0.0)]


async def test_cancelled_from_outside_still_stops_children_in_order_then_propagates(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.probe("a", cooperative=False, grace_s=2)
    b = world.probe("b", cooperative=True)
    c = world.probe("c", cooperative=False, grace_s=4)
    sup = Supervisor("s", [a.spec, b.spec, c.spec])
    reached_after_run = False
    with anyio.fail_after(60):
        with anyio.CancelScope() as outer:
            async with anyio.create_task_group() as tg:
                await tg.start(sup.run)
                world.clear()
                outer.cancel()
            reached_after_run = True
        assert outer.cancelled_caught
        assert not reached_after_run
    assert world.timed() == [
        ("ask", "c", 0.0),
        ("cancelled", "c", 4.0),
        ("ask", "b", 4.0),
        ("return", "b", 4.0),
        ("ask", "a", 4.0),
        ("cancelled", "a", 6.0),
    ]
    assert not sup.running


async def test_stop_while_starting_stops_the_starting_child_and_returns(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.probe("a")
    b = world.probe("b", start_delay_s=10, grace_s=3)
    c = world.probe("c")
    sup = Supervisor("s", [a.spec, b.spec, c.spec])
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sup.run)
            await anyio.sleep(1)
            await sup.stop()
            assert anyio.current_time() == 4.0  # b ignored the ask while starting: grace 3
    assert world.timed() == [
        ("start", "a", 0.0),
        ("up", "a", 0.0),
        ("start", "b", 0.0),
        ("ask", "b", 1.0),
        ("cancelled", "b", 4.0),
        ("ask", "a", 4.0),
        ("return", "a", 4.0),
    ]
    assert c.starts == 0


async def test_stop_before_a_child_task_began_cancels_it_instead_of_asking(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    """A child whose task has not begun cannot act on an ask (here it would be lost and the
    unbounded grace would wait forever): it is cancelled before it runs at all. Whether the
    stop lands before or after the child's task began depends on trio's scheduling order,
    so the scenario is repeated; every round must end, with the child stopped either way."""
    rounds_not_begun = 0
    with anyio.fail_after(1000):
        for _ in range(40):
            p = world.probe("p", grace_s=math.inf)
            sup = Supervisor("s", [p.spec])
            async with anyio.create_task_group() as tg:
                tg.start_soon(sup.run)
                while not sup.running:
                    await anyio.lowlevel.checkpoint()
                await sup.stop()
            assert not sup.running
            assert p.starts in (0, 1)
            rounds_not_begun += p.starts == 0
    assert anyio.current_time() == 0.0  # never waited for a grace period
    assert world.log("ask") == [("ask", "p")] * (40 - rounds_not_begun)


async def test_supervisor_can_run_again_after_stopping(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.probe("a", [("crash", 1)])
    sup = Supervisor("s", [a.spec], max_restarts=1)
    with anyio.fail_after(60):
        for expected_starts in (2, 3):
            async with anyio.create_task_group() as tg:
                await tg.start(sup.run)
                with pytest.raises(RuntimeError, match="already running"):
                    await sup.run()
                await anyio.sleep(2)
                await sup.stop()
            assert a.starts == expected_starts
    assert sup.statistics().total_restarts == 1


# -- restart backoff ----------------------------------------------------------------------------


async def test_backoff_delays_grow_cap_and_reset_after_a_quiet_period(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.probe("a", [("crash", 0)] * 4)
    backoff = RestartBackoff(initial_s=1, factor=2, max_s=4, reset_after_s=10)
    sup = Supervisor("s", [a.spec], max_restarts=10, period_s=100, restart_backoff=backoff)
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await anyio.sleep(0.5)
            stats = sup.statistics()
            assert (stats.children, stats.pending) == ((), ("a",))  # waiting for its restart
            await anyio.sleep(24.5)
            # 1 s, 2 s, 4 s, then capped at 4 s
            assert [t for what, _, t in world.timed("up")] == [0.0, 1.0, 3.0, 7.0, 11.0]
            a.crash()  # at t=25, after 14 s up (>= reset_after_s): back to the initial delay
            await anyio.sleep(5)
            assert [t for what, _, t in world.timed("up")][-1] == 26.0
            await sup.stop()


async def test_backoff_of_one_child_does_not_delay_the_restart_of_another(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.probe("a", [("crash", 0), ("crash", 0)])
    b = world.probe("b")
    backoff = RestartBackoff(initial_s=1, factor=10, max_s=100, reset_after_s=60)
    sup = Supervisor("s", [a.spec, b.spec], max_restarts=10, restart_backoff=backoff)
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await anyio.sleep(2)  # a: up at 1, crashed again, next restart due at 11
            b.crash()
            await anyio.sleep(20)
            assert world.timed("up") == [
                ("up", "a", 0.0),
                ("up", "b", 0.0),
                ("up", "a", 1.0),
                ("up", "b", 3.0),  # b's own first delay: 1 s after its crash at 2
                ("up", "a", 11.0),
            ]
            await sup.stop()


async def test_one_for_all_backoff_delays_the_whole_restart(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.probe("a")
    b = world.probe("b", [("crash", 1)])
    backoff = RestartBackoff(initial_s=5, max_s=5)
    sup = Supervisor("s", [a.spec, b.spec], strategy=Strategy.ONE_FOR_ALL, restart_backoff=backoff)
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await anyio.sleep(10)
            assert world.timed("up", "crash", "return") == [
                ("up", "a", 0.0),
                ("up", "b", 0.0),
                ("crash", "b", 1.0),
                ("return", "a", 1.0),  # stopped at once...
                ("up", "a", 6.0),  # ...restarted after the delay, in order
                ("up", "b", 6.0),
            ]
            await sup.stop()


async def test_stop_during_a_backoff_delay_returns_at_once(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a = world.probe("a", [("crash", 0)])
    sup = Supervisor("s", [a.spec], restart_backoff=RestartBackoff(initial_s=30, max_s=30))
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await anyio.sleep(1)
            await sup.stop()
            assert anyio.current_time() == 1.0
    assert a.starts == 1

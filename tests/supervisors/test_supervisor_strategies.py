"""Strategies, restart types and simultaneous failures (trio, MockClock with autojump)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest
import trio.testing

from rota.errors import SupervisorGaveUp
from rota.supervisors import Restart, Strategy, Supervisor

if TYPE_CHECKING:
    from conftest import Step, World

pytestmark = pytest.mark.trio

STOPPED_IN_REVERSE = [
    ("ask", "c"),
    ("return", "c"),
    ("ask", "b"),
    ("return", "b"),
    ("ask", "a"),
    ("return", "a"),
]


def up(*names: str) -> list[tuple[str, str]]:
    return [pair for n in names for pair in (("start", n), ("up", n))]


def stopped(*names: str) -> list[tuple[str, str]]:
    """Cooperative children asked to stop, in the order given."""
    return [pair for n in names for pair in (("ask", n), ("return", n))]


@pytest.mark.parametrize(
    ("strategy", "failed", "expected"),
    [
        (Strategy.ONE_FOR_ONE, "a", [("crash", "a"), *up("a")]),
        (Strategy.ONE_FOR_ONE, "b", [("crash", "b"), *up("b")]),
        (Strategy.ONE_FOR_ONE, "c", [("crash", "c"), *up("c")]),
        (Strategy.ONE_FOR_ALL, "a", [("crash", "a"), *stopped("c", "b"), *up("a", "b", "c")]),
        (Strategy.ONE_FOR_ALL, "b", [("crash", "b"), *stopped("c", "a"), *up("a", "b", "c")]),
        (Strategy.ONE_FOR_ALL, "c", [("crash", "c"), *stopped("b", "a"), *up("a", "b", "c")]),
        (Strategy.REST_FOR_ONE, "a", [("crash", "a"), *stopped("c", "b"), *up("a", "b", "c")]),
        (Strategy.REST_FOR_ONE, "b", [("crash", "b"), *stopped("c"), *up("b", "c")]),
        (Strategy.REST_FOR_ONE, "c", [("crash", "c"), *up("c")]),
    ],
)
async def test_strategy_restarts_exactly_the_right_children(
    autojump_clock: trio.testing.MockClock,
    world: World,
    strategy: Strategy,
    failed: str,
    expected: list[tuple[str, str]],
) -> None:
    probes = {n: world.probe(n) for n in "abc"}
    sup = Supervisor("s", [p.spec for p in probes.values()], strategy=strategy)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            assert world.log() == up("a", "b", "c")
            world.clear()

            probes[failed].crash()
            await world.settle()
            assert world.log() == expected
            restarted = {c for what, c in expected if what == "start"}
            assert {n: p.starts for n, p in probes.items()} == {
                n: 2 if n in restarted else 1 for n in "abc"
            }
            stats = sup.statistics()
            assert stats.children == ("a", "b", "c")
            assert stats.total_restarts == 1  # one exit handled = one restart for intensity
            assert stats.restarts == {n: int(n in restarted) for n in "abc"}

            world.clear()
            await sup.stop()
    assert world.log() == STOPPED_IN_REVERSE


@pytest.mark.parametrize(
    ("restart", "step", "restarted"),
    [
        (Restart.PERMANENT, ("crash", 1), True),
        (Restart.PERMANENT, ("return", 1), True),  # a permanent child must never end
        (Restart.TRANSIENT, ("crash", 1), True),
        (Restart.TRANSIENT, ("return", 1), False),  # done: dropped
        (Restart.TEMPORARY, ("crash", 1), False),
        (Restart.TEMPORARY, ("return", 1), False),
    ],
)
async def test_restart_types(
    autojump_clock: trio.testing.MockClock,
    world: World,
    restart: Restart,
    step: Step,
    restarted: bool,
) -> None:
    a = world.probe("a")
    b = world.probe("b", [step], restart=restart)
    c = world.probe("c")
    sup = Supervisor("s", [a.spec, b.spec, c.spec], strategy=Strategy.ONE_FOR_ALL)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await anyio.sleep(2)  # b exits at t=1
            assert (a.starts, b.starts, c.starts) == ((2, 2, 2) if restarted else (1, 1, 1))
            stats = sup.statistics()
            # a child that is not restarted is dropped; its siblings carry on untouched
            assert stats.children == (("a", "b", "c") if restarted else ("a", "c"))
            assert stats.total_restarts == int(restarted)
            world.clear()
            await sup.stop()
    # a dropped child is not stopped again
    assert world.log("ask") == (
        [("ask", n) for n in "cba"] if restarted else [("ask", "c"), ("ask", "a")]
    )


async def test_temporary_sibling_stopped_by_a_restart_is_dropped_transient_is_restarted(
    autojump_clock: trio.testing.MockClock,
    world: World,
) -> None:
    """OTP: a temporary child is never restarted, not even after a sibling's restart stopped it;
    a transient one stopped that way is restarted (it did not finish its work)."""
    a = world.probe("a")
    tmp = world.probe("tmp", restart=Restart.TEMPORARY)
    tra = world.probe("tra", restart=Restart.TRANSIENT)
    sup = Supervisor("s", [a.spec, tmp.spec, tra.spec], strategy=Strategy.ONE_FOR_ALL)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            world.clear()
            a.crash()
            await world.settle()
            assert world.log() == [
                ("crash", "a"),
                *stopped("tra", "tmp"),
                *up("a", "tra"),
            ]
            assert sup.statistics().children == ("a", "tra")
            await sup.stop()


async def test_crash_while_being_stopped_is_not_a_crash(
    autojump_clock: trio.testing.MockClock,
    world: World,
) -> None:
    """one_for_all: b ignores the ask and crashes during its grace period. The supervisor is
    stopping it, so that exit restarts nothing and is not counted."""
    a = world.probe("a", [("crash", 0.5)])
    b = world.probe("b", [("crash", 1)], cooperative=False, grace_s=5)
    sup = Supervisor("s", [a.spec, b.spec], strategy=Strategy.ONE_FOR_ALL, max_restarts=1)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await anyio.sleep(10)
            assert world.timed("crash", "ask", "up") == [
                ("up", "a", 0.0),
                ("up", "b", 0.0),
                ("crash", "a", 0.5),
                ("ask", "b", 0.5),
                ("crash", "b", 1.0),
                ("up", "a", 1.0),
                ("up", "b", 1.0),
            ]
            stats = sup.statistics()
            assert (a.starts, b.starts, stats.total_restarts, stats.gave_up) == (2, 2, 1, False)
            await sup.stop()


# -- two children failing at the same moment -------------------------------------------------


async def test_simultaneous_failures_one_for_one_restart_each_once(
    autojump_clock: trio.testing.MockClock,
    world: World,
) -> None:
    a, b, c = (world.probe(n) for n in "abc")
    sup = Supervisor("s", [a.spec, b.spec, c.spec], max_restarts=2)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            world.clear()
            a.crash()
            b.crash()
            await world.settle()
            assert sorted(world.log("crash")) == [("crash", "a"), ("crash", "b")]
            assert world.log("start") == [("start", "a"), ("start", "b")]  # list order
            assert (a.starts, b.starts, c.starts) == (2, 2, 1)
            stats = sup.statistics()
            assert stats.total_restarts == 2  # both restarts count
            assert stats.restarts == {"a": 1, "b": 1, "c": 0}
            assert stats.children == ("a", "b", "c")
            await sup.stop()


async def test_simultaneous_failures_one_for_one_both_count_against_intensity(
    autojump_clock: trio.testing.MockClock,
    world: World,
) -> None:
    a, b, c = (world.probe(n) for n in "abc")
    sup = Supervisor("s", [a.spec, b.spec, c.spec], max_restarts=1)
    errors: list[SupervisorGaveUp] = []

    async def supervise(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            await sup.run(task_status=task_status)
        except SupervisorGaveUp as exc:
            errors.append(exc)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(supervise)
            a.crash()
            b.crash()
    assert len(errors) == 1
    stats = sup.statistics()
    assert stats.total_restarts == 1  # the first was allowed, the second broke the limit
    assert stats.gave_up
    assert errors[0].__cause__ in (*a.errors, *b.errors)
    # both exits are handled before anything restarts: the supervisor gave up first
    assert (a.starts, b.starts, c.starts) == (1, 1, 1)
    assert world.log("ask") == [("ask", "c")]  # only c was left to stop


async def test_simultaneous_failures_one_for_all_restart_everything_once(
    autojump_clock: trio.testing.MockClock,
    world: World,
) -> None:
    a, b, c = (world.probe(n) for n in "abc")
    sup = Supervisor("s", [a.spec, b.spec, c.spec], strategy=Strategy.ONE_FOR_ALL)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            world.clear()
            a.crash()
            b.crash()
            await world.settle()
            log = world.log()
            assert sorted(log[:2]) == [("crash", "a"), ("crash", "b")]
            # only c was still running to be stopped; then everything starts once, in order
            assert log[2:] == [*stopped("c"), *up("a", "b", "c")]
            assert (a.starts, b.starts, c.starts) == (2, 2, 2)
            stats = sup.statistics()
            assert stats.total_restarts == 1  # the second failure did not restart again
            assert stats.restarts == {"a": 1, "b": 1, "c": 1}
            await world.settle()
            assert (a.starts, b.starts, c.starts) == (2, 2, 2)
            await sup.stop()

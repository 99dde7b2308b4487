"""statistics() and the structured log records."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio
import msgspec
import pytest
import trio.testing

from rota.errors import SupervisorGaveUp
from rota.supervisors import Strategy, Supervisor, SupervisorStatistics

if TYPE_CHECKING:
    from conftest import World

pytestmark = pytest.mark.trio


async def test_statistics_reflect_restarts_and_the_window(
    autojump_clock: trio.testing.MockClock, world: World
) -> None:
    a, b, c = (world.probe(n) for n in "abc")
    sup = Supervisor("s", [a.spec, b.spec, c.spec], strategy=Strategy.REST_FOR_ONE, period_s=5)
    before = sup.statistics()
    assert before == SupervisorStatistics(
        name="s",
        strategy=Strategy.REST_FOR_ONE,
        running=False,
        children=(),
        pending=(),
        restarts={"a": 0, "b": 0, "c": 0},
        total_restarts=0,
        restarts_in_window=0,
        max_restarts=3,
        period_s=5.0,
        gave_up=False,
    )
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            b.crash()
            await world.settle()
            await anyio.sleep(1)
            c.crash()
            await world.settle()
            stats = sup.statistics()
            assert stats.running
            assert stats.children == ("a", "b", "c")
            assert stats.restarts == {"a": 0, "b": 1, "c": 2}
            assert (stats.total_restarts, stats.restarts_in_window) == (2, 2)
            await anyio.sleep(4.5)  # the restart at t=0 leaves the window at t=5
            assert sup.statistics().restarts_in_window == 1
            await sup.stop()
    after = sup.statistics()
    assert (after.running, after.children, after.total_restarts) == (False, (), 2)
    # a frozen msgspec Struct: encodable as it is, e.g. for an admin endpoint
    decoded = msgspec.json.decode(msgspec.json.encode(after), type=SupervisorStatistics)
    assert decoded == after
    with pytest.raises(AttributeError):
        after.total_restarts = 0  # type: ignore[misc]


def events(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, str]]:
    return [
        (r.event, r.child, r.levelname)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "rota.supervisors"
    ]


async def test_log_records_carry_event_supervisor_child_and_reason(
    autojump_clock: trio.testing.MockClock, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rota.supervisors")
    a = world.probe("a", [("crash", 1)])
    b = world.probe("b", cooperative=False, grace_s=2)
    sup = Supervisor("s", [a.spec, b.spec])
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await anyio.sleep(2)
            await sup.stop()
    assert events(caplog) == [
        ("child_started", "a", "INFO"),
        ("child_started", "b", "INFO"),
        ("child_exited", "a", "WARNING"),
        ("child_restarted", "a", "INFO"),
        ("child_stop_timeout", "b", "WARNING"),
        ("child_exited", "b", "INFO"),
        ("child_exited", "a", "INFO"),
    ]
    for record in caplog.records:
        assert record.supervisor == "s"  # type: ignore[attr-defined]
    crash, restarted = caplog.records[2:4]
    assert crash.reason == repr(a.errors[0])  # type: ignore[attr-defined]
    assert restarted.reason == repr(a.errors[0])  # type: ignore[attr-defined]
    assert crash.exc_info is not None and crash.exc_info[1] is a.errors[0]
    reasons = [r.reason for r in caplog.records if r.event == "child_exited"]  # type: ignore[attr-defined]
    assert reasons[1:] == ["cancelled", "normal"]  # b ignored the ask; a returned when asked


async def test_giving_up_is_logged_as_an_error(
    autojump_clock: trio.testing.MockClock, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rota.supervisors")
    a = world.probe("a", [("crash", 0)] * 2)
    sup = Supervisor("s", [a.spec], max_restarts=1)
    with anyio.fail_after(60), pytest.raises(SupervisorGaveUp):
        await sup.run()
    assert events(caplog)[-1] == ("supervisor_gave_up", "a", "ERROR")
    assert caplog.records[-1].reason == repr(a.errors[-1])  # type: ignore[attr-defined]


async def test_custom_logger_and_quiet_by_default(
    autojump_clock: trio.testing.MockClock, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    assert logging.getLogger("rota.supervisors").handlers == []  # the library adds none
    caplog.set_level(logging.INFO, logger="my.app")
    a = world.probe("a")
    sup = Supervisor("s", [a.spec], logger=logging.getLogger("my.app"))
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await sup.stop()
    assert {r.name for r in caplog.records} == {"my.app"}
    assert [r.event for r in caplog.records] == ["child_started", "child_exited"]  # type: ignore[attr-defined]


async def test_restart_of_a_sibling_says_which_exit_caused_it(
    autojump_clock: trio.testing.MockClock, world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rota.supervisors")
    a, b = world.probe("a"), world.probe("b", [("crash", 1)])
    sup = Supervisor("s", [a.spec, b.spec], strategy=Strategy.ONE_FOR_ALL)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            await anyio.sleep(2)
            await sup.stop()
    restarted = {
        r.child: r.reason  # type: ignore[attr-defined]
        for r in caplog.records
        if r.event == "child_restarted"  # type: ignore[attr-defined]
    }
    assert restarted == {"a": f"'b' exited: {b.errors[0]!r}", "b": repr(b.errors[0])}

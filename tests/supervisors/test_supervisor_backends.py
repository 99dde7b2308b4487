"""The same supervisor on trio and on asyncio (AnyIO's plugin, real clock, no sleeping)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from rota.errors import SupervisorGaveUp
from rota.supervisors import ChildSpec, Strategy, Supervisor

if TYPE_CHECKING:
    from conftest import World

pytestmark = pytest.mark.anyio


async def test_crashed_child_is_restarted_and_stop_is_reverse_order(world: World) -> None:
    a, b, c = (world.probe(n) for n in "abc")
    sup = Supervisor("s", [a.spec, b.spec, c.spec], strategy=Strategy.REST_FOR_ONE)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            world.clear()
            b.crash()
            await world.settle()
            assert world.log() == [
                ("crash", "b"),
                ("ask", "c"),
                ("return", "c"),
                ("start", "b"),
                ("up", "b"),
                ("start", "c"),
                ("up", "c"),
            ]
            assert sup.statistics().restarts == {"a": 0, "b": 1, "c": 1}
            world.clear()
            await sup.stop()
    assert world.log("ask") == [("ask", "c"), ("ask", "b"), ("ask", "a")]


async def test_gives_up_with_the_crash_as_cause(world: World) -> None:
    a = world.probe("a", [("crash", 0)] * 3)
    b = world.probe("b")
    sup = Supervisor("s", [a.spec, b.spec], max_restarts=2, period_s=60)
    with anyio.fail_after(10), pytest.raises(SupervisorGaveUp) as info:
        await sup.run()
    assert info.value.__cause__ is a.errors[-1]
    assert world.log("ask", "return") == [("ask", "b"), ("return", "b")]


async def test_outside_cancellation_stops_children_in_reverse_order(world: World) -> None:
    a, b = world.probe("a"), world.probe("b", with_stop=False)
    inner = Supervisor("inner", [b.spec])
    sup = Supervisor("s", [a.spec, inner.child_spec()])
    with anyio.fail_after(10):
        with anyio.CancelScope() as outer:
            async with anyio.create_task_group() as tg:
                await tg.start(sup.run)
                world.clear()
                outer.cancel()
        assert outer.cancelled_caught
    assert world.log() == [("cancelled", "b"), ("ask", "a"), ("return", "a")]
    assert not sup.running and not inner.running


async def test_stop_before_run_began_is_kept_for_that_run(world: World) -> None:
    a = world.probe("a")
    sup = Supervisor("s", [a.spec])
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sup.run)
            await sup.stop()  # sup.run has not begun yet
    assert not sup.running
    assert a.starts == 0


async def test_stopped_while_a_nested_supervisor_is_starting(world: World) -> None:
    """Stopping a parent while its nested supervisor is still starting never hangs: an inner
    supervisor whose task has not begun cannot hear the ask, so it is cancelled instead; one
    that has begun is asked. Either way nothing is left running, and no stop request leaks
    into the inner supervisor's next run."""
    a = world.probe("a")
    inner = Supervisor("inner", [a.spec])
    sup = Supervisor("s", [inner.child_spec()])
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sup.run)
            while not sup.running:  # sup.run begins and spawns inner's task
                await anyio.lowlevel.checkpoint()
            await sup.stop()
        assert not sup.running and not inner.running
        began = [child for _, child in world.log("start")]
        assert began == [child for _, child in world.log("return", "cancelled")]  # and ended
        starts = a.starts
        async with anyio.create_task_group() as tg:
            await tg.start(inner.run)
            assert a.starts == starts + 1
            await inner.stop()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_native_asyncio_cancellation_of_a_child_task_is_a_crash(world: World) -> None:
    """``Task.cancel()`` on a child's task (not the supervisor's doing): the child ended
    abnormally, so it is restarted, instead of silently disappearing from supervision."""
    import asyncio  # only this test is asyncio-specific

    a = world.probe("a")
    tasks: list[asyncio.Task[None] | None] = []

    async def victim(
        *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        tasks.append(asyncio.current_task())  # type: ignore[arg-type]
        task_status.started()
        await anyio.sleep_forever()

    sup = Supervisor("s", [a.spec, ChildSpec("v", victim)])
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(sup.run)
            task = tasks[0]
            assert task is not None
            task.cancel()
            await world.settle()
            stats = sup.statistics()
            assert (len(tasks), stats.restarts, stats.children) == (
                2,
                {"a": 0, "v": 1},
                ("a", "v"),
            )
            await sup.stop()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_stray_cancellation_during_the_initial_start_is_not_passed_off_as_ours() -> None:
    import asyncio

    async def cancelled(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        raise asyncio.CancelledError

    sup = Supervisor("s", [ChildSpec("c", cancelled)])
    with (
        anyio.fail_after(10),
        pytest.raises(RuntimeError, match="cancelled while starting") as info,
    ):
        await sup.run()
    assert isinstance(info.value.__cause__, asyncio.CancelledError)

"""The actor kernel, on trio and on asyncio."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio
import msgspec
import pytest

from rota.actors.kernel import Actor, ActorRef, Envelope
from rota.errors import ActorNotRunning, CallTimeout, MailboxFull

pytestmark = pytest.mark.anyio


class Echo(msgspec.Struct, frozen=True):
    value: int


class Sleep(msgspec.Struct, frozen=True):
    seconds: float


class Boom(msgspec.Struct, frozen=True):
    pass


class Refuse(msgspec.Struct, frozen=True):
    pass


class Record(msgspec.Struct, frozen=True):
    value: int


class Recorder(Actor):
    """Replies to Echo, sleeps on Sleep, crashes on Boom, answers Refuse with an error."""

    instances: list[Recorder] = []  # bookkeeping across restarts

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.started = self.stopped = False
        Recorder.instances.append(self)

    async def on_start(self) -> None:
        self.started = True

    async def on_stop(self) -> None:
        self.stopped = True

    async def handle(self, message: Any) -> Any:
        self.seen.append(message)
        match message:
            case Echo(value):
                return value
            case Record(value):
                return value
            case Sleep(seconds):
                await anyio.sleep(seconds)
                return "slept"
            case Boom():
                raise RuntimeError("boom")
            case Refuse():
                return KeyError("no such thing")
        return None


@pytest.fixture(autouse=True)
def _reset() -> None:
    Recorder.instances.clear()


async def test_call_replies_and_cast_delivers(anyio_backend: str) -> None:
    ref = ActorRef("rec", Recorder)
    async with anyio.create_task_group() as tg:
        await tg.start(ref.run)
        assert ref.running
        assert await ref.call(Echo(7)) == 7
        await ref.cast(Record(1))
        ref.try_cast(Record(2))
        assert await ref.call(Echo(8)) == 8  # mailbox is FIFO: casts handled before this
        ref.request_stop()
    actor = Recorder.instances[0]
    assert actor.seen == [Echo(7), Record(1), Record(2), Echo(8)]
    assert actor.started and actor.stopped
    stats = ref.statistics()
    assert (stats.calls, stats.casts, stats.handled, stats.starts, stats.crashes) == (2, 2, 4, 1, 0)
    assert not stats.running


async def test_returned_exception_is_raised_in_caller_and_actor_lives(anyio_backend: str) -> None:
    ref = ActorRef("rec", Recorder)
    async with anyio.create_task_group() as tg:
        await tg.start(ref.run)
        with pytest.raises(KeyError, match="no such thing"):
            await ref.call(Refuse())
        assert await ref.call(Echo(1)) == 1
        ref.request_stop()
    assert ref.statistics().crashes == 0


async def test_call_timeout_and_late_reply_dropped(anyio_backend: str) -> None:
    ref = ActorRef("rec", Recorder)
    async with anyio.create_task_group() as tg:
        await tg.start(ref.run)
        with pytest.raises(CallTimeout):
            await ref.call(Sleep(0.2), timeout=0.01)
        # The actor finishes the sleep, replies into the abandoned slot, and goes on.
        assert await ref.call(Echo(3), timeout=5) == 3
        stats = ref.statistics()
        assert stats.late_replies == 1
        assert stats.crashes == 0
        ref.request_stop()


async def test_caller_cancellation_abandons_reply(anyio_backend: str) -> None:
    ref = ActorRef("rec", Recorder)
    async with anyio.create_task_group() as tg:
        await tg.start(ref.run)
        with anyio.move_on_after(0.01):
            await ref.call(Sleep(0.1))
        assert await ref.call(Echo(4)) == 4
        assert ref.statistics().late_replies == 1
        ref.request_stop()


async def test_try_cast_raises_mailbox_full(anyio_backend: str) -> None:
    ref = ActorRef("rec", Recorder, mailbox_size=2)
    async with anyio.create_task_group() as tg:
        await tg.start(ref.run)
        ref.try_cast(Sleep(0.05))
        await anyio.sleep(0.01)  # the actor takes the sleep message and is busy
        ref.try_cast(Record(1))
        ref.try_cast(Record(2))
        with pytest.raises(MailboxFull, match="full"):
            ref.try_cast(Record(3))
        assert ref.statistics().mailbox_depth == 2
        ref.request_stop()
    assert Recorder.instances[0].seen == [Sleep(0.05), Record(1), Record(2)]


async def test_cast_waits_for_room_backpressure(anyio_backend: str) -> None:
    ref = ActorRef("rec", Recorder, mailbox_size=1)
    async with anyio.create_task_group() as tg:
        await tg.start(ref.run)
        ref.try_cast(Sleep(0.05))
        await anyio.sleep(0.01)
        ref.try_cast(Record(1))
        start = anyio.current_time()
        await ref.cast(Record(2))  # waits until the actor takes Record(1)
        assert anyio.current_time() - start >= 0.02
        ref.request_stop()
    assert Recorder.instances[0].seen[-1] == Record(2)


async def test_crash_fails_in_hand_and_queued_calls(anyio_backend: str) -> None:
    ref = ActorRef("rec", Recorder)
    outcomes: dict[str, BaseException | object] = {}

    async def caller(label: str, message: Any) -> None:
        try:
            outcomes[label] = await ref.call(message)
        except Exception as exc:
            outcomes[label] = exc

    with pytest.raises(ExceptionGroup) as info:
        async with anyio.create_task_group() as tg:
            await tg.start(ref.run)
            ref.try_cast(Sleep(0.05))  # keeps the actor busy while the calls queue up
            await anyio.sleep(0.01)
            tg.start_soon(caller, "boom", Boom())
            await anyio.sleep(0.001)
            tg.start_soon(caller, "queued", Echo(1))
            await anyio.sleep(0.2)
    assert info.group_contains(RuntimeError, match="boom")
    boom, queued = outcomes["boom"], outcomes["queued"]
    assert isinstance(boom, ActorNotRunning)
    assert isinstance(boom.__cause__, RuntimeError)
    assert isinstance(queued, ActorNotRunning)
    assert Recorder.instances[0].stopped  # on_stop ran even though it crashed
    assert ref.statistics().crashes == 1
    with pytest.raises(ActorNotRunning):
        await ref.call(Echo(1))
    with pytest.raises(ActorNotRunning):
        ref.try_cast(Echo(1))


async def test_stop_handles_queued_messages_then_refuses(anyio_backend: str) -> None:
    ref = ActorRef("rec", Recorder)
    async with anyio.create_task_group() as tg:
        await tg.start(ref.run)
        ref.try_cast(Sleep(0.02))
        ref.try_cast(Record(1))
        ref.request_stop()
        with pytest.raises(ActorNotRunning):
            ref.try_cast(Record(2))
        with pytest.raises(ActorNotRunning):
            await ref.call(Echo(2))
    assert Recorder.instances[0].seen == [Sleep(0.02), Record(1)]


async def test_cancelled_actor_fails_queued_calls(anyio_backend: str) -> None:
    ref = ActorRef("rec", Recorder)
    results: list[BaseException] = []

    async def caller() -> None:
        try:
            await ref.call(Echo(1))
        except ActorNotRunning as exc:
            results.append(exc)

    async with anyio.create_task_group() as tg:
        actor_scope = anyio.CancelScope()

        async def run_actor(*, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
            with actor_scope:
                await ref.run(task_status=task_status)

        await tg.start(run_actor)
        ref.try_cast(Sleep(1.0))
        await anyio.sleep(0.01)
        tg.start_soon(caller)
        await anyio.sleep(0.01)
        actor_scope.cancel()
    assert len(results) == 1
    assert "cancelled" in str(results[0])
    assert ref.statistics().crashes == 0  # a cancellation is not a crash


async def test_restart_gets_fresh_state_and_mailbox(anyio_backend: str) -> None:
    ref = ActorRef("rec", Recorder)
    for expected in (1, 2):
        async with anyio.create_task_group() as tg:
            await tg.start(ref.run)
            assert await ref.call(Echo(expected)) == expected
            ref.request_stop()
    first, second = Recorder.instances
    assert first is not second
    assert first.seen == [Echo(1)]
    assert second.seen == [Echo(2)]
    assert ref.statistics().starts == 2


class Batcher(Actor):
    batches: list[int] = []

    async def handle_batch(self, batch: Sequence[Envelope]) -> None:
        Batcher.batches.append(len(batch))
        await anyio.sleep(0.01)  # one "transaction" for the whole batch
        for envelope in batch:
            envelope.reply(envelope.message.value * 2)


async def test_batch_drains_everything_waiting(anyio_backend: str) -> None:
    Batcher.batches = []
    ref = ActorRef("batcher", Batcher, max_batch=64)
    results: dict[int, int] = {}

    async def caller(i: int) -> None:
        results[i] = await ref.call(Echo(i))

    async with anyio.create_task_group() as tg:
        await tg.start(ref.run)
        async with anyio.create_task_group() as callers:
            for i in range(100):
                callers.start_soon(caller, i)
        ref.request_stop()
    assert results == {i: i * 2 for i in range(100)}
    assert sum(Batcher.batches) == 100
    assert len(Batcher.batches) < 100  # batched, not one by one
    assert max(Batcher.batches) <= 64


async def test_start_failure_is_not_a_running_actor(anyio_backend: str) -> None:
    class FailsToStart(Actor):
        async def on_start(self) -> None:
            raise OSError("no database")

    ref = ActorRef("bad", FailsToStart)
    with pytest.raises(ExceptionGroup) as info:
        async with anyio.create_task_group() as tg:
            await tg.start(ref.run)
    assert info.group_contains(OSError, match="no database")
    assert not ref.running
    with pytest.raises(ActorNotRunning):
        await ref.cast(Echo(1))


def test_invalid_sizes_rejected() -> None:
    with pytest.raises(ValueError, match="mailbox_size"):
        ActorRef("x", Recorder, mailbox_size=0)
    with pytest.raises(ValueError, match="max_batch"):
        ActorRef("x", Recorder, max_batch=0)


class Ticker(Actor):
    """Runs a background loop; on_stop sees it still running, then it is cancelled."""

    log: list[str] = []

    async def on_start(self) -> None:
        self.tasks.start_soon(self.loop)

    async def loop(self) -> None:
        try:
            while True:
                await anyio.sleep(0.005)
                Ticker.log.append("tick")
        finally:
            Ticker.log.append("loop ended")

    async def on_stop(self) -> None:
        Ticker.log.append("on_stop")

    async def handle(self, message: Any) -> Any:
        if message == "crash-in-background":
            self.tasks.start_soon(self.explode)
        return "ok"

    async def explode(self) -> None:
        raise OSError("background task failed")


async def test_background_tasks_stop_after_on_stop(anyio_backend: str) -> None:
    Ticker.log = []
    ref = ActorRef("ticker", Ticker)
    async with anyio.create_task_group() as tg:
        await tg.start(ref.run)
        await anyio.sleep(0.03)
        ref.request_stop()
    assert Ticker.log.count("tick") >= 2
    assert Ticker.log[-2:] == ["on_stop", "loop ended"]


async def test_background_task_crash_crashes_the_actor(anyio_backend: str) -> None:
    Ticker.log = []
    ref = ActorRef("ticker", Ticker)
    with pytest.raises(ExceptionGroup) as info:
        async with anyio.create_task_group() as tg:
            await tg.start(ref.run)
            assert await ref.call("crash-in-background") == "ok"
            await anyio.sleep(1)
    # the actor raised the task's own exception, not a group of its internal task group
    [crash] = info.value.exceptions
    assert isinstance(crash, OSError)
    assert str(crash) == "background task failed"
    assert ref.statistics().crashes == 1
    assert "on_stop" in Ticker.log
    assert not ref.running

"""The actor kernel: an actor is one task, a bounded mailbox and a behaviour.

::

    ref = ActorRef("echo", Echo)              # Echo: an Actor subclass (a fresh one per start)
    async with anyio.create_task_group() as tg:
        await tg.start(ref.run)               # started-handshake: ready once on_start is done
        await ref.cast(Ping())                # one way; waits while the mailbox is full
        ref.try_cast(Ping())                  # one way; MailboxFull instead of waiting
        pong = await ref.call(Ping(), timeout=5.0)   # request/reply; CallTimeout if late
        ref.request_stop()                    # handle what is queued, then run() returns

The rules it keeps (replies, late replies, stopping, batches, restarts) are in
docs/internals.md, "The actor kernel".
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from rota.errors import ActorNotRunning, CallTimeout, MailboxFull

__all__ = ["Actor", "ActorRef", "ActorStatistics", "Envelope"]

log = logging.getLogger("rota.actors")

A = TypeVar("A", bound="Actor")


class ActorStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one actor (over all its restarts, except ``mailbox_depth``)."""

    name: str
    running: bool
    mailbox_size: int
    mailbox_depth: int
    """Messages waiting now."""
    casts: int
    calls: int
    handled: int
    batches: int
    """Times the loop woke with messages: handled / batches is the mean batch size."""
    late_replies: int
    """Replies dropped because their caller had given up."""
    starts: int
    crashes: int


class _Counters:
    __slots__ = ("batches", "calls", "casts", "crashes", "handled", "late_replies", "starts")

    def __init__(self) -> None:
        self.casts = self.calls = self.handled = self.batches = 0
        self.late_replies = self.starts = self.crashes = 0


class _ReplySlot:
    """A one-shot reply: set once by the actor, read once by the caller (if still there)."""

    __slots__ = ("_event", "abandoned", "done", "error", "value")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self.done = False
        self.abandoned = False
        self.value: Any = None
        self.error: BaseException | None = None

    def set(self, value: Any, error: BaseException | None) -> bool:
        """Deliver; False if the caller had already given up (the reply is dropped)."""
        if self.done:
            return True
        self.done = True
        self.value, self.error = value, error
        self._event.set()
        return not self.abandoned

    async def wait(self) -> None:
        await self._event.wait()


class Envelope:
    """A message in a mailbox, with the reply slot of its caller (``None`` for a cast)."""

    __slots__ = ("_counters", "_slot", "message")

    def __init__(self, message: Any, slot: _ReplySlot | None, counters: _Counters) -> None:
        self.message = message
        self._slot = slot
        self._counters = counters

    @property
    def replied(self) -> bool:
        """Whether the caller has its answer (or expects none: a cast)."""
        return self._slot is None or self._slot.done

    def reply(self, value: Any) -> None:
        """Answer the caller; an exception instance is raised in the caller."""
        if self._slot is None:
            if isinstance(value, BaseException):
                log.debug("cast %r answered with %r; nobody to tell", self.message, value)
            return
        error = value if isinstance(value, BaseException) else None
        if not self._slot.set(None if error else value, error):
            self._counters.late_replies += 1

    def fail(self, error: BaseException) -> None:
        """Answer the caller with an error (same as replying with an exception)."""
        self.reply(error)


class Actor:
    """A behaviour. Subclass it and override ``handle`` (or ``handle_batch``).

    A new instance is made for every start, so state in attributes begins fresh after a
    restart. ``self.name`` is the ref's name.
    """

    name: str = "actor"
    crashed: BaseException | None = None
    """Set before ``on_stop`` when the actor crashed (not when it was asked to stop or
    was cancelled): what it crashed with."""
    tasks: anyio.abc.TaskGroup
    """Set before ``on_start``: start background tasks here (a worker loop, a timer). They
    live as long as the actor; one that raises crashes the actor."""

    async def on_start(self) -> None:
        """Runs before the started-handshake; raising here fails the start."""

    async def on_stop(self) -> None:
        """Runs when the actor stops, however it stops (shielded from cancellation). After
        ``request_stop`` it runs before background tasks are cancelled; after a crash or a
        cancellation, once they are gone."""

    async def handle(self, message: Any) -> Any:
        """Handle one message and return the reply (ignored for casts)."""
        raise NotImplementedError(f"{type(self).__name__} does not handle {message!r}")

    async def handle_batch(self, batch: Sequence[Envelope]) -> None:
        """Handle every message that was waiting, and reply to each."""
        for envelope in batch:
            envelope.reply(await self.handle(envelope.message))


class ActorRef(Generic[A]):
    """The address of an actor: send to it, run it, stop it, read its statistics."""

    def __init__(
        self,
        name: str,
        factory: Callable[[], A],
        *,
        mailbox_size: int = 1024,
        max_batch: int = 512,
    ) -> None:
        if mailbox_size < 1:
            raise ValueError(f"mailbox_size must be >= 1, got {mailbox_size!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch!r}")
        self.name = name
        self._factory = factory
        self._mailbox_size = mailbox_size
        self._max_batch = max_batch
        self._counters = _Counters()
        self._send: MemoryObjectSendStream[Envelope] | None = None
        self._recv: MemoryObjectReceiveStream[Envelope] | None = None
        self._actor: A | None = None
        self._in_hand: Sequence[Envelope] = ()

    def __repr__(self) -> str:
        return f"<ActorRef {self.name!r} {'running' if self.running else 'stopped'}>"

    @property
    def running(self) -> bool:
        """Whether the actor runs now (its mailbox takes messages)."""
        return self._send is not None

    @property
    def actor(self) -> A | None:
        """The running behaviour instance, for its own ``statistics()``; None when stopped."""
        return self._actor

    # -- sending --------------------------------------------------------------------

    def _mailbox(self) -> MemoryObjectSendStream[Envelope]:
        send = self._send
        if send is None:
            raise ActorNotRunning(f"actor {self.name!r} is not running")
        return send

    async def _deliver(self, envelope: Envelope) -> None:
        send = self._mailbox()
        try:
            send.send_nowait(envelope)
        except anyio.WouldBlock:
            try:
                await send.send(envelope)  # backpressure: wait for room
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                raise ActorNotRunning(f"actor {self.name!r} stopped") from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise ActorNotRunning(f"actor {self.name!r} is stopping") from None

    async def cast(self, message: Any) -> None:
        """Send without waiting for a reply; waits while the mailbox is full."""
        await self._deliver(Envelope(message, None, self._counters))
        self._counters.casts += 1

    def try_cast(self, message: Any) -> None:
        """Send without waiting at all: ``MailboxFull`` if there is no room."""
        send = self._mailbox()
        try:
            send.send_nowait(Envelope(message, None, self._counters))
        except anyio.WouldBlock:
            raise MailboxFull(
                f"mailbox of {self.name!r} is full ({self._mailbox_size} messages)"
            ) from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise ActorNotRunning(f"actor {self.name!r} is stopping") from None
        self._counters.casts += 1

    async def call(self, message: Any, timeout: float | None = 5.0) -> Any:
        """Send and wait for the reply, at most ``timeout`` seconds (None: no limit).

        Raises ``CallTimeout`` when the reply is late (the actor may still handle the
        message; its reply is then dropped), ``ActorNotRunning`` when the actor stops first,
        or the exception the actor replied with. Cancelling the caller abandons the reply
        the same way.
        """
        slot = _ReplySlot()
        envelope = Envelope(message, slot, self._counters)
        self._counters.calls += 1
        try:
            with anyio.move_on_after(math.inf if timeout is None else timeout):
                await self._deliver(envelope)
                await slot.wait()
        finally:
            if not slot.done:
                slot.abandoned = True
        if not slot.done:
            raise CallTimeout(f"{self.name!r} did not answer {message!r} within {timeout} s")
        if slot.error is not None:
            raise slot.error
        return slot.value

    # -- running --------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask the actor to stop: no new messages; queued ones are still handled."""
        send = self._send
        if send is not None:
            send.close()
            self._send = None

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the actor until it is asked to stop (returns), crashes (raises) or is
        cancelled. Signals ``task_status.started()`` once ``on_start`` is done."""
        if self._recv is not None:
            raise RuntimeError(f"actor {self.name!r} is already running")
        send, recv = anyio.create_memory_object_stream[Envelope](self._mailbox_size)
        actor = self._factory()
        actor.name = self.name
        self._counters.starts += 1
        self._in_hand = ()
        started = stopped = False
        try:
            async with anyio.create_task_group() as tasks:
                actor.tasks = tasks
                await actor.on_start()
                started = True
                self._actor, self._send, self._recv = actor, send, recv
                task_status.started()
                await self._serve(actor, recv)
                # Asked to stop: on_stop runs while background tasks still live (so it
                # can wind them down), then whatever is left of them is cancelled.
                stopped = True
                with anyio.CancelScope(shield=True):
                    await actor.on_stop()
                tasks.cancel_scope.cancel()
        except BaseException as raised:
            # The actor's own task group wraps a crash in a group; a crash of one task is
            # reported as itself, so callers and supervisors see the real exception.
            exc = _only_exception(raised)
            cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
            if not cancelled:
                actor.crashed = exc
                self._counters.crashes += 1
                log.warning("actor %r crashed: %r", self.name, exc, extra={"actor": self.name})
            reason = "was cancelled" if cancelled else f"crashed: {exc!r}"
            error = ActorNotRunning(f"actor {self.name!r} {reason}")
            error.__cause__ = None if cancelled else exc
            envelope: Envelope
            for envelope in self._in_hand:
                if not envelope.replied:
                    envelope.fail(error)
            self._close(send, recv, error)
            if exc is raised:
                raise
            raise exc from exc.__cause__
        finally:
            self._in_hand = ()
            self._close(send, recv, ActorNotRunning(f"actor {self.name!r} stopped"))
            if started and not stopped:
                with anyio.CancelScope(shield=True):
                    await actor.on_stop()

    async def _serve(self, actor: A, recv: MemoryObjectReceiveStream[Envelope]) -> None:
        """The mailbox loop: returns once the mailbox is closed and drained."""
        max_batch = self._max_batch
        counters = self._counters
        while True:
            try:
                batch = [await recv.receive()]
            except anyio.EndOfStream:
                return  # request_stop(): every queued message has been handled
            while len(batch) < max_batch:
                try:
                    batch.append(recv.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            self._in_hand = batch
            await actor.handle_batch(batch)
            self._in_hand = ()
            counters.batches += 1
            counters.handled += len(batch)

    def _close(
        self,
        send: MemoryObjectSendStream[Envelope],
        recv: MemoryObjectReceiveStream[Envelope],
        error: ActorNotRunning,
    ) -> None:
        """Refuse new messages and fail every queued call with ``error``."""
        if self._recv is recv:
            self._send = self._recv = None
            self._actor = None
        send.close()
        while True:
            try:
                recv.receive_nowait().fail(error)
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        recv.close()

    def statistics(self) -> ActorStatistics:
        """A frozen snapshot of the actor's counters (mailbox depth, calls, casts, batches...)."""
        c = self._counters
        recv = self._recv
        return ActorStatistics(
            name=self.name,
            running=self.running,
            mailbox_size=self._mailbox_size,
            mailbox_depth=0 if recv is None else recv.statistics().current_buffer_used,
            casts=c.casts,
            calls=c.calls,
            handled=c.handled,
            batches=c.batches,
            late_replies=c.late_replies,
            starts=c.starts,
            crashes=c.crashes,
        )


def _only_exception(exc: BaseException) -> BaseException:
    """The single exception inside (nested) one-exception groups, else ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc

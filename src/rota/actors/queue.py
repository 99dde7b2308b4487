"""Queue[q]: the front door of one queue in a runtime.

Place in the tree: first child of ``QueueSup[q]`` (rest_for_one): if it restarts, so do
the LockRenewer and WorkerPool after it.

It turns "there may be work" signals into one ``JobsAvailable`` for its WorkerPool
(coalesced: a burst of enqueues wakes the pool once), and applies pause / resume: the
paused flag is stored, so claims of every runtime on the database honour it, and the local
pool stops asking at once.

Messages:

    JobsAvailable()   cast   from in-process enqueues, the Scheduler, the commit watcher
    Pause() / Resume()  call   persist the flag and tell the pool
"""

from __future__ import annotations

from typing import Any

import msgspec

from rota.actors.kernel import Actor, ActorRef, Envelope
from rota.actors.store import StoreClient
from rota.actors.worker_pool import JobsAvailable, SetPaused
from rota.errors import ActorNotRunning, MailboxFull
from rota.storage import ops

__all__ = ["Pause", "Queue", "Resume"]


class Pause(msgspec.Struct, frozen=True):
    """Pause the queue (persisted) and tell its pool to stop claiming."""

    pass


class Resume(msgspec.Struct, frozen=True):
    """Resume the queue (persisted) and tell its pool to claim again."""

    pass


class Queue(Actor):
    """One queue's wake-ups (coalesced into one per batch) and pause / resume."""

    def __init__(self, *, queue: str, store: StoreClient, pool: ActorRef[Actor]) -> None:
        self.queue = queue
        self.store = store
        self.pool = pool
        self.wakeups = 0

    async def handle_batch(self, batch: Any) -> None:
        """Answer every message of the batch; wake the pool once if any said jobs arrived."""
        envelopes: list[Envelope] = list(batch)
        wake = False
        for envelope in envelopes:
            message = envelope.message
            if isinstance(message, JobsAvailable):
                wake = True  # coalesced: one wake-up for the whole batch
                envelope.reply(None)
            else:
                envelope.reply(await self.handle(message))
        if wake:
            self._wake()

    def _wake(self) -> None:
        self.wakeups += 1
        try:
            self.pool.try_cast(JobsAvailable())
        except (MailboxFull, ActorNotRunning):
            pass  # a full mailbox already holds a wake-up; a stopped pool claims on start

    async def handle(self, message: Any) -> Any:
        """``Pause`` / ``Resume``: store it, then tell the pool."""
        match message:
            case Pause():
                await self.store.run(ops.SetPaused(self.queue, True))
                await self._tell_pool(True)
            case Resume():
                await self.store.run(ops.SetPaused(self.queue, False))
                await self._tell_pool(False)
            case _:
                return TypeError(f"Queue does not handle {message!r}")
        return None

    async def _tell_pool(self, paused: bool) -> None:
        try:
            await self.pool.cast(SetPaused(paused))
        except ActorNotRunning:
            pass

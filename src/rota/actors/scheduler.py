"""Scheduler: the runtime's clockwork, running a list of duties.

Place in the tree: second child of the Runtime supervisor, after the Store and before the
queues; stopped after every queue (its duties then release what the runtime still holds).

It runs the duties it is given (``rota.actors.duties``: ``Heartbeat``,
``PromoteAndRescue``, ``Retention`` in the runtime), each on its own timer. On start it
calls each duty's ``start`` in order (the owner is registered, dead same-host owners'
leases released) before any timer runs; on stop each duty's ``stop``, in reverse order.
A duty that raises a transient error (``StorageError``, ``ActorNotRunning``,
``CallTimeout``) is logged (once, then at most every 30 s while it lasts, and when it
works again) and runs again on its next tick; any other error crashes the Scheduler, and
its supervisor restarts it.

Messages (``call``):

* ``Sweep()`` → ``SweepResult``: one promote+rescue pass now (tests, CLI).
* ``RunDuty(name)`` → what that duty's ``run`` returns: any duty, now.

A transient error of a duty run on request goes to its caller; the Scheduler goes on.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import msgspec

from rota.actors._instruments import Instruments
from rota.actors._throttle import Throttled
from rota.actors.duties import (
    TRANSIENT,
    Duty,
    DutyContext,
    PromoteAndRescue,
    SweepResult,
)
from rota.actors.kernel import Actor
from rota.actors.liveness import LIVE_OWNERS, owner_alive, pid_alive, process_started_ms
from rota.actors.store import StoreClient
from rota.domain.event import Owner
from rota.errors import ConfigError

__all__ = [
    "LIVE_OWNERS",
    "RunDuty",
    "Scheduler",
    "Sweep",
    "SweepResult",
    "owner_alive",
    "pid_alive",
    "process_started_ms",
]

log = logging.getLogger("rota.scheduler")


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Sweep(msgspec.Struct, frozen=True):
    """Run the ``PromoteAndRescue`` duty now; the reply is its ``SweepResult``."""


class RunDuty(msgspec.Struct, frozen=True):
    """Run the duty named ``name`` now; the reply is what its ``run`` returns."""

    name: str


class Scheduler(Actor):
    """Runs ``duties``, each on its own timer; see the module docstring."""

    def __init__(
        self,
        *,
        store: StoreClient,
        owner: Owner,
        wake: Callable[[Sequence[str] | None], None],
        duties: Sequence[Duty],
        clock: Callable[[], int] | None = None,
        instruments: Instruments | None = None,
    ) -> None:
        self.duties: dict[str, Duty] = {}
        for duty in duties:
            if duty.name in self.duties:
                raise ConfigError(f"a Scheduler cannot run two duties named {duty.name!r}")
            self.duties[duty.name] = duty
        self.ctx = DutyContext(
            store=store,
            owner=owner,
            wake=wake,
            clock=clock if clock is not None else _wall_clock_ms,
            instruments=instruments,
        )
        self.throttled = Throttled(log)

    async def on_start(self) -> None:
        """Start the duties, in order."""
        for duty in self.duties.values():
            await duty.start(self.ctx)
        for duty in self.duties.values():
            self.tasks.start_soon(self._every, duty, name=f"duty {duty.name}")

    async def on_stop(self) -> None:
        """Stop the duties, in reverse order."""
        with anyio.CancelScope(shield=True):
            for duty in reversed(self.duties.values()):
                try:
                    await duty.stop(self.ctx)
                except TRANSIENT as exc:
                    log.warning("scheduler: stopping %s failed: %r", duty.name, exc)

    async def handle(self, message: Any) -> Any:
        """``Sweep()`` / ``RunDuty(name)``: run a duty now; its transient error is the reply."""
        duty: Duty | None
        if isinstance(message, Sweep):
            duty = next((d for d in self.duties.values() if isinstance(d, PromoteAndRescue)), None)
            if duty is None:
                return ValueError("this Scheduler has no sweep duty (PromoteAndRescue)")
        elif isinstance(message, RunDuty):
            duty = self.duties.get(message.name)
            if duty is None:
                known = ", ".join(self.duties) or "no duty"
                return ValueError(
                    f"the Scheduler has no duty named {message.name!r}; it has: {known}"
                )
        else:
            return TypeError(f"Scheduler does not handle {message!r}")
        try:
            return await duty.run(self.ctx)
        except TRANSIENT as exc:  # the caller's to handle; the timers go on
            return exc

    async def _every(self, duty: Duty) -> None:
        name = duty.name
        while True:
            delay_s = duty.due_in_s(self.ctx.clock())
            if math.isnan(delay_s):
                raise ValueError(f"duty {name!r}: due_in_s() returned NaN")
            await anyio.sleep(max(delay_s, 0.0))
            try:
                await duty.run(self.ctx)
            except TRANSIENT as exc:
                self.throttled.warning(name, "scheduler: %s skipped: %r", name, exc)
            else:
                self.throttled.clear(name, f"scheduler: {name} works again")

"""The Scheduler's duties: the runtime's periodic housekeeping, one class each.

A duty is a ``Duty`` subclass: a ``name``, an interval (or its own ``due_in_s``, for a duty
that keeps a calendar), ``run(ctx)``, and optional ``start(ctx)`` / ``stop(ctx)`` hooks.
The Scheduler runs each on its own timer; a new duty is a new class here (or anywhere)
added to the list ``runtime.py`` gives the Scheduler::

    class Cleanup(Duty):
        name = "cleanup"

        async def run(self, ctx: DutyContext) -> int:
            return await ctx.store.run(ops.PruneEvents(60_000))

    Scheduler(..., duties=[Heartbeat(5.0), PromoteAndRescue(0.25), Cleanup(60.0)])

The runtime's duties:

* ``Heartbeat``: the runtime's owner row: registered at start (with what ``describe``
  reports of the execution pools), refreshed every interval, and at stop the leases the
  runtime still holds released (they run again at once, uncounted) and the row removed.
* ``PromoteAndRescue`` ("sweep"): promote due delayed jobs, rescue expired leases (each
  a stall), wake the queues that gained work; at start, release at once the leases of
  same-host owners whose process is gone.
* ``Retention``: delete finished jobs past their queue's retention and old events; fail
  for good the jobs whose row holds a state rota does not know.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import msgspec

from rota.actors._instruments import Instruments
from rota.actors._joblog import report_attempt
from rota.actors.liveness import owner_alive
from rota.actors.store import StoreClient
from rota.domain.event import Owner
from rota.domain.instrument import AttemptOutcome
from rota.domain.job import Job, JobState
from rota.errors import ActorNotRunning, CallTimeout, ConfigError, StorageError
from rota.storage import ops
from rota.storage.engine import LeaseRef, Rescued

__all__ = [
    "CLOCK_JUMP_MS",
    "TRANSIENT",
    "Duty",
    "DutyContext",
    "Heartbeat",
    "PromoteAndRescue",
    "Retention",
    "RetentionPolicy",
    "SweepResult",
]

log = logging.getLogger("rota.scheduler")

#: The errors of a duty that may pass (the database, the Store): logged, and the duty
#: runs again on its next tick. Any other error is a bug: it crashes the Scheduler.
TRANSIENT: Final = (ActorNotRunning, CallTimeout, StorageError)
#: A forward step of the wall clock, beyond what the monotonic clock measured between two
#: sweeps, that counts as a jump (NTP stepping the clock, a VM resumed, a laptop woken).
CLOCK_JUMP_MS: Final = 1_000

_JSON: Final = msgspec.json.Encoder()


class DutyContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a duty works with: the runtime's, handed to every hook and run."""

    store: StoreClient
    owner: Owner
    """The runtime as a lease owner."""
    wake: Callable[[Sequence[str] | None], None]
    """Tell the queues (None: all) that there may be jobs to claim."""
    clock: Callable[[], int]
    """The runtime's wall clock, in epoch ms (a test's clock in tests)."""
    instruments: Instruments | None = None


class Duty:
    """One piece of the runtime's housekeeping, run by the Scheduler on its own timer.

    A duty object lives as long as its runtime: the Scheduler calls ``start`` at each of
    its (re)starts, before any duty runs, in list order, and ``stop`` when it stops, in
    reverse order. A ``run`` (or a hook) that raises a transient error (``TRANSIENT``) is
    logged and the duty runs again on its next tick; any other error crashes the
    Scheduler, which its supervisor restarts.
    """

    name: str = "duty"
    """Names the duty in logs and in ``RunDuty``; unique in a Scheduler."""

    def __init__(self, interval_s: float, *, name: str | None = None) -> None:
        if name is not None:
            self.name = name
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"a duty's name must be a non-empty string, got {self.name!r}")
        if (
            isinstance(interval_s, bool)
            or not isinstance(interval_s, int | float)
            or not math.isfinite(interval_s)
            or interval_s <= 0
        ):
            raise ConfigError(
                f"duty {self.name!r}: interval_s must be a positive, finite number of "
                f"seconds, got {interval_s!r}"
            )
        self.interval_s = float(interval_s)
        if type(self).run is Duty.run:
            raise ConfigError(f"duty {self.name!r} ({type(self).__name__}) defines no run()")

    def due_in_s(self, now_ms: int) -> float:
        """Seconds from ``now_ms`` (the runtime's wall clock) until the next run, asked
        before each run: ``interval_s`` unless a duty keeps its own calendar (a past time
        runs it at once; ``math.inf`` never again)."""
        return self.interval_s

    async def start(self, ctx: DutyContext) -> None:
        """At the Scheduler's start, before any duty runs; raising fails the start."""

    async def stop(self, ctx: DutyContext) -> None:
        """At the Scheduler's stop (shielded from cancellation)."""

    async def run(self, ctx: DutyContext) -> Any:
        """Do the duty once; the result goes to a ``RunDuty`` caller. Every duty defines it."""
        raise NotImplementedError(f"{type(self).__name__}.run")


# -- the owner row --------------------------------------------------------------------------


class Heartbeat(Duty):
    """Record that the owner is alive, with what ``describe`` reports of its execution
    pools (for ``rota info``; also recorded at registration). A ``describe`` that raises,
    or reports what JSON cannot hold, is logged and the heartbeat goes without pools (the
    last ones reported stay). Registers the owner at start; at stop releases every lease
    the runtime still holds (jobs interrupted by the shutdown, or claimed and not
    started) so they run again at once without counting against them, and removes the
    owner."""

    name = "heartbeat"

    def __init__(
        self, interval_s: float, *, describe: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        super().__init__(interval_s)
        self.describe = describe

    async def start(self, ctx: DutyContext) -> None:
        """Register the owner (with its pools, if described)."""
        pools = self._pools()
        owner = ctx.owner if pools is None else msgspec.structs.replace(ctx.owner, pools=pools)
        await ctx.store.run(ops.RegisterOwner(owner))

    async def run(self, ctx: DutyContext) -> None:
        """Record that the owner is alive, with its pools now."""
        await ctx.store.run(ops.Heartbeat(ctx.owner.id, self._pools()))

    async def stop(self, ctx: DutyContext) -> None:
        """Release every lease the runtime still holds (uncounted) and remove the owner."""
        owner_id = ctx.owner.id
        try:
            released = await ctx.store.run(ops.ReleaseOwner(owner_id, as_stall=False))
            await ctx.store.run(ops.RemoveOwner(owner_id))
        except TRANSIENT as exc:
            log.warning("could not release leases of %s at stop: %r", owner_id, exc)
            return
        if released:
            log.info("released %d leases at shutdown; they run again", len(released))

    def _pools(self) -> dict[str, Any] | None:
        """What ``describe`` reports now, or None: no callback, or it failed (logged: a
        broken report must not stop the heartbeat, nor crash the Scheduler)."""
        if self.describe is None:
            return None
        try:
            pools = self.describe()
            _JSON.encode(pools)  # what the engine cannot store fails here, not there
        except Exception as exc:
            log.warning("describing the pools failed (heartbeat without them): %r", exc)
            return None
        if not isinstance(pools, dict):
            log.warning(
                "describe() returned %s, not a dict: heartbeat without pools", type(pools).__name__
            )
            return None
        return pools


# -- delayed jobs and expired leases ------------------------------------------------------


class SweepResult(msgspec.Struct, frozen=True):
    """What one sweep did: delayed jobs promoted, and the ids of the rescued jobs by
    where they went (waiting or delayed again, failed for good, cancelled)."""

    promoted: int
    requeued: list[int]
    failed: list[int]
    cancelled: list[int]


class PromoteAndRescue(Duty):
    """Promote due delayed jobs and rescue expired leases (each a stall: it counts as an
    attempt and follows the job's backoff; past ``max_stalls`` the job fails as poison;
    one line per job on the ``rota.job`` logger says which); queues that gained ready
    jobs are woken.

    The leases this runtime holds (``held``) are never rescued (they are renewed, however
    late they look); after a forward jump of the wall clock larger than ``CLOCK_JUMP_MS``
    no lease is rescued for one lease ttl, so that live runtimes on this host, whose
    leases all look expired at once, renew them first.

    At start it releases at once the leases of owners on the same host whose process is
    gone (a restart after ``kill -9`` re-runs their jobs in about a second rather than a
    lease ttl)."""

    name = "sweep"

    def __init__(
        self,
        interval_s: float,
        *,
        held: Callable[[], list[LeaseRef]] | None = None,
        lease_ttl_s: float = 30.0,
    ) -> None:
        super().__init__(interval_s)
        self.held = held
        self.lease_ttl_s = lease_ttl_s
        self.sweeps = self.promoted = self.rescued = self.clock_jumps = 0
        self.released_dead: list[int] = []
        self._last_sweep: tuple[int, float] | None = None
        """(wall ms, monotonic s) at the last sweep: a forward jump of the wall clock."""
        self._rescue_from = 0.0
        """Monotonic time before which expired leases are not rescued (after a jump)."""

    async def start(self, ctx: DutyContext) -> None:
        """Reset the clock-jump state and release the leases of dead owners on this host."""
        self._last_sweep = (ctx.clock(), time.monotonic())  # a jump from now on is seen
        self._rescue_from = 0.0
        await self._release_dead_owners(ctx)

    async def run(self, ctx: DutyContext) -> SweepResult:
        """Promote and rescue, once."""
        self.sweeps += 1
        promoted = await ctx.store.run(ops.PromoteDue())
        if self._clock_jumped(ctx.clock()):
            rescued = Rescued(requeued=[], failed=[], cancelled=[])
        else:
            spare = [] if self.held is None else self.held()
            rescued = await ctx.store.run(ops.RescueExpired(list(spare)))
        self.promoted += promoted
        self.rescued += len(rescued.requeued) + len(rescued.failed) + len(rescued.cancelled)
        if rescued.stalled:
            self._log_stalls(ctx, rescued.stalled)
        if promoted or rescued.requeued:
            ctx.wake(None)
        return SweepResult(promoted, rescued.requeued, rescued.failed, rescued.cancelled)

    async def _release_dead_owners(self, ctx: DutyContext) -> None:
        """Release the leases of same-host owners whose process is gone. ``ListOwners``
        leaves out (and reports) rows it cannot read; one owner whose release fails is
        logged and left to its leases' expiry: nothing an owner row holds stops a start."""
        me = ctx.owner
        released_any = False
        for other in await ctx.store.run(ops.ListOwners()):
            if other.id == me.id or other.host != me.host or owner_alive(other, me):
                continue
            try:
                released = await ctx.store.run(ops.ReleaseOwner(other.id, as_stall=True))
                await ctx.store.run(ops.RemoveOwner(other.id))
            except Exception as exc:  # its leases still expire after lease_ttl_s
                log.warning("owner %r is gone, but releasing its leases failed: %r", other.id, exc)
                continue
            self.released_dead.extend(released)
            released_any = released_any or bool(released)
            log.warning(
                "owner %s (pid %d) is gone: released %d leases at once",
                other.id,
                other.pid,
                len(released),
            )
        if released_any:
            ctx.wake(None)

    def _log_stalls(self, ctx: DutyContext, jobs: list[Job]) -> None:
        """One line per job taken back as a stall, as the engine left it: runs again (and
        when), failed for good (out of attempts, or poison), or cancelled (asked to)."""
        now_ms = ctx.clock()
        for job in jobs:
            retry_in_s = None
            outcome: AttemptOutcome
            if job.state is JobState.CANCELLED:
                outcome, level = "cancelled", logging.INFO
            elif job.state is JobState.FAILED:
                outcome, level = "failed", logging.WARNING
            else:
                outcome, level = "retrying", logging.WARNING
                retry_in_s = (job.run_at_ms - now_ms) / 1000
            report_attempt(
                level,
                job,
                outcome,
                instruments=ctx.instruments,
                error=job.error,
                retry_in_s=retry_in_s,
            )

    def _clock_jumped(self, wall: int) -> bool:
        """Note the wall clock against the monotonic one; True while rescues wait after a
        forward jump."""
        mono = time.monotonic()
        last, self._last_sweep = self._last_sweep, (wall, mono)
        if last is not None:
            jump_ms = (wall - last[0]) - (mono - last[1]) * 1000
            if jump_ms > CLOCK_JUMP_MS:
                self.clock_jumps += 1
                self._rescue_from = mono + self.lease_ttl_s
                log.warning(
                    "the wall clock jumped %.1f s forward: expired leases are not rescued "
                    "for one lease ttl (%.0f s), so live workers renew theirs first",
                    jump_ms / 1000,
                    self.lease_ttl_s,
                )
        return mono < self._rescue_from


# -- retention ----------------------------------------------------------------------------


class RetentionPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How long a queue keeps its finished jobs: completed ones, and failed or cancelled
    ones, each by age (``*_s``) and/or count (the last N); None keeps them all."""

    queue: str
    completed_s: float | None
    completed: int | None
    failed_s: float | None
    failed: int | None


class Retention(Duty):
    """Delete finished jobs past their queue's retention (``policies``), and events older
    than ``retain_events_s``; fail for good the jobs whose row holds a state rota does not
    know (corrupt rows). Returns the number of jobs deleted."""

    name = "retention"

    def __init__(
        self,
        interval_s: float,
        *,
        policies: Sequence[RetentionPolicy] = (),
        retain_events_s: float,
    ) -> None:
        super().__init__(interval_s)
        self.policies = list(policies)
        self.retain_events_s = retain_events_s

    async def run(self, ctx: DutyContext) -> int:
        """Quarantine rows in an unknown state, prune finished jobs per policy and old events;
        returns the jobs deleted."""
        await ctx.store.run(ops.QuarantineCorrupt())
        deleted = 0
        for policy in self.policies:
            for states, age_s, count in (
                ({JobState.COMPLETED}, policy.completed_s, policy.completed),
                ({JobState.FAILED, JobState.CANCELLED}, policy.failed_s, policy.failed),
            ):
                if age_s is None and count is None:
                    continue
                deleted += await ctx.store.run(
                    ops.Prune(
                        queue=policy.queue,
                        states=frozenset(states),
                        older_than_ms=None if age_s is None else round(age_s * 1000),
                        keep_last=count,
                    )
                )
        await ctx.store.run(ops.PruneEvents(round(self.retain_events_s * 1000)))
        return deleted

"""LockRenewer[q]: keeps the leases of one queue's WorkerPool alive.

Place in the tree: ``QueueSup[q]``, between Queue[q] and WorkerPool[q] (stopped after the
pool, so leases are renewed while the pool's running jobs finish).

Every ``lease_ttl/3`` it asks the pool for its leases (``CurrentLeases``), renews them all
in one Store call, and tells the pool to stop the jobs whose lease was lost (``lost``:
not settled) or whose job was asked to cancel (``cancel``: settled as CANCELLED). A job
that keeps running is never rescued as stalled, however long it runs, as long as this
actor and its event loop are alive (a loop blocked for longer than the ttl is the one way
to lose a lease while alive; ``rota`` logs it when it happens).

Cancels are not left to the renewal: when a cancel may have been asked for (another
connection committed, or this process cancelled a running job) the runtime sends
``CheckCancels``, and the renewer asks the pool for its leases and the Store which of
them were asked to cancel (one read, no write), then stops those. Checks are coalesced and
rate-limited: at most one in flight, and at most one every ``CANCEL_CHECK_INTERVAL_S``, so
another process committing back to back costs one read per interval, not one per commit;
a pool that holds no lease costs none. The renewal still reports cancels (the fallback).

Messages:

    CheckCancels()   cast   a cancel may have been asked for: check (coalesced)

``statistics()`` → ``LockRenewerStatistics``.
"""

from __future__ import annotations

import logging
from typing import Any, Final, cast

import anyio
import msgspec

from rota.actors._throttle import Throttled
from rota.actors.kernel import Actor, ActorRef
from rota.actors.store import StoreClient
from rota.actors.worker_pool import CancelJobs, CurrentLeases, WorkerPool
from rota.errors import ActorNotRunning, CallTimeout, StorageError
from rota.storage import ops
from rota.storage.engine import LeaseRef

__all__ = ["CANCEL_CHECK_INTERVAL_S", "CheckCancels", "LockRenewer", "LockRenewerStatistics"]

log = logging.getLogger("rota.renewer")

#: The least time between two cancel checks of one queue (a burst of notices costs one).
CANCEL_CHECK_INTERVAL_S: Final = 0.02


class CheckCancels(msgspec.Struct, frozen=True):
    """A cancel may have been asked for: check the pool's leases (coalesced)."""


class LockRenewerStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """What ``LockRenewer.statistics`` reports: ticks, leases renewed and lost, cancels."""

    queue: str
    ticks: int
    renewed: int
    lost: int
    cancel_requested: int
    late_ticks: int
    """Ticks that came more than a third of the ttl late (a blocked event loop)."""
    cancel_checks: int = 0
    """Cancel checks run (each one read of the pool's leases), apart from renewals."""


class LockRenewer(Actor):
    """Renews one queue's leases every ttl/3 and stops the jobs whose lease was lost or
    whose cancel was asked for (see the module docstring)."""

    def __init__(
        self, *, queue: str, store: StoreClient, pool: ActorRef[Actor], lease_ttl_ms: int
    ) -> None:
        self.queue = queue
        self.store = store
        self.pool = pool
        self.lease_ttl_ms = lease_ttl_ms
        self.interval_s = lease_ttl_ms / 3000
        self.ticks = self.renewed = self.lost = self.cancel_requested = self.late_ticks = 0
        self.throttled = Throttled(log)
        self.cancel_checks = 0
        self._check = anyio.Event()

    async def on_start(self) -> None:
        """Start the renewal ticker and the cancel checker."""
        self.tasks.start_soon(self._ticker, name=f"rota-renewer-{self.queue}")
        self.tasks.start_soon(self._cancel_checker, name=f"rota-cancel-checker-{self.queue}")

    async def handle(self, message: Any) -> Any:
        """``CheckCancels``: check the pool's leases for cancels soon (coalesced)."""
        if isinstance(message, CheckCancels):
            self._check.set()
            return None
        return TypeError(f"LockRenewer does not handle {message!r}")

    async def _cancel_checker(self) -> None:
        while True:
            await self._check.wait()
            self._check = anyio.Event()  # notices from now on ask for the next check
            await self.check_cancels()
            await anyio.sleep(CANCEL_CHECK_INTERVAL_S)

    async def check_cancels(self) -> None:
        """Stop the pool's jobs that were asked to cancel (one read; also callable
        directly). Leases lost are left to the renewal."""
        pool = self.pool.actor
        if isinstance(pool, WorkerPool) and not pool.held:
            return  # nothing held (the common case of an idle pool): not even a message
        try:
            leases = await self._leases()
            if not leases:
                return
            self.cancel_checks += 1
            asked = await self.store.run(ops.CancelRequested(leases))
        except (ActorNotRunning, CallTimeout, StorageError) as exc:
            log.warning("queue %s: cancel check skipped: %r", self.queue, exc)
            return
        if asked:
            self.cancel_requested += len(asked)
            tokens = {lease.job_id: lease.token for lease in leases}
            await self._cancel(CancelJobs([LeaseRef(i, tokens[i]) for i in asked], "cancel"))

    async def _ticker(self) -> None:
        next_at = anyio.current_time() + self.interval_s
        while True:
            await anyio.sleep_until(next_at)
            now = anyio.current_time()
            if now - next_at > self.interval_s:
                self.late_ticks += 1
                log.warning(
                    "queue %s: lease renewal %.1f s late (was the event loop blocked?)",
                    self.queue,
                    now - next_at,
                )
            next_at = now + self.interval_s
            await self.tick()

    async def tick(self) -> None:
        """Renew every lease of the pool once (also callable directly, e.g. by tests)."""
        self.ticks += 1
        try:
            leases = await self._leases()
            if not leases:
                return
            result = await self.store.run(ops.Renew(leases, self.lease_ttl_ms))
        except (ActorNotRunning, CallTimeout, StorageError) as exc:
            self.throttled.warning("renew", "queue %s: renewal skipped: %r", self.queue, exc)
            return
        self.throttled.clear("renew", f"queue {self.queue}: renewals work again")
        self.renewed += len(result.renewed)
        self.lost += len(result.lost)
        self.cancel_requested += len(result.cancel_requested)
        tokens = {lease.job_id: lease.token for lease in leases}
        if result.lost:
            lost = [LeaseRef(job_id, tokens[job_id]) for job_id in result.lost]
            await self._cancel(CancelJobs(lost, "lost"))
        if result.cancel_requested:
            asked = [LeaseRef(job_id, tokens[job_id]) for job_id in result.cancel_requested]
            await self._cancel(CancelJobs(asked, "cancel"))

    def _stopping_pool(self) -> WorkerPool | None:
        """The pool, while it stops: it takes no more messages, but runs its jobs for the
        shutdown grace period, so their leases must still be renewed and their cancels
        delivered. None once it has stopped (or restarted): it holds no lease then."""
        pool = self.pool.actor
        return pool if isinstance(pool, WorkerPool) and pool.stopping else None

    async def _cancel(self, message: CancelJobs) -> None:
        try:
            await self.pool.cast(message)
        except ActorNotRunning:
            pool = self._stopping_pool()
            if pool is not None:
                await pool.handle(message)

    async def _leases(self) -> list[LeaseRef]:
        try:
            return cast(list[LeaseRef], await self.pool.call(CurrentLeases()))
        except ActorNotRunning:
            pool = self._stopping_pool()
            return [] if pool is None else pool.current_leases()

    def statistics(self) -> LockRenewerStatistics:
        """A snapshot of the renewer's counters."""
        return LockRenewerStatistics(
            queue=self.queue,
            ticks=self.ticks,
            renewed=self.renewed,
            lost=self.lost,
            cancel_requested=self.cancel_requested,
            late_ticks=self.late_ticks,
            cancel_checks=self.cancel_checks,
        )

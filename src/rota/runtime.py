"""The runtime: one process's supervision tree (DESIGN.md section 3).

::

    Runtime              one_for_one, 3 restarts in 60 s; beyond that it gives up, and the
    │                    process should exit non-zero (leases keep the jobs safe)
    ├── Store            permanent; owns the database on its thread; group commit
    ├── Scheduler        permanent; promote, rescue, heartbeat, retention
    └── QueueSup[q] ...  rest_for_one, 5 restarts in 30 s, one per queue
        ├── Queue[q]         wake-ups (coalesced) and pause / resume
        ├── LockRenewer[q]   renews the pool's leases every ttl/3; checks for cancels
        │                    when another connection commits (or this process cancels)
        ├── threads[q]       handler threads for sync jobs (started on demand)
        ├── processes[q]     supervised child processes (if the queue has process jobs)
        │   └── process[q:i] ...   one per child: a crash is a restart, counted
        └── WorkerPool[q]    runs the jobs; stopped first, so its running jobs finish under renewal

Beside the tree, the change feed (``rota.storage.feed``) waits on a thread of its own for
other connections' commits (its doorbell, recorded with the owner, or its poll) and wakes
every queue and renewer on the loop.

Shutdown runs the tree backwards: each WorkerPool stops claiming, lets running jobs finish
for ``shutdown_grace_s``, cancels the rest and hands in every settlement; the Scheduler then
releases what the runtime still holds (so those jobs run again at once, without counting
against them) and removes the owner; the Store closes last.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio
import anyio.abc
import msgspec

from rota.actors._backend import LoopScheduler, current_loop_scheduler
from rota.actors._instruments import Instruments
from rota.actors.duties import Heartbeat, PromoteAndRescue, Retention, RetentionPolicy
from rota.actors.kernel import Actor, ActorRef
from rota.actors.lock_renewer import CheckCancels, LockRenewer
from rota.actors.queue import Pause, Queue, Resume
from rota.actors.scheduler import LIVE_OWNERS, Scheduler, Sweep, SweepResult
from rota.actors.store import Store, StoreClient
from rota.actors.worker_pool import (
    JobsAvailable,
    PoolStats,
    WorkerPool,
    WorkerPoolStatistics,
)
from rota.config import Config
from rota.domain.event import Owner
from rota.domain.instrument import Instrument
from rota.domain.job import NewJob
from rota.errors import ActorNotRunning, ConfigError, MailboxFull, StorageError, did_you_mean
from rota.storage import ops
from rota.storage.engine import Engine, LeaseRef
from rota.supervisors import ChildSpec, Restart, Strategy, Supervisor

if TYPE_CHECKING:
    from rota.execution import QueueRunners
    from rota.storage.feed import ChangeFeed

__all__ = ["Health", "Runtime", "queue_supervisor"]

log = logging.getLogger("rota.runtime")


def _owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Runtime:
    """One process's supervised actors for a set of queues; see the module docstring."""

    def __init__(
        self,
        *,
        config: Config,
        queues: Sequence[str],
        engine_factory: Callable[[], Engine],
        runners: Callable[[str], QueueRunners],
        change_feed: Callable[[Callable[[], bool]], ChangeFeed] | None = None,
        clock: Callable[[], int] | None = None,
        instruments: Sequence[Instrument] = (),
    ) -> None:
        if not queues:
            raise ConfigError("a runtime needs at least one queue (register a job first)")
        self.config = config
        self.queues = list(dict.fromkeys(queues))
        self.owner = Owner(
            id=_owner_id(),
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at_ms=time.time_ns() // 1_000_000,
            heartbeat_at_ms=time.time_ns() // 1_000_000,
            queues=self.queues,
        )
        self.instruments = Instruments(instruments)
        """The installed instruments (``rota.Instrument``), called where they attach."""
        self._commit = anyio.Event()
        self.fatal: StorageError | None = None
        """Why the runtime stopped by itself (its database file was deleted or replaced)."""
        self._fatal_event = anyio.Event()
        self._lease_ttl_ms = round(config.lease_ttl_s * 1000)
        self._change_feed = change_feed
        self.feed: ChangeFeed | None = None
        """The change feed while the runtime runs (None without one, or once stopped)."""
        self._asked_store: Store | None = None
        # The actors (what each is given: the helpers below)...
        self.store_ref: ActorRef[Store] = self._store(engine_factory)
        self.store = StoreClient(self.store_ref)
        self.scheduler_ref: ActorRef[Actor] = self._scheduler(clock)
        self.runners: dict[str, QueueRunners] = {q: runners(q) for q in self.queues}
        self.pools: dict[str, ActorRef[Actor]] = {q: self._pool(q) for q in self.queues}
        self.queue_refs: dict[str, ActorRef[Actor]] = {q: self._queue_ref(q) for q in self.queues}
        self.renewers: dict[str, ActorRef[Actor]] = {q: self._renewer(q) for q in self.queues}
        # ...and the tree they run in.
        self.queue_sups = [
            queue_supervisor(
                q,
                queue=self.queue_refs[q],
                renewer=self.renewers[q],
                runners=self.runners[q],
                pool=self.pools[q],
                shutdown_grace_s=config.shutdown_grace_s,
            )
            for q in self.queues
        ]
        self.root = Supervisor(
            "runtime",
            [
                _actor_child(self.store_ref, grace_s=30.0),
                _actor_child(self.scheduler_ref, grace_s=10.0),
                *(sup.child_spec() for sup in self.queue_sups),
            ],
            strategy=Strategy.ONE_FOR_ONE,
            max_restarts=3,
            period_s=60.0,
        )

    # -- the actors' arguments ---------------------------------------------------------------

    def _store(self, engine_factory: Callable[[], Engine]) -> ActorRef[Store]:
        return ActorRef(
            "store",
            lambda: Store(
                engine_factory,
                on_commit=self._committed,
                on_fatal=self._on_fatal,
                instruments=self.instruments,
            ),
            mailbox_size=4096,
        )

    def _pool(self, q: str) -> ActorRef[Actor]:
        config = self.config
        settings = config.for_queue(q)
        return ActorRef(
            f"pool[{q}]",
            _factory(
                WorkerPool,
                queue=q,
                owner=self.owner.id,
                store=self.store,
                execute=self.runners[q].execute,
                concurrency=settings.concurrency,
                prefetch=settings.prefetch,
                lease_ttl_ms=self._lease_ttl_ms,
                shutdown_grace_s=config.shutdown_grace_s,
                instruments=self.instruments,
            ),
        )

    def _queue_ref(self, q: str) -> ActorRef[Actor]:
        return ActorRef(
            f"queue[{q}]", _factory(Queue, queue=q, store=self.store, pool=self.pools[q])
        )

    def _renewer(self, q: str) -> ActorRef[Actor]:
        return ActorRef(
            f"renewer[{q}]",
            _factory(
                LockRenewer,
                queue=q,
                store=self.store,
                pool=self.pools[q],
                lease_ttl_ms=self._lease_ttl_ms,
            ),
        )

    def _scheduler(self, clock: Callable[[], int] | None) -> ActorRef[Actor]:
        config = self.config
        return ActorRef(
            "scheduler",
            lambda: Scheduler(
                store=self.store,
                owner=self.owner,  # as run() completed it (with its doorbell)
                wake=self.wake,
                clock=clock,
                instruments=self.instruments,
                duties=[  # each on its own timer; started in this order, stopped in reverse
                    Heartbeat(config.heartbeat_interval_s, describe=self.describe_pools),
                    PromoteAndRescue(
                        config.scheduler_interval_s,
                        held=self.held_leases,
                        lease_ttl_s=config.lease_ttl_s,
                    ),
                    Retention(
                        config.retention_interval_s,
                        policies=_retention_policies(config, self.queues),
                        retain_events_s=config.retain_events_s,
                    ),
                ],
            ),
        )

    # -- running --------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the tree until ``stop()``; raises ``SupervisorGaveUp`` if it cannot recover,
        and the ``StorageError`` if its database file was deleted or replaced (it then
        stops by itself: jobs in the new file would never reach it)."""
        log.info("runtime %s starting on queues %s", self.owner.id, ", ".join(self.queues))
        feed = None
        if self._change_feed is not None:
            # Before the tree: its doorbell is recorded with the owner, and the Store's
            # engine must know it (it never rings its own runtime).
            feed = self.feed = self._change_feed(self._foreign_commits)
            self.owner = msgspec.structs.replace(self.owner, doorbell=feed.doorbell)
        watcher = None
        LIVE_OWNERS.add(self.owner.id)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._stop_when_fatal)

                def started() -> None:
                    nonlocal watcher
                    if feed is not None:  # watching once the Store has opened the database
                        watcher = _FeedWatcher(
                            feed, current_loop_scheduler(), self._external_commit
                        )
                    task_status.started()

                await self.root.run(task_status=_Started(started))
                tg.cancel_scope.cancel()
        finally:
            LIVE_OWNERS.discard(self.owner.id)
            if watcher is not None:
                watcher.stop()
            elif feed is not None:
                feed.close()
            self.feed = None
        if self.fatal is not None:
            raise self.fatal
        log.info("runtime %s stopped", self.owner.id)

    def _on_fatal(self, error: StorageError) -> None:
        if self.fatal is None:
            self.fatal = error
            self._fatal_event.set()

    async def _stop_when_fatal(self) -> None:
        await self._fatal_event.wait()
        log.error("runtime %s stopping: %s", self.owner.id, self.fatal)
        await self.root.stop()

    def health(self) -> Health:
        """Whether this runtime can do its work now: ``ok``, ``degraded`` (its database
        refuses writes for a transient reason: a full disk, a lock; it retries and goes
        on when that passes) or ``failed`` (it stopped, or is stopping, for good)."""
        if self.fatal is not None:
            return Health(status="failed", problems=[str(self.fatal)])
        store = self.store_ref.actor
        if not isinstance(store, Store):
            return Health(status="degraded", problems=["the Store is not running"])
        stats = store.statistics()
        if stats.degraded is not None:
            since = stats.degraded_for_s or 0.0
            return Health(
                status="degraded",
                problems=[f"storage failing for {since:.1f} s: {stats.degraded}"],
            )
        return Health(status="ok", problems=[])

    def held_leases(self) -> list[LeaseRef]:
        """Every lease this runtime's pools hold now (running and buffered jobs)."""
        leases: list[LeaseRef] = []
        for ref in self.pools.values():
            pool = ref.actor
            if isinstance(pool, WorkerPool):
                leases += pool.current_leases()
        return leases

    async def stop(self) -> None:
        """Graceful shutdown (see the module docstring); returns when it is done."""
        await self.root.stop()

    def abort(self) -> None:
        """Make a shutdown (under way or to come) skip the grace period: running jobs are
        cancelled at once, settled or released, and run again later."""
        for ref in self.pools.values():
            pool = ref.actor
            if isinstance(pool, WorkerPool):
                pool.abort()

    # -- signals ----------------------------------------------------------------------------

    def _external_commit(self) -> None:
        """Another connection committed (seen by the change feed): wake every queue, and
        have the renewers check whether a running job was asked to cancel."""
        self.wake(None)
        self.check_cancels(None)

    def _foreign_commits(self) -> bool:
        """For the change feed (on its thread): whether another connection committed,
        asked of the Store's connection, where this runtime's own commits never show. A
        Store that restarted since the last question cannot know what happened while it
        was down: then True."""
        store = self.store_ref.actor
        if not isinstance(store, Store):
            return True
        asked, self._asked_store = self._asked_store, store
        foreign = store.foreign_commits()
        return foreign or (asked is not None and asked is not store)

    def _committed(self) -> None:
        self._commit.set()
        self._commit = anyio.Event()

    async def wait_for_commit(self, timeout_s: float) -> None:
        """Wait until the Store commits a batch (or ``timeout_s`` passes)."""
        event = self._commit
        with anyio.move_on_after(timeout_s):
            await event.wait()

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[int]:
        """Enqueue through the Store (group commit) and wake the queues. Jobs ready now for
        one queue whose local pool is idle are claimed for that pool in the same
        transaction: one commit, not two, between ``enqueue`` and the handler's start."""
        queues = sorted({job.queue for job in jobs})
        ref = self.pools.get(queues[0]) if len(queues) == 1 else None
        pool = None if ref is None else ref.actor
        claim = None
        if isinstance(pool, WorkerPool) and not any(job.delayed for job in jobs):
            claim = pool.direct_claim(len(jobs))
        if claim is None:
            ids = await self.store.run(ops.Enqueue(list(jobs)))
            self.wake(queues)
            return ids
        assert isinstance(pool, WorkerPool)
        assert ref is not None
        try:
            # Shielded: once committed, the claimed jobs must reach the pool.
            with anyio.CancelScope(shield=True):
                ids, claimed = await self.store.run(ops.EnqueueAndClaim(list(jobs), claim))
        except BaseException:
            pool.direct_failed(claim)
            raise
        if ref.actor is pool:
            pool.direct_claimed(claim, claimed)
        else:  # the pool restarted meanwhile: hand the jobs back, uncounted
            pool.direct_failed(claim)
            with anyio.CancelScope(shield=True):
                await self.store.run(
                    ops.Unclaim([LeaseRef(job.id, job.token or 0) for job in claimed])
                )
            claimed = []
        if len(claimed) < len(jobs):
            self.wake(queues)
        return ids

    def wake(self, queues: Sequence[str] | None = None) -> None:
        """Tell the queues (default: all) that there may be jobs to claim."""
        for q in self.queues if queues is None else queues:
            ref = self.queue_refs.get(q)
            if ref is None:
                continue
            try:
                ref.try_cast(JobsAvailable())
            except (MailboxFull, ActorNotRunning):
                pass  # full: a wake-up is already queued; stopped: it claims when it starts

    def check_cancels(self, queues: Sequence[str] | None = None) -> None:
        """Tell the queues' renewers (default: all) that a running job may have been asked
        to cancel: each checks its pool's leases (coalesced, rate-limited, one read)."""
        for q in self.queues if queues is None else queues:
            ref = self.renewers.get(q)
            if ref is None:
                continue
            try:
                ref.try_cast(CheckCancels())
            except (MailboxFull, ActorNotRunning):
                pass  # full: a check is already asked for; stopped: no lease to check

    # -- controls and introspection ----------------------------------------------------------

    async def pause(self, queue: str) -> None:
        """Pause ``queue`` for every runtime on the database (persisted): no job of it
        starts; running ones finish. ``ConfigError`` for a queue this runtime does not run."""
        await self._queue(queue).call(Pause())

    async def resume(self, queue: str) -> None:
        """Resume a paused ``queue`` (persisted): its pools claim again. ``ConfigError`` for
        a queue this runtime does not run."""
        await self._queue(queue).call(Resume())

    async def sweep(self) -> SweepResult:
        """Promote and rescue once, now."""
        result: SweepResult = await self.scheduler_ref.call(Sweep())
        return result

    async def pool_statistics(self) -> dict[str, WorkerPoolStatistics]:
        """Each queue's WorkerPool counters (running, claimed, completed...), by queue."""
        return {q: await ref.call(PoolStats()) for q, ref in self.pools.items()}

    def describe_pools(self) -> dict[str, Any]:
        """Each queue's slots, handler threads and child processes, as JSON-able data
        (recorded with the owner's heartbeat: ``rota info`` shows it)."""
        described: dict[str, Any] = {}
        for q, runners in self.runners.items():
            pool = self.pools[q].actor
            entry: dict[str, Any] = {"concurrency": self.config.for_queue(q).concurrency}
            if isinstance(pool, WorkerPool):
                entry["running"] = pool.running
            entry.update(runners.describe())
            described[q] = entry
        return described

    def _queue(self, queue: str) -> ActorRef[Actor]:
        try:
            return self.queue_refs[queue]
        except KeyError:
            raise ConfigError(
                f"this runtime does not run queue {queue!r}{did_you_mean(queue, self.queue_refs)}"
            ) from None

    def statistics(self) -> dict[str, Any]:
        """Actors and supervisors at a glance (for ``rota info`` and tests)."""
        refs: list[ActorRef[Any]] = [
            self.store_ref,
            self.scheduler_ref,
            *self.queue_refs.values(),
            *self.renewers.values(),
            *self.pools.values(),
        ]
        return {
            "owner": self.owner.id,
            "actors": {ref.name: ref.statistics() for ref in refs},
            "supervisors": [
                self.root.statistics(),
                *(s.statistics() for s in self.queue_sups),
                *(
                    r.processes.supervisor.statistics()
                    for r in self.runners.values()
                    if r.processes is not None
                ),
            ],
            "pools": self.describe_pools(),
        }


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """A runtime's health (``Runtime.health()``), for probes and dashboards."""

    status: Literal["ok", "degraded", "failed"]
    problems: list[str]


def queue_supervisor(
    q: str,
    *,
    queue: ActorRef[Actor],
    renewer: ActorRef[Actor],
    runners: QueueRunners,
    pool: ActorRef[Actor],
    shutdown_grace_s: float,
) -> Supervisor:
    """QueueSup[q]: its children in start order; they stop in reverse, the WorkerPool
    first, so its running jobs finish while their leases are still renewed and its
    threads still run."""
    return Supervisor(
        f"queue-sup[{q}]",
        [
            _actor_child(queue, grace_s=5.0),
            _actor_child(renewer, grace_s=5.0),
            *runners.children(),  # threads, processes: up before the pool
            _actor_child(pool, grace_s=shutdown_grace_s + 5.0),
        ],
        strategy=Strategy.REST_FOR_ONE,
        max_restarts=5,
        period_s=30.0,
    )


def _retention_policies(config: Config, queues: Sequence[str]) -> list[RetentionPolicy]:
    """Each queue's retention (the Retention duty)."""
    policies = []
    for q in queues:
        r = config.for_queue(q)
        policies.append(
            RetentionPolicy(
                queue=q,
                completed_s=r.retain_completed_s,
                completed=r.retain_completed,
                failed_s=r.retain_failed_s,
                failed=r.retain_failed,
            )
        )
    return policies


class _Started:
    """A task status that calls ``fn`` when its task has started."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn = fn

    def started(self, value: None = None) -> None:
        self._fn()


class _FeedWatcher:
    """The change feed's thread: waits on the feed and calls ``on_change`` on the event
    loop for each change it reports. A call already scheduled and not yet run covers the
    changes seen meanwhile (it runs after them), so a burst of rings costs one call."""

    #: How long one ``wait`` lasts at most (the feed polls within it, and rings end it).
    WAIT_S: Final = 1.0

    def __init__(
        self, feed: ChangeFeed, schedule: LoopScheduler, on_change: Callable[[], None]
    ) -> None:
        self._feed = feed
        self._schedule = schedule
        self._on_change = on_change
        self._pending = False
        self._stopping = False
        self._thread = threading.Thread(target=self._main, name="rota-feed", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        while not self._stopping:
            try:
                changed = self._feed.wait(self.WAIT_S)
            except Exception as exc:  # the feed's own problem: keep watching, slowly
                log.warning("change feed failed (retrying in %g s): %r", self.WAIT_S, exc)
                time.sleep(self.WAIT_S)
                continue
            if changed and not self._pending and not self._stopping:
                self._pending = True
                try:
                    self._schedule(self._run)
                except RuntimeError:  # the event loop is gone
                    return

    def _run(self) -> None:
        """On the loop: the changes seen so far are reported now."""
        self._pending = False
        self._on_change()

    def stop(self) -> None:
        """Close the feed (which ends a wait under way) and wait briefly for the thread
        (on the loop's thread: a thread that lingers, a daemon, tells nobody anything)."""
        self._stopping = True
        self._feed.close()
        self._thread.join(timeout=1.0)


def _factory(cls: type[Actor], **kwargs: Any) -> Callable[[], Actor]:
    """A fresh behaviour per start: a restarted actor rebuilds its state."""
    return lambda: cls(**kwargs)


def _actor_child(ref: ActorRef[Any], *, grace_s: float) -> ChildSpec:
    return ChildSpec(
        ref.name, ref.run, restart=Restart.PERMANENT, stop=ref.request_stop, grace_s=grace_s
    )

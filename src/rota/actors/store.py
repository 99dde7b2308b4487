"""The Store actor: the only way into the database, one transaction per batch.

Place in the tree: a permanent child of the Runtime supervisor, started first, stopped last.

One dedicated thread owns the engine (and so its connection) for the actor's whole life.
The actor drains its mailbox, hands everything waiting to that thread in one hop, and the
thread runs the whole batch in one transaction (group commit: one ``BEGIN IMMEDIATE``, one
fsync, for as many callers as were waiting). While the thread works, new requests queue up
and form the next batch, so the busier the Store, the larger its batches.

Each request gets its own reply: its result, or the error its own operation raised (which
rolled back that operation alone: ``LeaseLost`` for a stale token does not fail the
enqueue beside it). If the transaction as a whole fails, every caller in the batch gets
that ``StorageError`` and nothing of the batch was committed. A transient fault of the
environment (a full disk, a lock held past the retry budget, an I/O error) does not crash
the actor: it is *degraded* (``statistics().degraded``), logs the error (once, then at most
every ``OUTAGE_LOG_EVERY_S``) and waits a little longer before each next batch, until one
commits; callers retry. Any other failure (a corrupt file) crashes it, so its supervisor
reopens the connection. The Store's thread also checks, every ``VERIFY_INTERVAL_S``, that
the database file is still the one it opened; if it was deleted or replaced it tells
``on_fatal`` (the runtime stops: jobs enqueued into the new file would never run here).

The Store only executes: noticing other connections' commits is the runtime's change feed
(``rota.storage.feed``), on a thread and a connection of its own.

Messages (all ``call``; the reply type follows the arrow; see ``rota.storage.engine``):

    Enqueue(jobs) → list[int]                 Claim(request) → list[Job]
    EnqueueAndClaim(jobs, claim) → (list[int], list[Job])
    Renew(leases, ttl_ms) → Renewed           Complete(completion) → None | LeaseLost
    CancelRequested(leases) → list[int]       (a read: the held jobs asked to cancel)
    Fail(failure) → JobState | LeaseLost      SettleAndClaim(...) → Settled
    ReleaseOwner(owner, as_stall) → list[int] PromoteDue(queue) → int
    RescueExpired() → Rescued                 Cancel(job_id) → JobState | JobNotFound
    Get(job_id) / GetByKey(key) → Job         ListJobs(...) → list[Job]
    Count(queue) → dict[JobState, int]        Queues() → list[str]
    Prune(...) → int

``StoreClient`` wraps these in typed methods.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from queue import Empty, SimpleQueue
from typing import Any, Final, TypeVar, cast

import anyio
import msgspec

from rota.actors._backend import LoopScheduler, current_loop_scheduler
from rota.actors._instruments import Instruments
from rota.actors.kernel import Actor, ActorRef, Envelope
from rota.domain.event import Event, LogEntry, Owner
from rota.domain.job import FINISHED_STATES, Job, JobState, NewJob
from rota.errors import StorageError
from rota.storage.engine import (
    ClaimRequest,
    Completion,
    Engine,
    Failure,
    LeaseRef,
    Renewed,
    Rescued,
    Settled,
)

__all__ = [
    "Cancel",
    "CancelRequested",
    "Claim",
    "Complete",
    "Count",
    "Enqueue",
    "EnqueueAndClaim",
    "Fail",
    "Get",
    "GetByKey",
    "ListJobs",
    "PromoteDue",
    "Prune",
    "Queues",
    "ReleaseOwner",
    "Renew",
    "RescueExpired",
    "SettleAndClaim",
    "Store",
    "StoreClient",
    "StoreOp",
    "StoreStatistics",
]

log = logging.getLogger("rota.store")

T = TypeVar("T")

#: How long an in-flight batch may keep a stopping Store waiting for its outcome. The
#: thread cannot be interrupted mid-transaction, and callers deserve the true outcome.
BATCH_SHIELD_S: Final = 60.0
#: After a transaction fails for a transient reason, the Store waits this long before the
#: next one, doubling while they keep failing, up to OUTAGE_PAUSE_MAX_S.
OUTAGE_PAUSE_S: Final = 0.05
OUTAGE_PAUSE_MAX_S: Final = 2.0
#: During an outage the error is logged at most this often (with a count).
OUTAGE_LOG_EVERY_S: Final = 30.0
#: An outage is over once transactions commit for this long without a failure.
OUTAGE_CLEAR_S: Final = 1.0
#: How often the Store's thread checks that the database file is the one it opened.
VERIFY_INTERVAL_S: Final = 0.25


class StoreOp(msgspec.Struct, frozen=True):
    """A request to the Store: one engine operation."""

    def apply(self, engine: Engine) -> Any:
        raise NotImplementedError


class Enqueue(StoreOp, frozen=True):
    jobs: list[NewJob]

    def apply(self, engine: Engine) -> list[int]:
        return engine.enqueue(self.jobs)


class EnqueueAndClaim(StoreOp, frozen=True):
    """Enqueue, then claim for an idle local pool, in one transaction (one commit): an
    in-process enqueue to an idle queue starts its job without a second fsync. The claim
    honours the queue's order, so it takes the new jobs only if nothing is ahead of them.
    Out: (ids, claimed). A claim that fails claims nothing and never fails the enqueue."""

    jobs: list[NewJob]
    claim: ClaimRequest

    def apply(self, engine: Engine) -> tuple[list[int], list[Job]]:
        ids = engine.enqueue(self.jobs)
        c = self.claim
        try:
            claimed = engine.claim(c.queue, c.owner, c.n, c.ttl_ms)
        except Exception as exc:  # if it broke the transaction, the commit reports it
            log.warning("claim after enqueue failed (the jobs wait for the pool): %r", exc)
            claimed = []
        return ids, claimed


class Claim(StoreOp, frozen=True):
    request: ClaimRequest

    def apply(self, engine: Engine) -> list[Job]:
        r = self.request
        return engine.claim(r.queue, r.owner, r.n, r.ttl_ms)


class Renew(StoreOp, frozen=True):
    leases: list[LeaseRef]
    ttl_ms: int

    def apply(self, engine: Engine) -> Renewed:
        return engine.renew(self.leases, self.ttl_ms)


class CancelRequested(StoreOp, frozen=True):
    leases: list[LeaseRef]

    def apply(self, engine: Engine) -> list[int]:
        return engine.cancel_requested(self.leases)


class Complete(StoreOp, frozen=True):
    completion: Completion

    def apply(self, engine: Engine) -> None:
        c = self.completion
        engine.complete(c.job_id, c.token, c.result)


class Fail(StoreOp, frozen=True):
    failure: Failure

    def apply(self, engine: Engine) -> JobState:
        return engine.fail(self.failure)


class SettleAndClaim(StoreOp, frozen=True):
    completions: list[Completion]
    failures: list[Failure]
    claim: ClaimRequest | None

    def apply(self, engine: Engine) -> Settled:
        return engine.settle_and_claim(self.completions, self.failures, self.claim)


class ReleaseOwner(StoreOp, frozen=True):
    owner: str
    as_stall: bool

    def apply(self, engine: Engine) -> list[int]:
        return engine.release_owner(self.owner, as_stall=self.as_stall)


class PromoteDue(StoreOp, frozen=True):
    queue: str | None = None

    def apply(self, engine: Engine) -> int:
        return engine.promote_due(self.queue)


class RescueExpired(StoreOp, frozen=True):
    spare: list[LeaseRef] = []

    def apply(self, engine: Engine) -> Rescued:
        return engine.rescue_expired(self.spare)


class Cancel(StoreOp, frozen=True):
    job_id: int

    def apply(self, engine: Engine) -> JobState:
        return engine.cancel(self.job_id)


class Get(StoreOp, frozen=True):
    job_id: int

    def apply(self, engine: Engine) -> Job:
        return engine.get(self.job_id)


class GetByKey(StoreOp, frozen=True):
    key: str

    def apply(self, engine: Engine) -> Job:
        return engine.get_by_key(self.key)


class ListJobs(StoreOp, frozen=True):
    queue: str | None = None
    state: JobState | None = None
    limit: int = 100
    offset: int = 0

    def apply(self, engine: Engine) -> list[Job]:
        return engine.list_jobs(
            queue=self.queue, state=self.state, limit=self.limit, offset=self.offset
        )


class Count(StoreOp, frozen=True):
    queue: str | None = None

    def apply(self, engine: Engine) -> dict[JobState, int]:
        return engine.count(self.queue)


class Queues(StoreOp, frozen=True):
    def apply(self, engine: Engine) -> list[str]:
        return engine.queues()


class Prune(StoreOp, frozen=True):
    queue: str | None = None
    states: frozenset[JobState] = FINISHED_STATES
    older_than_ms: int | None = None
    keep_last: int | None = None

    def apply(self, engine: Engine) -> int:
        return engine.prune(
            queue=self.queue,
            states=self.states,
            older_than_ms=self.older_than_ms,
            keep_last=self.keep_last,
        )


#: Engine methods reachable through ``Call`` (reads and the less frequent writes); the hot
#: operations above have their own message types.
CALLABLE: Final = frozenset(
    {
        "register_owner",
        "heartbeat",
        "remove_owner",
        "list_owners",
        "set_paused",
        "paused_queues",
        "set_progress",
        "add_log",
        "logs",
        "events",
        "last_event_id",
        "prune_events",
        "quarantine_corrupt",
        "retry",
        "retry_failed",
        "promote",
        "remove",
        "drain",
        "unclaim",
        "release",
    }
)


class Call(StoreOp, frozen=True):
    """Any other engine operation, by name (only those in ``CALLABLE``)."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if self.method not in CALLABLE:
            raise ValueError(f"the Store does not offer engine method {self.method!r}")

    def apply(self, engine: Engine) -> Any:
        return getattr(engine, self.method)(*self.args, **self.kwargs)


class StoreStatistics(msgspec.Struct, frozen=True, kw_only=True):
    transactions: int
    """Batches run, each in one transaction."""
    operations: int
    failed_operations: int
    """Operations that raised (their caller got the error; their batch went on)."""
    failed_transactions: int
    largest_batch: int
    degraded: str | None = None
    """While transactions fail for a transient reason (a full disk, a lock, an I/O
    error): the last error. None when the last transaction committed."""
    degraded_for_s: float | None = None
    """How long transactions have been failing."""


class _BatchFailed(Exception):
    """The transaction of a batch failed as a whole."""

    def __init__(self, error: StorageError) -> None:
        super().__init__(str(error))
        self.error = error


def _run_batch(engine: Engine, ops: Sequence[Any]) -> list[Any]:
    """On the engine thread: every op in one transaction, each op's error kept apart."""
    results: list[Any] = []
    try:
        with engine.batch():
            for op in ops:
                if not isinstance(op, StoreOp):
                    results.append(TypeError(f"the Store does not handle {op!r}"))
                    continue
                try:
                    results.append(op.apply(engine))
                except Exception as exc:  # the caller gets it; the batch goes on
                    results.append(exc)
    except StorageError as exc:
        raise _BatchFailed(exc) from exc
    return results


#: A function to run on the engine thread, what to call with its outcome, and whether to
#: call that on the event loop (else on the engine thread itself: a caller on another thread).
_Item = tuple[Callable[[Engine | None], Any], Callable[[Any, BaseException | None], None], bool]


def _no_op(_: Any = None, __: Any = None) -> None:
    """Never called: ``_VERIFY`` is a turn to verify, not a function to run."""


_VERIFY: Final[_Item] = (_no_op, _no_op, False)


class _EngineThread:
    """One thread that owns the engine: runs functions of it in order, one at a time.

    With ``on_fatal``, it also checks every ``VERIFY_INTERVAL_S``, while idle or between
    functions, that the database is still the one it opened (``Engine.verify``: one
    ``stat``), and tells ``on_fatal`` on the event loop, once, if not. On request
    (``foreign_commits``) it reads ``data_version`` on the engine's connection, where the
    Store's own commits never show.
    """

    def __init__(
        self,
        name: str,
        schedule: LoopScheduler,
        on_fatal: Callable[[StorageError], None] | None = None,
    ) -> None:
        self._schedule = schedule
        self._on_fatal = on_fatal
        self._inbox: SimpleQueue[_Item | None] = SimpleQueue()
        self._engine: Engine | None = None
        self._fatal_told = False
        self._stopped = False
        self._version: int | None = None
        """``data_version`` at the last ``foreign_commits`` (on the engine thread only)."""
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        inbox = self._inbox
        next_verify = 0.0
        while True:
            item: _Item | None
            if self._engine is None or self._on_fatal is None:
                item = inbox.get()
            else:
                try:
                    item = inbox.get(timeout=max(next_verify - time.monotonic(), 0.0))
                except Empty:
                    item = _VERIFY
            if item is None:
                break
            if item is not _VERIFY:
                fn, done, on_loop = item
                try:
                    result, error = fn(self._engine), None
                except BaseException as exc:  # handed to the loop, re-raised there
                    result, error = None, exc
                if on_loop:
                    self._tell(done, result, error)
                else:
                    done(result, error)
            if self._engine is not None and self._on_fatal is not None:
                now = time.monotonic()
                if now >= next_verify:
                    next_verify = now + VERIFY_INTERVAL_S
                    self._verify(self._on_fatal)
        self._stopped = True
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
        while True:  # callers on other threads that asked too late: "unknown", at once
            try:
                late = inbox.get_nowait()
            except Empty:
                break
            if late is not None and not late[2]:
                late[1](None, StorageError("the storage thread has stopped"))

    def _verify(self, on_fatal: Callable[[StorageError], None]) -> None:
        assert self._engine is not None
        if self._fatal_told:
            return
        try:
            self._engine.verify()
        except StorageError as exc:
            self._fatal_told = True
            self._tell(on_fatal, exc)

    def _tell(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self._schedule(fn, *args)
        except RuntimeError:  # the event loop is gone: nobody to tell
            log.debug("event loop closed before a store reply could be delivered")

    async def run(self, fn: Callable[[Engine | None], T]) -> T:
        """Run ``fn(engine)`` on the thread; waits (shielded: the outcome is real) for it."""
        box: list[tuple[Any, BaseException | None]] = []
        finished = anyio.Event()

        def done(result: Any, error: BaseException | None) -> None:
            box.append((result, error))
            finished.set()

        self._inbox.put((fn, done, True))
        with anyio.CancelScope(shield=True), anyio.move_on_after(BATCH_SHIELD_S):
            await finished.wait()
        if not box:
            raise StorageError(f"the storage thread did not answer within {BATCH_SHIELD_S} s")
        result, error = box[0]
        if error is not None:
            raise error
        return cast(T, result)

    async def open(self, factory: Callable[[], Engine]) -> None:
        def create(_: Engine | None) -> None:
            engine = factory()
            try:
                engine.migrate()
            except BaseException:
                engine.close()
                raise
            self._engine = engine
            with contextlib.suppress(Exception):  # the first foreign_commits() then says so
                self._version = engine.data_version()

        await self.run(create)

    def foreign_commits(self, timeout_s: float) -> bool:
        """From a thread other than the engine's and the loop's (it blocks): whether
        another connection committed since the previous call, read on the engine's
        connection between transactions (``data_version``: the Store's own commits never
        change it). True when it cannot tell (not open, stopped, no answer in time)."""
        if self._stopped:
            return True
        answered = threading.Event()
        box: list[bool] = []

        def check(engine: Engine | None) -> bool:
            if engine is None:
                return True
            version = engine.data_version()
            last, self._version = self._version, version
            return last is None or version != last

        def done(result: Any, error: BaseException | None) -> None:
            box.append(True if error is not None else bool(result))
            answered.set()

        self._inbox.put((check, done, False))
        if not answered.wait(timeout_s):
            return True
        return box[0]

    def stop(self) -> None:
        """Close the engine on its own thread once queued work is done; do not wait."""
        self._inbox.put(None)


class Store(Actor):
    """Owns the engine on a dedicated thread; one transaction per mailbox batch."""

    def __init__(
        self,
        engine_factory: Callable[[], Engine],
        *,
        on_commit: Callable[[], None] | None = None,
        on_fatal: Callable[[StorageError], None] | None = None,
        instruments: Instruments | None = None,
    ) -> None:
        self._engine_factory = engine_factory
        self._instruments = instruments if instruments is not None and instruments.storage else None
        self._on_commit = on_commit
        self._on_fatal = on_fatal
        self._thread: _EngineThread | None = None
        self._transactions = self._operations = self._failed_operations = 0
        self._failed_transactions = self._largest_batch = 0
        self._outage: _Outage | None = None

    async def on_start(self) -> None:
        thread = _EngineThread(f"rota-store-{self.name}", current_loop_scheduler(), self._on_fatal)
        try:
            await thread.open(self._engine_factory)
        except BaseException:
            thread.stop()
            raise
        self._thread = thread

    async def on_stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread = None

    def foreign_commits(self, timeout_s: float = 1.0) -> bool:
        """Whether another connection committed since the previous call (see
        ``_EngineThread.foreign_commits``): for the runtime's change feed, on its own
        thread, to tell its own commits from others'. True when it cannot tell."""
        thread = self._thread
        return True if thread is None else thread.foreign_commits(timeout_s)

    async def handle_batch(self, batch: Sequence[Envelope]) -> None:
        assert self._thread is not None
        ops = [envelope.message for envelope in batch]
        self._transactions += 1
        self._operations += len(ops)
        self._largest_batch = max(self._largest_batch, len(ops))
        instruments = self._instruments
        if instruments is not None:
            instruments.storage_batch_started(len(ops))
            started = time.perf_counter()
        try:
            results = await self._thread.run(lambda engine: _run_batch(_live(engine), ops))
        except _BatchFailed as failed:
            if instruments is not None:
                elapsed = time.perf_counter() - started
                instruments.storage_batch_ended(len(ops), elapsed, failed.error)
            self._failed_transactions += 1
            for envelope in batch:
                envelope.fail(failed.error)
            if not failed.error.transient:
                raise failed.error from None  # crash: the supervisor reopens the connection
            # A full disk, a lock, an I/O error: reopening would not help and restarts
            # would soon exhaust the supervisor. Every caller got the error (nothing of
            # the batch was committed; they retry); wait before the next batch.
            await anyio.sleep(self._degraded(failed.error))
            return
        if instruments is not None:
            instruments.storage_batch_ended(len(ops), time.perf_counter() - started, None)
        if self._outage is not None and self._outage.over():
            self._recovered()
        for envelope, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                self._failed_operations += 1
            envelope.reply(result)
        if self._on_commit is not None:
            self._on_commit()

    def _degraded(self, error: StorageError) -> float:
        """Note a failed transaction of an outage; log it (at most every
        ``OUTAGE_LOG_EVERY_S``); return how long to wait before the next batch."""
        now = time.monotonic()
        outage = self._outage
        if outage is None:
            outage = self._outage = _Outage(since=now, logged_at=now)
            log.error("storage unavailable, retrying (the worker goes on): %s", error)
        elif now - outage.logged_at >= OUTAGE_LOG_EVERY_S:
            log.error(
                "storage still unavailable after %.0f s (%d transactions failed), retrying: %s",
                now - outage.since,
                outage.failures + 1,
                error,
            )
            outage.logged_at = now
        outage.failures += 1
        outage.last_failure = now
        outage.error = str(error)
        pause: float = OUTAGE_PAUSE_S * 2.0 ** min(outage.failures - 1, 8)
        return min(pause, OUTAGE_PAUSE_MAX_S)

    def _recovered(self) -> None:
        outage = self._outage
        assert outage is not None
        self._outage = None
        log.warning(
            "storage available again after %.1f s (%d transactions had failed)",
            outage.last_failure - outage.since,
            outage.failures,
        )

    def statistics(self) -> StoreStatistics:
        outage = self._outage
        return StoreStatistics(
            transactions=self._transactions,
            operations=self._operations,
            failed_operations=self._failed_operations,
            failed_transactions=self._failed_transactions,
            largest_batch=self._largest_batch,
            degraded=None if outage is None else outage.error,
            degraded_for_s=None if outage is None else time.monotonic() - outage.since,
        )


class _Outage:
    """A run of failed transactions. The Store is degraded until transactions have
    committed for ``OUTAGE_CLEAR_S`` without a failure (some commit on a full disk: those
    that change no page, so one commit does not mean the fault is over)."""

    __slots__ = ("error", "failures", "last_failure", "logged_at", "since")

    def __init__(self, *, since: float, logged_at: float) -> None:
        self.since = since
        self.logged_at = logged_at
        self.last_failure = since
        self.failures = 0
        self.error = ""

    def over(self) -> bool:
        return time.monotonic() - self.last_failure >= OUTAGE_CLEAR_S


def _live(engine: Engine | None) -> Engine:
    if engine is None:
        raise StorageError("the store's engine is not open")
    return engine


class StoreClient:
    """Typed calls to a Store actor. ``timeout_s`` bounds each call (None: no limit)."""

    def __init__(self, ref: ActorRef[Store], *, timeout_s: float | None = 30.0) -> None:
        self.ref = ref
        self.timeout_s = timeout_s

    async def _call(self, op: StoreOp) -> Any:
        return await self.ref.call(op, self.timeout_s)

    async def enqueue(self, jobs: Sequence[NewJob]) -> list[int]:
        return cast(list[int], await self._call(Enqueue(list(jobs))))

    async def enqueue_and_claim(
        self, jobs: Sequence[NewJob], claim: ClaimRequest
    ) -> tuple[list[int], list[Job]]:
        return cast(
            tuple[list[int], list[Job]], await self._call(EnqueueAndClaim(list(jobs), claim))
        )

    async def claim(self, queue: str, owner: str, n: int, ttl_ms: int) -> list[Job]:
        return cast(list[Job], await self._call(Claim(ClaimRequest(queue, owner, n, ttl_ms))))

    async def renew(self, leases: Sequence[LeaseRef], ttl_ms: int) -> Renewed:
        return cast(Renewed, await self._call(Renew(list(leases), ttl_ms)))

    async def cancel_requested(self, leases: Sequence[LeaseRef]) -> list[int]:
        return cast(list[int], await self._call(CancelRequested(list(leases))))

    async def complete(self, job_id: int, token: int, result: bytes | None = None) -> None:
        await self._call(Complete(Completion(job_id, token, result)))

    async def fail(self, failure: Failure) -> JobState:
        return cast(JobState, await self._call(Fail(failure)))

    async def settle_and_claim(
        self,
        completions: Sequence[Completion],
        failures: Sequence[Failure],
        claim: ClaimRequest | None,
    ) -> Settled:
        op = SettleAndClaim(list(completions), list(failures), claim)
        return cast(Settled, await self._call(op))

    async def release_owner(self, owner: str, *, as_stall: bool) -> list[int]:
        return cast(list[int], await self._call(ReleaseOwner(owner, as_stall)))

    async def promote_due(self, queue: str | None = None) -> int:
        return cast(int, await self._call(PromoteDue(queue)))

    async def rescue_expired(self, spare: Sequence[LeaseRef] = ()) -> Rescued:
        return cast(Rescued, await self._call(RescueExpired(list(spare))))

    async def cancel(self, job_id: int) -> JobState:
        return cast(JobState, await self._call(Cancel(job_id)))

    async def get(self, job_id: int) -> Job:
        return cast(Job, await self._call(Get(job_id)))

    async def get_by_key(self, key: str) -> Job:
        return cast(Job, await self._call(GetByKey(key)))

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        return cast(list[Job], await self._call(ListJobs(queue, state, limit, offset)))

    async def count(self, queue: str | None = None) -> dict[JobState, int]:
        return cast(dict[JobState, int], await self._call(Count(queue)))

    async def queues(self) -> list[str]:
        return cast(list[str], await self._call(Queues()))

    async def prune(
        self,
        *,
        queue: str | None = None,
        states: Collection[JobState] = FINISHED_STATES,
        older_than_ms: int | None = None,
        keep_last: int | None = None,
    ) -> int:
        op = Prune(queue, frozenset(states), older_than_ms, keep_last)
        return cast(int, await self._call(op))

    # -- runtime support ----------------------------------------------------------------

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self._call(Call(method, args, kwargs))

    async def register_owner(self, owner: Owner) -> None:
        await self.call("register_owner", owner)

    async def heartbeat(self, owner_id: str, pools: dict[str, Any] | None = None) -> None:
        await self.call("heartbeat", owner_id, pools)

    async def remove_owner(self, owner_id: str) -> None:
        await self.call("remove_owner", owner_id)

    async def list_owners(self) -> list[Owner]:
        return cast(list[Owner], await self.call("list_owners"))

    async def set_paused(self, queue: str, paused: bool) -> None:
        await self.call("set_paused", queue, paused)

    async def paused_queues(self) -> set[str]:
        return cast(set[str], await self.call("paused_queues"))

    async def set_progress(self, job_id: int, token: int, progress: bytes) -> None:
        await self.call("set_progress", job_id, token, progress)

    async def add_log(self, job_id: int, token: int, message: str) -> None:
        await self.call("add_log", job_id, token, message)

    async def logs(self, job_id: int, *, limit: int = 100, offset: int = 0) -> list[LogEntry]:
        return cast(list[LogEntry], await self.call("logs", job_id, limit=limit, offset=offset))

    async def events(
        self, after_id: int = 0, *, limit: int = 1000, queue: str | None = None
    ) -> list[Event]:
        result = await self.call("events", after_id, limit=limit, queue=queue)
        return cast(list[Event], result)

    async def last_event_id(self) -> int:
        return cast(int, await self.call("last_event_id"))

    async def quarantine_corrupt(self) -> list[int]:
        return cast(list[int], await self.call("quarantine_corrupt"))

    async def prune_events(self, older_than_ms: int) -> int:
        return cast(int, await self.call("prune_events", older_than_ms))

    async def retry(self, job_id: int) -> JobState:
        return cast(JobState, await self.call("retry", job_id))

    async def retry_failed(self, queue: str, *, limit: int = 1000) -> list[int]:
        return cast(list[int], await self.call("retry_failed", queue, limit=limit))

    async def promote(self, job_id: int) -> JobState:
        return cast(JobState, await self.call("promote", job_id))

    async def remove(self, job_id: int) -> None:
        await self.call("remove", job_id)

    async def drain(self, queue: str) -> int:
        return cast(int, await self.call("drain", queue))

    async def unclaim(self, leases: Sequence[LeaseRef]) -> list[int]:
        return cast(list[int], await self.call("unclaim", list(leases)))

    async def release(self, leases: Sequence[LeaseRef], *, as_stall: bool = False) -> list[int]:
        return cast(list[int], await self.call("release", list(leases), as_stall=as_stall))

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

Messages: any ``rota.storage.ops.Op`` (``call``; the reply is the op's result type).
``StoreClient.run(op)`` sends one and returns its typed result.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from queue import Empty, SimpleQueue
from typing import Any, Final, TypeVar, cast

import anyio
import msgspec

from rota.actors._backend import LoopScheduler, current_loop_scheduler
from rota.actors._instruments import Instruments
from rota.actors.kernel import Actor, ActorRef, Envelope
from rota.errors import StorageError
from rota.storage.engine import Engine
from rota.storage.ops import Op

__all__ = ["Store", "StoreClient", "StoreStatistics"]

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


class StoreStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """The Store's counters (``Store.statistics``), for ``rota info`` and health."""

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
                if not isinstance(op, Op):
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
        """Open and migrate the engine on the Store's own thread."""
        thread = _EngineThread(f"rota-store-{self.name}", current_loop_scheduler(), self._on_fatal)
        try:
            await thread.open(self._engine_factory)
        except BaseException:
            thread.stop()
            raise
        self._thread = thread

    async def on_stop(self) -> None:
        """Close the engine once the work queued on its thread is done."""
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
        """Run every waiting op in one transaction and reply to each caller."""
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
        """A snapshot of the counters (and the outage, while degraded)."""
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
    """Runs storage operations (``rota.storage.ops``) through a Store actor: ``await
    client.run(ops.Get(job_id))``. ``timeout_s`` bounds each call (None: no limit)."""

    def __init__(self, ref: ActorRef[Store], *, timeout_s: float | None = 30.0) -> None:
        self.ref = ref
        self.timeout_s = timeout_s

    async def run(self, op: Op[T]) -> T:
        """Run ``op`` in the Store's next transaction (group commit) and return its result;
        raises what the operation raised (that rolled back the operation alone), or the
        ``StorageError`` of a transaction that failed as a whole."""
        return cast(T, await self.ref.call(op, self.timeout_s))

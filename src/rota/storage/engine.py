"""The Engine port: every storage operation rota needs, and nothing about connections.

An engine is synchronous code that runs on the Store's dedicated thread (one thread owns
the connection; no actor lives in an engine). Callers see jobs, leases and counts, never a
connection, a cursor or a transaction object, so a PostgreSQL engine fits behind the same
port without touching a caller.

Every operation is atomic on its own. Inside ``with engine.batch():`` several operations
share one transaction (group commit: one fsync for many callers), and each stays isolated:
an operation that raises leaves no trace and does not fail the others; if the commit itself
fails, the whole batch raises ``StorageError`` and none of it was acknowledged. (A full disk
makes SQLite roll back the whole transaction: the operations after it in the batch, and
the commit, then raise ``StorageError`` too.) Times come from the engine's clock
(``now_ms``), so tests can drive time.

Callers outside ``storage/`` do not call these methods: each operation has a typed
request in ``rota.storage.ops`` (``ops.Get(job_id)`` is an ``Op[Job]``), run through the
Store (``StoreClient.run``) or an app's per-thread engine (``StorageAccess.run``). Adding an
operation is its method here and on each engine, plus its ``Op`` class. Each method's
docstring is its contract; docs/internals.md, "The Engine port", lists them all, one
sentence each.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final, Protocol, runtime_checkable

import msgspec

from rota.domain.event import Event, LogEntry, Owner
from rota.domain.job import FINISHED_STATES, Job, JobState, NewJob
from rota.domain.outcome import FailureKind

__all__ = [
    "ClaimRequest",
    "Completion",
    "Engine",
    "FailedAttempt",
    "Failure",
    "JobRecord",
    "JobSummary",
    "OPTIONAL_OWNER_COLUMNS",
    "LeaseRef",
    "OwnerRecord",
    "Renewed",
    "Rescued",
    "Settled",
]


class LeaseRef(msgspec.Struct, frozen=True, array_like=True):
    """A lease as its holder knows it: the job and the token that proves the hold."""

    job_id: int
    token: int


class Completion(msgspec.Struct, frozen=True, array_like=True):
    """An attempt that succeeded; ``result`` is the encoded return value."""

    job_id: int
    token: int
    result: bytes | None = None


class Failure(msgspec.Struct, frozen=True):
    """An attempt that did not succeed.

    ``delay_ms`` overrides the job's backoff (``Retry(delay_s)`` or a custom backoff);
    ``None`` lets the engine apply the stored policy.
    """

    job_id: int
    token: int
    error: str
    kind: FailureKind = FailureKind.ERROR
    delay_ms: int | None = None

    def __post_init__(self) -> None:
        if self.delay_ms is not None and self.delay_ms < 0:
            raise ValueError(f"Failure delay_ms must be >= 0, got {self.delay_ms!r}")


class ClaimRequest(msgspec.Struct, frozen=True):
    """Lease up to ``n`` ready jobs of ``queue`` for ``owner`` for ``ttl_ms``."""

    queue: str
    owner: str
    n: int
    ttl_ms: int


class Renewed(msgspec.Struct, frozen=True):
    """Outcome of a renewal batch, by job id."""

    renewed: list[int]
    lost: list[int]
    """The token no longer holds (expired and rescued, or settled elsewhere): stop the job."""
    cancel_requested: list[int]
    """Still held (a subset of ``renewed``: their leases were extended too), but someone
    asked to cancel the job: stop it and report CANCELLED."""


class FailedAttempt(msgspec.Struct, frozen=True, array_like=True):
    """What a settlement made of one failed attempt, as the engine's rules decided
    (``lifecycle.fail``, or a corrupt row failed for good): the job's state now (waiting or
    delayed: it runs again at ``run_at_ms``; failed; cancelled) and the error stored. The
    worker logs from this, and never derives the rules again."""

    job_id: int
    state: JobState
    run_at_ms: int
    """When it runs again (waiting, delayed); the settlement's time otherwise."""
    error: str | None


class Settled(msgspec.Struct, frozen=True):
    """Outcome of ``settle_and_claim``."""

    lost: list[int]
    """Settlements refused because the token no longer held the lease (nothing changed)."""
    claimed: list[Job]
    next_due_ms: int | None = None
    """Only when the claim came up short (fewer jobs than asked for): when the queue's next
    delayed job is due (engine clock), None if it has none. The pool waits for that time
    instead of the Scheduler's next sweep."""
    now_ms: int | None = None
    """The engine's clock when the batch was applied (None if it does not say)."""
    failed: list[FailedAttempt] = []
    """The failures settled (those not in ``lost``), in order, with what became of them."""


class Rescued(msgspec.Struct, frozen=True):
    """Outcome of a rescue sweep, by job id and resulting state."""

    requeued: list[int]
    failed: list[int]
    cancelled: list[int]
    stalled: list[Job] = []
    """The jobs taken back as stalls, as they are now (state, ``run_at_ms``, error), for
    the Scheduler's log lines; rows failed for good as corrupt are not among them (the
    engine logs those)."""


class JobSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What a listing shows of a job (``rota jobs list``): no payload, result or progress,
    so reading a page costs the page, not the size of its payloads.

    ``corrupt`` names the columns whose stored value rota cannot read; each of those
    fields is None (but ``state``, kept as the text stored, so that an unknown state can
    be shown: it is corrupt when it is none of ``JobState``)."""

    id: int
    name: str | None
    queue: str | None
    state: str | None
    attempt: int | None
    max_attempts: int | None
    priority: int | None
    error: str | None
    """The end of the error text (its last ``ERROR_TAIL`` characters), or None."""
    corrupt: tuple[str, ...] = ()


#: How much of a job's error a ``JobSummary`` carries: its end, where the last line is.
ERROR_TAIL = 1000


class JobRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A job's row as stored (``rota jobs show``): each column of ``Job`` by name, with
    the value the database holds (the state as text, the backoff as its JSON text, 0/1
    for ``cancel_requested``); ``corrupt`` names the columns rota cannot read (a wrong
    type, an unknown state, a backoff, payload, result or progress that does not decode)."""

    columns: dict[str, Any]
    corrupt: tuple[str, ...] = ()


class OwnerRecord(msgspec.Struct, frozen=True, kw_only=True):
    """An owner row as far as it can be read (``rota info``). ``corrupt`` names the
    columns rota cannot read; each of those fields is None (``id`` is then the stored
    value shown as text). An owner with any corrupt column but ``pools`` is ignored by the
    runtime (``list_owners`` leaves it out: its leases expire as any other's)."""

    id: str
    host: str | None
    pid: int | None
    started_at_ms: int | None
    heartbeat_at_ms: int | None
    queues: list[str] | None
    pools: dict[str, Any] | None
    doorbell: str | None = None
    corrupt: tuple[str, ...] = ()

    def owner(self) -> Owner | None:
        """The ``Owner``, or None if a column other than ``pools`` or ``doorbell`` is
        corrupt (those read as None)."""
        host, pid, queues = self.host, self.pid, self.queues
        started_at_ms, heartbeat_at_ms = self.started_at_ms, self.heartbeat_at_ms
        if (
            any(column not in OPTIONAL_OWNER_COLUMNS for column in self.corrupt)
            or host is None
            or pid is None
            or queues is None
            or started_at_ms is None
            or heartbeat_at_ms is None
        ):
            return None
        return Owner(
            id=self.id,
            host=host,
            pid=pid,
            started_at_ms=started_at_ms,
            heartbeat_at_ms=heartbeat_at_ms,
            queues=queues,
            pools=self.pools,
            doorbell=self.doorbell,
        )


#: Owner columns that, unreadable, read as None without hiding their owner.
OPTIONAL_OWNER_COLUMNS: Final = frozenset({"pools", "doorbell"})


@runtime_checkable
class Engine(Protocol):
    """The storage port: each method's docstring is its contract (docs/internals.md lists them)."""

    def now_ms(self) -> int:
        """The engine's clock, in ms since the epoch."""
        ...

    def verify(self) -> None:
        """``StorageError`` if the database this engine opened is no longer the one at its
        address (a file deleted or replaced under it); cheap, no query."""
        ...

    def migrate(self) -> int:
        """Apply pending migrations; return the schema version now in force."""
        ...

    def close(self) -> None:
        """Release the connection. Idempotent."""
        ...

    def batch(self) -> AbstractContextManager[None]:
        """Group the operations run inside into one transaction, each isolated."""
        ...

    def enqueue(self, jobs: Sequence[NewJob]) -> list[int]:
        """Store jobs; return their ids in order (an existing key returns its job's id)."""
        ...

    def claim(self, queue: str, owner: str, n: int, ttl_ms: int) -> list[Job]:
        """Lease up to n ready jobs; returns them active, in claim order."""
        ...

    def renew(self, leases: Sequence[LeaseRef], ttl_ms: int) -> Renewed:
        """Extend held leases to now + ttl_ms."""
        ...

    def cancel_requested(self, leases: Sequence[LeaseRef]) -> list[int]:
        """The job ids of the leases still held whose job was asked to cancel, in the
        leases' order (a read: nothing changes)."""
        ...

    def complete(self, job_id: int, token: int, result: bytes | None) -> None:
        """Complete an attempt; ``LeaseLost`` if the token does not hold the lease."""
        ...

    def fail(self, failure: Failure) -> JobState:
        """Fail an attempt; returns the job's new state; ``LeaseLost`` as for complete."""
        ...

    def settle_and_claim(
        self,
        completions: Sequence[Completion],
        failures: Sequence[Failure],
        claim: ClaimRequest | None,
    ) -> Settled:
        """Settle attempts and claim more in one transaction."""
        ...

    def release_owner(self, owner: str, *, as_stall: bool) -> list[int]:
        """Take back every lease ``owner`` holds; returns the job ids."""
        ...

    def unclaim(self, leases: Sequence[LeaseRef]) -> list[int]:
        """Hand back leases whose attempt never started (``lifecycle.unclaim``): waiting
        again, attempt not counted, no event. Leases no longer held are skipped; returns
        the ids handed back."""
        ...

    def release(self, leases: Sequence[LeaseRef], *, as_stall: bool = False) -> list[int]:
        """Take back leases whose attempt this worker interrupted: cleanly (its pool
        stops) waiting again at once, in their old place, nothing counted against them
        (``lifecycle.release`` without a stall); with ``as_stall`` (its pool crashed) the
        attempt counts, as a stall. Leases no longer held are skipped; returns the ids
        released."""
        ...

    def promote_due(self, queue: str | None = None) -> int:
        """Move due delayed jobs (of one queue, or all) to waiting; returns how many."""
        ...

    def rescue_expired(self, spare: Sequence[LeaseRef] = ()) -> Rescued:
        """Handle every expired lease as a stall, except the ``spare`` ones: leases the
        calling runtime holds and renews (after a pause or a wall-clock step they may
        look expired; they are not stalled)."""
        ...

    def quarantine_corrupt(self) -> list[int]:
        """Fail for good every job whose row holds a state rota does not know (its error
        names the row and the column); returns their ids. Scans every job: for the
        retention pass."""
        ...

    def cancel(self, job_id: int) -> JobState:
        """Cancel a job; returns its state after (``active`` = cancel requested)."""
        ...

    def get(self, job_id: int) -> Job:
        """The job; ``JobNotFound`` if there is none."""
        ...

    def get_by_key(self, key: str) -> Job:
        """The job with that key; ``JobNotFound`` if there is none."""
        ...

    def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        """Jobs in id order, filtered by queue and state, one page at a time (``ConfigError``
        for a negative ``limit`` or ``offset``)."""
        ...

    def count(self, queue: str | None = None) -> dict[JobState, int]:
        """How many jobs are in each state (every state present, zeros included); jobs in a
        state that is none of these (a corrupt row) are left out: see ``unknown_states``."""
        ...

    def queues(self) -> list[str]:
        """Every queue that has jobs, sorted."""
        ...

    def queues_with_work(self) -> list[str]:
        """Every queue that has waiting, delayed or active jobs, sorted."""
        ...

    def probe_write(self) -> None:
        """Take the write lock, write (a no-op update) and roll back: nothing changes.
        ``StorageError`` naming the problem if a write could not be done now (the lock is
        held past the busy budget, the file is read-only, the disk is full...)."""
        ...

    def prune(
        self,
        *,
        queue: str | None = None,
        states: Collection[JobState] = FINISHED_STATES,
        older_than_ms: int | None = None,
        keep_last: int | None = None,
    ) -> int:
        """Delete finished jobs in ``states`` that either limit selects: finished before
        now - older_than_ms, or beyond the newest ``keep_last`` per queue and state (with
        neither limit, every job in ``states``). Only finished states may be pruned
        (``ConfigError`` otherwise, or for a negative limit). Returns how many were deleted."""
        ...

    # -- runtime support (schema version 2) --------------------------------------------

    def register_owner(self, owner: Owner) -> None:
        """Record (or replace) a runtime that will hold leases."""
        ...

    def heartbeat(self, owner_id: str, pools: dict[str, Any] | None = None) -> None:
        """Set the owner's heartbeat to now, and its pools to ``pools`` unless None (then
        they stay as they were); ``StorageError``-free no-op if the owner is unknown."""
        ...

    def remove_owner(self, owner_id: str) -> None:
        """Forget an owner (after its leases were released). Idempotent."""
        ...

    def list_owners(self) -> list[Owner]:
        """Every registered owner, oldest first; a row that cannot be read (but for its
        pools, then read as None) is reported (a warning naming the owner and the column)
        and left out: see ``owner_records``."""
        ...

    def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue, for every runtime."""
        ...

    def paused_queues(self) -> set[str]:
        """The queues paused now."""
        ...

    def set_progress(self, job_id: int, token: int, progress: bytes) -> None:
        """Store the progress of a running job and emit a PROGRESS event; ``LeaseLost``
        if the token does not hold the lease."""
        ...

    def add_log(self, job_id: int, token: int, message: str) -> None:
        """Append a log line to a running job's log; ``LeaseLost`` as for set_progress."""
        ...

    def logs(self, job_id: int, *, limit: int = 100, offset: int = 0) -> list[LogEntry]:
        """A job's log lines, oldest first."""
        ...

    def events(
        self, after_id: int = 0, *, limit: int = 1000, queue: str | None = None
    ) -> list[Event]:
        """Events with an id above ``after_id``, oldest first (optionally of one queue).

        Event ids increase in commit order: a reader that has read every event up to id N
        never later sees an event with an id <= N committed, so one cursor (the last id
        read) misses nothing. A sequence alone does not give this (a transaction that took
        id 5 could commit after one that took id 6 was read): an engine takes event ids in
        the order its transactions commit (SQLite: one writer at a time, under the lock).
        """
        ...

    def last_event_id(self) -> int:
        """The id of the newest event (0 if none): where a new reader starts."""
        ...

    def prune_events(self, older_than_ms: int) -> int:
        """Delete events written before now - older_than_ms; returns how many."""
        ...

    def retry(self, job_id: int) -> JobState:
        """Run a failed or cancelled job again: waiting, attempt and stalls reset to 0;
        ``JobStateError`` for a job in another state; ``JobNotFound``."""
        ...

    def retry_failed(self, queue: str, *, limit: int = 1000) -> list[int]:
        """``retry`` every failed and cancelled job of ``queue`` (at most ``limit``, oldest
        first), in one transaction; returns their ids."""
        ...

    def promote(self, job_id: int) -> JobState:
        """Make a delayed job ready now; ``JobStateError`` if it is not delayed."""
        ...

    def remove(self, job_id: int) -> None:
        """Delete a job that is not active (``JobStateError``: cancel it first)."""
        ...

    def purge(self, queue: str) -> int:
        """Delete the waiting and delayed jobs of a queue; returns how many."""
        ...

    def data_version(self) -> int:
        """Changes when another connection commits (no I/O)."""
        ...

    # -- reads for display, that survive corrupt rows ------------------------------------

    def list_summaries(
        self,
        *,
        queue: str | None = None,
        state: JobState | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[JobSummary]:
        """The page ``list_jobs`` would return, as summaries (rows rota cannot read
        included, marked)."""
        ...

    def job_record(self, job_id: int) -> JobRecord:
        """The job's row as stored; ``JobNotFound`` if there is none."""
        ...

    def unknown_states(self, limit: int = 20) -> tuple[int, list[JobSummary]]:
        """How many jobs have a state that is none of ``JobState``, and the first
        ``limit`` of them in id order (reads every job: for display only)."""
        ...

    def owner_records(self) -> list[OwnerRecord]:
        """Every owner row, oldest first, corrupt ones included (marked, and logged)."""
        ...

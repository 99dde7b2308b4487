"""The SQLite engine: rota's embedded storage, behind the ``Engine`` port.

One connection, used from one thread at a time (the Store's); WAL and
``synchronous=FULL`` by default; ``BEGIN IMMEDIATE`` for every write, ``SQLITE_BUSY``
retried here up to ``busy_timeout_s``; group commit with a savepoint per operation; the
lifecycle rules of ``rota.domain.lifecycle``; errors mapped to ``StorageError`` in one
place (``_storage_error``); events written in the transaction of their change. Every SQL
statement is a constant in ``schema.py``. The design and why, and which transition
writes which event: docs/internals.md, "The SQLite engine".
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import random
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any, Concatenate, Final, Literal, ParamSpec, TypeVar

import msgspec

from rota.domain import lifecycle
from rota.domain.backoff import DEFAULT_BACKOFF, StoredBackoff, decode_backoff, encode_backoff
from rota.domain.event import Event, EventKind, LogEntry, Owner, possible_pid
from rota.domain.job import FINISHED_STATES, Job, JobState, NewJob
from rota.domain.outcome import FailureKind
from rota.domain.report import JOB_LOG, attempt_ended
from rota.errors import ConfigError, CorruptRow, JobNotFound, JobStateError, LeaseLost, StorageError
from rota.storage import schema as sql
from rota.storage.engine import (
    OPTIONAL_OWNER_COLUMNS,
    ClaimRequest,
    Completion,
    Engine,
    FailedAttempt,
    Failure,
    JobRecord,
    JobSummary,
    LeaseRef,
    OwnerRecord,
    Renewed,
    Rescued,
    Settled,
)
from rota.storage.feed import Ringer
from rota.storage.schema import Migration

__all__ = ["SqliteEngine"]

log = logging.getLogger("rota.storage")
job_log = logging.getLogger(JOB_LOG)

_P = ParamSpec("_P")
_R = TypeVar("_R")

MIN_SQLITE_VERSION: Final = (3, 35, 0)

# --- connection set-up --------------------------------------------------------------------

# Effect: readers and the writer stop blocking each other. Out: the mode now in force
# ("wal", or the old mode where WAL is impossible, e.g. some network file systems).
PRAGMA_WAL: Final = "PRAGMA journal_mode = WAL"

# Effect: FULL fsyncs the WAL at each commit (acknowledged = durable); NORMAL does not.
PRAGMA_SYNCHRONOUS: Final = {
    "FULL": "PRAGMA synchronous = FULL",
    "NORMAL": "PRAGMA synchronous = NORMAL",
}

# Effect: enforce foreign keys (later migrations may add some; off by default in SQLite).
PRAGMA_FOREIGN_KEYS: Final = "PRAGMA foreign_keys = ON"

# Effect: a 16 MiB page cache (negative = KiB): the hot indexes stay in memory without
# letting a million-job backlog grow the process.
PRAGMA_CACHE_SIZE: Final = "PRAGMA cache_size = -16384"

# Effect: truncate the WAL back to 64 MiB after a checkpoint, so one burst does not keep
# a huge WAL file forever.
PRAGMA_JOURNAL_SIZE_LIMIT: Final = "PRAGMA journal_size_limit = 67108864"

# Effect: a read that fails early if the JSON functions (json_each, used by renew and
# prune) were compiled out. Out: one row.
CHECK_JSON: Final = "SELECT json_array_length('[1]')"

# --- transactions -------------------------------------------------------------------------

# Effect: start a write transaction holding the write lock (SQLITE_BUSY if another
# connection holds it; retried). Keeps: a write never fails midway on lock upgrade.
BEGIN_IMMEDIATE: Final = "BEGIN IMMEDIATE"
# Effect: make the transaction durable (fsync with synchronous=FULL).
COMMIT: Final = "COMMIT"
# Effect: undo the whole transaction.
ROLLBACK: Final = "ROLLBACK"

# Effect: mark the start of one operation inside a batch. Keeps: an operation that raises
# is undone alone (ROLLBACK TO) and the batch goes on.
SAVEPOINT_OP: Final = "SAVEPOINT rota_op"
RELEASE_OP: Final = "RELEASE rota_op"
ROLLBACK_TO_OP: Final = "ROLLBACK TO rota_op"

# Effect: bracket a batch of completions run with executemany; if fewer rows changed than
# completions were given, some lease was lost: undo and redo them one by one to say which.
SAVEPOINT_SETTLE: Final = "SAVEPOINT rota_settle"
RELEASE_SETTLE: Final = "RELEASE rota_settle"
ROLLBACK_TO_SETTLE: Final = "ROLLBACK TO rota_settle"

# --- helpers ------------------------------------------------------------------------------

_STATES: Final = {state.value: state for state in JobState}
_KINDS: Final = {kind.value: kind for kind in EventKind}
_CLAIM_ORDER: Final = itemgetter(5, 6, 0)  # priority, run_at_ms, id in JOB_COLUMNS
_JSON: Final = msgspec.json.Encoder()
_QUEUE_NAMES: Final = msgspec.json.Decoder(list[str])
_POOLS: Final = msgspec.json.Decoder(dict[str, Any])

#: An event row as INSERT_EVENT takes it: at_ms, kind, job id, queue, name, attempt, data.
_EventRow = tuple[int, str, int, str, str, int, bytes | None]

_ACTIVE: Final = EventKind.ACTIVE.value
_COMPLETED: Final = EventKind.COMPLETED.value
_ENQUEUED: Final = EventKind.ENQUEUED.value
_FAILED: Final = EventKind.FAILED.value
_PROGRESS: Final = EventKind.PROGRESS.value
_STALLED: Final = EventKind.STALLED.value
#: The event of the state an attempt ended in (fail, stall, release, cancel).
_OUTCOME_KIND: Final = {
    JobState.WAITING: EventKind.RETRYING.value,
    JobState.DELAYED: EventKind.RETRYING.value,
    JobState.COMPLETED: EventKind.COMPLETED.value,
    JobState.FAILED: EventKind.FAILED.value,
    JobState.CANCELLED: EventKind.CANCELLED.value,
}

# SQLite primary result codes (the low byte of an extended code).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26


def _pools(data: Any) -> dict[str, Any] | None:
    """An owner's stored pools: None for NULL; raises for a value that is not a JSON
    object (the caller reports it: a corrupt value must not hide the owner)."""
    return None if data is None else _POOLS.decode(data)


@functools.lru_cache(maxsize=256)
def _backoff(data: str) -> StoredBackoff:
    # Jobs share a handful of policies: decode each JSON text once.
    return decode_backoff(data)


_DEFAULT_BACKOFF_JSON: Final = encode_backoff(DEFAULT_BACKOFF).decode()

#: The longest pause between two tries of a locked database (before jitter).
BUSY_PAUSE_MAX_S: Final = 0.005

#: Fewer rows than this sharing their columns are inserted with executemany.
_SHARED_INSERT_MIN: Final = 8


def _shared_columns(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """INSERT_JOB's columns shared by a batch of one job type, in INSERT_JOBS_SHARED's
    parameter order: name, queue, state, priority, max_attempts, max_stalls, backoff,
    timeout_ms, created_at_ms (all but id, key, run_at_ms and payload)."""
    return (*row[2:6], *row[8:])


def _job(row: Any) -> Job:
    """The job a ``JOB_COLUMNS`` row holds; ``CorruptRow`` naming the column that does
    not decode (a state rota does not know, a backoff that is not a policy)."""
    (
        id_,
        key,
        name,
        queue,
        state,
        priority,
        run_at_ms,
        payload,
        attempt,
        max_attempts,
        stalls,
        max_stalls,
        backoff,
        timeout_ms,
        owner,
        token,
        lease_expires_at_ms,
        cancel_requested,
        created_at_ms,
        finished_at_ms,
        result,
        error,
        progress,
    ) = row
    known_state = _STATES.get(state)
    if known_state is None:
        raise CorruptRow(id_, "state", f"{state!r} is not a job state")
    try:
        policy = _backoff(backoff)
    except (msgspec.DecodeError, TypeError) as exc:
        raise CorruptRow(id_, "backoff", f"not a backoff policy ({exc})") from None
    return Job(
        id=id_,
        key=key,
        name=name,
        queue=queue,
        state=known_state,
        priority=priority,
        run_at_ms=run_at_ms,
        payload=payload,
        attempt=attempt,
        max_attempts=max_attempts,
        stalls=stalls,
        max_stalls=max_stalls,
        backoff=policy,
        timeout_ms=timeout_ms,
        owner=owner,
        token=token,
        lease_expires_at_ms=lease_expires_at_ms,
        cancel_requested=bool(cancel_requested),
        created_at_ms=created_at_ms,
        finished_at_ms=finished_at_ms,
        result=result,
        error=error,
        progress=progress,
    )


def _event(row: Any) -> Event:
    id_, at_ms, kind, job_id, queue, name, attempt, data = row
    return Event(
        id=id_,
        at_ms=at_ms,
        kind=_KINDS[kind],
        job_id=job_id,
        queue=queue,
        name=name,
        attempt=attempt,
        data=data,
    )


def _outcome_event(after: Job, now: int) -> _EventRow:
    """The event of the state a job ended an attempt in; data: its error, if any."""
    error = None if after.error is None else after.error.encode()
    return (
        now,
        _OUTCOME_KIND[after.state],
        after.id,
        after.queue,
        after.name,
        after.attempt,
        error,
    )


#: Faults of the environment that may pass: a lock, a full disk, an I/O error, a file
#: made read-only or not reachable (a running worker waits them out).
_TRANSIENT_CODES: Final = frozenset({_BUSY, _LOCKED, _FULL, _IOERR, _READONLY, _CANTOPEN})


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, StorageError):
        return exc.transient
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _TRANSIENT_CODES


def _file_identity(path: str) -> tuple[int, int] | None:
    """The device and inode of the file at ``path`` (None: no file there)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _check_page(limit: int, offset: int) -> None:
    if not limit >= 0 or not offset >= 0:
        raise ConfigError(f"limit and offset must be >= 0, got {limit!r} and {offset!r}")


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def _check_ttl(ttl_ms: int) -> None:
    if not ttl_ms > 0:
        raise ValueError(f"ttl_ms must be > 0, got {ttl_ms!r}")


def _write(
    doing: str,
) -> Callable[
    [Callable[Concatenate[SqliteEngine, _P], _R]], Callable[Concatenate[SqliteEngine, _P], _R]
]:
    """Run the method as one write: its own transaction, or a savepoint inside a batch."""

    def decorate(
        method: Callable[Concatenate[SqliteEngine, _P], _R],
    ) -> Callable[Concatenate[SqliteEngine, _P], _R]:
        @functools.wraps(method)
        def run(self: SqliteEngine, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            return self._run_write(doing, lambda: method(self, *args, **kwargs))

        return run

    return decorate


def _read(
    doing: str,
) -> Callable[
    [Callable[Concatenate[SqliteEngine, _P], _R]], Callable[Concatenate[SqliteEngine, _P], _R]
]:
    """Run the method as a read: no write transaction (inside a batch, the batch's)."""

    def decorate(
        method: Callable[Concatenate[SqliteEngine, _P], _R],
    ) -> Callable[Concatenate[SqliteEngine, _P], _R]:
        @functools.wraps(method)
        def run(self: SqliteEngine, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            self._check_open()
            if self._in_batch:  # a savepoint, so a failed read cannot break the batch
                return self._in_savepoint(doing, lambda: method(self, *args, **kwargs))
            return self._retrying(doing, lambda: method(self, *args, **kwargs))

        return run

    return decorate


class SqliteEngine(Engine):
    """The ``Engine`` on SQLite (the design: docs/internals.md, "The SQLite engine").

    * ``path``: the database file (created if missing), or ``":memory:"`` (private to
      this engine; for tests).
    * ``synchronous``: ``"FULL"`` (default: every acknowledged write survives power loss)
      or ``"NORMAL"`` (faster; a power cut may lose the last commits).
    * ``clock``: ms since the epoch (default: the wall clock); tests pass a fake one.
    * ``rng``: draws the backoff jitter ``u`` (default: a fresh ``random.Random()``).
    * ``busy_timeout_s``: how long to keep retrying while another connection holds the
      write lock before raising ``StorageError`` (default 10 s).
    * ``record_events``: write the event stream (default); ``False`` writes no event
      (``events()`` then sees only other engines' events): for benchmarks, or an app
      that never reads them.

    After a commit that made work for a queue (an enqueue, a retry, a promote, a resume,
    a request to cancel a running job, a job handed back by a release, an unclaim or a
    rescue), a file engine rings the doorbells of the runtimes on this host that serve it
    (``rota.storage.feed``), except ``own_doorbell``.

    Call ``migrate()`` before anything else. Use an engine from one thread at a time.
    """

    journal_mode: str
    """The journal mode in force: ``"wal"`` for a file (unless its file system cannot
    do WAL), ``"memory"`` for ``":memory:"``."""

    def __init__(
        self,
        path: str | os.PathLike[str] = ":memory:",
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        clock: Callable[[], int] | None = None,
        rng: random.Random | None = None,
        busy_timeout_s: float = 10.0,
        record_events: bool = True,
    ) -> None:
        if synchronous not in PRAGMA_SYNCHRONOUS:
            raise ConfigError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        if not (isinstance(busy_timeout_s, int | float) and 0 <= busy_timeout_s < math.inf):
            raise ConfigError(f"busy_timeout_s must be a number >= 0, got {busy_timeout_s!r}")
        self._path = os.fspath(path)
        memory = self._path in (":memory:", "")
        self._name = self._path if memory else os.path.abspath(self._path)
        self._clock = clock if clock is not None else _wall_clock_ms
        self._rng = rng if rng is not None else random.Random()
        self._jitter = random.Random()  # busy-retry spacing; never touches self._rng's draws
        self._busy_timeout_s = float(busy_timeout_s)
        self._record_events = bool(record_events)
        self._in_batch = False
        self._identity: tuple[int, int] | None = None
        self._batch_broken: BaseException | None = None
        #: the queues the open transaction made work for: rung after its commit
        self._announced: set[str] = set()
        self._ringer = None if memory else Ringer(self._read_doorbells)
        self._closed = True
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise StorageError(
                f"rota needs SQLite >= 3.35 (for RETURNING); this Python has "
                f"{sqlite3.sqlite_version}: upgrade Python or its SQLite library"
            )
        try:
            # timeout=0 turns SQLite's busy handler off: _retrying waits instead.
            self._conn = sqlite3.connect(
                self._path, timeout=0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise self._storage_error(exc, "open the database") from exc
        self._closed = False
        try:
            self.journal_mode = self._retrying(
                "configure the connection", lambda: self._configure(synchronous, memory)
            )
        except BaseException:
            self.close()
            raise

    def _configure(self, synchronous: str, memory: bool) -> str:
        conn = self._conn
        mode = "memory" if memory else str(conn.execute(PRAGMA_WAL).fetchone()[0])
        self._identity = None if memory else _file_identity(self._name)
        conn.execute(PRAGMA_SYNCHRONOUS[synchronous])
        conn.execute(PRAGMA_FOREIGN_KEYS)
        conn.execute(PRAGMA_CACHE_SIZE)
        conn.execute(PRAGMA_JOURNAL_SIZE_LIMIT)
        try:
            conn.execute(CHECK_JSON).fetchone()
        except sqlite3.OperationalError as exc:
            raise StorageError(
                f"this SQLite ({sqlite3.sqlite_version}) lacks the JSON functions rota needs"
            ) from exc
        return mode

    def __repr__(self) -> str:
        return f"SqliteEngine({self._name!r})"

    @property
    def own_doorbell(self) -> str | None:
        """The doorbell of the runtime this engine works for (its Store's engine): its
        commits never ring it, since that runtime wakes its own queues."""
        return None if self._ringer is None else self._ringer.skip

    @own_doorbell.setter
    def own_doorbell(self, address: str | None) -> None:
        if self._ringer is not None:
            self._ringer.skip = address

    def __enter__(self) -> SqliteEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- transactions and errors: the one place they are handled -------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"the SQLite engine for {self._name} is closed")

    def _run_write(self, doing: str, operation: Callable[[], _R]) -> _R:
        self._check_open()
        if self._in_batch:
            return self._in_savepoint(doing, operation)
        result = self._retrying(doing, lambda: self._in_transaction(operation))
        self._ring()
        return result

    # --- doorbells: telling this host's runtimes about work committed -------------------

    def _announce(self, queues: Iterable[str]) -> None:
        """The open transaction makes work for ``queues``: ring their runtimes after it
        commits (a spurious ring, for an operation undone alone in a batch, is harmless)."""
        ringer = self._ringer
        if ringer is not None and ringer.wanted():  # else nobody to ring: nothing to note
            self._announced.update(queues)

    def _ring(self) -> None:
        """After a commit: ring the runtimes serving the queues it made work for, if any."""
        if self._announced:
            assert self._ringer is not None  # noted only when there is a Ringer
            self._ringer.ring(self._announced)
            self._announced.clear()

    def _read_doorbells(self, host: str) -> list[tuple[object, object]]:
        """For the Ringer: this host's doorbells, on this connection, outside any
        transaction (after a commit)."""
        return self._conn.execute(sql.LIST_DOORBELLS, (host,)).fetchall()

    def _in_transaction(self, operation: Callable[[], _R]) -> _R:
        conn = self._conn
        conn.execute(BEGIN_IMMEDIATE)
        try:
            result = operation()
            conn.execute(COMMIT)
        except BaseException:
            self._rollback_quietly()
            raise
        return result

    def _in_savepoint(self, doing: str, operation: Callable[[], _R]) -> _R:
        if self._batch_broken is not None:
            raise StorageError(
                f"cannot {doing}: this batch's transaction on {self._name} was already "
                f"rolled back by an earlier error ({self._batch_broken})"
            )
        conn = self._conn
        try:
            conn.execute(SAVEPOINT_OP)
            try:
                result = operation()
            except BaseException as exc:
                if not conn.in_transaction:
                    # SQLite rolled the whole transaction back, as it does on SQLITE_FULL
                    # or IOERR in a statement without a statement journal: the rest of the
                    # batch must fail, not carry on in autocommit mode.
                    self._batch_broken = exc
                    raise
                try:
                    conn.execute(ROLLBACK_TO_OP)
                    conn.execute(RELEASE_OP)
                except sqlite3.Error as undo_error:
                    self._batch_broken = undo_error
                raise
            conn.execute(RELEASE_OP)
        except sqlite3.Error as exc:
            raise self._storage_error(exc, doing) from exc
        return result

    def _rollback_quietly(self) -> None:
        self._announced.clear()  # what is rolled back rings nobody
        if not self._closed and self._conn.in_transaction:
            # The error that brought us here is the one to report.
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute(ROLLBACK)

    def _retrying(self, doing: str, operation: Callable[[], _R]) -> _R:
        """Run ``operation``, again while the database is locked, up to busy_timeout_s;
        map every SQLite error to ``StorageError``."""
        started: float | None = None
        tries = 0
        while True:
            try:
                return operation()
            except sqlite3.Error as exc:
                tries += 1
                code = getattr(exc, "sqlite_errorcode", None)
                if code is None or code & 0xFF not in (_BUSY, _LOCKED):
                    raise self._storage_error(exc, doing) from exc
                now = time.monotonic()
                if started is None:
                    started = now
                left = started + self._busy_timeout_s - now
                if left <= 0:
                    waited_s = now - started
                    raise self._storage_error(exc, doing, waited_s=waited_s, tries=tries) from exc
                # Short pauses (1, 2, 4, then 5 ms, jittered): SQLite's lock is not a queue,
                # so a connection that sleeps long loses every race to a busy one that
                # commits back to back (another worker process draining: its write lock is
                # free only for the ~0.5 ms between its transactions).
                pause = min(0.0005 * 2 ** min(tries, 4), BUSY_PAUSE_MAX_S)
                pause *= self._jitter.uniform(0.5, 1.5)
                time.sleep(min(pause, left))

    def _storage_error(
        self, exc: sqlite3.Error, doing: str, *, waited_s: float = 0.0, tries: int = 1
    ) -> StorageError:
        code = getattr(exc, "sqlite_errorcode", None)
        primary = None if code is None else code & 0xFF
        name = getattr(exc, "sqlite_errorname", type(exc).__name__)
        where = self._name
        if primary in (_BUSY, _LOCKED):
            message = (
                f"database {where} is locked: gave up after {waited_s:.1f} s ({tries} tries) "
                f"trying to {doing}, another connection kept the write lock; nothing changed"
            )
        elif primary == _FULL:
            message = (
                f"cannot {doing}: the disk holding {where} is full (or the database reached "
                f"its size limit); this operation changed nothing and nothing already "
                f"committed was lost. Free some space (or prune finished jobs) and retry"
            )
        elif primary in (_CORRUPT, _NOTADB):
            message = (
                f"database file {where} is corrupt or is not a rota (SQLite) database "
                f"({name}: {exc}) while trying to {doing}; restore it from a backup or "
                f"point rota at another file"
            )
        elif primary == _CANTOPEN:
            message = (
                f"cannot open database file {where} ({exc}): check that its directory "
                f"exists and that this process may create and write files there"
            )
        elif primary == _READONLY:
            message = (
                f"cannot {doing}: database {where} is read-only ({exc}); check the "
                f"permissions of the file, its -wal and -shm files and their directory"
            )
        elif primary == _IOERR:
            message = (
                f"I/O error on database {where} while trying to {doing} ({name}: {exc}); "
                f"this operation changed nothing and nothing already committed was lost"
            )
        else:
            hint = " (has migrate() been run?)" if "no such table: rota_" in str(exc) else ""
            message = f"SQLite error on {where} while trying to {doing}: {name}: {exc}{hint}"
        return StorageError(message, transient=primary in _TRANSIENT_CODES)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Run the operations inside in one transaction (one commit), each in its own
        savepoint: one that raises is undone alone and the others still commit.

        An exception escaping the ``with`` block rolls the whole batch back. If the commit
        fails, everything is rolled back and ``StorageError`` is raised: nothing in the
        batch happened. Batches do not nest (``RuntimeError``).
        """
        self._check_open()
        if self._in_batch:
            raise RuntimeError("engine.batch() does not nest: a batch is already open")
        self._retrying("begin a batch", lambda: self._conn.execute(BEGIN_IMMEDIATE))
        self._in_batch, self._batch_broken = True, None
        try:
            yield
        except BaseException:
            self._rollback_quietly()
            raise
        finally:
            self._in_batch = False
        self._check_open()
        if self._batch_broken is not None:
            self._rollback_quietly()
            raise StorageError(
                f"batch on {self._name} not committed: its transaction was rolled back "
                f"by an error ({self._batch_broken}); none of its operations took effect",
                transient=_transient(self._batch_broken),
            ) from self._batch_broken
        try:
            self._retrying("commit a batch", lambda: self._conn.execute(COMMIT))
        except BaseException:
            self._rollback_quietly()
            raise
        self._ring()

    def close(self) -> None:
        """Roll back anything uncommitted and close the connection. Idempotent."""
        if self._closed:
            return
        try:
            self._rollback_quietly()
            self._conn.close()
        except sqlite3.Error as exc:
            raise self._storage_error(exc, "close the database") from exc
        finally:
            self._closed = True

    def now_ms(self) -> int:
        return self._clock()

    def verify(self) -> None:
        """``StorageError`` if the file this engine opened is no longer at its path: it
        was deleted, or replaced by another file (a restore, a ``mv``). The connection
        would go on with the old, unlinked file while everyone else uses the new one, so a
        worker that finds this must stop. One ``stat`` call, no SQLite access."""
        if self._identity is None or self._closed:
            return
        now = _file_identity(self._name)
        if now == self._identity:
            return
        what = "deleted" if now is None else "replaced by another file"
        raise StorageError(
            f"database file {self._name} was {what} while this process had it open: "
            "jobs written from now on would go where no worker looks. Stop every process "
            "that uses it, and start them again to open the file now at that path"
        )

    # --- schema ---------------------------------------------------------------------------

    def migrate(self) -> int:
        """Apply the pending migrations, each in its own transaction; return the version."""
        self._check_open()
        if self._in_batch:
            raise RuntimeError("migrate() cannot run inside a batch")
        version = self._retrying("read the schema version", self._schema_version)
        for migration in sql.MIGRATIONS:
            if migration.version > version:
                version = self._migrate_to(migration)
        return version

    def _migrate_to(self, migration: Migration) -> int:
        return self._retrying(
            f"apply migration {migration.version} ({migration.description})",
            lambda: self._in_transaction(lambda: self._apply(migration)),
        )

    def _schema_version(self) -> int:
        conn = self._conn
        application_id = conn.execute(sql.SELECT_APPLICATION_ID).fetchone()[0]
        if application_id not in (0, sql.APPLICATION_ID):
            raise StorageError(
                f"database file {self._name} is not a rota database: it belongs to another "
                f"program (application_id {application_id:#x}); point rota at another file"
            )
        if not conn.execute(sql.SELECT_META_TABLE_EXISTS).fetchone()[0]:
            return 0
        row = conn.execute(sql.SELECT_SCHEMA_VERSION).fetchone()
        version = 0 if row is None else int(row[0])
        if version > sql.SCHEMA_VERSION:
            raise StorageError(
                f"database {self._name} has schema version {version}, newer than this rota "
                f"knows ({sql.SCHEMA_VERSION}): it was written by a newer rota; upgrade rota"
            )
        return version

    def _apply(self, migration: Migration) -> int:
        version = self._schema_version()  # again, under the write lock: another process
        if version >= migration.version:  # may have applied it while we waited
            return version
        for statement in migration.statements:
            self._conn.execute(statement)
        self._conn.execute(sql.SET_SCHEMA_VERSION, (migration.version,))
        return migration.version

    # --- writes ---------------------------------------------------------------------------

    def _record(self, events: list[_EventRow]) -> None:
        """Write the events an operation built, in one statement."""
        if events:
            self._conn.executemany(sql.INSERT_EVENT, events)

    @_write("enqueue jobs")
    def enqueue(self, jobs: Sequence[NewJob]) -> list[int]:
        if not jobs:
            return []
        self._announce(job.queue for job in jobs)
        conn = self._conn
        first_id: int = conn.execute(sql.NEXT_JOB_ID).fetchone()[0]
        next_id = first_id
        ids: list[int] = []
        run: list[tuple[object, ...]] = []
        last_policy: object = None
        last_json = ""
        for job in jobs:
            policy = job.backoff
            if policy is not last_policy:  # jobs of one batch usually share one policy
                last_policy, last_json = policy, encode_backoff(policy).decode()
            row = (
                next_id,
                job.key,
                job.name,
                job.queue,
                "delayed" if job.delayed else "waiting",
                job.priority,
                job.run_at_ms,
                job.payload,
                job.max_attempts,
                job.max_stalls,
                last_json,
                job.timeout_ms,
                job.created_at_ms,
            )
            if job.key is None:
                # Keyless jobs cannot conflict: insert runs of them with executemany.
                run.append(row)
                ids.append(next_id)
                next_id += 1
                continue
            if run:
                self._insert_keyless(run)
                run = []
            if conn.execute(sql.INSERT_JOB, row).rowcount:
                ids.append(next_id)
                next_id += 1
            else:
                ids.append(conn.execute(sql.SELECT_ID_BY_KEY, (job.key,)).fetchone()[0])
        if run:
            self._insert_keyless(run)
        if self._record_events and next_id > first_id:
            # The jobs inserted (and only they) hold the ids first_id .. next_id - 1.
            conn.execute(sql.INSERT_ENQUEUED_EVENTS, (self._clock(), first_id, next_id))
        return ids

    def _insert_keyless(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert INSERT_JOB rows of keyless jobs: runs of rows that differ only in id,
        payload and run_at_ms (a batch of one job type) go in one INSERT_JOBS_SHARED
        statement each, the rest row by row (executemany)."""
        conn = self._conn
        start = 0
        while start < len(rows):
            shared = _shared_columns(rows[start])
            end = start + 1
            while end < len(rows) and _shared_columns(rows[end]) == shared:
                end += 1
            group = rows[start:end]
            start = end
            if len(group) >= _SHARED_INSERT_MIN:
                try:
                    batch = _JSON.encode([(r[0], r[7].decode(), r[6]) for r in group])
                except UnicodeDecodeError:  # a payload that is not UTF-8: row by row
                    pass
                else:
                    conn.execute(sql.INSERT_JOBS_SHARED, (batch, *shared))
                    continue
            conn.executemany(sql.INSERT_JOB, group)

    @_write("claim jobs")
    def claim(self, queue: str, owner: str, n: int, ttl_ms: int) -> list[Job]:
        return self._claim(queue, owner, n, ttl_ms, self._clock())

    def _claim(self, queue: str, owner: str, n: int, ttl_ms: int, now: int) -> list[Job]:
        if not n >= 0:  # LIMIT -1 would mean "no limit"
            raise ValueError(f"n must be >= 0, got {n!r}")
        _check_ttl(ttl_ms)
        if n == 0:
            return []
        conn = self._conn
        conn.execute(sql.PROMOTE_DUE_IN_QUEUE, (queue, now))
        rows = conn.execute(sql.CLAIM_JOBS, (owner, now + ttl_ms, queue, n)).fetchall()
        rows.sort(key=_CLAIM_ORDER)
        jobs = []
        corrupt: list[_EventRow] = []
        for row in rows:
            try:
                jobs.append(_job(row))
            except CorruptRow as exc:  # failed here, never handed to a worker
                self._quarantine(row[0], str(exc), now, corrupt, exc.column)
        if corrupt:
            self._record_for_jobs(_ACTIVE, [job.id for job in jobs], now)
            self._record(corrupt)
        else:
            self._record_for_jobs(_ACTIVE, [row[0] for row in rows], now)
        return jobs

    def _quarantine(
        self,
        job_id: int,
        error: str,
        now: int,
        events: list[_EventRow],
        column: str = "",
        *,
        reported: bool = False,
    ) -> str:
        """Fail a job whose row cannot be read back (or whose outcome cannot be applied)
        for good, without reading its corrupt column; append its FAILED event; log it
        (unless the caller reports it: ``reported``). A corrupt backoff is replaced by the
        default one, so the row reads back (and can be retried). Returns the error stored."""
        if column == "backoff":
            error += "; its backoff was replaced by the default policy"
        reset = _DEFAULT_BACKOFF_JSON if column == "backoff" else None
        row = self._conn.execute(sql.QUARANTINE_JOB, (now, error, reset, job_id)).fetchone()
        if not reported:
            queue, name, attempt = ("?", "?", "?") if row is None else row
            _log_failed_for_good(job_id, name, queue, attempt, error)
        if row is not None and self._record_events:
            queue, name, attempt = row
            events.append((now, _FAILED, job_id, queue, name, attempt, error.encode()))
        return error

    def _job_or_quarantine(self, row: Any, now: int, events: list[_EventRow]) -> Job | None:
        """``_job(row)``, or None after failing a corrupt row for good (sweeps and
        releases go on with the other rows)."""
        try:
            return _job(row)
        except CorruptRow as exc:
            self._quarantine(row[0], str(exc), now, events, exc.column)
            return None

    @_write("renew leases")
    def renew(self, leases: Sequence[LeaseRef], ttl_ms: int) -> Renewed:
        _check_ttl(ttl_ms)
        if not leases:
            return Renewed(renewed=[], lost=[], cancel_requested=[])
        pairs = _JSON.encode(list(leases)).decode()  # LeaseRef is array_like: [id, token]
        rows = self._conn.execute(sql.RENEW_LEASES, (self._clock() + ttl_ms, pairs)).fetchall()
        held = dict(rows)
        return Renewed(
            renewed=[lease.job_id for lease in leases if lease.job_id in held],
            lost=[lease.job_id for lease in leases if lease.job_id not in held],
            cancel_requested=[lease.job_id for lease in leases if held.get(lease.job_id)],
        )

    @_read("read cancel requests")
    def cancel_requested(self, leases: Sequence[LeaseRef]) -> list[int]:
        if not leases:
            return []
        pairs = _JSON.encode(list(leases)).decode()  # LeaseRef is array_like: [id, token]
        asked = {job_id for (job_id,) in self._conn.execute(sql.SELECT_CANCEL_REQUESTED, (pairs,))}
        return [lease.job_id for lease in leases if lease.job_id in asked]

    @_write("complete a job")
    def complete(self, job_id: int, token: int, result: bytes | None) -> None:
        now = self._clock()
        changed = self._conn.execute(sql.COMPLETE_JOB, (now, result, job_id, token))
        if not changed.rowcount:
            raise LeaseLost(job_id, token)
        self._record_for_jobs(_COMPLETED, [job_id], now)

    def _record_for_jobs(self, kind: str, job_ids: list[int], now: int) -> None:
        """Write one ``kind`` event per job, in order, read from the jobs as stored now."""
        if self._record_events and job_ids:
            ids = _JSON.encode(job_ids).decode()
            self._conn.execute(sql.INSERT_JOB_EVENTS, (now, kind, ids))

    @_write("fail a job")
    def fail(self, failure: Failure) -> JobState:
        events: list[_EventRow] = []
        failed = self._fail(failure, self._clock(), events)
        self._record(events)
        return failed.state

    def _fail(
        self, failure: Failure, now: int, events: list[_EventRow], *, reported: bool = False
    ) -> FailedAttempt:
        """Apply a failure (``lifecycle.fail``), or fail its job for good if its row does
        not decode; ``reported``: the caller logs the outcome (else a quarantine is
        logged here)."""
        row = self._conn.execute(sql.SELECT_HELD_JOB, (failure.job_id, failure.token)).fetchone()
        if row is None:
            raise LeaseLost(failure.job_id, failure.token)
        try:
            job = _job(row)
            after = lifecycle.fail(
                job,
                failure.token,
                failure.error,
                now,
                kind=FailureKind(failure.kind),
                delay_ms=failure.delay_ms,
                u=self._rng.random(),
            )
        except (CorruptRow, ValueError) as exc:
            # A corrupt row, or an outcome no rule accepts (a negative delay): the job
            # cannot be retried safely; it fails for good, and the error says why.
            error = f"{failure.error.rstrip()[-7000:]}\nfailed for good: {exc}"
            column = exc.column if isinstance(exc, CorruptRow) else ""
            error = self._quarantine(failure.job_id, error, now, events, column, reported=reported)
            return FailedAttempt(failure.job_id, JobState.FAILED, now, error)
        if not self._write_transition(job, after):
            raise LeaseLost(failure.job_id, failure.token)
        if self._record_events:
            events.append(_outcome_event(after, now))
        return FailedAttempt(job.id, after.state, after.run_at_ms, after.error)

    @_write("settle and claim jobs")
    def settle_and_claim(
        self,
        completions: Sequence[Completion],
        failures: Sequence[Failure],
        claim: ClaimRequest | None,
    ) -> Settled:
        now = self._clock()
        lost = self._complete_many(completions, now)
        failed: list[FailedAttempt] = []
        if failures:
            events: list[_EventRow] = []
            for failure in failures:
                try:
                    failed.append(self._fail(failure, now, events, reported=True))
                except LeaseLost:
                    lost.append(failure.job_id)
            self._record(events)  # before the claim's: events follow the order of changes
        claimed = (
            []
            if claim is None
            else self._claim(claim.queue, claim.owner, claim.n, claim.ttl_ms, now)
        )
        if claim is None or len(claimed) >= claim.n:
            return Settled(lost=lost, claimed=claimed, now_ms=now, failed=failed)
        # Short: the queue has nothing more ready now; say when its next delayed job is
        # due (one index seek; never on the drain's path, where claims come back full).
        row = self._conn.execute(sql.SELECT_NEXT_DUE, (claim.queue,)).fetchone()
        due = None if row is None else row[0]
        return Settled(lost, claimed, next_due_ms=due, now_ms=now, failed=failed)

    def _complete_many(self, completions: Sequence[Completion], now: int) -> list[int]:
        """Complete (and write their COMPLETED events); return the ids whose lease was lost."""
        if not completions:
            return []
        conn = self._conn
        try:
            batch = _JSON.encode(
                [
                    (c.job_id, c.token, None if c.result is None else c.result.decode())
                    for c in completions
                ]
            )
        except UnicodeDecodeError:  # a result that is not UTF-8 (rota's are JSON): per row
            batch = None
        conn.execute(SAVEPOINT_SETTLE)
        if batch is not None:
            completed = conn.execute(sql.COMPLETE_JOBS, (now, batch)).rowcount
        else:
            params = [(now, c.result, c.job_id, c.token) for c in completions]
            completed = conn.executemany(sql.COMPLETE_JOB, params).rowcount
        if completed == len(completions):
            conn.execute(RELEASE_SETTLE)
            self._record_for_jobs(_COMPLETED, [c.job_id for c in completions], now)
            return []
        # Some token no longer held (rare): redo one at a time to know which.
        conn.execute(ROLLBACK_TO_SETTLE)
        conn.execute(RELEASE_SETTLE)
        done: list[int] = []
        lost: list[int] = []
        for c in completions:
            p = (now, c.result, c.job_id, c.token)
            (done if conn.execute(sql.COMPLETE_JOB, p).rowcount else lost).append(c.job_id)
        self._record_for_jobs(_COMPLETED, done, now)
        return lost

    def _write_transition(self, before: Job, after: Job) -> bool:
        return bool(
            self._conn.execute(
                sql.WRITE_TRANSITION,
                (
                    after.state.value,
                    after.run_at_ms,
                    after.attempt,
                    after.stalls,
                    after.owner,
                    after.token,
                    after.lease_expires_at_ms,
                    int(after.cancel_requested),
                    after.finished_at_ms,
                    after.result,
                    after.error,
                    before.id,
                    before.state.value,
                    before.token,
                ),
            ).rowcount
        )

    def _take_back(
        self, job: Job, after: Job, now: int, stalled: bool, events: list[_EventRow]
    ) -> bool:
        """Write a released or rescued job; append its events (STALLED first if stalled)."""
        if not self._write_transition(job, after):
            return False
        if after.state is JobState.WAITING or after.state is JobState.DELAYED:
            self._announce((job.queue,))  # another runtime serving the queue may take it
        if self._record_events:
            if stalled:
                error = lifecycle.stall_error(job).encode()
                events.append((now, _STALLED, job.id, job.queue, job.name, job.attempt, error))
            if stalled or after.state is JobState.CANCELLED:
                events.append(_outcome_event(after, now))
        return True

    @_write("release an owner's leases")
    def release_owner(self, owner: str, *, as_stall: bool) -> list[int]:
        now = self._clock()
        released = []
        events: list[_EventRow] = []
        for row in sorted(self._conn.execute(sql.SELECT_OWNED, (owner,)).fetchall()):
            job = self._job_or_quarantine(row, now, events)
            if job is None:
                continue
            after = lifecycle.release(job, now, as_stall=as_stall, u=self._rng.random())
            if self._take_back(job, after, now, as_stall, events):
                released.append(job.id)
        self._record(events)
        return released

    @_write("hand back unstarted jobs")
    def unclaim(self, leases: Sequence[LeaseRef]) -> list[int]:
        handed_back = []
        events: list[_EventRow] = []
        for lease in leases:
            row = self._conn.execute(sql.SELECT_HELD_JOB, (lease.job_id, lease.token)).fetchone()
            if row is None:
                continue  # no longer held: nothing to hand back
            job = self._job_or_quarantine(row, self._clock(), events)
            if job is not None and self._write_transition(job, lifecycle.unclaim(job, lease.token)):
                handed_back.append(job.id)
                self._announce((job.queue,))
        self._record(events)
        return handed_back

    @_write("release interrupted jobs")
    def release(self, leases: Sequence[LeaseRef], *, as_stall: bool = False) -> list[int]:
        now = self._clock()
        released = []
        events: list[_EventRow] = []
        for lease in leases:
            row = self._conn.execute(sql.SELECT_HELD_JOB, (lease.job_id, lease.token)).fetchone()
            if row is None:
                continue  # no longer held (settled, rescued, taken over): leave it
            job = self._job_or_quarantine(row, now, events)
            if job is None:
                continue
            u = self._rng.random() if as_stall else 0.5
            after = lifecycle.release(job, now, as_stall=as_stall, u=u)
            if self._take_back(job, after, now, as_stall, events):
                released.append(job.id)
        self._record(events)
        return released

    @_write("promote due jobs")
    def promote_due(self, queue: str | None = None) -> int:
        now = self._clock()
        if queue is None:
            return self._conn.execute(sql.PROMOTE_DUE, (now,)).rowcount
        return self._conn.execute(sql.PROMOTE_DUE_IN_QUEUE, (queue, now)).rowcount

    @_write("rescue expired leases")
    def rescue_expired(self, spare: Sequence[LeaseRef] = ()) -> Rescued:
        now = self._clock()
        outcome: dict[JobState, list[int]] = {state: [] for state in JobState}
        stalled: list[Job] = []
        events: list[_EventRow] = []
        kept = {(lease.job_id, lease.token) for lease in spare}
        for row in sorted(self._conn.execute(sql.SELECT_EXPIRED, (now,)).fetchall()):
            job = self._job_or_quarantine(row, now, events)
            if job is None:
                outcome[JobState.FAILED].append(row[0])
                continue
            if (job.id, job.token) in kept:
                continue  # held and renewed by the caller: not a stall
            after = lifecycle.stall(job, now, u=self._rng.random())
            if self._take_back(job, after, now, True, events):
                outcome[after.state].append(job.id)
                stalled.append(after)
        self._record(events)
        return Rescued(
            requeued=sorted(outcome[JobState.WAITING] + outcome[JobState.DELAYED]),
            failed=outcome[JobState.FAILED],
            cancelled=outcome[JobState.CANCELLED],
            stalled=stalled,
        )

    @_write("cancel a job")
    def cancel(self, job_id: int) -> JobState:
        job = self._get(job_id)
        now = self._clock()
        after = lifecycle.cancel(job, now)
        if after != job and not self._write_transition(job, after):
            raise StorageError(f"job {job_id} changed while being cancelled; retry")
        if after.state is JobState.ACTIVE:  # asked to stop: its runtime checks its leases
            self._announce((job.queue,))
        if (
            self._record_events
            and after.state is JobState.CANCELLED
            and job.state is not after.state
        ):
            self._record([_outcome_event(after, now)])
        return after.state

    @_write("fail jobs in an unknown state")
    def quarantine_corrupt(self) -> list[int]:
        now = self._clock()
        rows = self._conn.execute(sql.QUARANTINE_UNKNOWN_STATES, (now,)).fetchall()
        for job_id, queue, name, attempt, error in rows:
            _log_failed_for_good(job_id, name, queue, attempt, error)
        if self._record_events:
            self._record(
                [
                    (now, _FAILED, job_id, queue, name, attempt, error.encode())
                    for job_id, queue, name, attempt, error in rows
                ]
            )
        return sorted(row[0] for row in rows)

    @_write("prune jobs")
    def prune(
        self,
        *,
        queue: str | None = None,
        states: Collection[JobState] = FINISHED_STATES,
        older_than_ms: int | None = None,
        keep_last: int | None = None,
    ) -> int:
        unfinished = sorted(str(s) for s in states if s not in FINISHED_STATES)
        if unfinished:
            raise ConfigError(
                f"only finished jobs can be pruned "
                f"({', '.join(sorted(FINISHED_STATES))}), not {', '.join(unfinished)}"
            )
        if older_than_ms is not None and not older_than_ms >= 0:
            raise ConfigError(f"older_than_ms must be >= 0, got {older_than_ms!r}")
        if keep_last is not None and not keep_last >= 0:
            raise ConfigError(f"keep_last must be >= 0, got {keep_last!r}")
        if not states:
            return 0
        conn = self._conn
        conn.execute(sql.RAISE_ID_FLOOR)
        cutoff = None if older_than_ms is None else self._clock() - older_than_ms
        return conn.execute(
            sql.PRUNE_JOBS,
            {
                "states": _JSON.encode(sorted(str(s) for s in states)).decode(),
                "queue": queue,
                "cutoff": cutoff,
                "keep": keep_last,
            },
        ).rowcount

    # --- job control (schema version 2) ---------------------------------------------------

    def _get(self, job_id: int) -> Job:
        row = self._conn.execute(sql.SELECT_JOB, (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return _job(row)

    def _state(self, job_id: int) -> JobState:
        row = self._conn.execute(sql.SELECT_STATE, (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return _STATES[row[0]]

    @_write("retry a job")
    def retry(self, job_id: int) -> JobState:
        job = self._get(job_id)
        now = self._clock()
        after = lifecycle.retry(job, now)  # InvalidTransition (a JobStateError) names the state
        if not self._write_transition(job, after):
            raise StorageError(f"job {job_id} changed while being retried; retry")
        self._announce((job.queue,))
        if self._record_events:
            self._record([(now, _ENQUEUED, job.id, job.queue, job.name, 0, None)])
        return after.state

    @_write("retry failed and cancelled jobs")
    def retry_failed(self, queue: str, *, limit: int = 1000) -> list[int]:
        _check_page(limit, 0)
        now = self._clock()
        retried = []
        events: list[_EventRow] = []
        for row in self._conn.execute(sql.SELECT_RETRYABLE, (queue, limit)).fetchall():
            job = _job(row)
            if self._write_transition(job, lifecycle.retry(job, now)):
                retried.append(job.id)
                if self._record_events:
                    events.append((now, _ENQUEUED, job.id, job.queue, job.name, 0, None))
        self._record(events)
        if retried:
            self._announce((queue,))
        return retried

    @_write("promote a job")
    def promote(self, job_id: int) -> JobState:
        row = self._conn.execute(sql.PROMOTE_JOB, (self._clock(), job_id)).fetchone()
        if row is None:
            state = self._state(job_id)
            raise JobStateError(f"cannot promote job {job_id}: it is {state}, not delayed")
        self._announce(row)
        return JobState.WAITING

    @_write("remove a job")
    def remove(self, job_id: int) -> None:
        conn = self._conn
        conn.execute(sql.RAISE_ID_FLOOR)
        if not conn.execute(sql.REMOVE_JOB, (job_id,)).rowcount:
            state = self._state(job_id)
            raise JobStateError(f"cannot remove job {job_id}: it is {state}; cancel it first")

    @_write("purge a queue")
    def purge(self, queue: str) -> int:
        conn = self._conn
        conn.execute(sql.RAISE_ID_FLOOR)
        return conn.execute(sql.PURGE_QUEUE, (queue,)).rowcount

    @_write("set a job's progress")
    def set_progress(self, job_id: int, token: int, progress: bytes) -> None:
        now = self._clock()
        row = self._conn.execute(sql.SET_PROGRESS, (progress, job_id, token)).fetchone()
        if row is None:
            raise LeaseLost(job_id, token)
        if self._record_events:
            queue, name, attempt = row
            self._record([(now, _PROGRESS, job_id, queue, name, attempt, progress)])

    @_write("add a log line")
    def add_log(self, job_id: int, token: int, message: str) -> None:
        params = (self._clock(), message, job_id, token)
        if not self._conn.execute(sql.INSERT_LOG, params).rowcount:
            raise LeaseLost(job_id, token)

    @_write("pause or resume a queue")
    def set_paused(self, queue: str, paused: bool) -> None:
        self._conn.execute(sql.SET_PAUSED, (queue, int(bool(paused))))
        if not paused:
            self._announce((queue,))

    # --- owners ---------------------------------------------------------------------------

    @_write("register an owner")
    def register_owner(self, owner: Owner) -> None:
        self._conn.execute(
            sql.UPSERT_OWNER,
            (
                owner.id,
                owner.host,
                owner.pid,
                owner.started_at_ms,
                owner.heartbeat_at_ms,
                _JSON.encode(owner.queues).decode(),
                None if owner.pools is None else _JSON.encode(owner.pools),
                owner.doorbell,
            ),
        )

    @_write("record an owner's heartbeat")
    def heartbeat(self, owner_id: str, pools: dict[str, Any] | None = None) -> None:
        if pools is None:
            self._conn.execute(sql.HEARTBEAT_OWNER, (self._clock(), owner_id))
        else:
            encoded = _JSON.encode(pools)
            self._conn.execute(sql.HEARTBEAT_OWNER_POOLS, (self._clock(), encoded, owner_id))

    @_write("remove an owner")
    def remove_owner(self, owner_id: str) -> None:
        self._conn.execute(sql.DELETE_OWNER, (owner_id,))

    # --- events ---------------------------------------------------------------------------

    @_write("prune events")
    def prune_events(self, older_than_ms: int) -> int:
        if not older_than_ms >= 0:
            raise ValueError(f"older_than_ms must be >= 0, got {older_than_ms!r}")
        return self._conn.execute(sql.PRUNE_EVENTS, (self._clock() - older_than_ms,)).rowcount

    @_read("read events")
    def events(
        self, after_id: int = 0, *, limit: int = 1000, queue: str | None = None
    ) -> list[Event]:
        _check_page(limit, 0)
        conn = self._conn
        if queue is None:
            rows = conn.execute(sql.SELECT_EVENTS, (after_id, limit))
        else:
            rows = conn.execute(sql.SELECT_EVENTS_IN_QUEUE, (after_id, queue, limit))
        return [_event(row) for row in rows.fetchall()]

    @_read("read the last event id")
    def last_event_id(self) -> int:
        return int(self._conn.execute(sql.LAST_EVENT_ID).fetchone()[0])

    @_read("read the data version")
    def data_version(self) -> int:
        """``PRAGMA data_version``: changes when another connection (this process or
        another) commits to the database, never for this engine's own commits; it reads
        no page, so polling it is cheap. Always the same on ``":memory:"`` (no other
        connection can reach it). Compare two values for equality only."""
        return int(self._conn.execute(sql.SELECT_DATA_VERSION).fetchone()[0])

    # --- reads ----------------------------------------------------------------------------

    @_read("read a job")
    def get(self, job_id: int) -> Job:
        return self._get(job_id)

    @_read("read a job by key")
    def get_by_key(self, key: str) -> Job:
        row = self._conn.execute(sql.SELECT_JOB_BY_KEY, (key,)).fetchone()
        if row is None:
            raise JobNotFound(key)
        return _job(row)

    @_read("list jobs")
    def list_jobs(
        self,
        *,
        queue: str | None = None,
        state: JobState | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Job]:
        _check_page(limit, offset)
        conn = self._conn
        if state is None:
            if queue is None:
                rows = conn.execute(sql.LIST_JOBS, (limit, offset))
            else:
                rows = conn.execute(sql.LIST_JOBS_IN_QUEUE, (queue, limit, offset))
        elif queue is None:
            rows = conn.execute(sql.LIST_JOBS_IN_STATE, (JobState(state).value, limit, offset))
        else:
            rows = conn.execute(
                sql.LIST_JOBS_IN_QUEUE_AND_STATE, (queue, JobState(state).value, limit, offset)
            )
        return [_job(row) for row in rows.fetchall()]

    @_read("count jobs")
    def count(self, queue: str | None = None) -> dict[JobState, int]:
        if queue is None:
            rows = self._conn.execute(sql.COUNT_JOBS).fetchall()
        else:
            rows = self._conn.execute(sql.COUNT_JOBS_IN_QUEUE, (queue,)).fetchall()
        counts = dict.fromkeys(JobState, 0)
        for state, n in rows:
            known = _STATES.get(state)
            if known is not None:  # an unknown state is counted apart: unknown_states()
                counts[known] = n
        return counts

    @_read("list queues")
    def queues(self) -> list[str]:
        return [queue for (queue,) in self._conn.execute(sql.SELECT_QUEUES).fetchall()]

    @_read("list the queues with work")
    def queues_with_work(self) -> list[str]:
        return [queue for (queue,) in self._conn.execute(sql.SELECT_QUEUES_WITH_WORK).fetchall()]

    def probe_write(self) -> None:
        """Take the write lock (retried up to ``busy_timeout_s``), run a write that changes
        nothing, and roll back; then check that the file system holding the database has
        room left (a rolled-back write never reaches the disk). ``StorageError`` naming
        the problem."""
        self._check_open()
        if self._in_batch:
            raise RuntimeError("probe_write() cannot run inside a batch")
        conn = self._conn

        def probe() -> None:
            conn.execute(BEGIN_IMMEDIATE)
            try:
                conn.execute(sql.PROBE_WRITE)
            finally:
                self._rollback_quietly()

        self._retrying("test a write", probe)
        if self._identity is None:  # in memory: no file system
            return
        try:
            stats = os.statvfs(os.path.dirname(self._name))
        except (OSError, AttributeError):  # no statvfs (Windows): the write test is all
            return
        if stats.f_bavail == 0:
            raise StorageError(
                f"the disk holding {self._name} is full (no block left for this user): "
                "workers cannot commit; free some space (or prune finished jobs)",
                transient=True,
            )

    @_read("list paused queues")
    def paused_queues(self) -> set[str]:
        return {name for (name,) in self._conn.execute(sql.SELECT_PAUSED).fetchall()}

    @_read("read a job's log")
    def logs(self, job_id: int, *, limit: int = 100, offset: int = 0) -> list[LogEntry]:
        _check_page(limit, offset)
        rows = self._conn.execute(sql.SELECT_LOGS, (job_id, limit, offset)).fetchall()
        return [
            LogEntry(job_id=job, at_ms=at_ms, attempt=attempt, message=message)
            for job, at_ms, attempt, message in rows
        ]

    @_read("list owners")
    def list_owners(self) -> list[Owner]:
        owners = (record.owner() for record in self._owner_records())
        return [owner for owner in owners if owner is not None]

    # --- reads that survive corrupt rows (for display: rota info, rota jobs) --------------

    @_read("list owner rows")
    def owner_records(self) -> list[OwnerRecord]:
        return self._owner_records()

    def _owner_records(self) -> list[OwnerRecord]:
        """Every owner row, read column by column: one rota cannot read is reported (a
        warning naming the owner and the column) and read as None, never raised."""
        records = []
        for row in self._conn.execute(sql.LIST_OWNERS).fetchall():
            (id_, *values), problems = _read_row(_OWNER_READERS, row)
            record = OwnerRecord(
                id=id_ if "id" not in problems else _as_text(row[0]),
                host=values[0],
                pid=values[1],
                started_at_ms=values[2],
                heartbeat_at_ms=values[3],
                queues=values[4],
                pools=values[5],
                doorbell=values[6],
                corrupt=tuple(problems),
            )
            if problems:
                _report_owner(record.id, problems)
            records.append(record)
        return records

    @_read("list job summaries")
    def list_summaries(
        self,
        *,
        queue: str | None = None,
        state: JobState | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[JobSummary]:
        _check_page(limit, offset)
        conn = self._conn
        if state is None:
            if queue is None:
                rows = conn.execute(sql.LIST_SUMMARIES, (limit, offset))
            else:
                rows = conn.execute(sql.LIST_SUMMARIES_IN_QUEUE, (queue, limit, offset))
        elif queue is None:
            rows = conn.execute(sql.LIST_SUMMARIES_IN_STATE, (JobState(state).value, limit, offset))
        else:
            rows = conn.execute(
                sql.LIST_SUMMARIES_IN_QUEUE_AND_STATE,
                (queue, JobState(state).value, limit, offset),
            )
        return [_summary(row) for row in rows.fetchall()]

    @_read("list jobs in an unknown state")
    def unknown_states(self, limit: int = 20) -> tuple[int, list[JobSummary]]:
        _check_page(limit, 0)
        rows = self._conn.execute(sql.SELECT_UNKNOWN_STATES, (max(limit, 1),)).fetchall()
        total = rows[0][-1] if rows else 0
        return total, [_summary(row[:-1]) for row in rows[:limit]]

    @_read("read a job's row")
    def job_record(self, job_id: int) -> JobRecord:
        row = self._conn.execute(sql.SELECT_JOB, (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        _, problems = _read_row(_JOB_READERS, row)
        return JobRecord(
            columns=dict(zip(_JOB_COLUMN_NAMES, row, strict=True)), corrupt=tuple(problems)
        )

    @classmethod
    def open_existing(cls, path: str | os.PathLike[str], **options: Any) -> SqliteEngine:
        """An engine on the rota database at ``path``, which must exist: never creates
        one, so that a mistyped path in a tool that reads or manages a database (the CLI)
        is an error, not a new empty database. ``StorageError`` for no file, a directory,
        or a file that holds no rota database (an empty or foreign file is left exactly as
        it was: it is probed read-only). A database of an older rota schema is migrated,
        as a worker starting on it would. ``options`` are ``SqliteEngine``'s."""
        name = os.fspath(path)
        if name in (":memory:", ""):
            raise StorageError(
                f"{name!r} is a private, empty database: there is nothing to read in it; "
                f"give the database file the workers use"
            )
        where = os.path.abspath(name)
        if os.path.isdir(where):
            raise StorageError(f"{where} is a directory, not a database file")
        if not os.path.exists(where):
            raise StorageError(
                f"no database at {where} (is the path right? `rota worker` creates it; "
                f"this command does not)"
            )
        _probe_rota_database(where)
        engine = cls(name, **options)
        try:
            engine.migrate()
        except BaseException:
            engine.close()
            raise
        return engine


# --- reading rows column by column (the reads that survive corrupt rows) ---------------

#: Reads one stored value: returns it as rota uses it, or raises if rota cannot read it.
_Reader = Callable[[Any], Any]


def _int(value: Any) -> int:
    if type(value) is not int:
        raise ValueError(f"not an integer: {value!r}")
    return value


def _text(value: Any) -> str:
    if type(value) is not str:
        raise ValueError(f"not text: {value!r}")
    return value


def _or_null(read: _Reader) -> _Reader:
    return lambda value: None if value is None else read(value)


def _state(value: Any) -> str:
    text = _text(value)
    if text not in _STATES:
        raise ValueError(f"not a job state: {value!r}")
    return text


def _pid(value: Any) -> int:
    if not possible_pid(value):
        raise ValueError(f"not a process id: {value!r}")
    return int(value)


def _flag(value: Any) -> int:
    number = _int(value)
    if number not in (0, 1):
        raise ValueError(f"not 0 or 1: {value!r}")
    return number


def _json(value: Any) -> Any:
    return _JSON_VALUE.decode(value)  # validates; what it decodes to is not used


def _as_text(value: Any) -> str:
    """Any stored value as text, to show it (bytes decoded, invalid UTF-8 replaced)."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


_JSON_VALUE: Final = msgspec.json.Decoder(msgspec.Raw)

#: Readers of a LIST_OWNERS row, in column order.
_OWNER_READERS: Final[tuple[tuple[str, _Reader], ...]] = (
    ("id", _text),
    ("host", _text),
    ("pid", _pid),
    ("started_at_ms", _int),
    ("heartbeat_at_ms", _int),
    ("queues", _QUEUE_NAMES.decode),
    ("pools", _pools),
    ("doorbell", _or_null(_text)),
)

#: Readers of a JOB_COLUMNS row, in column order: what _job() needs of each column.
_JOB_READERS: Final[tuple[tuple[str, _Reader], ...]] = (
    ("id", _int),
    ("key", _or_null(_text)),
    ("name", _text),
    ("queue", _text),
    ("state", _state),
    ("priority", _int),
    ("run_at_ms", _int),
    ("payload", _json),
    ("attempt", _int),
    ("max_attempts", _int),
    ("stalls", _int),
    ("max_stalls", _int),
    ("backoff", _backoff),
    ("timeout_ms", _or_null(_int)),
    ("owner", _or_null(_text)),
    ("token", _or_null(_int)),
    ("lease_expires_at_ms", _or_null(_int)),
    ("cancel_requested", _flag),
    ("created_at_ms", _int),
    ("finished_at_ms", _or_null(_int)),
    ("result", _or_null(_json)),
    ("error", _or_null(_text)),
    ("progress", _or_null(_json)),
)
_JOB_COLUMN_NAMES: Final = tuple(name for name, _ in _JOB_READERS)

#: Readers of a SUMMARY_COLUMNS row, in column order (the state is kept as text: _summary).
_SUMMARY_READERS: Final[tuple[tuple[str, _Reader], ...]] = (
    ("id", _int),
    ("name", _text),
    ("queue", _text),
    ("state", _state),
    ("attempt", _int),
    ("max_attempts", _int),
    ("priority", _int),
    ("error", _or_null(_text)),
)


def _read_row(
    readers: Sequence[tuple[str, _Reader]], row: Sequence[Any]
) -> tuple[list[Any], dict[str, str]]:
    """Each column read by its reader; one that fails reads as None, and its name and
    why are in the second value (in column order)."""
    values: list[Any] = []
    problems: dict[str, str] = {}
    for (name, read), value in zip(readers, row, strict=True):
        try:
            values.append(read(value))
        except Exception as exc:  # a reader's only failure: the value is unreadable
            values.append(None)
            problems[name] = str(exc) or type(exc).__name__
    return values, problems


def _summary(row: Sequence[Any]) -> JobSummary:
    values, problems = _read_row(_SUMMARY_READERS, row)
    id_, name, queue, _, attempt, max_attempts, priority, error = values
    state = row[3]
    return JobSummary(
        id=id_,
        name=name,
        queue=queue,
        state=state if type(state) is str else None,  # an unknown state is shown as stored
        attempt=attempt,
        max_attempts=max_attempts,
        priority=priority,
        error=error,
        corrupt=tuple(problems),
    )


def _report_owner(owner_id: str, problems: dict[str, str]) -> None:
    why = "; ".join(f"column {column}: {problem}" for column, problem in problems.items())
    if OPTIONAL_OWNER_COLUMNS.issuperset(problems):
        what = " and ".join(problems)
        log.warning("owner %r: %s unreadable, read as none (%s)", owner_id, what, why)
    else:
        log.warning("owner %r ignored (%s): its leases expire as anyone's", owner_id, why)


def _probe_rota_database(where: str) -> None:
    """Raise ``StorageError`` unless the existing file ``where`` holds a rota database,
    reading it through a read-only connection (so nothing is written to a file that is
    not one, not even the WAL mode)."""
    try:
        probe = sqlite3.connect(f"{Path(where).as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            application_id = probe.execute(sql.SELECT_APPLICATION_ID).fetchone()[0]
            has_meta = probe.execute(sql.SELECT_META_TABLE_EXISTS).fetchone()[0]
        finally:
            probe.close()
    except sqlite3.Error as exc:
        raise StorageError(
            f"database file {where} is corrupt or is not a rota (SQLite) database "
            f"({type(exc).__name__}: {exc}); point rota at the database file a worker uses"
        ) from exc
    if application_id != sql.APPLICATION_ID or not has_meta:
        raise StorageError(
            f"{where} is not a rota database (it holds no rota schema; left as it was); "
            f"point rota at the database file a worker uses"
        )


def _log_failed_for_good(
    job_id: int, name: object, queue: object, attempt: object, error: str
) -> None:
    """The log line of a job failed for good here, in the engine (a corrupt row): its
    worker never ran it, or cannot settle it, so nobody else reports it."""
    if job_log.isEnabledFor(logging.WARNING):
        line = attempt_ended(
            job_id=job_id,
            name=name,
            queue=queue,
            attempt=attempt,
            max_attempts=None,
            outcome="failed",
            error=error,
        )
        message = line.message if line.traceback is None else f"{line.message}\n{line.traceback}"
        job_log.warning(message, extra=line.fields)

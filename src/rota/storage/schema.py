"""The SQL of the SQLite engine: the schema as numbered migrations, and every statement.

Each statement is a constant with a header: its inputs (in parameter order), its effect,
its output and the invariant it keeps. The engine (``sqlite.py``) holds the logic around
them: transactions, retries, error mapping and the lifecycle rules.

A migration is ``(version, description, statements)``; ``MIGRATIONS`` lists them in order,
and the engine applies each pending one in its own ``BEGIN IMMEDIATE`` transaction, so two
processes that start together cannot both apply it, and a crash mid-way leaves the
database at the previous version (SQLite DDL is transactional). Never edit a migration
that has shipped: add the next one.

The version in force is the ``schema_version`` row of ``rota_meta``; a database whose
version is newer than ``SCHEMA_VERSION`` was written by a newer rota and is refused. The
file header's ``application_id`` is set to ``APPLICATION_ID`` (ASCII "rota") so that a
SQLite file belonging to another program is recognised and refused, not migrated.

Which query each index serves and why it is shaped so, what each schema version added,
and how job and event ids are assigned: docs/internals.md, "The schema".
"""

from __future__ import annotations

from typing import Final, NamedTuple

from rota.storage.engine import ERROR_TAIL

__all__ = [
    "APPLICATION_ID",
    "CLAIM_JOBS",
    "COMPLETE_JOB",
    "COMPLETE_JOBS",
    "COUNT_JOBS",
    "COUNT_JOBS_IN_QUEUE",
    "DELETE_OWNER",
    "EVENT_COLUMNS",
    "HEARTBEAT_OWNER",
    "HEARTBEAT_OWNER_POOLS",
    "INSERT_ENQUEUED_EVENTS",
    "INSERT_EVENT",
    "INSERT_JOB_EVENTS",
    "INSERT_JOB",
    "INSERT_JOBS_SHARED",
    "INSERT_LOG",
    "JOB_COLUMNS",
    "LAST_EVENT_ID",
    "LIST_JOBS",
    "LIST_JOBS_IN_QUEUE",
    "LIST_JOBS_IN_QUEUE_AND_STATE",
    "LIST_JOBS_IN_STATE",
    "LIST_DOORBELLS",
    "LIST_OWNERS",
    "LIST_SUMMARIES",
    "LIST_SUMMARIES_IN_QUEUE",
    "LIST_SUMMARIES_IN_QUEUE_AND_STATE",
    "LIST_SUMMARIES_IN_STATE",
    "MIGRATIONS",
    "NEXT_JOB_ID",
    "PROMOTE_DUE",
    "PROMOTE_DUE_IN_QUEUE",
    "PROBE_WRITE",
    "PROMOTE_JOB",
    "PRUNE_EVENTS",
    "PRUNE_JOBS",
    "PURGE_QUEUE",
    "RAISE_ID_FLOOR",
    "REMOVE_JOB",
    "RENEW_LEASES",
    "SCHEMA_VERSION",
    "SELECT_APPLICATION_ID",
    "SELECT_CANCEL_REQUESTED",
    "SELECT_DATA_VERSION",
    "SELECT_EVENTS",
    "SELECT_EVENTS_IN_QUEUE",
    "SELECT_EXPIRED",
    "SELECT_HELD_JOB",
    "SELECT_ID_BY_KEY",
    "SELECT_JOB",
    "SELECT_JOB_BY_KEY",
    "SELECT_LOGS",
    "SELECT_META_TABLE_EXISTS",
    "SELECT_NEXT_DUE",
    "SELECT_OWNED",
    "SELECT_PAUSED",
    "SELECT_QUEUES",
    "SELECT_QUEUES_WITH_WORK",
    "SELECT_RETRYABLE",
    "SELECT_SCHEMA_VERSION",
    "SELECT_STATE",
    "SELECT_UNKNOWN_STATES",
    "SET_PAUSED",
    "SET_PROGRESS",
    "SET_SCHEMA_VERSION",
    "SUMMARY_COLUMNS",
    "UPSERT_OWNER",
    "WRITE_TRANSITION",
    "Migration",
]


class Migration(NamedTuple):
    """One step of the schema: applied once, in one transaction, in version order."""

    version: int
    description: str
    statements: tuple[str, ...]


#: "rota" in ASCII, stored in the SQLite header (PRAGMA application_id).
APPLICATION_ID: Final = 0x726F7461

# --- reading the version -----------------------------------------------------------------

# In: nothing. Out: one row, the file header's application id (0 for a new file).
# Keeps: a file that belongs to another program is refused before anything is written.
SELECT_APPLICATION_ID: Final = "PRAGMA application_id"

# In: nothing. Out: one row, 1 if rota_meta exists, else 0 (a database never migrated).
SELECT_META_TABLE_EXISTS: Final = (
    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'rota_meta'"
)

# In: nothing. Out: zero or one row, the schema version in force.
SELECT_SCHEMA_VERSION: Final = "SELECT value FROM rota_meta WHERE key = 'schema_version'"

# In: the version just applied. Effect: records it (insert or replace), in the same
# transaction as the migration's statements. Keeps: version and schema change together.
SET_SCHEMA_VERSION: Final = (
    "INSERT INTO rota_meta (key, value) VALUES ('schema_version', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)

# --- migration 1 -------------------------------------------------------------------------

_CREATE_META: Final = """
CREATE TABLE rota_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID
"""

_SEED_META: Final = "INSERT INTO rota_meta (key, value) VALUES ('id_floor', 0)"

# Columns mirror rota.domain.job.Job. Times are epoch milliseconds; cancel_requested is
# 0/1; backoff is the stored policy as JSON text (rota.domain.backoff.encode_backoff).
_CREATE_JOBS: Final = """
CREATE TABLE rota_jobs (
    id                  INTEGER PRIMARY KEY,
    key                 TEXT,
    name                TEXT NOT NULL,
    queue               TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN
                            ('waiting', 'delayed', 'active', 'completed', 'failed', 'cancelled')),
    priority            INTEGER NOT NULL,
    run_at_ms           INTEGER NOT NULL,
    payload             BLOB NOT NULL,
    attempt             INTEGER NOT NULL DEFAULT 0,
    max_attempts        INTEGER NOT NULL,
    stalls              INTEGER NOT NULL DEFAULT 0,
    max_stalls          INTEGER NOT NULL,
    backoff             TEXT NOT NULL,
    timeout_ms          INTEGER,
    owner               TEXT,
    token               INTEGER,
    lease_expires_at_ms INTEGER,
    cancel_requested    INTEGER NOT NULL DEFAULT 0,
    created_at_ms       INTEGER NOT NULL,
    finished_at_ms      INTEGER,
    result              BLOB,
    error               TEXT
)
"""

_INDEXES_1: Final = (
    "CREATE UNIQUE INDEX rota_jobs_key ON rota_jobs (key) WHERE key IS NOT NULL",
    "CREATE INDEX rota_jobs_ready ON rota_jobs (queue, priority, run_at_ms) "
    "WHERE state = 'waiting'",
    "CREATE INDEX rota_jobs_due_in_queue ON rota_jobs (queue, run_at_ms) WHERE state = 'delayed'",
    "CREATE INDEX rota_jobs_due ON rota_jobs (run_at_ms) WHERE state = 'delayed'",
    "CREATE INDEX rota_jobs_leases ON rota_jobs (lease_expires_at_ms, owner) "
    "WHERE state = 'active'",
    "CREATE INDEX rota_jobs_finished ON rota_jobs (queue, state, finished_at_ms) "
    "WHERE finished_at_ms IS NOT NULL",
)

# --- migration 2: runtime support ---------------------------------------------------------

# The last progress a handler reported (JSON of rota.domain.event.Progress); NULL before
# any. Existing rows read NULL (ADD COLUMN with no default rewrites nothing).
_ADD_PROGRESS: Final = "ALTER TABLE rota_jobs ADD COLUMN progress BLOB"

# The runtimes that hold leases (rota.domain.event.Owner); queues is a JSON array of names.
_CREATE_OWNERS: Final = """
CREATE TABLE rota_owners (
    id              TEXT PRIMARY KEY,
    host            TEXT NOT NULL,
    pid             INTEGER NOT NULL,
    started_at_ms   INTEGER NOT NULL,
    heartbeat_at_ms INTEGER NOT NULL,
    queues          TEXT NOT NULL
) WITHOUT ROWID
"""

# Queues with a persisted setting; a queue without a row is not paused.
_CREATE_QUEUES: Final = """
CREATE TABLE rota_queues (
    name   TEXT PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID
"""

# A running job's log lines (rota.domain.event.LogEntry), in id order. ON DELETE CASCADE
# (foreign keys are on in every rota connection): deleting a job (prune, remove, purge)
# deletes its lines in the same statement, through rota_logs_job. The parent key is the
# jobs' rowid and never changes, so claims and settlements pay nothing for it.
_CREATE_LOGS: Final = """
CREATE TABLE rota_logs (
    id      INTEGER PRIMARY KEY,
    job_id  INTEGER NOT NULL REFERENCES rota_jobs (id) ON DELETE CASCADE,
    at_ms   INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    message TEXT NOT NULL
)
"""

# The event stream (rota.domain.event.Event): one row per transition, written in the
# transaction of the change. kind is an EventKind value; data its payload (error text as
# UTF-8, or the progress JSON). No CHECK on kind and no foreign key: events outlive jobs.
_CREATE_EVENTS: Final = """
CREATE TABLE rota_events (
    id      INTEGER PRIMARY KEY,
    at_ms   INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    job_id  INTEGER NOT NULL,
    queue   TEXT NOT NULL,
    name    TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    data    BLOB
)
"""

_INDEXES_2: Final = ("CREATE INDEX rota_logs_job ON rota_logs (job_id)",)

# --- migration 3: execution pools ---------------------------------------------------------

# An owner's execution pools as of its last report (JSON object: queue name -> concurrency,
# running, threads and processes figures; see rota.domain.event.Owner.pools); NULL until
# first reported. Existing owners read NULL (ADD COLUMN with no default rewrites nothing).
# In no index: a heartbeat writes the row only.
_ADD_OWNER_POOLS: Final = "ALTER TABLE rota_owners ADD COLUMN pools BLOB"

# --- migration 4: doorbells ---------------------------------------------------------------

# Where a runtime's doorbell is (rota.storage.feed: "@name" for Linux's abstract namespace,
# else a socket file's path); NULL: none (rota before version 4, or no socket could be
# bound). Existing owners read NULL. In no index: read with the owners of one host.
_ADD_OWNER_DOORBELL: Final = "ALTER TABLE rota_owners ADD COLUMN doorbell TEXT"

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "jobs table, its indexes, and the meta table",
        (
            f"PRAGMA application_id = {APPLICATION_ID}",
            _CREATE_META,
            _SEED_META,
            _CREATE_JOBS,
            *_INDEXES_1,
        ),
    ),
    Migration(
        2,
        "runtime support: job progress, owners, paused queues, logs and events",
        (
            _ADD_PROGRESS,
            _CREATE_OWNERS,
            _CREATE_QUEUES,
            _CREATE_LOGS,
            _CREATE_EVENTS,
            *_INDEXES_2,
        ),
    ),
    Migration(3, "owners' execution pools", (_ADD_OWNER_POOLS,)),
    Migration(4, "owners' doorbells", (_ADD_OWNER_DOORBELL,)),
)

#: The newest version this code knows.
SCHEMA_VERSION: Final = MIGRATIONS[-1].version

# --- statements on jobs ----------------------------------------------------------------

# The column order every job read returns; _job() decodes it.
JOB_COLUMNS: Final = (
    "id, key, name, queue, state, priority, run_at_ms, payload, attempt, max_attempts, "
    "stalls, max_stalls, backoff, timeout_ms, owner, token, lease_expires_at_ms, "
    "cancel_requested, created_at_ms, finished_at_ms, result, error, progress"
)

# In: nothing. Out: the next free job id: above every id stored and every id ever pruned
# (rota_meta.id_floor). Keeps: ids increase and are never reused.
NEXT_JOB_ID: Final = (
    "SELECT max(coalesce((SELECT max(id) FROM rota_jobs), 0), "
    "(SELECT value FROM rota_meta WHERE key = 'id_floor')) + 1"
)

# In: id, key, name, queue, state ('waiting' | 'delayed'), priority, run_at_ms, payload,
# max_attempts, max_stalls, backoff JSON, timeout_ms, created_at_ms.
# Effect: stores a new job, unless one with the same key exists (then nothing; rowcount 0).
# Keeps: at most one job per key (idempotent enqueue).
INSERT_JOB: Final = (
    "INSERT INTO rota_jobs (id, key, name, queue, state, priority, run_at_ms, payload, "
    "max_attempts, max_stalls, backoff, timeout_ms, created_at_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING"
)

# In: JSON array of [id, payload (the stored bytes as a JSON string, UTF-8), run_at_ms],
# then name, queue, state, priority, max_attempts, max_stalls, backoff, timeout_ms,
# created_at_ms shared by every row. Effect: INSERT_JOB for each (keyless jobs: no
# conflict possible), in one statement: a batch of one job type binds 10 parameters, not
# 13 per job (about twice as fast as executemany of INSERT_JOB for 1,000 jobs). Keeps:
# rows are inserted in array order, payloads byte for byte as BLOBs.
INSERT_JOBS_SHARED: Final = (
    "INSERT INTO rota_jobs (id, name, queue, state, priority, run_at_ms, payload, "
    "max_attempts, max_stalls, backoff, timeout_ms, created_at_ms) "
    "SELECT j.value ->> 0, ?2, ?3, ?4, ?5, j.value ->> 2, CAST(j.value ->> 1 AS BLOB), "
    "?6, ?7, ?8, ?9, ?10 FROM json_each(?1) AS j"
)

# In: key. Out: zero or one row, the id of the job holding that key.
SELECT_ID_BY_KEY: Final = "SELECT id FROM rota_jobs WHERE key = ?"

# In: queue, now. Effect: delayed jobs of that queue due by now become waiting (run_at_ms
# kept, so they queue by their due time). Out: rowcount. Uses rota_jobs_due_in_queue: a
# single seek when nothing is due.
PROMOTE_DUE_IN_QUEUE: Final = (
    "UPDATE rota_jobs SET state = 'waiting' "
    "WHERE state = 'delayed' AND queue = ? AND run_at_ms <= ?"
)

# In: now. Effect and output: as PROMOTE_DUE_IN_QUEUE, for every queue (rota_jobs_due).
PROMOTE_DUE: Final = (
    "UPDATE rota_jobs SET state = 'waiting' WHERE state = 'delayed' AND run_at_ms <= ?"
)

# In: queue. Out: zero or one row, the due time (run_at_ms) of the queue's next delayed
# job (asked after a claim that came up short, so the pool can wait for it rather than for
# the Scheduler). Reads the first entry of rota_jobs_due_in_queue for the queue: one seek.
SELECT_NEXT_DUE: Final = (
    "SELECT run_at_ms FROM rota_jobs WHERE state = 'delayed' AND queue = ? "
    "ORDER BY run_at_ms LIMIT 1"
)

# In: owner (?1), lease expiry (now + ttl, ?2), queue (?3), n (?4). Effect: unless the
# queue is paused, the first n waiting jobs of the queue in (priority, run_at_ms, id)
# order become active: attempt + 1, a fresh random positive 63-bit token (never 0), the
# owner and the expiry. Out: the claimed rows, in no particular order (RETURNING does not
# keep the subquery's). Keeps: the subquery reads only rota_jobs_ready, in its order: cost
# is n, not the backlog; a job is claimed once; a paused queue (a rota_queues row, read
# in this transaction, so a pause committed by any process holds) yields nothing. The
# pause guard does not depend on the row, so SQLite evaluates it once, before the loop:
# one primary-key seek per claim.
CLAIM_JOBS: Final = (
    "UPDATE rota_jobs SET state = 'active', attempt = attempt + 1, owner = ?1, "
    "token = max(random() & 0x7FFFFFFFFFFFFFFF, 1), lease_expires_at_ms = ?2 "
    "WHERE id IN (SELECT id FROM rota_jobs WHERE state = 'waiting' AND queue = ?3 "
    "AND NOT EXISTS (SELECT 1 FROM rota_queues WHERE name = ?3 AND paused) "
    "ORDER BY priority, run_at_ms, id LIMIT ?4) "
    f"RETURNING {JOB_COLUMNS}"
)

# In: new expiry, JSON array of [job_id, token] pairs. Effect: extends each lease that is
# still active under that token. Out: the renewed ids and their cancel_requested flag.
# Keeps: a stale token matches no row, changes nothing, and is reported lost.
RENEW_LEASES: Final = (
    "UPDATE rota_jobs SET lease_expires_at_ms = ? "
    "FROM (SELECT json_extract(value, '$[0]') AS held_id, "
    "json_extract(value, '$[1]') AS held_token FROM json_each(?)) AS held "
    "WHERE rota_jobs.id = held.held_id AND rota_jobs.token = held.held_token "
    "AND rota_jobs.state = 'active' "
    "RETURNING id, cancel_requested"
)

# In: JSON array of [job_id, token] pairs. Out: the ids of those jobs still active under
# that token whose cancel was requested. A read: json_each drives the loop, one primary-key
# seek per pair (the pool's leases: a handful), nothing written. Keeps: a stale token (a
# lease lost, or a later attempt) never reports a cancel to the wrong attempt.
SELECT_CANCEL_REQUESTED: Final = (
    "SELECT j.id FROM json_each(?) AS held CROSS JOIN rota_jobs AS j "
    "ON j.id = held.value ->> 0 "
    "WHERE j.token = held.value ->> 1 AND j.state = 'active' AND j.cancel_requested"
)

# In: now, result, job id, token. Effect: the attempt completes: completed, finished now,
# lease and error cleared. Out: rowcount 1, or 0 if the token does not hold the lease
# (then nothing changed → LeaseLost). Same effect as lifecycle.complete.
COMPLETE_JOB: Final = (
    "UPDATE rota_jobs SET state = 'completed', finished_at_ms = ?, result = ?, error = NULL, "
    "owner = NULL, token = NULL, lease_expires_at_ms = NULL, cancel_requested = 0 "
    "WHERE id = ? AND token = ? AND state = 'active'"
)

# In: now, JSON array of [job id, token, result] (result: the stored bytes as a JSON
# string, UTF-8, or null). Effect: COMPLETE_JOB for each, in one statement: the per-row
# work runs inside SQLite (no Python call, no parameter binding per job; about 40% less
# time than executemany of COMPLETE_JOB in the drain). Out: rowcount, the jobs completed;
# fewer than given means some token no longer held its lease (the caller then finds which).
# Keeps: a stale token or a duplicate id matches no row (or one), never a wrong one.
COMPLETE_JOBS: Final = (
    "UPDATE rota_jobs SET state = 'completed', finished_at_ms = ?1, "
    "result = CAST(c.value ->> 2 AS BLOB), error = NULL, owner = NULL, token = NULL, "
    "lease_expires_at_ms = NULL, cancel_requested = 0 "
    "FROM json_each(?2) AS c "
    "WHERE rota_jobs.id = c.value ->> 0 AND rota_jobs.token = c.value ->> 1 "
    "AND rota_jobs.state = 'active'"
)

# In: job id, token. Out: the job, if the token holds its lease; else no row (LeaseLost).
SELECT_HELD_JOB: Final = (
    f"SELECT {JOB_COLUMNS} FROM rota_jobs WHERE id = ? AND token = ? AND state = 'active'"
)

# In: job id. Out: zero or one job.
SELECT_JOB: Final = f"SELECT {JOB_COLUMNS} FROM rota_jobs WHERE id = ?"

# In: key. Out: zero or one job (rota_jobs_key).
SELECT_JOB_BY_KEY: Final = f"SELECT {JOB_COLUMNS} FROM rota_jobs WHERE key = ?"

# In: now. Out: every active job whose lease expired by now, in no particular order (an
# ORDER BY id here makes the planner scan the whole table in id order instead of
# searching rota_jobs_leases; the engine sorts the few rows itself).
SELECT_EXPIRED: Final = (
    f"SELECT {JOB_COLUMNS} FROM rota_jobs WHERE state = 'active' AND lease_expires_at_ms <= ?"
)

# In: owner. Out: every job that owner holds, in no particular order. INDEXED BY: the
# planner cannot know the partial index is small and would rather scan the table.
SELECT_OWNED: Final = (
    f"SELECT {JOB_COLUMNS} FROM rota_jobs INDEXED BY rota_jobs_leases "
    "WHERE state = 'active' AND owner = ?"
)

# In: now, error, a replacement backoff (or NULL: keep it), job id. Effect: a row that
# cannot be read back as a job (a corrupt column) or whose outcome cannot be applied is
# failed for good: no lease, no retry, the error names the row and the column (a corrupt
# backoff is replaced, so the row can be read, shown and retried). Out: the job's queue,
# name and attempt (for its FAILED event), or no row. Keeps: written without reading the
# corrupt column, so one bad row never stops a claim or a sweep; it is not claimed again.
QUARANTINE_JOB: Final = (
    "UPDATE rota_jobs SET state = 'failed', finished_at_ms = ?, error = ?, "
    "backoff = coalesce(?, backoff), owner = NULL, token = NULL, lease_expires_at_ms = NULL, "
    "cancel_requested = 0 WHERE id = ? RETURNING queue, name, attempt"
)

# In: now. Effect: every job in a state rota does not know (a foreign writer that
# bypassed the CHECK, a damaged page) is failed for good, its error naming the row and the
# column. Out: id, queue, name, attempt and error of each (for their FAILED events). A
# full scan (no index serves "not one of these"): run by the retention pass, not per claim.
QUARANTINE_UNKNOWN_STATES: Final = (
    "UPDATE rota_jobs SET state = 'failed', finished_at_ms = ?1, "
    "error = 'corrupt row: job ' || id || ', column ''state'': ' || quote(state) || "
    "' is not a job state', owner = NULL, token = NULL, lease_expires_at_ms = NULL, "
    "cancel_requested = 0 "
    "WHERE state NOT IN ('waiting', 'delayed', 'active', 'completed', 'failed', 'cancelled') "
    "RETURNING id, queue, name, attempt, error"
)

# In: the fields a lifecycle rule may change (state, run_at_ms, attempt, stalls, owner,
# token, lease_expires_at_ms, cancel_requested, finished_at_ms, result, error), then the
# job id, its state and token as read. Effect: writes the job a rule returned. Out:
# rowcount 1, or 0 if the row changed since it was read (then nothing is written).
# Keeps: a rule's result is applied only to the row it was computed from, so two
# rescuers (or a rescuer and a holder) never both apply a transition.
WRITE_TRANSITION: Final = (
    "UPDATE rota_jobs SET state = ?, run_at_ms = ?, attempt = ?, stalls = ?, owner = ?, "
    "token = ?, lease_expires_at_ms = ?, cancel_requested = ?, finished_at_ms = ?, "
    "result = ?, error = ? "
    "WHERE id = ? AND state = ? AND token IS ?"
)

# In: limit, offset (and the filters the name says, first). Out: a page of jobs in id order.
LIST_JOBS: Final = f"SELECT {JOB_COLUMNS} FROM rota_jobs ORDER BY id LIMIT ? OFFSET ?"
LIST_JOBS_IN_QUEUE: Final = (
    f"SELECT {JOB_COLUMNS} FROM rota_jobs WHERE queue = ? ORDER BY id LIMIT ? OFFSET ?"
)
LIST_JOBS_IN_STATE: Final = (
    f"SELECT {JOB_COLUMNS} FROM rota_jobs WHERE state = ? ORDER BY id LIMIT ? OFFSET ?"
)
LIST_JOBS_IN_QUEUE_AND_STATE: Final = (
    f"SELECT {JOB_COLUMNS} FROM rota_jobs WHERE queue = ? AND state = ? "
    "ORDER BY id LIMIT ? OFFSET ?"
)

# The columns a listing shows (rota.storage.engine.JobSummary, in field order): no payload,
# result or progress, and only the end of the error (its last ERROR_TAIL characters, where
# the last line is), so a page costs its rows, not their payloads.
SUMMARY_COLUMNS: Final = (
    f"id, name, queue, state, attempt, max_attempts, priority, substr(error, -{ERROR_TAIL})"
)

# In: limit, offset (and the filters the name says, first). Out: the page LIST_JOBS (of
# the same name) selects, as SUMMARY_COLUMNS.
LIST_SUMMARIES: Final = f"SELECT {SUMMARY_COLUMNS} FROM rota_jobs ORDER BY id LIMIT ? OFFSET ?"
LIST_SUMMARIES_IN_QUEUE: Final = (
    f"SELECT {SUMMARY_COLUMNS} FROM rota_jobs WHERE queue = ? ORDER BY id LIMIT ? OFFSET ?"
)
LIST_SUMMARIES_IN_STATE: Final = (
    f"SELECT {SUMMARY_COLUMNS} FROM rota_jobs WHERE state = ? ORDER BY id LIMIT ? OFFSET ?"
)
LIST_SUMMARIES_IN_QUEUE_AND_STATE: Final = (
    f"SELECT {SUMMARY_COLUMNS} FROM rota_jobs WHERE queue = ? AND state = ? "
    "ORDER BY id LIMIT ? OFFSET ?"
)

# In: limit (>= 1). Out: the first jobs in id order whose state is none of JobState's
# (written around the CHECK constraint: PRAGMA ignore_check_constraints, a damaged file),
# as SUMMARY_COLUMNS, each followed by how many such jobs there are in all. Such a job is
# in no partial index, so this scans the table (about 0.2 s per million jobs): for
# `rota info`, never on a hot path.
SELECT_UNKNOWN_STATES: Final = (
    f"SELECT {SUMMARY_COLUMNS}, count(*) OVER () FROM rota_jobs WHERE state IS NULL OR "
    "state NOT IN ('waiting', 'delayed', 'active', 'completed', 'failed', 'cancelled') "
    "ORDER BY id LIMIT ?"
)

# Out: (state, count) rows for the states that have jobs. Each arm counts over the
# partial index of its state, so no arm scans the table.
COUNT_JOBS: Final = (
    "SELECT 'waiting', count(*) FROM rota_jobs WHERE state = 'waiting' "
    "UNION ALL SELECT 'delayed', count(*) FROM rota_jobs WHERE state = 'delayed' "
    "UNION ALL SELECT 'active', count(*) FROM rota_jobs WHERE state = 'active' "
    "UNION ALL SELECT state, count(*) FROM rota_jobs WHERE finished_at_ms IS NOT NULL "
    "GROUP BY state"
)
# In: queue (?1). Out: as COUNT_JOBS, for one queue.
COUNT_JOBS_IN_QUEUE: Final = (
    "SELECT 'waiting', count(*) FROM rota_jobs WHERE state = 'waiting' AND queue = ?1 "
    "UNION ALL SELECT 'delayed', count(*) FROM rota_jobs WHERE state = 'delayed' "
    "AND queue = ?1 "
    "UNION ALL SELECT 'active', count(*) FROM rota_jobs WHERE state = 'active' AND queue = ?1 "
    "UNION ALL SELECT state, count(*) FROM rota_jobs WHERE finished_at_ms IS NOT NULL "
    "AND queue = ?1 GROUP BY state"
)

# Out: every queue that has jobs, sorted (UNION dedupes and sorts), read from the
# partial indexes rather than the table.
SELECT_QUEUES: Final = (
    "SELECT queue FROM rota_jobs WHERE state = 'waiting' "
    "UNION SELECT queue FROM rota_jobs WHERE state = 'delayed' "
    "UNION SELECT queue FROM rota_jobs WHERE state = 'active' "
    "UNION SELECT queue FROM rota_jobs WHERE finished_at_ms IS NOT NULL"
)

# Out: every queue that has unfinished jobs (waiting, delayed or active), sorted; each arm
# reads its state's partial index, never the finished jobs.
SELECT_QUEUES_WITH_WORK: Final = (
    "SELECT queue FROM rota_jobs WHERE state = 'waiting' "
    "UNION SELECT queue FROM rota_jobs WHERE state = 'delayed' "
    "UNION SELECT queue FROM rota_jobs WHERE state = 'active'"
)

# Effect: a write that changes no value (the id floor set to itself), run inside a
# transaction the engine rolls back: it needs the write lock and a writable file, and
# leaves the database as it was. Out: nothing.
PROBE_WRITE: Final = "UPDATE rota_meta SET value = value WHERE key = 'id_floor'"

# Effect: remembers the highest id stored before a prune, remove or purge may delete it.
# Keeps: ids are never reused (NEXT_JOB_ID starts above it).
RAISE_ID_FLOOR: Final = (
    "UPDATE rota_meta SET value = max(value, coalesce((SELECT max(id) FROM rota_jobs), 0)) "
    "WHERE key = 'id_floor'"
)

# In: :states (JSON array of finished states), :queue (or NULL for all), :cutoff (delete
# those finished before it, or NULL), :keep (keep the newest :keep per queue and state by
# finished time, or NULL). A job is deleted if it is in :states and :queue and either
# criterion given selects it; with neither given, every such job is; its log lines go
# with it (ON DELETE CASCADE). Out: rowcount (jobs only). Keeps: only finished jobs can
# go (the engine refuses other states before running it).
PRUNE_JOBS: Final = (
    "DELETE FROM rota_jobs WHERE id IN ("
    "SELECT id FROM (SELECT id, finished_at_ms, row_number() OVER ("
    "PARTITION BY queue, state ORDER BY finished_at_ms DESC, id DESC) AS newer "
    "FROM rota_jobs WHERE finished_at_ms IS NOT NULL "
    "AND state IN (SELECT value FROM json_each(:states)) "
    "AND (:queue IS NULL OR queue = :queue)) "
    "WHERE (:cutoff IS NULL AND :keep IS NULL) "
    "OR finished_at_ms < :cutoff OR newer > :keep)"
)

# --- statements of schema version 2: job control ----------------------------------------

# In: job id. Out: zero or one row, the job's state (to explain why a guarded write
# changed nothing: no such job, or the wrong state).
SELECT_STATE: Final = "SELECT state FROM rota_jobs WHERE id = ?"

# In: queue, limit. Out: the queue's failed and cancelled jobs (those retry_failed runs
# again), oldest (smallest id) first, at most limit. Reads rota_jobs_finished (one range
# per state), then sorts those rows: the dead-letter set, not the table.
SELECT_RETRYABLE: Final = (
    f"SELECT {JOB_COLUMNS} FROM rota_jobs WHERE finished_at_ms IS NOT NULL AND queue = ? "
    "AND state IN ('failed', 'cancelled') ORDER BY id LIMIT ?"
)

# In: now, job id. Effect: a delayed job becomes waiting, due now (or at its run_at_ms if
# that has passed already, so a due job keeps its place). Out: its queue (one row), or no
# row if the job is not delayed (or does not exist).
PROMOTE_JOB: Final = (
    "UPDATE rota_jobs SET state = 'waiting', run_at_ms = min(run_at_ms, ?) "
    "WHERE id = ? AND state = 'delayed' RETURNING queue"
)

# In: job id. Effect: deletes the job unless it is active, and its log lines (ON DELETE
# CASCADE). Out: rowcount 1, or 0 (active, or no such job). Keeps: a leased job is never
# deleted under its holder (cancel it first). Run after RAISE_ID_FLOOR.
REMOVE_JOB: Final = "DELETE FROM rota_jobs WHERE id = ? AND state != 'active'"

# In: queue. Effect: deletes the queue's waiting and delayed jobs, and their log lines (ON
# DELETE CASCADE). Out: rowcount. Each arm reads its state's partial index (rota_jobs_ready,
# rota_jobs_due_in_queue). Run after RAISE_ID_FLOOR.
PURGE_QUEUE: Final = (
    "DELETE FROM rota_jobs WHERE id IN ("
    "SELECT id FROM rota_jobs WHERE state = 'waiting' AND queue = ?1 "
    "UNION ALL SELECT id FROM rota_jobs WHERE state = 'delayed' AND queue = ?1)"
)

# In: progress (bytes), job id, token. Effect: stores the running job's progress. Out: the
# job's queue, name and attempt (for its PROGRESS event); no row if the token does not hold
# the lease (then nothing changed → LeaseLost). progress is in no index: no index write.
SET_PROGRESS: Final = (
    "UPDATE rota_jobs SET progress = ? WHERE id = ? AND token = ? AND state = 'active' "
    "RETURNING queue, name, attempt"
)

# In: now, message, job id, token. Effect: appends a log line to the running job, with its
# current attempt. Out: rowcount 1, or 0 if the token does not hold the lease (then
# nothing was written → LeaseLost).
INSERT_LOG: Final = (
    "INSERT INTO rota_logs (job_id, at_ms, attempt, message) "
    "SELECT id, ?, attempt, ? FROM rota_jobs WHERE id = ? AND token = ? AND state = 'active'"
)

# In: job id, limit, offset. Out: a page of the job's log lines, oldest first (id order
# is rota_logs_job's own order: no sort). A job without lines (or no job) gives none.
SELECT_LOGS: Final = (
    "SELECT job_id, at_ms, attempt, message FROM rota_logs WHERE job_id = ? "
    "ORDER BY id LIMIT ? OFFSET ?"
)

# --- paused queues ----------------------------------------------------------------------

# In: queue, paused (0/1). Effect: records whether the queue is paused (insert or update).
# Keeps: every claim that starts after the commit sees it, in every process.
SET_PAUSED: Final = (
    "INSERT INTO rota_queues (name, paused) VALUES (?, ?) "
    "ON CONFLICT (name) DO UPDATE SET paused = excluded.paused"
)

# Out: the names of the paused queues.
SELECT_PAUSED: Final = "SELECT name FROM rota_queues WHERE paused"

# --- owners -----------------------------------------------------------------------------

# In: id, host, pid, started_at_ms, heartbeat_at_ms, queues (JSON array), pools (JSON
# object or NULL), doorbell (or NULL). Effect: records the owner, replacing every field of
# an owner with the same id. Out: nothing.
UPSERT_OWNER: Final = (
    "INSERT INTO rota_owners "
    "(id, host, pid, started_at_ms, heartbeat_at_ms, queues, pools, doorbell) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET host = excluded.host, "
    "pid = excluded.pid, started_at_ms = excluded.started_at_ms, "
    "heartbeat_at_ms = excluded.heartbeat_at_ms, queues = excluded.queues, "
    "pools = excluded.pools, doorbell = excluded.doorbell"
)

# In: now, owner id. Effect: the owner's heartbeat is now (its pools stay as they were);
# an unknown owner: nothing.
HEARTBEAT_OWNER: Final = "UPDATE rota_owners SET heartbeat_at_ms = ? WHERE id = ?"

# In: now, pools (JSON object), owner id. Effect: the owner's heartbeat is now and its
# pools are these, in one write; an unknown owner: nothing.
HEARTBEAT_OWNER_POOLS: Final = "UPDATE rota_owners SET heartbeat_at_ms = ?, pools = ? WHERE id = ?"

# In: owner id. Effect: forgets the owner (nothing if unknown). Keeps: idempotent.
DELETE_OWNER: Final = "DELETE FROM rota_owners WHERE id = ?"

# Out: every owner, oldest first (by start time, then id), in Owner field order (pools:
# JSON or NULL; doorbell: text or NULL).
LIST_OWNERS: Final = (
    "SELECT id, host, pid, started_at_ms, heartbeat_at_ms, queues, pools, doorbell "
    "FROM rota_owners ORDER BY started_at_ms, id"
)

# In: host. Out: (queues as stored, doorbell) of that host's owners that have a doorbell,
# in no particular order: whom a writer on this host rings (rota.storage.feed.Ringer).
# Reads the owners' table only (a handful of rows).
LIST_DOORBELLS: Final = (
    "SELECT queues, doorbell FROM rota_owners WHERE host = ? AND doorbell IS NOT NULL"
)

# --- events -----------------------------------------------------------------------------

# The column order every event read returns, in Event field order; _event() decodes it.
EVENT_COLUMNS: Final = "id, at_ms, kind, job_id, queue, name, attempt, data"

# In: at_ms, kind, job id, queue, name, attempt, data. Effect: appends one event (its id:
# the largest + 1). Run with executemany: one call per operation, never one per job.
INSERT_EVENT: Final = (
    "INSERT INTO rota_events (at_ms, kind, job_id, queue, name, attempt, data) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)

# In: now, first id, end id (exclusive). Effect: one ENQUEUED event per job in that id
# range, in id order (an enqueue call's inserted jobs have consecutive ids: a duplicate
# key takes none). Out: rowcount. One statement per enqueue call; reads the rows just
# written (primary-key range), so no Python tuple per job.
INSERT_ENQUEUED_EVENTS: Final = (
    "INSERT INTO rota_events (at_ms, kind, job_id, queue, name, attempt) "
    "SELECT ?, 'enqueued', id, queue, name, attempt FROM rota_jobs "
    "WHERE id >= ? AND id < ? ORDER BY id"
)

# In: now, kind (an EventKind value), JSON array of job ids. Effect: one event of that
# kind per id, in the array's order, with the job's queue, name and attempt as stored now
# (so ACTIVE carries the attempt just started). Out: rowcount. One statement for a whole
# claim or batch of completions: measured faster than an executemany of rows built in
# Python (drain: 0.93 vs 0.86 of the throughput without events), and COMPLETE_JOB runs with
# executemany, which cannot RETURN the rows. Keeps: the order: CROSS JOIN makes json_each
# the outer loop, so rows come (and take their ids) in array order, with no sort (an ORDER
# BY here costs a temp b-tree, ~3% of the drain; a test checks the order holds).
INSERT_JOB_EVENTS: Final = (
    "INSERT INTO rota_events (at_ms, kind, job_id, queue, name, attempt) "
    "SELECT ?, ?, j.id, j.queue, j.name, j.attempt "
    "FROM json_each(?) AS ids CROSS JOIN rota_jobs AS j ON j.id = ids.value"
)

# In: after id, limit. Out: the events with a larger id, oldest first (a primary-key range).
SELECT_EVENTS: Final = f"SELECT {EVENT_COLUMNS} FROM rota_events WHERE id > ? ORDER BY id LIMIT ?"

# In: after id, queue, limit. Out: as SELECT_EVENTS, of one queue (scans the id range).
SELECT_EVENTS_IN_QUEUE: Final = (
    f"SELECT {EVENT_COLUMNS} FROM rota_events WHERE id > ? AND queue = ? ORDER BY id LIMIT ?"
)

# Out: one row, the newest event id, or 0 (the last entry of the rowid b-tree: no scan).
LAST_EVENT_ID: Final = "SELECT coalesce(max(id), 0) FROM rota_events"

# In: cutoff (?1). Effect: deletes the oldest events, up to (not including) the first one
# written at or after the cutoff, and never the newest event. Out: rowcount. Keeps: the
# largest id stays, so event ids are never reused; the deleted events are a prefix of the
# stream (ids grow with time, so this is "written before the cutoff"; an event that a
# process with a lagging clock stamped earlier than one before it waits for the next
# prune), found by walking the id order: cost is the events deleted, not the table.
PRUNE_EVENTS: Final = (
    "DELETE FROM rota_events WHERE id < coalesce("
    "(SELECT id FROM rota_events WHERE at_ms >= ?1 ORDER BY id LIMIT 1), "
    "(SELECT max(id) FROM rota_events))"
)

# Out: one row, a number that changes when another connection commits to the database
# (never for this connection's own commits). Reads no page: cheap to poll.
SELECT_DATA_VERSION: Final = "PRAGMA data_version"

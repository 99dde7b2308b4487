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

Indexes, and the query each one serves (all partial, so a row that is not in an index's
state costs that index nothing):

* ``rota_jobs_ready``: the claim, ``(queue, priority, run_at_ms[, id]) WHERE waiting``;
  its order is the claim order, so a claim reads exactly the rows it takes, whatever the
  backlog, and completed rows never slow it down. ``id`` is the rowid, which SQLite
  appends to every index entry: naming it as a column would store it twice (measured
  ~10% larger index) for the same order.
* ``rota_jobs_due_in_queue`` / ``rota_jobs_due``: promotion of due delayed jobs, of one
  queue (before each claim: a single seek when nothing is due) or of all (the Scheduler).
* ``rota_jobs_leases``: ``(lease_expires_at_ms, owner) WHERE active``: the rescue sweep
  seeks expired leases; ``release_owner`` scans it for an owner without touching the
  table. One index rather than one per column: every claim and settlement writes each
  index of active jobs, and the active set is small (the workers' slots), so a scan of
  it costs little (measured: a second index cost ~6% of drain throughput).
* ``rota_jobs_finished``: list / count / prune of finished jobs by queue, state and age.
  It is keyed on ``finished_at_ms IS NOT NULL`` (true exactly for the finished states)
  rather than on the state, because claims and requeues then never touch it.
* ``rota_jobs_key``: idempotent enqueue; keyless jobs (most) are not in it.

Ids are assigned by the engine, not by SQLite's rowid algorithm, so that they are never
reused even after the newest job is pruned (before each prune, ``rota_meta.id_floor``
records the highest id stored); this costs one read per enqueue call instead of
``AUTOINCREMENT``'s bookkeeping write per row (measured ~10% of enqueue throughput).
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = [
    "APPLICATION_ID",
    "CLAIM_JOBS",
    "COMPLETE_JOB",
    "COUNT_JOBS",
    "COUNT_JOBS_IN_QUEUE",
    "INSERT_JOB",
    "JOB_COLUMNS",
    "LIST_JOBS",
    "LIST_JOBS_IN_QUEUE",
    "LIST_JOBS_IN_QUEUE_AND_STATE",
    "LIST_JOBS_IN_STATE",
    "MIGRATIONS",
    "Migration",
    "NEXT_JOB_ID",
    "PROMOTE_DUE",
    "PROMOTE_DUE_IN_QUEUE",
    "PRUNE_JOBS",
    "RAISE_ID_FLOOR",
    "RENEW_LEASES",
    "SCHEMA_VERSION",
    "SELECT_APPLICATION_ID",
    "SELECT_EXPIRED",
    "SELECT_HELD_JOB",
    "SELECT_ID_BY_KEY",
    "SELECT_JOB",
    "SELECT_JOB_BY_KEY",
    "SELECT_META_TABLE_EXISTS",
    "SELECT_OWNED",
    "SELECT_QUEUES",
    "SELECT_SCHEMA_VERSION",
    "SET_SCHEMA_VERSION",
    "WRITE_TRANSITION",
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
)

#: The newest version this code knows.
SCHEMA_VERSION: Final = MIGRATIONS[-1].version

# --- statements on jobs ----------------------------------------------------------------

# The column order every job read returns; _job() decodes it.
JOB_COLUMNS: Final = (
    "id, key, name, queue, state, priority, run_at_ms, payload, attempt, max_attempts, "
    "stalls, max_stalls, backoff, timeout_ms, owner, token, lease_expires_at_ms, "
    "cancel_requested, created_at_ms, finished_at_ms, result, error"
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

# In: owner, lease expiry (now + ttl), queue, n. Effect: the first n waiting jobs of the
# queue in (priority, run_at_ms, id) order become active: attempt + 1, a fresh random
# positive 63-bit token (never 0), the owner and the expiry. Out: the claimed rows, in no
# particular order (RETURNING does not keep the subquery's). Keeps: the subquery reads
# only rota_jobs_ready, in its order: cost is n, not the backlog; a job is claimed once.
CLAIM_JOBS: Final = (
    "UPDATE rota_jobs SET state = 'active', attempt = attempt + 1, owner = ?, "
    "token = max(random() & 0x7FFFFFFFFFFFFFFF, 1), lease_expires_at_ms = ? "
    "WHERE id IN (SELECT id FROM rota_jobs WHERE state = 'waiting' AND queue = ? "
    "ORDER BY priority, run_at_ms, id LIMIT ?) "
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

# In: now, result, job id, token. Effect: the attempt completes: completed, finished now,
# lease and error cleared. Out: rowcount 1, or 0 if the token does not hold the lease
# (then nothing changed → LeaseLost). Same effect as lifecycle.complete.
COMPLETE_JOB: Final = (
    "UPDATE rota_jobs SET state = 'completed', finished_at_ms = ?, result = ?, error = NULL, "
    "owner = NULL, token = NULL, lease_expires_at_ms = NULL, cancel_requested = 0 "
    "WHERE id = ? AND token = ? AND state = 'active'"
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

# Effect: remembers the highest id stored before a prune may delete it. Keeps: ids are
# never reused (NEXT_JOB_ID starts above it).
RAISE_ID_FLOOR: Final = (
    "UPDATE rota_meta SET value = max(value, coalesce((SELECT max(id) FROM rota_jobs), 0)) "
    "WHERE key = 'id_floor'"
)

# In: :states (JSON array of finished states), :queue (or NULL for all), :cutoff (delete
# those finished before it, or NULL), :keep (keep the newest :keep per queue and state by
# finished time, or NULL). A job is deleted if it is in :states and :queue and either
# criterion given selects it; with neither given, every such job is. Out: rowcount.
# Keeps: only finished jobs can go (the engine refuses other states before running it).
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

"""The raw-SQLite limit: minimal stdlib ``sqlite3`` loops doing the work rota does, with no
framework (WAL; ``PRAGMA synchronous`` as the run says: FULL runs fsync every commit).

* ``enqueue_one``: one single-row ``INSERT`` per job in autocommit mode (SQLite's implicit
  transaction: a commit, and on FULL an fsync, per job) from 1 thread, or from N threads
  with a connection each (they queue on the write lock);
* ``enqueue_many``: ``executemany`` of 1,000 rows per ``BEGIN IMMEDIATE`` ... ``COMMIT``;
* ``drain``: over pre-inserted jobs, one transaction per step completes the previous 100
  (``UPDATE ... WHERE id = ? AND token = ?``) and claims the next 100
  (``UPDATE ... WHERE id IN (SELECT ... LIMIT 100) RETURNING``), decoding each payload
  with msgspec; completions are counted from the table at the end;
* ``claims``: the same step, timed over a fixed number of jobs with a given backlog.

The table is the smallest that can do this honestly: a ready-index partial on the waiting
state, a lease owner, a token (fencing) and an expiry. Run as a module it is the process
whose RSS the memory figure measures (``python -m benchmarks.raw worker DB SYNC``).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from pathlib import Path

import msgspec

from ._util import SYNC_MODES, payload_bytes, rate, raw_connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY, queue TEXT NOT NULL, state TEXT NOT NULL,
    priority INTEGER NOT NULL, run_at_ms INTEGER NOT NULL, payload BLOB NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0, owner TEXT, token INTEGER,
    lease_expires_at_ms INTEGER);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (queue, priority, run_at_ms)
    WHERE state = 'waiting';
"""
INSERT = "INSERT INTO jobs (queue, state, priority, run_at_ms, payload) VALUES (?, ?, ?, ?, ?)"
CLAIM = """
UPDATE jobs SET state = 'active', attempt = attempt + 1, owner = ?, token = random(),
       lease_expires_at_ms = ?
 WHERE id IN (SELECT id FROM jobs WHERE state = 'waiting' AND queue = ?
              ORDER BY priority, run_at_ms LIMIT ?)
RETURNING id, token, payload
"""
COMPLETE = (
    "UPDATE jobs SET state = 'completed', token = NULL, owner = NULL "
    "WHERE id = ? AND token = ? AND state = 'active'"
)
QUEUE = "bench"
BATCH = 100


def connect(db: Path, sync: str) -> sqlite3.Connection:
    conn = raw_connect(db, sync)
    conn.executescript(SCHEMA)
    return conn


def _rows(n: int, start: int = 0) -> list[tuple[str, str, int, int, bytes]]:
    now = time.time_ns() // 1_000_000
    return [(QUEUE, "waiting", 0, now, p) for p in payload_bytes(n, start)]


def count(conn: sqlite3.Connection, state: str) -> int:
    return int(conn.execute("SELECT count(*) FROM jobs WHERE state = ?", (state,)).fetchone()[0])


def bulk_insert(db: Path, n: int, *, start: int = 0, per_commit: int = 10_000) -> None:
    """Pre-insert ``n`` waiting jobs (setup, not measured; NORMAL: it is not a figure)."""
    conn = connect(db, "NORMAL")
    for lo in range(start, start + n, per_commit):
        rows = _rows(min(per_commit, start + n - lo), lo)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, rows)
        conn.execute("COMMIT")
    conn.close()


# -- figures ---------------------------------------------------------------------------


def enqueue_one(db: Path, sync: str, n: int, producers: int = 1) -> float:
    """One committed single-row INSERT per job; ``producers`` threads, a connection each."""
    connect(db, sync).close()
    per = n // producers
    rows = _rows(per * producers)
    conns = [raw_connect(db, sync) for _ in range(producers)]
    done = [0] * producers
    barrier = threading.Barrier(producers + 1)

    def produce(k: int) -> None:
        conn = conns[k]
        barrier.wait()
        for row in rows[k * per : (k + 1) * per]:
            conn.execute(INSERT, row)  # autocommit: returns after COMMIT (and fsync)
            done[k] += 1  # counted only once the commit has returned

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for conn in conns:
        conn.close()
    check = connect(db, sync)
    stored = count(check, "waiting")
    check.close()
    assert sum(done) == stored == per * producers, (sum(done), stored)
    return rate(stored, elapsed)


def enqueue_many(db: Path, sync: str, n: int, per_call: int = 1000) -> float:
    conn = connect(db, sync)
    rows = _rows(n)
    stored = 0
    start = time.perf_counter()
    for lo in range(0, n, per_call):
        batch = rows[lo : lo + per_call]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, batch)
        conn.execute("COMMIT")
        stored += len(batch)
    elapsed = time.perf_counter() - start
    assert stored == count(conn, "waiting") == n
    conn.close()
    return rate(n, elapsed)


def _drain_steps(conn: sqlite3.Connection, limit: int | None) -> tuple[int, float]:
    """Claim 100 + complete the previous 100 per transaction until ``limit`` jobs have been
    completed (None: until the queue is empty). Returns (jobs completed, seconds)."""
    decode = msgspec.json.Decoder().decode
    done: list[tuple[int, int]] = []
    ran = 0
    start = time.perf_counter()
    while True:
        want = BATCH if limit is None else min(BATCH, limit - ran)
        conn.execute("BEGIN IMMEDIATE")
        if done:
            conn.executemany(COMPLETE, done)
        claimed = conn.execute(CLAIM, ("raw", 2**62, QUEUE, want)).fetchall() if want else []
        conn.execute("COMMIT")
        if not claimed:
            break
        for _, _, payload in claimed:
            decode(payload)  # the "handler": the payload really is read
        ran += len(claimed)
        done = [(job_id, token) for job_id, token, _ in claimed]
    return ran, time.perf_counter() - start


def drain(db: Path, sync: str, n: int) -> float:
    """Steady drain of ``n`` pre-inserted jobs (the timer starts at the first claim)."""
    bulk_insert(db, n)
    conn = connect(db, sync)
    ran, elapsed = _drain_steps(conn, None)
    completed = count(conn, "completed")
    conn.close()
    assert ran == completed == n, (ran, completed, n)
    return rate(n, elapsed)


def claims(db: Path, sync: str, jobs: int) -> float:
    """Claim+complete throughput over ``jobs`` jobs of an existing backlog."""
    conn = connect(db, sync)
    before = count(conn, "completed")
    ran, elapsed = _drain_steps(conn, jobs)
    after = count(conn, "completed")
    conn.close()
    assert ran == after - before == jobs, (ran, after - before, jobs)
    return rate(jobs, elapsed)


def top_up(db: Path, waiting: int) -> None:
    """Bring the backlog back to ``waiting`` jobs after a case took some."""
    conn = connect(db, "NORMAL")
    have = count(conn, "waiting")
    (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM jobs").fetchone()
    conn.close()
    if have < waiting:
        bulk_insert(db, waiting - have, start=int(top))


# -- a worker process (the memory figure) --------------------------------------------------


def worker(db: Path, sync: str) -> None:
    """Drain ``db`` forever (claim 100 + complete 100 per transaction); report progress as
    JSON lines; exit on SIGTERM."""
    conn = connect(db, sync)
    print(json.dumps({"ready": True}), flush=True)
    total = 0
    last = time.monotonic()
    while True:
        ran, _ = _drain_steps(conn, 10_000)
        total += ran
        if time.monotonic() - last > 0.2:
            print(json.dumps({"completed": total}), flush=True)
            last = time.monotonic()
        if not ran:
            time.sleep(0.01)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "worker" and sys.argv[3] in SYNC_MODES:
        worker(Path(sys.argv[2]), sys.argv[3])
    else:
        sys.exit("usage: python -m benchmarks.raw worker DB FULL|NORMAL")

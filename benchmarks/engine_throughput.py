"""SqliteEngine alone (no actors): bulk enqueue and the fused drain, vs raw sqlite3.

Measures, in one run on the same disk, with ``synchronous=FULL``:

* ``enqueue_many``: ``engine.enqueue`` in calls of 1,000 jobs; the raw counterpart inserts
  the same rows with ``executemany`` and one commit per 1,000;
* ``drain``: ``engine.settle_and_claim`` claiming 100 and completing the previous 100 in
  one transaction; the raw counterpart is the minimal stdlib loop doing the same work
  (``UPDATE ... RETURNING`` claims, payloads decoded).

Every job is checked to have completed exactly once. Medians of ``--runs`` runs.

    .venv/bin/python -m benchmarks.engine_throughput [--jobs 20000] [--runs 3]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import msgspec

from rota.domain import JobOptions, JobState, lifecycle
from rota.storage.engine import ClaimRequest, Completion
from rota.storage.sqlite import SqliteEngine

RAW_SCHEMA = """
CREATE TABLE jobs (id INTEGER PRIMARY KEY, queue TEXT, state TEXT, priority INTEGER,
                   run_at_ms INTEGER, payload BLOB, attempt INTEGER DEFAULT 0,
                   owner TEXT, token INTEGER, lease_expires_at_ms INTEGER);
CREATE INDEX ready ON jobs (queue, priority, run_at_ms) WHERE state = 'waiting';
"""
RAW_CLAIM = """
UPDATE jobs SET state = 'active', attempt = attempt + 1, owner = ?, token = random(),
       lease_expires_at_ms = ?
 WHERE id IN (SELECT id FROM jobs WHERE state = 'waiting' AND queue = ?
              ORDER BY priority, run_at_ms LIMIT ?)
RETURNING id, token, payload
"""
RAW_COMPLETE = "UPDATE jobs SET state = 'completed', token = NULL WHERE id = ? AND token = ?"


def payloads(n: int) -> list[bytes]:
    return [msgspec.json.encode({"i": i, "s": "x" * 64}) for i in range(n)]


def raw(db: Path, n: int) -> tuple[float, float]:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(RAW_SCHEMA)
    rows = [("b", "waiting", 0, 1, p) for p in payloads(n)]
    start = time.perf_counter()
    for i in range(0, n, 1000):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO jobs (queue, state, priority, run_at_ms, payload) VALUES (?,?,?,?,?)",
            rows[i : i + 1000],
        )
        conn.execute("COMMIT")
    enqueue = n / (time.perf_counter() - start)
    decode = msgspec.json.Decoder().decode
    done: list[tuple[int, int]] = []
    ran = 0
    start = time.perf_counter()
    while True:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(RAW_COMPLETE, done)
        claimed = conn.execute(RAW_CLAIM, ("w", 2**62, "b", 100)).fetchall()
        conn.execute("COMMIT")
        if not claimed:
            break
        for _, _, payload in claimed:
            decode(payload)
        ran += len(claimed)
        done = [(job_id, token) for job_id, token, _ in claimed]
    drain = n / (time.perf_counter() - start)
    (completed,) = conn.execute("SELECT count(*) FROM jobs WHERE state='completed'").fetchone()
    assert ran == completed == n, (ran, completed, n)
    conn.close()
    return enqueue, drain


def engine(db: Path, n: int) -> tuple[float, float]:
    e = SqliteEngine(db)
    e.migrate()
    options = JobOptions(queue="b")
    now = e.now_ms()
    jobs = [lifecycle.new_job("b", p, options, now) for p in payloads(n)]
    start = time.perf_counter()
    for i in range(0, n, 1000):
        e.enqueue(jobs[i : i + 1000])
    enqueue = n / (time.perf_counter() - start)
    decode = msgspec.json.Decoder().decode
    done: list[Completion] = []
    ran = 0
    start = time.perf_counter()
    while True:
        settled = e.settle_and_claim(done, [], ClaimRequest("b", "w", 100, 30_000))
        if not settled.claimed:
            break
        for job in settled.claimed:
            decode(job.payload)
            assert job.token is not None
        ran += len(settled.claimed)
        done = [Completion(j.id, j.token or 0, None) for j in settled.claimed]
    drain = n / (time.perf_counter() - start)
    completed = e.count("b")[JobState.COMPLETED]
    assert ran == completed == n, (ran, completed, n)
    e.close()
    return enqueue, drain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"raw": [], "engine": []}
    for _ in range(args.runs):
        for name, fn in (("raw", raw), ("engine", engine)):
            with tempfile.TemporaryDirectory(prefix="rota-bench-") as tmp:
                results[name].append(fn(Path(tmp) / "bench.db", args.jobs))
    medians = {}
    for name, runs in results.items():
        for i, what in enumerate(("enqueue_many", "drain")):
            rates = [r[i] for r in runs]
            medians[name, what] = statistics.median(rates)
            print(
                f"{name:<7} {what:<13} {statistics.median(rates):>10,.0f} jobs/s"
                f"  [{min(rates):,.0f}-{max(rates):,.0f}]  median of {args.runs}"
            )
    for what in ("enqueue_many", "drain"):
        print(f"engine/raw {what}: {medians['engine', what] / medians['raw', what]:.2f}")


if __name__ == "__main__":
    main()

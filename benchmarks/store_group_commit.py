"""What group commit buys: enqueues through the Store vs one commit per enqueue.

Measures, in one run on the same disk (a temporary directory), with ``synchronous=FULL``:

* ``raw_1_per_commit``: stdlib sqlite3, one INSERT and one COMMIT per job (the naive
  durable loop; what a queue without batching pays);
* ``store_1_caller``: rota's Store actor, one caller enqueueing one job per call;
* ``store_N_callers``: the Store with N concurrent callers, one job per call (their calls
  share transactions: group commit).

Each figure is the median of ``--runs`` runs (min-max in brackets); the ratios at the end
compare the Store with the raw loop measured in the same run. Every job is checked to be
stored exactly once.

    .venv/bin/python -m benchmarks.store_group_commit [--jobs 5000] [--callers 50] [--runs 3]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio

from rota.actors.kernel import ActorRef
from rota.actors.store import Store, StoreClient
from rota.domain import JobOptions, JobState, lifecycle
from rota.storage import ops
from rota.storage.sqlite import SqliteEngine


def raw_one_per_commit(db: Path, jobs: int) -> float:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, payload BLOB, state TEXT)")
    start = time.perf_counter()
    for i in range(jobs):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO jobs (payload, state) VALUES (?, 'waiting')", (b"%d" % i,))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    (count,) = conn.execute("SELECT count(*) FROM jobs").fetchone()
    assert count == jobs, (count, jobs)
    conn.close()
    return jobs / elapsed


def store_enqueue(db: Path, jobs: int, callers: int) -> float:
    async def main() -> float:
        ref = ActorRef("store", lambda: Store(lambda: SqliteEngine(db)))
        store = StoreClient(ref)
        options = JobOptions(queue="bench")
        per_caller = jobs // callers

        async def producer(c: int) -> None:
            for i in range(per_caller):
                now = int(time.time() * 1000)
                await store.run(
                    ops.Enqueue(
                        [lifecycle.new_job("b", b"%d" % (c * per_caller + i), options, now)]
                    )
                )

        async with anyio.create_task_group() as tg:
            await tg.start(ref.run)
            start = time.perf_counter()
            async with anyio.create_task_group() as producers:
                for c in range(callers):
                    producers.start_soon(producer, c)
            elapsed = time.perf_counter() - start
            counts = await store.run(ops.Count("bench"))
            ref.request_stop()
        assert counts[JobState.WAITING] == per_caller * callers, counts
        return per_caller * callers / elapsed

    return anyio.run(main, backend="trio")


def measure(fn: Callable[[Path], float], runs: int) -> tuple[float, float, float]:
    rates = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="rota-bench-") as tmp:
            rates.append(fn(Path(tmp) / "bench.db"))
    return statistics.median(rates), min(rates), max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--callers", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cases: dict[str, Callable[[Path], float]] = {
        "raw_1_per_commit": lambda db: raw_one_per_commit(db, args.jobs),
        "store_1_caller": lambda db: store_enqueue(db, args.jobs, 1),
        f"store_{args.callers}_callers": lambda db: store_enqueue(db, args.jobs, args.callers),
    }
    results = {}
    for name, fn in cases.items():
        med, low, high = measure(fn, args.runs)
        results[name] = med
        print(f"{name:<22} {med:>10,.0f} jobs/s  [{low:,.0f}-{high:,.0f}]  median of {args.runs}")
    raw = results["raw_1_per_commit"]
    for name, rate in results.items():
        if name != "raw_1_per_commit":
            print(f"{name} / raw_1_per_commit = {rate / raw:.2f}x")


if __name__ == "__main__":
    main()

"""huey (``SqliteHuey``) as the peer on the same storage, the same disk and the same
workload (installed only for benchmarks: ``pip install -e '.[bench]'``).

How huey runs here (as in PEERS.md section 3):

* producers call the task in the benchmark process (huey's ``enqueue``: one
  ``BEGIN EXCLUSIVE`` / ``INSERT`` / ``COMMIT`` per call; huey shares one connection per
  storage behind a lock, so 10 producer threads take turns on it);
* the consumer runs in a child process (``python -m benchmarks.peer_huey consume ...``)
  with **2 worker processes** (``worker_type="process"``, forked by huey), library
  defaults otherwise (polling from 0.1 s, backing off when idle up to 10 s); handler starts
  are counted in shared memory (exactly once each, checked);
* ``synchronous`` is set on huey's connection as the run says (``BenchStorage``) and read
  back: a FULL run fsyncs every commit, as rota's and the raw loops' do.

What huey does per job differs from rota: its dequeue *deletes* the row (``BEGIN
EXCLUSIVE``, ``SELECT`` + ``DELETE``, ``COMMIT``: one commit per job) before the handler
runs, and a no-op's ``None`` result is not stored: there is no completion write at all
(at-most-once: a crash mid-job loses the job). So its drain is timed from the first
handler start to the last handler return, and "completed" is "started and returned".

The latency figures run the consumer the same way (2 processes, "other process") and with
2 worker threads inside the producing process ("same process"). Claims with 10k vs 1M
waiting time huey's own ``storage.dequeue()`` loop; the memory figure measures a consumer
process with 2 worker *threads* (one process, as rota's worker is one process).
"""

from __future__ import annotations

import json
import multiprocessing
import random
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ._util import FILLER, check_synchronous, percentile, python_child, rate, read_json_line
from ._util import stop_child as _stop_child

try:
    import huey
    from huey.storage import SqliteStorage
except ImportError:  # pragma: no cover - the runner skips huey then
    huey = None  # type: ignore[assignment]
    SqliteStorage = object  # type: ignore[assignment,misc]

HUEY_NAME = "bench"


def available() -> bool:
    return huey is not None


class BenchStorage(SqliteStorage):  # type: ignore[misc,valid-type]
    """huey's SqliteStorage with ``PRAGMA synchronous`` set (and checked) as the run says."""

    def __init__(self, *args: Any, sync: str = "FULL", **kwargs: Any) -> None:
        self._sync = sync
        super().__init__(*args, **kwargs)

    def _create_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = super()._create_connection()
        conn.execute(f"PRAGMA synchronous={self._sync}")
        check_synchronous(conn, self._sync, "huey")
        return conn


def make_huey(db: Path, sync: str) -> Any:
    return huey.Huey(HUEY_NAME, storage_class=BenchStorage, filename=str(db), sync=sync)


def _tasks(h: Any, on_noop: Any = None, on_ping: Any = None) -> tuple[Any, Any]:
    @h.task(name="noop")
    def noop(i: int, s: str) -> None:
        if on_noop is not None:
            on_noop(i)

    @h.task(name="ping")
    def ping(i: int, t: float) -> None:
        if on_ping is not None:
            on_ping(i, t)

    return noop, ping


def waiting(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM task").fetchone()[0])
    finally:
        conn.close()


def bulk_enqueue(db: Path, n: int, start: int = 0) -> None:
    """Pre-enqueue ``n`` noop tasks (setup, not measured): huey's own messages, inserted
    with ``executemany`` in large transactions."""
    h = make_huey(db, "NORMAL")
    noop, _ = _tasks(h)
    conn = h.storage.conn
    for lo in range(start, start + n, 10_000):
        rows = [
            (HUEY_NAME, h.serialize_task(noop.s(i, FILLER)), 0)
            for i in range(lo, min(lo + 10_000, start + n))
        ]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO task (queue, data, priority) VALUES (?, ?, ?)", rows)
        conn.execute("COMMIT")
    h.storage.close()


# -- producers (in this process) ---------------------------------------------------------


def enqueue_one(db: Path, sync: str, n: int, producers: int = 1) -> float:
    h = make_huey(db, sync)
    noop, _ = _tasks(h)
    h.storage.conn  # noqa: B018 - open the connection before the clock starts
    per = n // producers
    counted = [0] * producers
    barrier = threading.Barrier(producers + 1)

    def produce(k: int) -> None:
        barrier.wait()
        for i in range(k * per, (k + 1) * per):
            noop(i, FILLER)  # returns after huey's COMMIT
            counted[k] += 1

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    h.storage.close()
    stored = waiting(db)
    assert sum(counted) == stored == per * producers, (sum(counted), stored)
    return rate(stored, elapsed)


# -- the consumer (a child process) --------------------------------------------------------


def _consumer_main(db: Path, sync: str, mode: str, n: int, workers: int, kind: str) -> None:
    """Child process: run a consumer until ``n`` handlers started, then report JSON."""
    from huey.consumer import Consumer

    ctx = multiprocessing.get_context("fork")  # huey forks its process workers
    counts = ctx.RawArray("b", n)
    lat = ctx.RawArray("d", n)
    first = ctx.RawValue("d", 0.0)
    last = ctx.RawValue("d", 0.0)
    started = ctx.Value("i", 0)

    def on_start(i: int) -> None:
        now = time.perf_counter()
        counts[i] += 1
        with started.get_lock():
            if started.value == 0 or now < first.value:
                first.value = now
            if now > last.value:
                last.value = now
            started.value += 1

    def on_ping(i: int, t: float) -> None:
        lat[i] = time.perf_counter() - t
        on_start(i)

    h = make_huey(db, sync)
    _tasks(h, on_start, on_ping)
    consumer = Consumer(h, workers=workers, worker_type=kind, periodic=False)
    consumer.start()
    print(json.dumps({"ready": True}), flush=True)
    producer = None
    if mode == "latency-same":  # the producer in this very process
        producer = threading.Thread(target=_ping_producer, args=(db, sync, n), daemon=True)
        producer.start()
    deadline = time.monotonic() + 600
    while started.value < n and time.monotonic() < deadline:
        time.sleep(0.002)
    report: dict[str, Any] = {
        "started": started.value,
        "first": first.value,
        "last": last.value,
        "bad": [i for i in range(n) if counts[i] != 1][:10],
    }
    if mode.startswith("latency"):
        report["latencies"] = list(lat)
    consumer.stop(graceful=True)
    print(json.dumps(report), flush=True)


def _ping_producer(
    db: Path, sync: str, n: int, gap_s: tuple[float, float] = (0.005, 0.015)
) -> None:
    h = make_huey(db, sync)
    _, ping = _tasks(h)
    rng = random.Random(1)
    for i in range(n):
        time.sleep(rng.uniform(*gap_s))
        ping(i, time.perf_counter())
    h.storage.close()


def _run_consumer(db: Path, sync: str, mode: str, n: int, workers: int, kind: str) -> Any:
    proc = python_child(
        "benchmarks.peer_huey",
        "consume",
        str(db),
        sync,
        mode,
        str(n),
        str(workers),
        kind,
        stdout=-1,
    )
    try:
        read_json_line(proc, 60)
        if mode == "latency-cross":
            _ping_producer(db, sync, n)
        report = read_json_line(proc, 600)
        proc.wait(30)
    finally:
        _stop_child(proc)
    assert report["started"] == n, report
    assert not report["bad"], report
    return report


def drain(db: Path, sync: str, n: int) -> float:
    bulk_enqueue(db, n)
    report = _run_consumer(db, sync, "drain", n, 2, "process")
    assert waiting(db) == 0
    return rate(n, report["last"] - report["first"])


def latency(db: Path, sync: str, n: int, *, same_process: bool) -> dict[str, float]:
    mode = "latency-same" if same_process else "latency-cross"
    kind = "thread" if same_process else "process"
    report = _run_consumer(db, sync, mode, n, 2, kind)
    ms = [x * 1000 for x in report["latencies"]]
    return {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "p99": percentile(ms, 99)}


def claims(db: Path, sync: str, jobs: int) -> float:
    """huey's own dequeue (SELECT + DELETE, one commit per job) over ``jobs`` jobs."""
    h = make_huey(db, sync)
    _tasks(h)
    storage = h.storage
    storage.conn  # noqa: B018
    start = time.perf_counter()
    got = 0
    for _ in range(jobs):
        data = storage.dequeue()
        assert data is not None
        h.deserialize_task(data)  # decode the payload, as a worker does
        got += 1
    elapsed = time.perf_counter() - start
    storage.close()
    assert got == jobs
    return rate(jobs, elapsed)


def top_up(db: Path, backlog: int) -> None:
    have = waiting(db)
    if have < backlog:
        bulk_enqueue(db, backlog - have, start=10_000_000 + random.randrange(10**9))


def memory_worker(db: Path, sync: str) -> None:
    """Child process for the memory figure: a consumer with 2 worker threads, forever."""
    from huey.consumer import Consumer

    h = make_huey(db, sync)
    done = [0]

    def on_start(i: int) -> None:
        done[0] += 1

    _tasks(h, on_start)
    consumer = Consumer(h, workers=2, worker_type="thread", periodic=False)
    consumer.start()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # huey's handler acts only in run()
    print(json.dumps({"ready": True}), flush=True)
    while True:
        time.sleep(0.2)
        print(json.dumps({"completed": done[0]}), flush=True)


def _cli(args: list[str]) -> None:
    if len(args) == 7 and args[0] == "consume":
        _consumer_main(Path(args[1]), args[2], args[3], int(args[4]), int(args[5]), args[6])
    elif len(args) == 3 and args[0] == "worker":
        memory_worker(Path(args[1]), args[2])
    else:
        sys.exit("usage: python -m benchmarks.peer_huey consume|worker ...")


if __name__ == "__main__":
    # Run the code from the module imported under its own name: huey names a task by its
    # function's module, which must match the producer's ("benchmarks.peer_huey").
    from benchmarks import peer_huey

    peer_huey._cli(sys.argv[1:])

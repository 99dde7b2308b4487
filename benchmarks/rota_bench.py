"""rota's throughput figures: enqueue (one call per job, 1 and 10 producers), enqueue_many,
and the steady drain, through the public API (``rota.App``), on trio (rota's default).

Enqueue figures run against an empty queue that nothing drains (as in PEERS.md, workers
start after the enqueue). "In app.run()" cases run the runtime on another, idle queue, so
its Store does the group commit without a worker draining what is measured. Each enqueue is
counted once its call has returned (rota returns only after the commit); the stored count
is checked against it at the end.

The drain pre-enqueues ``n`` jobs (rota's own validation and ``engine.enqueue`` in batches:
not measured), starts the runtime, and times from the first handler start to the commit of
the last completion (``_rota.TimedEngine``). Every handler start is counted, and each job
must have run exactly once and be stored as completed.

``drain_engine`` is the ``SqliteEngine`` alone (no actors, no handler: the fused
settle+claim of 100 in a loop, payloads decoded), to split rota's cost between storage and
runtime.

``drain_defaults_vs_tuned`` drains the same jobs twice in one run, with rota's default
options and with ``DRAIN_OPTIONS``, in one process (``app.run()``) or in a real ``rota
worker`` process (``drain_worker``: the same honesty, timed in the worker by the same
``TimedEngine``), and gives the ratio.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from rota.domain.job import JobState
from rota.storage.engine import ClaimRequest, Completion
from rota.storage.sqlite import SqliteEngine

from ._rota import IDLE_QUEUE, QUEUE, BenchApp, count_states, make_app, pre_enqueue
from ._util import FILLER, Item, items, python_child, rate, read_json_line, stop_child

#: The runtime's settings for the drain: 100 worker slots, as the raw loop claims 100 per
#: transaction; everything else is rota's default.
DRAIN_OPTIONS: dict[str, Any] = {"concurrency": 100, "prefetch": 100}
#: The drain's two configurations compared by ``drain_defaults_vs_tuned``: rota's defaults
#: (nothing set) and the tuned setting above.
DRAIN_CONFIGS: dict[str, dict[str, Any]] = {"defaults": {}, "tuned": DRAIN_OPTIONS}


def _check_waiting(app: BenchApp, n: int, counted: int) -> None:
    counts = count_states(app)
    assert counted == n == counts.get(JobState.WAITING, 0), (counted, n, counts)


def enqueue_in_runtime(db: Path, sync: str, n: int, producers: int) -> float:
    """``producers`` tasks inside ``app.run()``, each ``await job.enqueue(item)`` in turn."""
    app, noop, _, _ = make_app(db, sync, n)
    per = n // producers
    work = items(per * producers)
    counted = [0] * producers

    async def produce(k: int) -> None:
        enqueue = noop.enqueue
        for item in work[k * per : (k + 1) * per]:
            await enqueue(item)
            counted[k] += 1  # the call returned: the job is committed

    async def main() -> float:
        async with app.run(queues=[IDLE_QUEUE]):
            start = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for k in range(producers):
                    tg.start_soon(produce, k)
            return time.perf_counter() - start

    try:
        elapsed = anyio.run(main, backend="trio")
        _check_waiting(app, per * producers, sum(counted))
    finally:
        app.close()
    return rate(per * producers, elapsed)


def enqueue_sync_threads(db: Path, sync: str, n: int, producers: int) -> float:
    """``producers`` threads calling ``job.enqueue_sync(item)`` (no runtime)."""
    app, noop, _, _ = make_app(db, sync, n)
    per = n // producers
    work = items(per * producers)
    counted = [0] * producers
    barrier = threading.Barrier(producers + 1)

    def produce(k: int) -> None:
        noop.enqueue_sync(Item(i=-1 - k, s=FILLER))  # open this thread's connection
        barrier.wait()
        enqueue = noop.enqueue_sync
        for item in work[k * per : (k + 1) * per]:
            enqueue(item)
            counted[k] += 1

    threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
    try:
        for t in threads:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        _check_waiting(app, per * producers + producers, sum(counted) + producers)
    finally:
        app.close()
    return rate(per * producers, elapsed)


def enqueue_many(db: Path, sync: str, n: int, *, in_runtime: bool, per_call: int = 1000) -> float:
    """``await job.enqueue_many(batch of per_call)``: without a runtime (a producer
    process: each call commits on a thread of its own) or inside ``app.run()``."""
    app, noop, _, _ = make_app(db, sync, n)
    work = items(n)
    counted = 0

    async def produce() -> float:
        nonlocal counted
        start = time.perf_counter()
        for lo in range(0, n, per_call):
            handles = await noop.enqueue_many(work[lo : lo + per_call])
            counted += len(handles)
        return time.perf_counter() - start

    async def main() -> float:
        if not in_runtime:
            await noop.enqueue_many([])  # open this producer's connection first
            return await produce()
        async with app.run(queues=[IDLE_QUEUE]):
            return await produce()

    try:
        elapsed = anyio.run(main, backend="trio")
        _check_waiting(app, n, counted)
    finally:
        app.close()
    return rate(n, elapsed)


def drain(
    db: Path, sync: str, n: int, *, defaults: bool = False, **options: Any
) -> dict[str, float]:
    """Steady drain of ``n`` pre-enqueued no-op jobs by one runtime; returns jobs/s, the
    start-up (runtime start to first handler start, s) and the jobs per Store transaction
    (every transaction of the run, start-up and wake-ups included). ``DRAIN_OPTIONS``
    unless ``defaults`` (rota's defaults), then ``options`` over them."""
    base = {} if defaults else DRAIN_OPTIONS
    app, noop, _, starts = make_app(db, sync, n, **{**base, **options})
    pre_enqueue(app, noop, n)

    store_batches = 0

    async def main() -> float:
        nonlocal store_batches
        app.tracker.expect(n)
        began = time.perf_counter()
        async with app.run() as runtime:
            await anyio.to_thread.run_sync(app.tracker.reached.wait, abandon_on_cancel=True)
            store_batches = runtime.statistics()["actors"]["store"].batches
        return began

    try:
        began = anyio.run(main, backend="trio")
        starts.check_exactly_once()
        counts = count_states(app)
        assert counts.get(JobState.COMPLETED, 0) == n == app.tracker.completed, counts
        elapsed = app.tracker.last_commit - starts.first
    finally:
        app.close()
    return {
        "rate": rate(n, elapsed),
        "startup_s": starts.first - began,
        "jobs_per_transaction": n / max(store_batches, 1),
    }


def drain_engine(db: Path, sync: str, n: int) -> float:
    """The SqliteEngine alone: settle the previous 100 + claim 100 per transaction."""
    app, noop, _, _ = make_app(db, sync, n)
    pre_enqueue(app, noop, n)
    app.close()
    engine = SqliteEngine(db, synchronous=sync)  # type: ignore[arg-type]
    engine.migrate()
    decode = noop.decode
    done: list[Completion] = []
    ran = 0
    start = time.perf_counter()
    while True:
        settled = engine.settle_and_claim(done, [], ClaimRequest(QUEUE, "engine", 100, 30_000))
        if not settled.claimed:
            break
        for job in settled.claimed:
            decode(job.payload)
        ran += len(settled.claimed)
        done = [Completion(j.id, j.token or 0, None) for j in settled.claimed]
    elapsed = time.perf_counter() - start
    completed = engine.count(QUEUE).get(JobState.COMPLETED, 0)
    engine.close()
    assert ran == completed == n, (ran, completed, n)
    return rate(n, elapsed)


def drain_worker(db: Path, sync: str, n: int, config: str) -> dict[str, float]:
    """The drain by a real ``rota worker`` process (``benchmarks._worker_app:app`` with
    ``DRAIN_CONFIGS[config]``): the worker times it (first handler start to the commit of
    the last completion, its ``TimedEngine``), checks every job started exactly once, and
    prints the figures; the database must then hold ``n`` completed jobs."""
    app, noop, _, _ = make_app(db, sync, n)
    pre_enqueue(app, noop, n)
    app.close()
    env = {"RBENCH_DB": str(db), "RBENCH_SYNC": sync, "RBENCH_DRAIN": str(n)}
    env["RBENCH_CONFIG"] = config
    errors = db.with_suffix(".stderr")
    with errors.open("w+") as stderr:
        proc = python_child(
            "rota", "worker", "benchmarks._worker_app:app", env=env, stdout=-1, stderr=stderr
        )
        try:
            while "drained" not in (result := read_json_line(proc, 120)):
                pass
        except Exception as exc:
            stop_child(proc)
            stderr.seek(0)
            raise RuntimeError(f"rota worker ({config}): {exc}\n{stderr.read()[-3000:]}") from exc
        stop_child(proc)
    app, _, _, _ = make_app(db, sync, n)
    try:
        counts = count_states(app)
    finally:
        app.close()
    assert result["drained"] == n == counts.get(JobState.COMPLETED, 0), (result, counts)
    return {
        "rate": rate(n, result["last_commit"] - result["first_start"]),
        "jobs_per_transaction": result["jobs_per_transaction"],
    }


def drain_defaults_vs_tuned(
    db_dir: Path, sync: str, n: int, *, worker: bool = False
) -> dict[str, Any]:
    """Drain ``n`` jobs with rota's defaults, then with ``DRAIN_OPTIONS``, on fresh
    databases in ``db_dir``, in this process (``app.run()``) or in a ``rota worker``
    process; returns both rates and their ratio (defaults / tuned, this run)."""
    rates: dict[str, float] = {}
    per_transaction: dict[str, float] = {}
    for config in DRAIN_CONFIGS:
        db = db_dir / f"{config}.db"
        if worker:
            result = drain_worker(db, sync, n, config)
        else:
            result = drain(db, sync, n, defaults=True, **DRAIN_CONFIGS[config])
        rates[config] = result["rate"]
        per_transaction[config] = result["jobs_per_transaction"]
    return {
        **rates,
        "ratio": rates["defaults"] / rates["tuned"],
        "jobs_per_transaction": per_transaction,
    }

"""Where one enqueue → handler start goes, step by step (no profiler).

::

    python -m benchmarks.latency_breakdown [--pings 500] [--sync FULL] [--other-process]

The same pings as the suite's same-process latency case (one every ~1 ms to an idle
pool). For each, timestamps from the Store's engine (``TimedEngine.batch``) split the
path into: the call reaching the Store's thread (encode and validate the payload, the
Store's mailbox, the hop to its thread), the transaction's statements (insert + claim),
its ``COMMIT`` (the fsync on FULL), the way back to the caller (``run_sync_soon``, the
Store task, the reply), and the start of the handler. Prints the median of each step
and how many pings took the direct claim (enqueue and claim in one transaction).

``--other-process``: the suite's other-process case (a child calls ``enqueue_sync`` every
5-15 ms; this process runs the worker). The child notes when its ``COMMIT`` returned and
when its ring was sent; this process when its change feed woke (the ring, or the poll),
when the event loop ran the wake-up, and the claim's transaction (begin, ``COMMIT``,
committed). The steps: the producer's statements and ``COMMIT``, its ``sendto``, the
feed's thread waking (from the ``COMMIT``), the hop to the loop, the loop reaching the
Store's thread (the queue and pool actors, the Store), the claim's statements, its
``COMMIT``, and the handler's start; the median and the p99 of each.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

import rota.actors.store as store_module

from ._rota import TimedEngine, make_app, ping_idle_worker
from ._util import Ping, percentile, python_child, read_json_line, scratch_dir, stop_child


def measure(pings: int, sync: str) -> dict[str, Any]:
    marks: dict[str, float] = {}
    original_batch = TimedEngine.batch
    original_apply = store_module.EnqueueAndClaim.apply

    @contextlib.contextmanager
    def batch(self: TimedEngine) -> Iterator[None]:
        marks.setdefault("begin", time.perf_counter())
        with original_batch(self):
            yield
            marks.setdefault("commit", time.perf_counter())
        marks.setdefault("committed", time.perf_counter())

    def apply(self: Any, engine: Any) -> Any:
        marks["direct"] = 1.0
        return original_apply(self, engine)

    rows: list[tuple[float, ...]] = []
    TimedEngine.batch = batch  # type: ignore[method-assign]
    store_module.EnqueueAndClaim.apply = apply  # type: ignore[method-assign]
    try:
        with scratch_dir() as d:
            app, _, ping, starts = make_app(d / "bench.db", sync, pings)

            def record(enqueued: float, returned: float, started: float) -> None:
                rows.append(
                    (
                        marks["begin"] - enqueued,
                        marks["commit"] - marks["begin"],
                        marks["committed"] - marks["commit"],
                        returned - marks["committed"],
                        started - enqueued,
                        marks.get("direct", 0.0),
                    )
                )

            async def main() -> None:
                async with app.run():
                    await ping_idle_worker(
                        ping, starts, pings, lambda: 0.001, before=marks.clear, after=record
                    )

            try:
                anyio.run(main, backend="trio")
            finally:
                app.close()
    finally:
        TimedEngine.batch = original_batch  # type: ignore[method-assign]
        store_module.EnqueueAndClaim.apply = original_apply  # type: ignore[method-assign]
    columns = list(zip(*rows, strict=True))
    names = ("to the Store thread", "statements", "COMMIT", "back to the caller", "total")
    steps = {n: statistics.median(c) * 1000 for n, c in zip(names, columns[:5], strict=True)}
    return {"steps_ms": steps, "direct": int(sum(columns[5])), "pings": len(rows)}


OTHER_STEPS = (
    "producer: statements + COMMIT",
    "producer: ring (sendto)",
    "COMMIT to the feed's wake-up",
    "to the event loop",
    "loop to the Store thread",
    "claim: statements",
    "claim: COMMIT",
    "to the handler's start",
    "total",
)


def measure_other(pings: int, sync: str) -> dict[str, Any]:
    """The other-process case, split by marks on both sides (see the module docstring)."""
    from rota.runtime import Runtime
    from rota.storage.feed import SqliteChangeFeed

    feed_marks: list[float] = []
    loop_marks: list[float] = []
    batches: list[tuple[float, float, float]] = []
    original_batch = TimedEngine.batch
    original_seen = SqliteChangeFeed._seen
    original_external = Runtime._external_commit

    @contextlib.contextmanager
    def batch(self: TimedEngine) -> Iterator[None]:
        begin = time.perf_counter()
        with original_batch(self):
            yield
            commit = time.perf_counter()
        batches.append((begin, commit, time.perf_counter()))

    def seen(self: SqliteChangeFeed) -> None:
        feed_marks.append(time.perf_counter())
        original_seen(self)

    def external(self: Runtime) -> None:
        loop_marks.append(time.perf_counter())
        original_external(self)

    TimedEngine.batch = batch  # type: ignore[method-assign]
    SqliteChangeFeed._seen = seen  # type: ignore[method-assign]
    Runtime._external_commit = external  # type: ignore[method-assign]
    try:
        with scratch_dir() as d:
            db = d / "bench.db"
            app, _, _, starts = make_app(db, sync, pings)
            handler: dict[int, float] = {}
            original_start = starts.start

            def start(i: int) -> None:
                handler[i] = time.perf_counter()
                original_start(i)

            starts.start = start  # type: ignore[method-assign]
            produced: dict[str, Any] = {}

            async def main() -> None:
                async with app.run():
                    child = python_child(
                        "benchmarks.latency_breakdown", "produce", str(db), sync, str(pings),
                        stdout=-1,
                    )  # fmt: skip
                    try:
                        line = await anyio.to_thread.run_sync(read_json_line, child, 600.0)
                        produced.update(line)
                        await anyio.to_thread.run_sync(starts.all_started.wait, 60.0)
                    finally:
                        stop_child(child)

            try:
                anyio.run(main, backend="trio")
                starts.check_exactly_once()
            finally:
                app.close()
    finally:
        TimedEngine.batch = original_batch  # type: ignore[method-assign]
        SqliteChangeFeed._seen = original_seen  # type: ignore[method-assign]
        Runtime._external_commit = original_external  # type: ignore[method-assign]
    rows = []
    for i, (t0, committed, rung) in enumerate(produced["marks"]):
        began = handler[i]
        feed = _first_after(feed_marks, committed)  # the feed may wake before sendto returns
        loop = _first_after(loop_marks, feed) if feed is not None else None
        claim = None
        if loop is not None:  # the first transaction begun after the wake-up
            claim = next((b for b in batches if loop <= b[0] <= began), None)
        if feed is None or loop is None or claim is None or feed > began:
            continue  # not woken by this ping's ring (the pool was already claiming)
        rows.append(
            (
                committed - t0,
                rung - committed,
                feed - committed,
                loop - feed,
                claim[0] - loop,
                claim[1] - claim[0],
                claim[2] - claim[1],
                began - claim[2],
                began - t0,
            )
        )
    columns = list(zip(*rows, strict=True))
    steps = {n: statistics.median(c) * 1000 for n, c in zip(OTHER_STEPS, columns, strict=True)}
    tails = {
        n: percentile([v * 1000 for v in c], 99) for n, c in zip(OTHER_STEPS, columns, strict=True)
    }
    return {"steps_ms": steps, "steps_p99_ms": tails, "pings": pings, "explained": len(rows)}


def _first_after(marks: list[float], t: float) -> float | None:
    return next((m for m in marks if m >= t), None)


def produce(db: Path, sync: str, n: int) -> None:
    """Child process: ``n`` pings with ``enqueue_sync`` every 5-15 ms (as the suite's
    other-process case), noting for each when its COMMIT returned and when it rang."""
    from rota.storage.sqlite import SqliteEngine

    app, _, ping, _ = make_app(db, sync, n)
    marks: list[list[float]] = []
    original_ring = SqliteEngine._ring

    def ring(self: SqliteEngine) -> None:
        marks[-1].append(time.perf_counter())  # COMMIT returned
        original_ring(self)
        marks[-1].append(time.perf_counter())  # the ring was sent

    SqliteEngine._ring = ring  # type: ignore[method-assign]
    rng = random.Random(2)
    app.events()  # open this thread's connection before the first ping
    for i in range(n):
        time.sleep(rng.uniform(0.005, 0.015))
        t0 = time.perf_counter()
        marks.append([t0])
        ping.enqueue_sync(Ping(i=i, t=t0))
    app.close()
    print(json.dumps({"enqueued": n, "marks": marks}), flush=True)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "produce":
        produce(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency_breakdown")
    parser.add_argument("--pings", type=int, default=500)
    parser.add_argument("--sync", choices=("FULL", "NORMAL"), default="FULL")
    parser.add_argument("--other-process", action="store_true")
    args = parser.parse_args()
    if args.other_process:
        result = measure_other(args.pings, args.sync)
        print(
            f"enqueue -> start, other process, {args.sync}, median of the "
            f"{result['explained']} of {result['pings']} pings woken by their own ring:"
        )
        print(f"  {'step':<32} {'p50':>8} {'p99':>8}")
        for name, ms in result["steps_ms"].items():
            print(f"  {name:<32} {ms:8.3f} {result['steps_p99_ms'][name]:8.3f} ms")
        return
    result = measure(args.pings, args.sync)
    print(f"enqueue -> start, same process, {args.sync}, median of {result['pings']} pings:")
    for name, ms in result["steps_ms"].items():
        print(f"  {name:<22} {ms:6.3f} ms")
    print(f"  direct claims: {result['direct']} of {result['pings']}")


if __name__ == "__main__":
    main()

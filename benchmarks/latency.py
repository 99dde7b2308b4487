"""Latency from enqueue to handler start, with an idle worker (p50 / p95 / p99, in ms).

Each sample is one ``ping`` job whose payload carries ``time.perf_counter()`` read just
before the enqueue call; the handler subtracts it from its own reading at start. So a
sample covers the enqueue's commit (an fsync on FULL), the wake-up, the claim's
transaction and the dispatch to a worker task. ``perf_counter`` is CLOCK_MONOTONIC on
Linux: one clock for every process of the host.

* same process: ``await ping.enqueue(...)`` inside ``app.run()`` (the Store commits it and
  wakes the queue directly); the next ping is enqueued a random 1-3 ms after the previous
  one started, so the worker is idle each time;
* other process: a child process (``python -m benchmarks.latency produce ...``) calls
  ``ping.enqueue_sync(...)`` on the same file every 5-15 ms (random); its commit rings the
  runtime's doorbell (the runtime's poll of ``data_version``, every ``poll_interval_s``,
  is only the fallback).

The runtime uses rota's defaults (concurrency 10, prefetch "auto": a pool whose queue
was found empty claims only free slots); each ping must start exactly once.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import anyio
import anyio.to_thread

from ._rota import make_app, ping_idle_worker
from ._util import Ping, percentile, python_child, read_json_line, stop_child


def _summary(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "p99": percentile(ms, 99)}


def same_process(db: Path, sync: str, n: int) -> dict[str, float]:
    app, _, ping, starts = make_app(db, sync, n)
    rng = random.Random(1)

    async def main() -> None:
        async with app.run():
            await ping_idle_worker(ping, starts, n, lambda: rng.uniform(0.001, 0.003))

    try:
        anyio.run(main, backend="trio")
        starts.check_exactly_once()
    finally:
        app.close()
    return _summary(starts.latencies)


def other_process(db: Path, sync: str, n: int) -> dict[str, float]:
    app, _, _, starts = make_app(db, sync, n)

    async def main() -> None:
        async with app.run():
            child = python_child("benchmarks.latency", "produce", str(db), sync, str(n), stdout=-1)
            try:
                await anyio.to_thread.run_sync(read_json_line, child, 600.0)
                await anyio.to_thread.run_sync(starts.all_started.wait, 60.0)
            finally:
                stop_child(child)

    try:
        anyio.run(main, backend="trio")
        starts.check_exactly_once()
    finally:
        app.close()
    return _summary(starts.latencies)


def produce(db: Path, sync: str, n: int) -> None:
    """Child process: ``n`` pings with ``enqueue_sync`` (no runtime here), then report."""
    app, _, ping, _ = make_app(db, sync, n)
    rng = random.Random(2)
    # Open this thread's connection before the first ping (rota has no public call for
    # it; making an event stream reads the last event id on it).
    app.events()
    for i in range(n):
        time.sleep(rng.uniform(0.005, 0.015))
        ping.enqueue_sync(Ping(i=i, t=time.perf_counter()))
    app.close()
    print(json.dumps({"enqueued": n}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "produce":
        produce(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit("usage: python -m benchmarks.latency produce DB FULL|NORMAL N")

"""Where one in-process enqueue → handler start goes, step by step (no profiler).

::

    python -m benchmarks.latency_breakdown [--pings 500] [--sync FULL]

The same pings as the suite's same-process latency case (one every ~1 ms to an idle
pool). For each, timestamps from the Store's engine (``TimedEngine.batch``) split the
path into: the call reaching the Store's thread (encode and validate the payload, the
Store's mailbox, the hop to its thread), the transaction's statements (insert + claim),
its ``COMMIT`` (the fsync on FULL), the way back to the caller (``run_sync_soon``, the
Store task, the reply), and the start of the handler. Prints the median of each step
and how many pings took the direct claim (enqueue and claim in one transaction).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Iterator
from typing import Any

import anyio

import rota.actors.store as store_module

from ._rota import TimedEngine, make_app, ping_idle_worker
from ._util import scratch_dir


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


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency_breakdown")
    parser.add_argument("--pings", type=int, default=500)
    parser.add_argument("--sync", choices=("FULL", "NORMAL"), default="FULL")
    args = parser.parse_args()
    result = measure(args.pings, args.sync)
    print(f"enqueue -> start, same process, {args.sync}, median of {result['pings']} pings:")
    for name, ms in result["steps_ms"].items():
        print(f"  {name:<22} {ms:6.3f} ms")
    print(f"  direct claims: {result['direct']} of {result['pings']}")


if __name__ == "__main__":
    main()

"""``rota demo``: a real worker over sample jobs on the embedded SQLite default.

It enqueues a mix of sample jobs in one transaction, then runs the supervised runtime
(the same one ``rota worker`` runs) with a progress bar fed by the job event stream, and
closes with a summary: jobs/s, retries, failures by reason, and what group commit saved.

The sample jobs:

* ``demo.thumbnail`` (55% of the jobs): a little async I/O, then a result; reports progress;
* ``demo.sync_account`` (30%): a flaky upstream: about one in eight first attempts fails, the
  retry (after a short fixed backoff) succeeds;
* ``demo.charge`` (10% of the jobs): one in five always fails: after 3 attempts it is
  *failed* (the dead-letter set, kept for inspection and ``rota jobs retry``);
* ``demo.send_mail`` (5%): one in five has a bad address and raises ``Unrecoverable``:
  failed at once, no retries.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec

import rota
from rota.app import App, Context, Registry
from rota.domain.event import EventKind
from rota.domain.job import JobState
from rota.storage import ops

__all__ = ["DemoSummary", "main", "registry", "run_demo"]

registry = Registry()


class Work(msgspec.Struct, frozen=True):
    """A sample job's payload."""

    n: int
    ms: float = 1.0
    fail: bool = False


@registry.job(name="demo.thumbnail", queue="demo")
async def thumbnail(args: Work, ctx: Context) -> int:
    """A sample job that reports its steps."""
    await anyio.sleep(args.ms / 1000)
    if args.n % 50 == 0:
        await ctx.progress(100, message="resized")
    return args.n * 2


@registry.job(name="demo.sync_account", queue="demo", max_attempts=3, backoff=rota.fixed(0.1))
async def sync_account(args: Work, ctx: Context) -> str:
    """A sample job that fails now and then, and is retried."""
    await anyio.sleep(args.ms / 1000)
    if args.fail and ctx.attempt == 1:
        raise ConnectionError("upstream timed out (flaky: the retry succeeds)")
    return "synced"


@registry.job(name="demo.charge", queue="demo", max_attempts=3, backoff=rota.fixed(0.05))
async def charge(args: Work) -> str:
    """A sample job that may fail for good."""
    if args.fail:
        raise RuntimeError("card declined (always: ends in the dead-letter set)")
    return "charged"


@registry.job(name="demo.send_mail", queue="demo")
async def send_mail(args: Work) -> str:
    """A sample job that logs a line."""
    if args.fail:
        raise rota.Unrecoverable("no such mailbox (retrying cannot help)")
    return "sent"


class DemoSummary(msgspec.Struct, kw_only=True):
    """What the demo saw, for its last lines and its test."""

    jobs: int
    seconds: float = 0.0
    completed: int = 0
    failed: int = 0
    retries: int = 0
    failures: dict[str, int] = {}
    store_transactions: int = 0
    store_operations: int = 0


def _sample(n: int, rng: random.Random) -> list[tuple[Any, Work]]:
    jobs: list[tuple[Any, Work]] = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.55:
            jobs.append((thumbnail, Work(i, ms=rng.uniform(0.5, 3))))
        elif roll < 0.85:
            jobs.append((sync_account, Work(i, ms=rng.uniform(0.5, 2), fail=rng.random() < 0.125)))
        elif roll < 0.95:
            jobs.append((charge, Work(i, fail=rng.random() < 0.2)))
        else:
            jobs.append((send_mail, Work(i, fail=rng.random() < 0.2)))
    return jobs


async def run_demo(
    database: str,
    *,
    jobs: int = 2000,
    concurrency: int = 20,
    seed: int = 7,
    out: Callable[[str], None] = print,
    progress: bool = True,
) -> DemoSummary:
    """Enqueue ``jobs`` sample jobs on ``database`` and run a worker until all finished."""
    app = App(database, concurrency=concurrency, scheduler_interval_s=0.05)
    app.include(registry)
    summary = DemoSummary(jobs=jobs)
    try:
        rng = random.Random(seed)
        by_definition: dict[Any, list[Work]] = {}
        for definition, work in _sample(jobs, rng):
            by_definition.setdefault(definition, []).append(work)
        start_id = await app._storage.run(ops.LastEventId())
        for definition, works in by_definition.items():
            await definition.enqueue_many(works)
        out(
            f"enqueued {jobs} sample jobs on {database}; "
            f"running a worker (concurrency {concurrency})"
        )
        reasons: Counter[str] = Counter()
        bar = _Bar(jobs, out, enabled=progress)
        started = time.perf_counter()
        async with app.run() as runtime:
            async for event in app.events(after_id=start_id, queue="demo"):
                if event.kind is EventKind.COMPLETED:
                    summary.completed += 1
                elif event.kind is EventKind.RETRYING:
                    summary.retries += 1
                elif event.kind is EventKind.FAILED:
                    summary.failed += 1
                    reasons[_reason(event.data)] += 1
                else:
                    continue
                bar.update(summary)
                if summary.completed + summary.failed >= jobs:
                    break
            summary.seconds = time.perf_counter() - started
            store = runtime.store_ref.actor
            if store is not None:
                stats = store.statistics()
                summary.store_transactions = stats.transactions
                summary.store_operations = stats.operations
        bar.close()
        summary.failures = dict(reasons)
        counts = await app.queue("demo").counts()
        assert counts[JobState.COMPLETED] == summary.completed, counts
    finally:
        app.close()
    _print_summary(summary, out)
    return summary


def _reason(data: bytes | None) -> str:
    text = (data or b"").decode(errors="replace").strip().splitlines()
    return text[-1][:80] if text else "unknown"


class _Bar:
    """A rich progress bar on a terminal (if rich is installed); lines per 10% elsewhere."""

    def __init__(self, total: int, out: Callable[[str], None], *, enabled: bool) -> None:
        self.total = total
        self.out = out
        self.last_decile = -1
        self.rich: Any = None
        self.task: Any = None
        if enabled and out is print and sys.stdout.isatty():
            try:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeElapsedColumn,
                )
            except ImportError:
                pass
            else:
                self.rich = Progress(
                    TextColumn("[bold]jobs"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[detail]}"),
                    TimeElapsedColumn(),
                )
                self.rich.start()
                self.task = self.rich.add_task("jobs", total=total, detail="")

    def update(self, s: DemoSummary) -> None:
        done = s.completed + s.failed
        detail = f"completed {s.completed}  retries {s.retries}  failed {s.failed}"
        if self.rich is not None:
            self.rich.update(self.task, completed=done, detail=detail)
        elif (decile := 10 * done // max(self.total, 1)) > self.last_decile:
            self.last_decile = decile
            width = 30
            filled = width * done // max(self.total, 1)
            self.out(f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total}  {detail}")

    def close(self) -> None:
        if self.rich is not None:
            self.rich.stop()


def _print_summary(s: DemoSummary, out: Callable[[str], None]) -> None:
    rate = (s.completed + s.failed) / s.seconds if s.seconds else 0.0
    out(
        f"done: {s.jobs} jobs in {s.seconds:.2f} s ({rate:,.0f} jobs/s, durable SQLite, "
        "synchronous=FULL; a demo, not a benchmark)"
    )
    out(f"  completed  {s.completed}")
    out(f"  retries    {s.retries} failed attempts ran again (backoff per job type)")
    out(f"  failed     {s.failed} (kept in the dead-letter set: `rota jobs list --state failed`)")
    for reason, n in sorted(s.failures.items(), key=lambda kv: -kv[1]):
        out(f"             {n:>4} x {reason}")
    per_commit = s.store_operations / max(s.store_transactions, 1)
    out(
        f"  store      {s.store_operations} operations in {s.store_transactions} "
        f"transactions ({per_commit:.1f} per commit: group commit)"
    )


def main(argv: list[str] | None = None) -> int:
    """``rota demo``: enqueue the sample jobs and run a worker over them."""
    parser = argparse.ArgumentParser(prog="rota demo", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="sample jobs (default 2000)")
    parser.add_argument("--concurrency", type=int, default=20, help="jobs at once (default 20)")
    parser.add_argument(
        "--db",
        metavar="URL",
        help="the database: a path or sqlite:/// URL (default: a new temporary file)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rota-demo-") as tmp:
        db = args.db or str(Path(tmp) / "demo.db")
        summary = anyio.run(
            lambda: run_demo(db, jobs=args.jobs, concurrency=args.concurrency), backend="trio"
        )
    return 0 if summary.completed + summary.failed == summary.jobs else 1

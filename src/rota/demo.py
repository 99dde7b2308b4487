"""``rota demo``: the foundation at work, end to end, on a real SQLite file.

A supervision tree runs a Store actor (one thread, group commit), a sweeper that promotes
delayed jobs and rescues expired leases, and a few workers that claim jobs in batches,
settle them together with their next claim in one transaction, and sometimes crash on
purpose. It prints progress as it goes and a summary at the end: what ran, what was retried,
what the supervisors restarted, how many transactions the Store needed.

The job runtime proper (typed jobs, ``rota worker``) builds on exactly these pieces.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec

from rota.actors.kernel import ActorRef
from rota.actors.store import Store, StoreClient
from rota.domain import JobOptions, JobState, backoff, lifecycle
from rota.storage.engine import ClaimRequest, Completion, Failure
from rota.storage.sqlite import SqliteEngine
from rota.supervisors import ChildSpec, Restart, Strategy, Supervisor

__all__ = ["DemoSummary", "run_demo"]

QUEUE: Final = "demo"
LEASE_TTL_MS: Final = 400  # short, so the demo shows a rescue within a second


class Task(msgspec.Struct, frozen=True):
    """The demo's job payload: what the job does when it runs."""

    n: int
    outcome: str  # "ok" | "flaky" (fails its first attempt) | "crash" (kills its worker once)


@dataclass
class DemoSummary:
    jobs: int
    failed_attempts: int = 0
    worker_crashes: int = 0
    rescued: int = 0
    lost_leases: int = 0
    seconds: float = 0.0
    transactions: int = 0
    store_operations: int = 0
    restarts: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class _Crash(RuntimeError):
    """Raised by a demo worker on purpose, to be restarted by its supervisor."""


_decode_task = msgspec.json.Decoder(Task).decode


def _make_jobs(n: int, rng: random.Random) -> list[Task]:
    outcomes = ["ok"] * 90 + ["flaky"] * 10
    tasks = [Task(i, rng.choice(outcomes)) for i in range(n)]
    for i in rng.sample(range(n), k=min(2, n)):  # two jobs kill their worker once
        tasks[i] = Task(i, "crash")
    return tasks


async def run_demo(
    db_path: str | os.PathLike[str],
    *,
    jobs: int = 2000,
    workers: int = 3,
    seed: int = 7,
    out: Callable[[str], None] = print,
) -> DemoSummary:
    """Run the demo on ``db_path``; returns the figures it prints."""
    rng = random.Random(seed)
    summary = DemoSummary(jobs=jobs)
    crashed_once: set[int] = set()
    store_ref = ActorRef("store", lambda: Store(lambda: SqliteEngine(db_path)))
    store = StoreClient(store_ref)

    async def worker(name: str, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        incarnation = next(counter)
        owner = f"{name}#{incarnation}"  # a restarted worker is a new lease owner
        task_status.started()
        completions: list[Completion] = []
        failures: list[Failure] = []
        while True:
            claim = ClaimRequest(QUEUE, owner, 50, LEASE_TTL_MS)
            settled = await store.settle_and_claim(completions, failures, claim)
            summary.lost_leases += len(settled.lost)
            completions, failures = [], []
            if not settled.claimed:
                await anyio.sleep(0.02)
                continue
            for job in settled.claimed:
                task = _decode_task(job.payload)
                assert job.token is not None
                if task.outcome == "crash" and job.id not in crashed_once:
                    crashed_once.add(job.id)
                    summary.worker_crashes += 1
                    raise _Crash(f"job {job.id} crashed worker {owner} (on purpose)")
                if task.outcome == "flaky" and job.attempt == 1:
                    summary.failed_attempts += 1
                    failures.append(Failure(job.id, job.token, "flaky: first attempt fails"))
                else:
                    completions.append(Completion(job.id, job.token, b'"ok"'))
            await anyio.lowlevel.checkpoint()

    async def sweeper(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        task_status.started()
        while True:
            await store.promote_due()
            rescued = await store.rescue_expired()
            summary.rescued += len(rescued.requeued) + len(rescued.failed)
            await anyio.sleep(0.1)

    counter = itertools.count(1)
    worker_specs = [
        ChildSpec(
            f"worker-{i}",
            functools.partial(worker, f"worker-{i}"),
            restart=Restart.PERMANENT,
        )
        for i in range(1, workers + 1)
    ]
    workers_sup = Supervisor(
        "workers", worker_specs, strategy=Strategy.ONE_FOR_ONE, max_restarts=5, period_s=10
    )
    root = Supervisor(
        "runtime",
        [
            ChildSpec("store", store_ref.run, stop=store_ref.request_stop, grace_s=5.0),
            ChildSpec("sweeper", sweeper),
            workers_sup.child_spec(),
        ],
        strategy=Strategy.REST_FOR_ONE,
        max_restarts=3,
        period_s=60,
    )

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        await tg.start(root.run)
        tasks = _make_jobs(jobs, rng)
        encode = msgspec.json.encode
        options = JobOptions(queue=QUEUE, max_attempts=3, max_stalls=2, backoff=backoff.fixed(0.05))
        now = int(time.time() * 1000)
        new_jobs = [lifecycle.new_job("demo.task", encode(t), options, now) for t in tasks]
        await store.enqueue(new_jobs)  # one call, one transaction
        out(
            f"enqueued {jobs} jobs in one transaction; {workers} workers, lease ttl "
            f"{LEASE_TTL_MS} ms, 2 jobs crash their worker once, ~10% fail their first try"
        )
        progress = _Progress(jobs, out)
        while True:
            counts = await store.count(QUEUE)
            finished = counts[JobState.COMPLETED] + counts[JobState.FAILED]
            progress.show(finished, summary)
            if finished >= jobs:
                break
            await anyio.sleep(0.05)
        summary.seconds = time.perf_counter() - started
        stats = store_ref.actor.statistics() if store_ref.actor else None
        if stats is not None:
            summary.transactions = stats.transactions
            summary.store_operations = stats.operations
        summary.counts = {str(s): n for s, n in counts.items()}
        summary.restarts = {
            **workers_sup.statistics().restarts,
            **root.statistics().restarts,
        }
        await root.stop()
    progress.finish()
    _print_summary(summary, out)
    return summary


class _Progress:
    """A one-line progress bar on a terminal; a line per 10% elsewhere."""

    def __init__(self, total: int, out: Callable[[str], None]) -> None:
        self.total = total
        self.out = out
        self.tty = out is print and sys.stdout.isatty()
        self.last_decile = -1

    def show(self, finished: int, s: DemoSummary) -> None:
        width = 30
        filled = width * finished // max(self.total, 1)
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {finished}/{self.total} finished"
            f"  retried {s.failed_attempts}  worker crashes {s.worker_crashes}"
            f"  rescued {s.rescued}"
        )
        if self.tty:
            sys.stdout.write("\r" + line)
            sys.stdout.flush()
        elif (decile := 10 * finished // max(self.total, 1)) > self.last_decile:
            self.last_decile = decile
            self.out(line)

    def finish(self) -> None:
        if self.tty:
            sys.stdout.write("\n")


def _print_summary(s: DemoSummary, out: Callable[[str], None]) -> None:
    rate = s.jobs / s.seconds if s.seconds else 0.0
    out(
        f"done: {s.jobs} jobs in {s.seconds:.2f} s ({rate:,.0f} jobs/s, demo pace, not a benchmark)"
    )
    out(f"  states:        {', '.join(f'{k} {v}' for k, v in s.counts.items() if v)}")
    out(f"  retried:       {s.failed_attempts} failed first attempts ran again and completed")
    out(
        f"  crashes:       {s.worker_crashes} workers crashed mid-batch; supervisors restarted "
        f"them ({', '.join(f'{k} x{v}' for k, v in s.restarts.items() if v) or 'none'})"
    )
    out(f"  rescued:       {s.rescued} jobs whose leases expired with their worker were run again")
    out(f"  fencing:       {s.lost_leases} settlements refused for lost leases")
    out(
        f"  group commit:  {s.store_operations} store operations in {s.transactions} "
        f"transactions ({s.store_operations / max(s.transactions, 1):.1f} per commit)"
    )


class _OneLine(logging.Formatter):
    """Supervisor events as one line each: the demo crashes workers on purpose."""

    def formatException(self, ei: object) -> str:
        return ""

    def format(self, record: logging.LogRecord) -> str:
        record.exc_info = record.exc_text = None
        return super().format(record)


def _show_supervisor_events() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_OneLine("  supervisor: %(message)s"))
    logger = logging.getLogger("rota.supervisors")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="rota demo", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs to run (default 2000)")
    parser.add_argument("--workers", type=int, default=3, help="worker actors (default 3)")
    parser.add_argument("--db", help="SQLite file (default: a new temporary file)")
    args = parser.parse_args(argv)
    _show_supervisor_events()
    with tempfile.TemporaryDirectory(prefix="rota-demo-") as tmp:
        db = args.db or str(Path(tmp) / "demo.db")
        print(f"rota demo on {db} (SQLite, WAL, synchronous=FULL)")
        summary = anyio.run(
            lambda: run_demo(db, jobs=args.jobs, workers=args.workers), backend="trio"
        )
    ok = summary.counts.get(str(JobState.COMPLETED), 0) == summary.jobs
    return 0 if ok else 1

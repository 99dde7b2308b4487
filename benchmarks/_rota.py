"""rota as the benchmarks use it: an app over one database file with a no-op job whose
starts are counted, and an engine that says when completions were committed.

Nothing here changes what rota does: ``BenchApp`` only overrides ``App.engine()`` (the
factory every rota connection comes from) to return a ``TimedEngine``, a ``SqliteEngine``
that, after a transaction holding completions has committed, adds them to a counter and
notes the time (on the Store's thread). That is how a drain is timed "to the last
completion commit" without polling the database.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio

import rota
from rota.domain.job import JobState
from rota.storage.engine import Settled
from rota.storage.sqlite import SqliteEngine

from ._util import FILLER, Item, Ping, check_synchronous

QUEUE = "bench"
#: A queue nothing is enqueued on: a runtime working only on it runs its Store (group
#: commit) without draining the queue the enqueue figures fill.
IDLE_QUEUE = "idle"

#: Options every benchmark app uses: nothing is deleted while it is measured (retention
#: would remove completed jobs before they are counted).
BENCH_OPTIONS: dict[str, Any] = {
    "retain_completed": None,
    "retain_completed_s": None,
    "retain_failed_s": None,
}


class CommitTracker:
    """Completions committed so far and the time of the last such commit (perf_counter)."""

    def __init__(self) -> None:
        self.completed = 0
        self.last_commit = 0.0
        self.transactions = 0
        """Transactions (``engine.batch()``) the app's engines ran: the Store's, in a worker."""
        self.target: int | None = None
        self.reached = threading.Event()
        self._lock = threading.Lock()

    def committed(self, n: int) -> None:
        with self._lock:
            self.completed += n
            self.last_commit = time.perf_counter()
            if self.target is not None and self.completed >= self.target:
                self.reached.set()

    def expect(self, n: int) -> None:
        with self._lock:
            self.target = n
            if self.completed >= n:
                self.reached.set()


class TimedEngine(SqliteEngine):
    """A SqliteEngine that reports completions once their transaction has committed."""

    def __init__(self, *args: Any, tracker: CommitTracker, sync: str, **kwargs: Any) -> None:
        super().__init__(*args, synchronous=sync, **kwargs)  # type: ignore[arg-type]
        self._tracker = tracker
        self._pending = 0
        self._batching = False
        # Honesty: the connection really runs with the mode the run says (FULL: an fsync
        # per commit). rota has no public accessor for its connection; this reads it.
        conn = getattr(self, "_conn", None)
        if conn is not None:
            check_synchronous(conn, sync, "rota engine")

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        self._tracker.transactions += 1
        self._pending, self._batching = 0, True
        try:
            with super().batch():
                yield
        finally:
            self._batching = False
        # Only here has COMMIT returned: count what the transaction stored.
        if self._pending:
            self._tracker.committed(self._pending)
        self._pending = 0

    def settle_and_claim(self, completions: Sequence[Any], *args: Any, **kwargs: Any) -> Settled:
        settled = super().settle_and_claim(completions, *args, **kwargs)
        stored = len(completions) - len(settled.lost)
        if self._batching:
            self._pending += stored
        elif stored:
            self._tracker.committed(stored)
        return settled


class BenchApp(rota.App):
    """``rota.App`` whose engines are ``TimedEngine``s sharing one ``CommitTracker``."""

    def __init__(self, database: str | Path, *, sync: str, **options: Any) -> None:
        super().__init__(str(database), synchronous=sync, **{**BENCH_OPTIONS, **options})
        self.sync = sync
        self.tracker = CommitTracker()

    def engine(self, *, synchronous: Any = None, own_doorbell: str | None = None) -> SqliteEngine:
        engine = TimedEngine(
            self.database_path,
            tracker=self.tracker,
            sync=synchronous or self.sync,
            clock=self.clock,
        )
        if own_doorbell is not None:  # as open_engine does: a runtime never rings itself
            engine.own_doorbell = own_doorbell
        return engine


class Starts:
    """Counts handler starts per job index: each must be exactly 1 at the end."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.counts = bytearray(n)
        self.started = 0
        self.first = 0.0
        self.last = 0.0
        self.latencies: list[float] = []
        self.all_started = threading.Event()
        #: called (on the handler's thread) after each start
        self.notify: Callable[[], None] | None = None

    def start(self, i: int) -> None:
        now = time.perf_counter()
        if not self.started:
            self.first = now
        self.last = now
        self.counts[i] += 1
        self.started += 1
        if self.started >= self.n:
            self.all_started.set()
        if self.notify is not None:
            self.notify()

    def check_exactly_once(self) -> None:
        assert self.started == self.n, f"{self.started} handler starts for {self.n} jobs"
        bad = [i for i, c in enumerate(self.counts) if c != 1]
        assert not bad, f"jobs not run exactly once: {bad[:10]} (of {len(bad)})"


def make_app(
    database: str | Path, sync: str, n: int, **options: Any
) -> tuple[BenchApp, Any, Any, Starts]:
    """An app with two jobs: ``noop`` (an ``Item``: counts its start, does nothing) and
    ``ping`` (a ``Ping``: records enqueue → start latency)."""
    app = BenchApp(database, sync=sync, **options)
    starts = Starts(n)

    @app.job(name="bench.noop", queue=QUEUE)
    async def noop(args: Item) -> None:
        starts.start(args.i)

    @app.job(name="bench.ping", queue=QUEUE)
    async def ping(args: Ping) -> None:
        starts.latencies.append(time.perf_counter() - args.t)
        starts.start(args.i)

    return app, noop, ping, starts


def pre_enqueue(app: BenchApp, job: Any, n: int, start: int = 0, batch: int = 10_000) -> None:
    """Store ``n`` waiting ``noop`` jobs fast (not measured): rota's own validation and
    ``engine.enqueue`` in large batches, one commit each, on a NORMAL connection."""
    engine = SqliteEngine(app.database_path, synchronous="NORMAL", clock=app.clock)
    try:
        engine.migrate()
        now = app.clock()
        for lo in range(start, start + n, batch):
            hi = min(lo + batch, start + n)
            engine.enqueue([job.new_job(Item(i=i, s=FILLER), now) for i in range(lo, hi)])
    finally:
        engine.close()


def count_states(app: BenchApp, queue: str = QUEUE) -> dict[JobState, int]:
    engine = SqliteEngine(app.database_path, synchronous=app.sync)
    try:
        engine.migrate()
        return engine.count(queue)
    finally:
        engine.close()


async def ping_idle_worker(
    ping: Any,
    starts: Starts,
    pings: int,
    gap_s: Callable[[], float],
    *,
    before: Callable[[], None] | None = None,
    after: Callable[[float, float, float], None] | None = None,
) -> None:
    """Inside ``app.run()``: ``pings`` times, wait ``gap_s()``, enqueue a ``Ping`` stamped
    with the time just before the call, and wait until its handler started (so the worker
    is idle again). ``after(enqueued, returned, started)`` gets the three perf_counter
    times of each ping."""
    for i in range(pings):
        await anyio.sleep(gap_s())
        started = anyio.Event()
        starts.notify = started.set
        if before is not None:
            before()
        enqueued = time.perf_counter()
        await ping.enqueue(Ping(i=i, t=enqueued))
        returned = time.perf_counter()
        await started.wait()
        if after is not None:
            after(enqueued, returned, starts.last)

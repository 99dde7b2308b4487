"""The runtime's change feed: its doorbell recorded with its owner, rings from producers
(another App, another runtime, an engine of another connection) waking it at once, and
the poll as the fallback when no ring comes.

Each runtime that must be woken by a ring runs with ``poll_interval_s=60``: a job that
starts (or a cancel that takes effect) within the tests' generous bound of a few seconds
was noticed through the doorbell, never the poll."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import anyio
import pytest
from rt_support import Item, wait_for, wait_state

from rota.app import App, Context
from rota.domain.job import JobState
from rota.runtime import _FeedWatcher
from rota.storage import feed as feed_module
from rota.storage.feed import SqliteChangeFeed, ring
from rota.storage.sqlite import SqliteEngine

pytestmark = pytest.mark.anyio

#: Long enough that no test can be passed by the poll.
NO_POLL = {"poll_interval_s": 60.0}
#: What "at once" means on a loaded 2-core test machine.
SOON_S = 5.0


def feed_of(runtime: object) -> SqliteChangeFeed:
    feed = getattr(runtime, "feed", None)
    assert isinstance(feed, SqliteChangeFeed)
    return feed


async def test_a_runtime_records_its_doorbell_with_its_owner_and_removes_both_at_stop(
    make_app: Callable[..., App], db_path: str
) -> None:
    app = make_app(db_path)

    @app.job(queue="q")
    async def noop(args: Item) -> None:
        pass

    async with app.run() as runtime:
        address = runtime.owner.doorbell
        assert address is not None
        assert address == feed_of(runtime).doorbell
        engine = SqliteEngine(db_path)
        try:
            [owner] = engine.list_owners()
            assert (owner.id, owner.doorbell, owner.host) == (
                runtime.owner.id, address, socket.gethostname(),
            )  # fmt: skip
        finally:
            engine.close()
    engine = SqliteEngine(db_path)
    try:
        assert engine.list_owners() == []  # removed with its owner
    finally:
        engine.close()
    assert ring([address]) == 0  # and nobody listens there any more


@pytest.mark.parametrize("how", ["enqueue_sync", "enqueue", "enqueue_many"])
async def test_a_job_enqueued_by_another_app_starts_at_once_woken_by_the_doorbell(
    make_app: Callable[..., App], db_path: str, how: str
) -> None:
    worker = make_app(db_path, **NO_POLL)
    producer = make_app(db_path)  # another "process": no runtime, its own connections
    started: list[int] = []

    @worker.job(name="record", queue="q")
    async def record(args: Item) -> None:
        started.append(args.n)

    @producer.job(name="record", queue="q")
    async def record_there(args: Item) -> None:
        raise AssertionError("the producer never runs jobs")

    async with worker.run() as runtime:
        await anyio.sleep(0.1)  # the pool's first claim found nothing
        with anyio.fail_after(SOON_S):
            if how == "enqueue_sync":
                await anyio.to_thread.run_sync(lambda: record_there.enqueue_sync(Item(1)))
            elif how == "enqueue":
                await record_there.enqueue(Item(1))
            else:
                await record_there.enqueue_many([Item(1)])
            await wait_for(lambda: started == [1], timeout=SOON_S, what="the job to start")
        assert feed_of(runtime).rings >= 1
        assert feed_of(runtime).polls == 0


async def test_a_retry_or_a_resume_by_another_app_wakes_the_runtime_at_once(
    make_app: Callable[..., App], db_path: str
) -> None:
    worker = make_app(db_path, **NO_POLL)
    producer = make_app(db_path)
    runs: list[int] = []

    @worker.job(name="flaky", queue="q", max_attempts=1)
    async def flaky(args: Item) -> None:
        runs.append(args.n)
        if len(runs) == 1:
            raise RuntimeError("first time")

    async with worker.run():
        handle = await flaky.enqueue(Item(1))
        await wait_state(handle, JobState.FAILED)
        with anyio.fail_after(SOON_S):
            await producer.queue("q").retry(handle.id)
            await wait_state(handle, JobState.COMPLETED, timeout=SOON_S)
        await producer.queue("q").pause()
        second = await flaky.enqueue(Item(2))
        await anyio.sleep(0.1)
        assert (await second.info()).state is JobState.WAITING  # paused
        with anyio.fail_after(SOON_S):
            await producer.queue("q").resume()
            await wait_state(second, JobState.COMPLETED, timeout=SOON_S)
    assert runs == [1, 1, 2]


async def test_a_cancel_asked_by_another_app_stops_a_running_job_at_once(
    make_app: Callable[..., App], db_path: str
) -> None:
    # Renewals, which report cancels too, come every 20 s: only a ring can be in time.
    worker = make_app(db_path, **NO_POLL, lease_ttl_s=60.0)
    producer = make_app(db_path)
    started = anyio.Event()

    @worker.job(queue="q")
    async def hang(args: Item, ctx: Context) -> None:
        started.set()
        await anyio.sleep_forever()

    async with worker.run():
        handle = await hang.enqueue(Item(1))
        await started.wait()
        with anyio.fail_after(SOON_S):
            assert await producer.handle(handle.id).cancel() is JobState.ACTIVE
            await wait_state(handle, JobState.CANCELLED, timeout=SOON_S)


async def test_a_runtime_enqueueing_to_a_queue_another_runtime_serves_rings_it(
    make_app: Callable[..., App], db_path: str
) -> None:
    # Two runtimes (two apps in one process here; two processes alike): a's Store commits
    # a job of queue "b", which only b's runtime serves.
    a = make_app(db_path, **NO_POLL)
    b = make_app(db_path, **NO_POLL)
    started: list[str] = []

    @a.job(name="on_a", queue="a")
    async def on_a(args: Item) -> None:
        pass

    @a.job(name="on_b", queue="b")
    async def on_b_from_a(args: Item) -> None:
        raise AssertionError("runtime a does not serve queue b")

    @b.job(name="on_b", queue="b")
    async def on_b(args: Item) -> None:
        started.append("b")

    async with b.run() as runtime_b, a.run(queues=["a"]) as runtime_a:
        await anyio.sleep(0.1)
        with anyio.fail_after(SOON_S):
            await on_b_from_a.enqueue(Item(1))  # through a's Store
            await wait_for(lambda: started == ["b"], timeout=SOON_S, what="b's job")
        assert feed_of(runtime_b).rings >= 1
        assert feed_of(runtime_a).rings == 0


@pytest.mark.parametrize("poll_interval_s", [60.0, 0.005])
async def test_a_runtimes_own_commits_never_wake_it(
    make_app: Callable[..., App], db_path: str, poll_interval_s: float
) -> None:
    # Neither by a ring (its engine never rings it) nor by the poll (which sees every
    # commit, but asks the Store's connection, where its own commits never show).
    app = make_app(db_path, poll_interval_s=poll_interval_s)
    done: list[int] = []

    @app.job(queue="q", max_attempts=1)
    async def work(args: Item) -> None:
        done.append(args.n)
        if args.n == 0:
            raise RuntimeError("fails once")

    async with app.run() as runtime:
        with anyio.fail_after(10):
            first = await work.enqueue(Item(0))
            await wait_state(first, JobState.FAILED)
            for n in range(1, 6):
                await work.enqueue(Item(n))
            await work.enqueue_many([Item(n) for n in range(6, 9)])
            await app.queue("q").retry(first.id)
            await wait_for(lambda: len(done) == 10, what="every job")
        await anyio.sleep(0.1)  # a ring, or a poll, would have been read by now
        feed = feed_of(runtime)
        assert (feed.rings, feed.polls) == (0, 0)
        if poll_interval_s < 1:
            assert feed.dismissed >= 1  # the poll saw its commits, and let them be


async def test_the_poll_wakes_a_runtime_that_no_ring_reached(
    make_app: Callable[..., App], db_path: str
) -> None:
    app = make_app(db_path, poll_interval_s=0.05)
    started: list[int] = []

    @app.job(name="record", queue="q")
    async def record(args: Item) -> None:
        started.append(args.n)

    async with app.run() as runtime:
        await anyio.sleep(0.1)
        engine = SqliteEngine(db_path)
        try:
            # A connection that does not ring this runtime (as a hand edit, an older rota,
            # or a lost datagram): its commit is found by the poll.
            engine.own_doorbell = runtime.owner.doorbell
            job = record.new_job(Item(7), engine.now_ms())
            with anyio.fail_after(SOON_S):
                await anyio.to_thread.run_sync(lambda: engine.enqueue([job]))
                await wait_for(lambda: started == [7], timeout=SOON_S, what="the job")
        finally:
            engine.close()
        assert feed_of(runtime).polls >= 1
        assert feed_of(runtime).rings == 0


async def test_a_runtime_whose_doorbell_cannot_be_bound_works_by_polling(
    make_app: Callable[..., App],
    db_path: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(feed_module.Doorbell, "__init__", refuse)
    worker = make_app(db_path, poll_interval_s=0.05)
    producer = make_app(db_path)
    started: list[int] = []

    @worker.job(name="record", queue="q")
    async def record(args: Item) -> None:
        started.append(args.n)

    @producer.job(name="record", queue="q")
    async def record_there(args: Item) -> None:
        raise AssertionError("the producer never runs jobs")

    with caplog.at_level("WARNING", logger="rota.storage"):
        async with worker.run() as runtime:
            assert runtime.owner.doorbell is None
            await anyio.sleep(0.1)  # the pool's first claim found nothing
            with anyio.fail_after(SOON_S):
                await record_there.enqueue(Item(3))
                await wait_for(lambda: started == [3], timeout=SOON_S, what="the job")
            assert feed_of(runtime).polls >= 1
    assert any("polling alone" in r.getMessage() for r in caplog.records)


async def test_a_runtime_that_stops_hands_its_jobs_to_another_at_once(
    make_app: Callable[..., App], db_path: str
) -> None:
    # The stopping runtime releases the job it was running (uncounted): its Store's commit
    # rings the other runtime serving the queue, which runs it again without a poll.
    a = make_app(db_path, **NO_POLL, shutdown_grace_s=0.0)
    b = make_app(db_path, **NO_POLL)
    runs: list[str] = []
    a_started = anyio.Event()

    @a.job(name="work", queue="q")
    async def on_a(args: Item) -> None:
        runs.append("a")
        a_started.set()
        await anyio.sleep_forever()

    @b.job(name="work", queue="q")
    async def on_b(args: Item) -> None:
        runs.append("b")

    async with b.run() as runtime_b:
        async with a.run():
            await anyio.sleep(0.1)  # b's first claim found nothing
            handle = await on_a.enqueue(Item(1))  # claimed by a, directly
            await a_started.wait()
        with anyio.fail_after(SOON_S):  # a stopped: the job is b's now
            await wait_state(handle, JobState.COMPLETED, timeout=SOON_S)
        assert feed_of(runtime_b).rings >= 1
    assert runs == ["a", "b"]
    assert (await b.handle(handle.id).info()).attempt == 1  # handed back, uncounted


class EndlessFeed:
    """A feed that reports a change at every wait (a stream of rings)."""

    doorbell = None

    def __init__(self) -> None:
        self.waits = 0
        self.closed = False

    def wait(self, timeout_s: float) -> bool:
        self.waits += 1
        time.sleep(0.001)
        return not self.closed

    def close(self) -> None:
        self.closed = True


async def test_the_feeds_thread_schedules_one_wake_up_at_a_time() -> None:
    # A burst of changes costs the loop one call: a call scheduled and not yet run covers
    # the changes seen meanwhile (it runs after them).
    feed = EndlessFeed()
    scheduled: list[Callable[[], None]] = []
    woken: list[int] = []
    watcher = _FeedWatcher(feed, lambda fn, *args: scheduled.append(fn), lambda: woken.append(1))
    try:
        await wait_for(lambda: feed.waits >= 20, what="twenty changes")
        assert len(scheduled) == 1 and woken == []
        scheduled[0]()  # the loop runs it
        assert woken == [1]
        await wait_for(lambda: len(scheduled) == 2, what="the next change to be scheduled")
    finally:
        watcher.stop()
    assert feed.closed

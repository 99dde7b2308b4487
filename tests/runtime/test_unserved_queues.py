"""An enqueue to a queue that no live worker serves still succeeds (workers may start
later), and logs one WARNING per queue per App saying so. Finding out costs one read of
the owners at most once per queue (the answer is kept), and none at all when a runtime in
this process serves the queue: nothing is added per enqueue on the hot path."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from rt_support import Item

from rota.app import App
from rota.domain.event import Owner
from rota.domain.job import JobState
from rota.storage.sqlite import SqliteEngine

pytestmark = pytest.mark.anyio


def define(app: App) -> Any:
    @app.job(queue="q")
    async def work(args: Item) -> int:
        return args.n

    @app.job(queue="r")
    async def other(args: Item) -> int:
        return args.n

    return work, other


@pytest.fixture
def owner_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the reads of the owners table, by any engine of this process."""
    reads: list[int] = []
    list_owners = SqliteEngine.list_owners

    def counted(engine: SqliteEngine) -> Any:
        reads.append(1)
        return list_owners(engine)

    monkeypatch.setattr(SqliteEngine, "list_owners", counted)
    return reads


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rota.app"]


def expected(queue: str) -> str:
    return (
        f"enqueued to queue {queue!r}, which no live worker serves (none sent a heartbeat "
        "in the last 3 s): its jobs wait until a worker for it starts "
        "(rota worker module:app); said once per queue"
    )


async def test_no_worker_anywhere_warns_once_per_queue(
    make_app: Callable[..., App],
    db_path: str,
    caplog: pytest.LogCaptureFixture,
    owner_reads: list[int],
) -> None:
    app = make_app(db_path)  # heartbeat_interval_s=1.0: live within 3 s
    work, other = define(app)
    with caplog.at_level(logging.WARNING, logger="rota.app"):
        first = await work.enqueue(Item(1))
        await work.enqueue(Item(2))
        await work.enqueue_many([Item(3), Item(4)])
        await anyio.to_thread.run_sync(lambda: work.enqueue_sync(Item(5)))
        await work.enqueue_many([])
        assert warnings_of(caplog) == [expected("q")]
        other.enqueue_sync(Item(6))
        await other.enqueue(Item(7))
    assert warnings_of(caplog) == [expected("q"), expected("r")]
    assert len(owner_reads) == 2  # once per queue
    assert await first.status() is JobState.WAITING  # enqueued all the same
    # Another App (another process) says it again: once per queue per App.
    again = make_app(db_path)
    work_again, _ = define(again)
    with caplog.at_level(logging.WARNING, logger="rota.app"):
        work_again.enqueue_sync(Item(8))
    assert warnings_of(caplog)[-1] == expected("q")


async def test_a_runtime_in_this_process_serving_the_queue_counts_without_a_read(
    make_app: Callable[..., App], caplog: pytest.LogCaptureFixture, owner_reads: list[int]
) -> None:
    app = make_app()
    work, _ = define(app)
    async with app.run(queues=["q"]):
        reads = len(owner_reads)  # the runtime's own start reads them
        with caplog.at_level(logging.WARNING, logger="rota.app"):
            handles = [await work.enqueue(Item(n)) for n in range(20)]
            await anyio.to_thread.run_sync(lambda: work.enqueue_sync(Item(99)))
            assert [await h.result(timeout=10) for h in handles] == list(range(20))
        assert len(owner_reads) == reads
    assert warnings_of(caplog) == []


async def test_a_worker_in_another_process_counts_if_its_heartbeat_is_recent(
    make_app: Callable[..., App],
    db_path: str,
    caplog: pytest.LogCaptureFixture,
    owner_reads: list[int],
) -> None:
    worker = make_app(db_path)
    define(worker)
    producer = make_app(db_path)
    work, other = define(producer)
    with SqliteEngine(db_path) as engine:
        engine.migrate()
        now = engine.now_ms()
        engine.register_owner(  # a worker of queue r that stopped beating a minute ago
            Owner(id="old", host="elsewhere", pid=1, started_at_ms=now - 120_000,
                  heartbeat_at_ms=now - 60_000, queues=["r"])
        )  # fmt: skip
    async with worker.run(queues=["q"]):
        with caplog.at_level(logging.WARNING, logger="rota.app"):
            reads = len(owner_reads)
            for n in range(20):
                work.enqueue_sync(Item(n))
            assert len(owner_reads) == reads + 1  # once, then the answer is kept
            assert warnings_of(caplog) == []
            other.enqueue_sync(Item(1))
    assert warnings_of(caplog) == [expected("r")]


async def test_a_failed_read_of_the_owners_never_fails_the_enqueue(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    work, _ = define(app)

    def broken(engine: SqliteEngine) -> Any:
        raise RuntimeError("no owners today")

    monkeypatch.setattr(SqliteEngine, "list_owners", broken)
    with caplog.at_level(logging.DEBUG, logger="rota.app"):
        handle = await work.enqueue(Item(1))
        work.enqueue_sync(Item(2))
    assert await handle.status() is JobState.WAITING
    assert [r.levelno for r in caplog.records if r.name == "rota.app"] == [logging.DEBUG]

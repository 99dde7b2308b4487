"""The Store actor: group commit on a dedicated thread, each caller its own outcome."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from rota.actors.kernel import ActorRef
from rota.actors.store import Store, StoreClient
from rota.domain import JobOptions, JobState, lifecycle
from rota.domain.job import NewJob
from rota.errors import ActorNotRunning, JobNotFound, LeaseLost, StorageError
from rota.storage import ops
from rota.storage.engine import ClaimRequest, Completion, Engine, LeaseRef
from rota.storage.sqlite import SqliteEngine

pytestmark = pytest.mark.anyio


def new(i: int = 0, queue: str = "q") -> NewJob:
    return lifecycle.new_job("task", b'{"i": %d}' % i, JobOptions(queue=queue), 1_000)


class Hold(ops.Op[str], frozen=True):
    """Keeps the engine thread busy, so the calls behind it pile up into one batch."""

    seconds: float

    def apply(self, engine: Engine) -> str:
        time.sleep(self.seconds)
        return "held"


@contextmanager
def store_client(db: str) -> Iterator[tuple[ActorRef[Store], StoreClient]]:
    ref = ActorRef("store", lambda: Store(lambda: SqliteEngine(db)))
    yield ref, StoreClient(ref, timeout_s=10)


async def test_group_commit_fewer_transactions_than_calls(
    anyio_backend: str, tmp_path: Path
) -> None:
    with store_client(str(tmp_path / "jobs.db")) as (ref, store):
        ids: dict[int, list[int]] = {}

        async def producer(i: int) -> None:
            ids[i] = await store.run(ops.Enqueue([new(i)]))

        async with anyio.create_task_group() as tg:
            await tg.start(ref.run)
            async with anyio.create_task_group() as producers:
                for i in range(200):
                    producers.start_soon(producer, i)
            stats = ref.actor.statistics() if ref.actor else None
            jobs = await store.run(ops.ListJobs(limit=1000))
            ref.request_stop()
    assert stats is not None
    assert stats.operations == 200
    assert stats.transactions < 200, stats
    all_ids = [job_id for got in ids.values() for job_id in got]
    assert len(set(all_ids)) == 200  # each caller got its own id
    by_id = {j.id: j for j in jobs}
    for i, [job_id] in ids.items():
        assert by_id[job_id].payload == b'{"i": %d}' % i  # ... and the right one


async def test_one_failing_operation_does_not_fail_its_batch(anyio_backend: str) -> None:
    with store_client(":memory:") as (ref, store):
        async with anyio.create_task_group() as tg:
            await tg.start(ref.run)
            [claimable] = await store.run(ops.Enqueue([new(0)]))
            outcomes: dict[str, Any] = {}

            async def run(label: str, op: Any) -> None:
                try:
                    outcomes[label] = await op
                except Exception as exc:
                    outcomes[label] = exc

            async with anyio.create_task_group() as callers:
                callers.start_soon(run, "hold", store.run(Hold(0.1)))
                await anyio.sleep(0.02)  # the engine thread is now busy with Hold
                callers.start_soon(run, "enqueue1", store.run(ops.Enqueue([new(1)])))
                callers.start_soon(
                    run, "stale", store.run(ops.Complete(Completion(claimable, 12345, b"x")))
                )
                callers.start_soon(run, "missing", store.run(ops.Get(999_999)))
                callers.start_soon(run, "enqueue2", store.run(ops.Enqueue([new(2)])))
                callers.start_soon(run, "count", store.run(ops.Count()))
            stats = ref.actor.statistics() if ref.actor else None
            claimed = await store.run(ops.Claim(ClaimRequest("q", "w1", 10, 30_000)))
            ref.request_stop()
    assert stats is not None
    # hold + the five queued calls in one more batch (+ the first enqueue)
    assert stats.transactions == 3
    assert stats.largest_batch == 5
    assert stats.failed_operations == 2
    assert isinstance(outcomes["stale"], LeaseLost)
    assert isinstance(outcomes["missing"], JobNotFound)
    assert len(outcomes["enqueue1"]) == 1
    assert len(outcomes["enqueue2"]) == 1
    assert sum(outcomes["count"].values()) in (1, 2, 3)  # a read rides in the batch too
    # both enqueues of the batch were committed beside the two failed operations
    assert {j.id for j in claimed} == {
        claimable,
        outcomes["enqueue1"][0],
        outcomes["enqueue2"][0],
    }


class CommitFails:
    """An engine whose transactions cannot commit (a full disk, say)."""

    def __init__(self) -> None:
        self.threads: set[int] = set()  # per instance: an earlier test's thread may
        # still be closing its own engine while this one runs

    def migrate(self) -> int:
        self.threads.add(threading.get_ident())
        return 1

    def close(self) -> None:
        self.threads.add(threading.get_ident())

    @contextmanager
    def batch(self) -> Iterator[None]:
        self.threads.add(threading.get_ident())
        yield
        raise StorageError("database or disk is full")

    def enqueue(self, jobs: list[NewJob]) -> list[int]:
        return list(range(len(jobs)))


async def test_failed_commit_fails_every_caller_and_crashes_the_store(anyio_backend: str) -> None:
    engines: list[CommitFails] = []

    def open_engine() -> CommitFails:
        engines.append(CommitFails())
        return engines[-1]

    ref = ActorRef("store", lambda: Store(open_engine))  # type: ignore[arg-type]
    store = StoreClient(ref)
    errors: list[BaseException] = []

    async def producer() -> None:
        try:
            await store.run(ops.Enqueue([new()]))
        except (StorageError, ActorNotRunning) as exc:
            errors.append(exc)

    with pytest.raises(ExceptionGroup) as info:
        async with anyio.create_task_group() as tg:
            await tg.start(ref.run)
            for _ in range(5):
                tg.start_soon(producer)
            await anyio.sleep(0.5)
    assert info.group_contains(StorageError, match="full")
    assert len(errors) == 5
    assert all(isinstance(e, StorageError) for e in errors), errors  # the truth, not "stopped"
    assert ref.statistics().crashes == 1
    # Every engine call happened on one thread, and not on the event loop's.
    [engine] = engines
    assert len(engine.threads) == 1
    assert threading.get_ident() not in engine.threads


async def test_restart_reopens_the_database_and_keeps_committed_jobs(
    anyio_backend: str, tmp_path: Path
) -> None:
    with store_client(str(tmp_path / "jobs.db")) as (ref, store):
        for expected_count in (1, 2):
            async with anyio.create_task_group() as tg:
                await tg.start(ref.run)
                await store.run(ops.Enqueue([new()]))
                assert (await store.run(ops.Count()))[JobState.WAITING] == expected_count
                ref.request_stop()
        assert ref.statistics().starts == 2


async def test_unknown_message_is_an_error_for_its_caller_only(anyio_backend: str) -> None:
    with store_client(":memory:") as (ref, store):
        async with anyio.create_task_group() as tg:
            await tg.start(ref.run)
            with pytest.raises(TypeError, match="does not handle"):
                await ref.call("not an op")
            assert await store.run(ops.Queues()) == []
            ref.request_stop()


async def test_every_client_operation_round_trips(anyio_backend: str) -> None:
    with store_client(":memory:") as (ref, store):
        async with anyio.create_task_group() as tg:
            await tg.start(ref.run)
            [a, b, c] = await store.run(ops.Enqueue([new(0), new(1), new(2, queue="other")]))
            claimed = await store.run(ops.Claim(ClaimRequest("q", "w1", 1, 30_000)))
            assert [j.id for j in claimed] == [a]
            token = claimed[0].token
            assert token is not None
            renewed = await store.run(ops.Renew([LeaseRef(a, token)], 30_000))
            assert renewed.renewed == [a]
            await store.run(ops.Complete(Completion(a, token, b"done")))
            assert (await store.run(ops.Get(a))).result == b"done"
            assert await store.run(ops.Cancel(b)) is JobState.CANCELLED
            assert await store.run(ops.Queues()) == ["other", "q"]
            assert [j.id for j in await store.run(ops.ListJobs(queue="other"))] == [c]
            assert await store.run(ops.PromoteDue()) == 0
            assert (await store.run(ops.RescueExpired())).requeued == []
            assert await store.run(ops.ReleaseOwner("w1", as_stall=False)) == []
            assert await store.run(ops.Prune(keep_last=0)) == 2
            ref.request_stop()


async def test_foreign_commits_reports_other_connections_commits_and_never_its_own(
    anyio_backend: str, tmp_path: Path
) -> None:
    # The change feed (on its own thread) asks the Store, when its poll sees a change,
    # whether that was another connection's: read on the Store's connection, where its own
    # commits never show.
    db = str(tmp_path / "jobs.db")
    ref = ActorRef("store", lambda: Store(lambda: SqliteEngine(db)))
    store = StoreClient(ref, timeout_s=10)
    async with anyio.create_task_group() as tg:
        await tg.start(ref.run)
        actor = ref.actor
        assert isinstance(actor, Store)

        def ask() -> bool:  # from a thread that is neither the Store's nor the loop's
            return actor.foreign_commits(5.0)

        for i in range(5):  # its own commits
            await store.run(ops.Enqueue([new(i)]))
        assert await anyio.to_thread.run_sync(ask) is False
        other = SqliteEngine(db)
        try:
            other.enqueue([new(99)])  # another connection commits
            assert await anyio.to_thread.run_sync(ask) is True
            assert await anyio.to_thread.run_sync(ask) is False  # reported once
            await store.run(ops.Enqueue([new(100)]))
            other.enqueue([new(101)])
            await store.run(ops.Enqueue([new(102)]))
            assert await anyio.to_thread.run_sync(ask) is True  # even between its own
        finally:
            other.close()
        ref.request_stop()
    assert actor.foreign_commits(5.0) is True  # stopped: cannot tell, says so at once


async def test_the_store_never_polls_and_verifies_its_file(
    anyio_backend: str, tmp_path: Path
) -> None:
    # Noticing other connections' commits is the change feed's (rota.storage.feed, tested
    # in tests/storage/test_sqlite_feed.py and tests/runtime/test_change_feed.py): the
    # Store's thread reads data_version only when asked; with on_fatal it checks its file.
    db = str(tmp_path / "jobs.db")
    calls: dict[str, int] = {"data_version": 0, "verify": 0}

    class Spied(SqliteEngine):
        def data_version(self) -> int:
            calls["data_version"] += 1
            return super().data_version()

        def verify(self) -> None:
            calls["verify"] += 1
            super().verify()

    fatal: list[StorageError] = []
    ref = ActorRef("store", lambda: Store(lambda: Spied(db), on_fatal=fatal.append))
    store = StoreClient(ref, timeout_s=10)
    async with anyio.create_task_group() as tg:
        await tg.start(ref.run)
        at_start = calls["data_version"]  # the baseline of foreign_commits, at the open
        other = SqliteEngine(db)
        try:
            for i in range(5):
                await store.run(ops.Enqueue([new(i)]))
                other.enqueue([new(100 + i)])  # another connection commits too
                await anyio.sleep(0.01)
        finally:
            other.close()
        await anyio.sleep(0.6)  # VERIFY_INTERVAL_S is 0.25 s: two checks at least, idle
        assert calls["verify"] >= 2
        assert at_start <= 1
        assert calls["data_version"] == at_start  # never polled
        assert fatal == []
        ref.request_stop()

"""The Scheduler's heartbeat reports the runtime's execution pools (``describe``), and a
``describe`` that fails never stops the heartbeat nor the Scheduler."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from rota.actors.duties import Heartbeat, PromoteAndRescue, Retention
from rota.actors.kernel import ActorRef
from rota.actors.scheduler import Scheduler, pid_alive
from rota.actors.store import Store, StoreClient
from rota.domain import JobOptions, JobState, lifecycle
from rota.domain.event import Owner
from rota.storage import ops
from rota.storage.sqlite import SqliteEngine

pytestmark = pytest.mark.anyio

HEARTBEAT_S = 0.02
OWNER = Owner(id="w1", host="test-host", pid=1, started_at_ms=0, heartbeat_at_ms=0, queues=["q"])


@asynccontextmanager
async def scheduler(
    db: str, describe: Callable[[], dict[str, Any]] | None
) -> AsyncIterator[tuple[ActorRef[Scheduler], StoreClient]]:
    """A Store and a Scheduler on ``db``; both stopped (Scheduler first) at the end."""
    store_ref = ActorRef("store", lambda: Store(lambda: SqliteEngine(db)))
    store = StoreClient(store_ref, timeout_s=10)
    ref = ActorRef(
        "scheduler",
        lambda: Scheduler(
            store=store,
            owner=OWNER,
            wake=lambda _: None,
            duties=[  # the runtime's duties; only the heartbeat comes round in a test
                Heartbeat(HEARTBEAT_S, describe=describe),
                PromoteAndRescue(3600),
                Retention(3600, retain_events_s=3600),
            ],
        ),
    )
    async with anyio.create_task_group() as tg:
        await tg.start(store_ref.run)
        async with anyio.create_task_group() as inner:
            await inner.start(ref.run)
            yield ref, store
            assert ref.running, "the scheduler stopped on its own"
            ref.request_stop()
        store_ref.request_stop()


async def owner_row(store: StoreClient) -> Owner:
    [row] = await store.run(ops.ListOwners())
    return row


async def wait_for(store: StoreClient, check: Callable[[Owner], bool]) -> Owner:
    """Poll the owner row until ``check`` holds (a heartbeat has no event to wait on)."""
    with anyio.fail_after(5):
        while True:
            row = await owner_row(store)
            if check(row):
                return row
            await anyio.sleep(HEARTBEAT_S / 2)


async def test_the_owner_row_carries_the_pools_describe_reports(
    anyio_backend: str, tmp_path: Path
) -> None:
    calls = 0

    def describe() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"q": {"concurrency": 4, "running": calls, "threads": {"size": 4, "alive": 1}}}

    async with scheduler(str(tmp_path / "db"), describe) as (_, store):
        registered = await owner_row(store)
        # registration stored the first report, before any heartbeat
        assert registered.pools is not None
        assert registered.pools["q"]["threads"] == {"size": 4, "alive": 1}
        # each heartbeat stores a fresh report
        row = await wait_for(store, lambda o: o.pools is not None and o.pools["q"]["running"] >= 3)
        assert row.heartbeat_at_ms > 0
        assert row.pools == {
            "q": {"concurrency": 4, "running": row.pools["q"]["running"],
                  "threads": {"size": 4, "alive": 1}},
        }  # fmt: skip
    assert calls >= 3


async def test_without_describe_there_are_no_pools(anyio_backend: str, tmp_path: Path) -> None:
    async with scheduler(str(tmp_path / "db"), None) as (_, store):
        row = await wait_for(store, lambda o: o.heartbeat_at_ms > 0)
        assert row.pools is None


def raising() -> dict[str, Any]:
    raise RuntimeError("pool is gone")


def not_json() -> dict[str, Any]:
    return {"q": {"lock": object()}}


@pytest.mark.parametrize("describe", [raising, not_json], ids=["raises", "not-json"])
async def test_a_failing_describe_still_heartbeats_without_pools(
    anyio_backend: str,
    tmp_path: Path,
    describe: Callable[[], dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="rota.scheduler"):
        async with scheduler(str(tmp_path / "db"), describe) as (ref, store):
            assert (await owner_row(store)).heartbeat_at_ms == 0  # registered, no pools
            first = await wait_for(store, lambda o: o.heartbeat_at_ms > 0)
            assert first.pools is None
            await wait_for(store, lambda o: o.heartbeat_at_ms > first.heartbeat_at_ms)
            assert ref.running  # the Scheduler is still up
    failures = [r for r in caplog.records if "describing the pools failed" in r.getMessage()]
    assert len(failures) >= 3  # at registration and at each heartbeat


async def test_a_failed_report_keeps_the_last_good_pools(
    anyio_backend: str, tmp_path: Path
) -> None:
    calls = 0

    def flaky() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("pool is gone")
        return {"q": {"running": 1}}

    async with scheduler(str(tmp_path / "db"), flaky) as (_, store):
        first = await wait_for(store, lambda o: o.heartbeat_at_ms > 0)
        await wait_for(store, lambda o: o.heartbeat_at_ms > first.heartbeat_at_ms)
        assert (await owner_row(store)).pools == {"q": {"running": 1}}
    assert calls >= 3


# --- owners that cannot be read, pids that cannot be --------------------------------------


@pytest.mark.parametrize("pid", [-1, 0, 2**31, 2**40, -(2**40)])
def test_pid_alive_says_no_for_an_impossible_pid_without_raising(pid: int) -> None:
    assert pid_alive(pid) is False  # -1 and 0 name process groups; 2**40 overflows pid_t


#: A pid no process has (above any Linux pid_max, within pid_t): an owner gone for good.
GONE_PID = 2**31 - 1


async def test_corrupt_owner_rows_are_reported_and_ignored_at_start(
    anyio_backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = str(tmp_path / "db")
    engine = SqliteEngine(db)
    engine.migrate()
    engine.close()
    conn = sqlite3.connect(db, isolation_level=None)
    rows = {  # id: pid, queues, pools: each on this Scheduler's host
        "pid-minus-one": (-1, '["q"]', None),
        "pid-zero": (0, '["q"]', None),
        "pid-huge": (2**40, '["q"]', None),
        "queues-not-json": (GONE_PID, "not json", None),
        "pools-garbage": (GONE_PID, '["q"]', b"\xff{garbage"),  # usable: released
        "gone": (GONE_PID, '["q"]', None),  # released
    }
    for owner_id, (pid, queues, pools) in rows.items():
        conn.execute(
            "INSERT INTO rota_owners (id, host, pid, started_at_ms, heartbeat_at_ms, queues, "
            "pools) VALUES (?, ?, ?, 0, 0, ?, ?)",
            (owner_id, OWNER.host, pid, queues, pools),
        )
    conn.close()
    with caplog.at_level(logging.WARNING):
        async with scheduler(db, None) as (ref, store):
            assert ref.running
            left = {o.id for o in await store.run(ops.ListOwners())}
    assert left == {OWNER.id}  # the corrupt rows are not owners the runtime sees...
    conn = sqlite3.connect(db)
    stored = {owner_id for (owner_id,) in conn.execute("SELECT id FROM rota_owners")}
    conn.close()
    # ... and were left alone (this Scheduler removed its own row at stop)
    assert stored == {"pid-minus-one", "pid-zero", "pid-huge", "queues-not-json"}
    messages = [r.getMessage() for r in caplog.records]
    for owner_id, column in [
        ("pid-minus-one", "pid"),
        ("pid-zero", "pid"),
        ("pid-huge", "pid"),
        ("queues-not-json", "queues"),
        ("pools-garbage", "pools"),
    ]:
        assert any(f"owner '{owner_id}'" in m and f"column {column}" in m for m in messages)
    assert any("owner gone (pid 2147483647) is gone" in m for m in messages)


async def test_a_gone_owner_whose_job_row_is_corrupt_is_released_and_the_job_failed(
    anyio_backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = str(tmp_path / "db")
    engine = SqliteEngine(db)
    engine.migrate()
    for owner_id in ("gone", "also-gone"):
        engine.register_owner(msgspec.structs.replace(OWNER, id=owner_id, pid=GONE_PID))
    engine.enqueue([lifecycle.new_job("t", b"{}", JobOptions(queue="q"), 0)] * 2)
    engine.claim("q", "gone", 1, 60_000)
    engine.claim("q", "also-gone", 1, 60_000)
    engine.close()
    conn = sqlite3.connect(db, isolation_level=None)  # gone's job: a backoff rota cannot read
    conn.execute("UPDATE rota_jobs SET backoff = '{garbage' WHERE owner = 'gone'")
    conn.close()
    with caplog.at_level(logging.WARNING, logger="rota.scheduler"):
        async with scheduler(db, None) as (ref, store):
            assert ref.running
            # both released: the corrupt job was failed for good on the way, not a crash
            assert {o.id for o in await store.run(ops.ListOwners())} == {OWNER.id}
            failed = await store.run(ops.ListJobs(state=JobState.FAILED))
            assert [job.owner for job in failed] == [None]
            assert failed[0].error is not None
            assert failed[0].error.startswith(f"corrupt row: job {failed[0].id}, column 'backoff'")
    messages = [r.getMessage() for r in caplog.records]
    assert any("owner gone (pid 2147483647) is gone: released 0" in m for m in messages)
    assert any("owner also-gone (pid 2147483647) is gone: released 1" in m for m in messages)

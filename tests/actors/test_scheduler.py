"""The Scheduler's heartbeat reports the runtime's execution pools (``describe``), and a
``describe`` that fails never stops the heartbeat nor the Scheduler."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from rota.actors.kernel import ActorRef
from rota.actors.scheduler import Scheduler, SchedulerSettings
from rota.actors.store import Store, StoreClient
from rota.domain.event import Owner
from rota.storage.sqlite import SqliteEngine

pytestmark = pytest.mark.anyio

HEARTBEAT_S = 0.02
OWNER = Owner(id="w1", host="test-host", pid=1, started_at_ms=0, heartbeat_at_ms=0, queues=["q"])
SETTINGS = SchedulerSettings(
    scheduler_interval_s=3600,
    heartbeat_interval_s=HEARTBEAT_S,
    retention_interval_s=3600,
    retain_events_s=3600,
    retention=[],
)


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
            store=store, owner=OWNER, settings=SETTINGS, wake=lambda _: None, describe=describe
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
    [row] = await store.list_owners()
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

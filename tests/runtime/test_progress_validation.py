"""``ctx.progress(...)`` checks its arguments when it is called, in every mode (async,
thread, process): ``value`` a finite int or float (not a bool) or None, ``step`` and
``total`` ints >= 0 with ``step <= total``, ``message`` a str; at least one of them.
Anything else raises ``TypeError`` or ``ValueError`` naming the argument, inside the
handler (which may catch it), and stores nothing. Reading a stored progress that does not
decode raises ``StorageError`` naming the job, never a raw msgspec error."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import input_app
import pytest
from input_app import BAD_PROGRESS, Case, refused_progress

import rota
from rota.app import App
from rota.domain.event import EventKind
from rota.errors import StorageError
from rota.storage import ops

pytestmark = pytest.mark.anyio


def check_refusals(outcomes: list[str]) -> None:
    assert len(outcomes) == len(BAD_PROGRESS)
    for outcome, (arguments, error, argument) in zip(outcomes, BAD_PROGRESS, strict=True):
        assert outcome.startswith(f"{error.__name__}: "), (arguments, outcome)
        assert re.search(rf"\b{argument}\b", outcome), (arguments, outcome)


async def progress_events(app: App, job_id: int) -> int:
    events = app._storage.run_sync(ops.Events(0))
    return sum(1 for e in events if e.job_id == job_id and e.kind is EventKind.PROGRESS)


async def test_progress_arguments_are_checked_in_async_and_thread_mode(
    make_app: Callable[..., App],
) -> None:
    app = make_app()

    @app.job(queue="q")
    async def in_loop(args: Case, ctx: rota.Context) -> list[str]:
        outcomes = []
        for arguments, _, _ in BAD_PROGRESS:
            try:
                await ctx.progress(**arguments)
            except Exception as exc:
                outcomes.append(f"{type(exc).__name__}: {exc}")
            else:
                outcomes.append("accepted")
        await ctx.progress(50, step=1, total=2, message="async")
        return outcomes

    @app.job(queue="q")
    def on_thread(args: Case, ctx: rota.SyncContext) -> list[str]:
        outcomes = refused_progress(ctx.progress)
        ctx.progress(50, step=1, total=2, message="thread")
        return outcomes

    async with app.run():
        with anyio.fail_after(10):
            handles = [await in_loop.enqueue(Case("")), await on_thread.enqueue(Case(""))]
            for handle, label in zip(handles, ["async", "thread"], strict=True):
                check_refusals(await handle.result())
                assert await handle.progress() == rota.Progress(
                    value=50.0, step=1, total=2, message=label
                )
                assert await progress_events(app, handle.id) == 1  # the refused: not stored


async def test_progress_arguments_are_checked_in_process_mode(
    make_app: Callable[..., App], tmp_path: Path
) -> None:
    app = make_app(str(tmp_path / "jobs.db"), import_name="input_app:app", processes=1)
    app.include(input_app.registry)
    async with app.run():
        with anyio.fail_after(20):
            handles = [
                await input_app.progress_sync.enqueue(Case("")),
                await input_app.progress_async.enqueue(Case("")),
            ]
            for handle, label in zip(handles, ["sync", "async"], strict=True):
                check_refusals(await handle.result())
                assert await handle.progress() == rota.Progress(
                    value=50.0, step=1, total=2, message=label
                )
                assert await progress_events(app, handle.id) == 1


async def test_valid_progress_forms(make_app: Callable[..., App]) -> None:
    app = make_app()
    seen: list[Any] = []

    @app.job(queue="q")
    async def report(args: Case, ctx: rota.Context) -> None:
        for arguments in (
            {"value": 0},
            {"value": -2.5},
            {"step": 0, "total": 0},
            {"step": 3},
            {"total": 7},
            {"message": ""},
            {"value": 10**15, "message": "a count"},
        ):
            await ctx.progress(**arguments)
            seen.append(await app.handle(ctx.job_id).progress())

    async with app.run():
        await (await report.enqueue(Case(""))).result(timeout=10)
    assert seen == [
        rota.Progress(value=0.0),
        rota.Progress(value=-2.5),
        rota.Progress(step=0, total=0),
        rota.Progress(step=3),
        rota.Progress(total=7),
        rota.Progress(message=""),
        rota.Progress(value=1e15, message="a count"),
    ]


async def test_a_stored_progress_that_does_not_decode_is_a_storage_error_naming_the_job(
    make_app: Callable[..., App], db_path: str
) -> None:
    app = make_app(db_path)

    @app.job(queue="q")
    async def report(args: Case, ctx: rota.Context) -> None:
        await ctx.progress(10)

    handle = await report.enqueue(Case(""))
    async with app.run():
        await handle.result(timeout=10)
    assert await handle.progress() == rota.Progress(value=10.0)
    for damaged in (b"{oops", b'{"value": "ten"}', b"[1, 2]"):
        with sqlite3.connect(db_path) as db:
            db.execute("UPDATE rota_jobs SET progress = ? WHERE id = ?", (damaged, handle.id))
        db.close()
        with pytest.raises(StorageError, match=rf"job {handle.id} .*progress does not decode"):
            await handle.progress()


async def test_a_log_line_utf8_cannot_store_is_kept_escaped(make_app: Callable[..., App]) -> None:
    """It used to fail the next progress report (or be lost at the end of the attempt)."""
    app = make_app()

    @app.job(queue="q", max_attempts=1)
    async def in_loop(args: Case, ctx: rota.Context) -> int:
        ctx.log("bad \ud800 line, é kept")
        await ctx.progress(1)
        return 1

    @app.job(queue="q", max_attempts=1)
    def on_thread(args: Case, ctx: rota.SyncContext) -> int:
        ctx.log("bad \udfff line, é kept")
        ctx.progress(1)
        return 1

    async with app.run():
        with anyio.fail_after(10):
            for job, escaped in ((in_loop, "\\ud800"), (on_thread, "\\udfff")):
                handle = await job.enqueue(Case(""))
                assert await handle.result() == 1
                assert [e.message for e in await handle.logs()] == [f"bad {escaped} line, é kept"]

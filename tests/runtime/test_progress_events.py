"""Progress and logs are stored on the job and emitted as events; ``app.events()`` streams
the events of every process (read here by the runtime's App and by a second App on the
same database file, which has no runtime of its own)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import msgspec
import pytest
from rt_support import Item, Other

import rota
from rota.app import App, Context
from rota.domain.event import Event, EventKind, Progress
from rota.domain.job import JobState
from rota.errors import JobFailed

pytestmark = pytest.mark.anyio


def define_jobs(app: App) -> tuple[rota.app.JobDefinition[Item, str], ...]:
    @app.job(queue="q")
    async def steps(args: Item, ctx: Context) -> str:
        for step in range(1, args.n + 1):
            ctx.log(f"step {step}")
            await ctx.progress(step * 100 / args.n, step=step, total=args.n, message=f"at {step}")
        ctx.log("done")  # after the last report: stored when the attempt ends
        return "ok"

    @app.job(queue="q", max_attempts=2, backoff=rota.fixed(0))
    async def broken(args: Item, ctx: Context) -> str:
        ctx.log(f"trying {ctx.attempt}")
        raise RuntimeError(f"broken on attempt {ctx.attempt}")

    return steps, broken


async def collect(
    app: App, done: Callable[[list[Event]], bool], *, queue: str | None = None
) -> list[Event]:
    """Events of a fresh database from the first one, until ``done(events)``."""
    events: list[Event] = []
    with anyio.fail_after(10):
        async for event in app.events(after_id=0, queue=queue):
            events.append(event)
            if done(events):
                return events
    raise AssertionError("unreachable")


def finished(*job_ids: int) -> Callable[[list[Event]], bool]:
    final = {EventKind.COMPLETED, EventKind.FAILED, EventKind.CANCELLED}

    def done(events: list[Event]) -> bool:
        return {e.job_id for e in events if e.kind in final} >= set(job_ids)

    return done


async def test_progress_and_logs_are_stored_and_emitted(
    make_app: Callable[..., App], db_path: str
) -> None:
    app = make_app(db_path)
    other = make_app(db_path)  # another "process" watching the same database
    steps, broken = define_jobs(app)
    live: list[Event] = []
    watched: list[Event] = []

    ok = await steps.enqueue(Item(3))
    bad = await broken.enqueue(Item(0))
    done = finished(ok.id, bad.id)

    async def watch(source: App, into: list[Event]) -> None:
        into.extend(await collect(source, done, queue="q"))

    async with app.run(), anyio.create_task_group() as tg:
        # both streams follow the jobs while they run (the second App polls the file)
        tg.start_soon(watch, app, live)
        tg.start_soon(watch, other, watched)
        assert await ok.result(timeout=10) == "ok"
        with pytest.raises(JobFailed):
            await bad.result(timeout=10)

    # stored on the job
    assert await ok.progress() == Progress(value=100.0, step=3, total=3, message="at 3")
    assert await bad.progress() is None
    logs = await ok.logs()
    assert [entry.message for entry in logs] == ["step 1", "step 2", "step 3", "done"]
    assert {(entry.job_id, entry.attempt) for entry in logs} == {(ok.id, 1)}
    assert [entry.message for entry in await ok.logs(limit=2, offset=1)] == ["step 2", "step 3"]
    assert [(e.attempt, e.message) for e in await bad.logs()] == [
        (1, "trying 1"),
        (2, "trying 2"),
    ]

    # emitted as events, in commit order, the same in both "processes"
    assert [e.id for e in live] == sorted(e.id for e in live)
    assert [(e.id, e.kind, e.job_id) for e in watched] == [(e.id, e.kind, e.job_id) for e in live]
    ok_events = [e for e in live if e.job_id == ok.id]
    assert [e.kind for e in ok_events] == [
        EventKind.ENQUEUED,
        EventKind.ACTIVE,
        EventKind.PROGRESS,
        EventKind.PROGRESS,
        EventKind.PROGRESS,
        EventKind.COMPLETED,
    ]
    progress = [
        msgspec.json.decode(e.data or b"", type=Progress)
        for e in ok_events
        if e.kind is EventKind.PROGRESS
    ]
    assert [(p.step, p.total, p.message) for p in progress] == [
        (1, 3, "at 1"),
        (2, 3, "at 2"),
        (3, 3, "at 3"),
    ]
    assert [round(p.value or 0, 3) for p in progress] == [33.333, 66.667, 100.0]
    bad_events = [(e.kind, e.attempt) for e in live if e.job_id == bad.id]
    assert bad_events == [
        (EventKind.ENQUEUED, 0),
        (EventKind.ACTIVE, 1),
        (EventKind.RETRYING, 1),
        (EventKind.ACTIVE, 2),
        (EventKind.FAILED, 2),
    ]
    failed = next(e for e in live if e.job_id == bad.id and e.kind is EventKind.FAILED)
    assert b"RuntimeError: broken on attempt 2" in (failed.data or b"")
    retrying = next(e for e in live if e.kind is EventKind.RETRYING)
    assert b"broken on attempt 1" in (retrying.data or b"")
    assert {(e.queue, e.name) for e in ok_events} == {("q", steps.name)}


async def test_events_filtered_by_kind_and_queue(make_app: Callable[..., App]) -> None:
    app = make_app()
    steps, _ = define_jobs(app)

    @app.job(queue="elsewhere")
    async def elsewhere(args: Other) -> None:
        return None

    first = await steps.enqueue(Item(2))
    await elsewhere.enqueue(Other("x"))
    async with app.run():
        assert await first.result(timeout=10) == "ok"
        with anyio.fail_after(10):
            stream = app.events(after_id=0, queue="q", kinds=["progress", EventKind.COMPLETED])
            got = [await anext(stream) for _ in range(3)]
            assert [(e.kind, e.job_id) for e in got] == [
                (EventKind.PROGRESS, first.id),
                (EventKind.PROGRESS, first.id),
                (EventKind.COMPLETED, first.id),
            ]
            # another job's completion arrives as it happens (the stream waits for it)
            second = await steps.enqueue(Item(1))
            nxt = [await anext(stream) for _ in range(2)]
            assert [(e.kind, e.job_id) for e in nxt] == [
                (EventKind.PROGRESS, second.id),
                (EventKind.COMPLETED, second.id),
            ]
            queue_only = app.events(after_id=0, queue="elsewhere")
            assert {(await anext(queue_only)).queue for _ in range(3)} == {"elsewhere"}


async def test_progress_after_the_lease_is_lost_is_refused(make_app: Callable[..., App]) -> None:
    app = make_app()
    seen: list[BaseException] = []

    @app.job(queue="q")
    async def late(args: Item, ctx: Context) -> str | None:
        engine = app.engine()
        try:  # someone else takes the job over: complete it under its current lease
            job = engine.get(ctx.job_id)
            assert job.token is not None
            engine.complete(ctx.job_id, job.token, b'"stolen"')
        finally:
            engine.close()
        try:
            await ctx.progress(50)
        except rota.LeaseLost as exc:
            seen.append(exc)
        return None

    handle = await late.enqueue(Item(1))
    async with app.run():
        assert await handle.result(timeout=5) == "stolen"
    assert len(seen) == 1
    job = await handle.info()
    assert (job.state, job.progress) == (JobState.COMPLETED, None)


async def test_events_from_now_on_start_when_the_stream_is_made(
    make_app: Callable[..., App],
) -> None:
    app = make_app()
    steps, _ = define_jobs(app)
    await steps.enqueue(Item(1))  # before "now": not streamed
    stream = app.events(kinds=["cancelled"])  # from now on
    handle = await steps.enqueue(Item(2))
    assert await handle.cancel() is JobState.CANCELLED
    with anyio.fail_after(1):
        event = await anext(stream)
    assert (event.kind, event.job_id) == (EventKind.CANCELLED, handle.id)

"""What a runtime logs about its jobs (``rota.job``, ``rota.job.log``): one INFO line per job
that finished, once its outcome is stored; a WARNING per failed attempt, saying what the
engine made of it (the next attempt and its delay, or failed for good with the traceback),
whatever ended it (an exception, ``Unrecoverable``, an unknown job name, a timeout, a lost
lease, a stall rescued by the Scheduler); ``ctx.log`` lines naming their job in every
mode; and nothing at all by default, when nobody configured logging."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import modes_app
import pytest
from rt_support import Item, wait_for, wait_state

import rota
from rota.actors import _joblog
from rota.app import App, Context, SyncContext
from rota.domain.job import JobState
from rota.testing import Clock, drain

pytestmark = pytest.mark.anyio

SRC = Path(rota.__file__).resolve().parents[1]


class Lines(logging.Handler):
    """The records of ``rota.job`` and ``rota.job.log``, and, for each ``rota.job`` record,
    the state its job had in the database when it was logged."""

    def __init__(self, database: str | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.stored: dict[int, JobState] = {}
        self.database = database

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.database is not None and record.name == "rota.job":
            conn = sqlite3.connect(self.database)
            try:
                job_id = getattr(record, "job_id")  # noqa: B009
                [(state,)] = conn.execute("SELECT state FROM rota_jobs WHERE id = ?", (job_id,))
            finally:
                conn.close()
            self.stored[len(self.records) - 1] = JobState(state)

    def of(self, logger: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.name == logger]

    def messages(self, logger: str = "rota.job") -> list[str]:
        return [r.getMessage() for r in self.of(logger)]


@pytest.fixture
def lines() -> Iterator[Callable[..., Lines]]:
    """``lines(level=logging.INFO, database=None)``: collect rota's job lines meanwhile."""
    installed: list[tuple[logging.Logger, Lines, int]] = []

    def install(level: int = logging.INFO, database: str | None = None) -> Lines:
        handler = Lines(database)
        logger = logging.getLogger("rota.job")  # rota.job.log's records propagate to it
        installed.append((logger, handler, logger.level))
        logger.addHandler(handler)
        logger.setLevel(level)
        return handler

    yield install
    for logger, handler, level in installed:
        logger.removeHandler(handler)
        logger.setLevel(level)


def fields(record: logging.LogRecord, *names: str) -> tuple[Any, ...]:
    return tuple(getattr(record, name, None) for name in names)


# -- finished jobs ------------------------------------------------------------------------------


async def test_each_finished_job_is_one_info_line_logged_once_its_outcome_is_stored(
    make_app: Callable[..., App], db_path: str, lines: Callable[..., Lines]
) -> None:
    log = lines(database=db_path)
    app = make_app(db_path)

    @app.job(name="jobs.double", queue="images", max_attempts=4)
    async def double(args: Item) -> int:
        await anyio.sleep(0.01)
        return args.n * 2

    handles = await double.enqueue_many([Item(n) for n in range(3)])
    async with app.run():
        assert [await h.result(timeout=10) for h in handles] == [0, 2, 4]
        await wait_for(lambda: len(log.of("rota.job")) == 3, what="three lines")
    records = log.of("rota.job")
    assert sorted(r.job_id for r in records) == [h.id for h in handles]  # type: ignore[attr-defined]
    for index, record in enumerate(log.records):
        assert record.levelno == logging.INFO
        job_id = record.job_id  # type: ignore[attr-defined]
        message = record.getMessage()
        assert message.startswith(f"jobs.double #{job_id} (images) attempt 1/4 completed in ")
        assert message.endswith(" ms")
        assert fields(record, "job", "queue", "attempt", "max_attempts", "outcome") == (
            "jobs.double",
            "images",
            1,
            4,
            "completed",
        )
        assert 0.01 <= record.duration_s < 5  # type: ignore[attr-defined]
        assert log.stored[index] is JobState.COMPLETED  # logged after the commit


# -- failed attempts ------------------------------------------------------------------------------


async def test_failed_attempts_warn_with_the_next_attempt_and_its_delay_then_failed_for_good(
    make_app: Callable[..., App], lines: Callable[..., Lines]
) -> None:
    log = lines()
    clock = Clock()
    app = make_app(clock=clock)

    @app.job(name="jobs.charge", queue="billing", max_attempts=3, backoff=rota.exponential(30))
    async def charge(args: Item, ctx: Context) -> None:
        raise RuntimeError(f"card declined on attempt {ctx.attempt}")

    handle = await charge.enqueue(Item(1))
    result = await drain(app, clock=clock, timeout_s=10)
    assert result.failed == 1
    first, second, last = log.of("rota.job")
    head = f"jobs.charge #{handle.id} (billing)"
    assert first.levelno == second.levelno == last.levelno == logging.WARNING
    assert first.getMessage().startswith(f"{head} attempt 1/3 failed after ")
    assert first.getMessage().endswith(
        ": RuntimeError: card declined on attempt 1; retry 2/3 in 30 s"
    )
    assert second.getMessage().endswith(
        ": RuntimeError: card declined on attempt 2; retry 3/3 in 60 s"
    )
    assert last.getMessage().endswith(
        ": RuntimeError: card declined on attempt 3; failed for good: in the dead-letter set"
    )
    assert fields(first, "outcome", "retry_in_s", "error") == (
        "retrying",
        30.0,
        "RuntimeError: card declined on attempt 1",
    )
    assert fields(last, "outcome", "attempt", "max_attempts") == ("failed", 3, 3)
    assert first.exc_text is None  # the traceback only with the last
    assert last.exc_text is not None
    assert last.exc_text.startswith("Traceback (most recent call last):")
    assert 'raise RuntimeError(f"card declined on attempt {ctx.attempt}")' in last.exc_text
    assert (
        logging.Formatter().format(last).endswith("RuntimeError: card declined on attempt 3")
    )  # any formatter prints it after the message


async def test_every_way_an_attempt_fails_is_one_warning_saying_what_happens_next(
    make_app: Callable[..., App], db_path: str, lines: Callable[..., Lines]
) -> None:
    log = lines()
    app = make_app(db_path)

    @app.job(name="mail", queue="q", max_attempts=5, backoff=rota.fixed(0))
    async def mail(args: Item) -> None:
        raise rota.Unrecoverable("no such mailbox")

    @app.job(name="slow", queue="q", max_attempts=2, timeout=0.05, backoff=rota.fixed(0))
    async def slow(args: Item) -> None:
        await anyio.sleep(10)

    @app.job(name="polite", queue="q", max_attempts=2, backoff=rota.fixed(0))
    async def polite(args: Item, ctx: Context) -> int:
        if ctx.attempt == 1:
            raise rota.Retry(delay_s=0.2, reason="rate limited")
        return ctx.attempt

    other = make_app(db_path)  # a producer that knows a job this worker does not

    @other.job(name="ghost", queue="q")
    async def ghost(args: Item) -> None: ...

    handles = {
        "mail": await mail.enqueue(Item(1)),
        "slow": await slow.enqueue(Item(2)),
        "polite": await polite.enqueue(Item(3)),
        "ghost": await ghost.enqueue(Item(4)),
    }

    def outcomes() -> list[logging.LogRecord]:  # the lines of ended attempts
        return [r for r in log.of("rota.job") if hasattr(r, "outcome")]

    async with app.run():
        for name in ("mail", "slow", "polite"):
            await wait_state(handles[name], JobState.COMPLETED, JobState.FAILED, timeout=10)
        # a job this worker does not know runs again later (a newer worker may know it)
        await wait_for(lambda: any(r.job == "ghost" for r in outcomes()), what="ghost")  # type: ignore[attr-defined]
    by_job: dict[str, list[str]] = {}
    for record in outcomes():
        by_job.setdefault(record.job, []).append(record.getMessage())  # type: ignore[attr-defined]
    ids = {name: handle.id for name, handle in handles.items()}
    [mail_line] = by_job["mail"]
    assert mail_line.startswith(f"mail #{ids['mail']} (q) attempt 1/5 failed after ")
    assert mail_line.endswith(
        ": unrecoverable: no such mailbox; failed for good: in the dead-letter set"
    )
    slow_first, slow_last = by_job["slow"]
    assert slow_first.endswith(": timed out after 0.05 s; retry 2/2 now")
    assert slow_last.endswith(": timed out after 0.05 s; failed for good: in the dead-letter set")
    polite_retry, polite_done = by_job["polite"]
    assert polite_retry.endswith(": retry requested: rate limited; retry 2/2 in 200 ms")
    assert polite_done.startswith(f"polite #{ids['polite']} (q) attempt 2/2 completed in ")
    [ghost_line] = by_job["ghost"]
    assert ghost_line.startswith(f"ghost #{ids['ghost']} (q) attempt 1/3 failed after ")
    assert ghost_line.endswith(
        ": no handler for job 'ghost' in this worker (it knows 3: 'mail', 'polite', 'slow'); "
        "retry 2/3 in 5.0 s"
    )


async def test_a_lost_lease_is_a_warning_and_nothing_else(
    make_app: Callable[..., App], db_path: str, lines: Callable[..., Lines]
) -> None:
    log = lines()
    app = make_app(db_path, lease_ttl_s=0.3)
    started = anyio.Event()

    @app.job(name="long", queue="q")
    async def long(args: Item) -> None:
        started.set()
        await anyio.sleep(30)

    handle = await long.enqueue(Item(1))
    async with app.run():
        await started.wait()
        conn = sqlite3.connect(db_path, isolation_level=None)  # another holder took it over
        conn.execute("UPDATE rota_jobs SET token = token + 1 WHERE id = ?", (handle.id,))
        conn.close()
        await wait_for(lambda: log.of("rota.job") != [], timeout=5, what="the lost lease")
    [record] = log.of("rota.job")
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(
        f"long #{handle.id} (q) attempt 1/3 lost its lease after "
    )
    assert record.outcome == "lost"  # type: ignore[attr-defined]


@pytest.mark.parametrize("case", ["retry", "poison"])
async def test_a_stall_rescued_by_the_scheduler_is_a_warning_saying_what_happens_next(
    make_app: Callable[..., App], lines: Callable[..., Lines], case: str
) -> None:
    log = lines()
    app = make_app(lease_ttl_s=2.0, scheduler_interval_s=0.05)

    @app.job(name="work", queue="q", max_attempts=3, backoff=rota.fixed(0))
    async def work(args: Item) -> int:
        return 1

    handle = await work.enqueue(Item(1), max_stalls=0 if case == "poison" else 1)
    dead = app.engine()
    try:
        dead.migrate()
        dead.claim("q", "dead-owner", 1, 300)  # then never renews
    finally:
        dead.close()
    async with app.run():
        await wait_state(handle, JobState.COMPLETED, JobState.FAILED, timeout=10)
        await wait_for(lambda: len(log.of("rota.job")) == 2 - (case == "poison"), what="lines")
    stall = log.of("rota.job")[0]
    assert stall.levelno == logging.WARNING
    head = f"work #{handle.id} (q) attempt 1/3 failed: stalled: lease of dead-owner expired"
    if case == "retry":
        assert stall.getMessage() == f"{head} during attempt 1; retry 2/3 now"
        assert log.messages()[1].startswith(f"work #{handle.id} (q) attempt 2/3 completed")
    else:
        assert stall.getMessage() == (
            f"{head} during attempt 1; failed as poison after 1 stalls; failed for good: in "
            "the dead-letter set"
        )


async def test_a_job_cancelled_while_it_runs_is_an_info_line(
    make_app: Callable[..., App], lines: Callable[..., Lines]
) -> None:
    log = lines()
    app = make_app()
    started = anyio.Event()

    @app.job(name="long", queue="q")
    async def long(args: Item) -> None:
        started.set()
        await anyio.sleep(30)

    handle = await long.enqueue(Item(1))
    async with app.run():
        await started.wait()
        await handle.cancel()
        await wait_state(handle, JobState.CANCELLED)
        await wait_for(lambda: log.of("rota.job") != [], what="the line")
    [record] = log.of("rota.job")
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith(f"long #{handle.id} (q) attempt 1/3 cancelled after ")
    assert record.getMessage().endswith(": cancelled on request")


async def test_at_debug_each_attempt_started_is_a_line_too(
    make_app: Callable[..., App], lines: Callable[..., Lines]
) -> None:
    log = lines(level=logging.DEBUG)
    app = make_app()

    @app.job(name="work", queue="q", max_attempts=2)
    async def work(args: Item) -> int:
        return args.n

    handle = await work.enqueue(Item(5))
    async with app.run():
        assert await handle.result(timeout=10) == 5
        await wait_for(lambda: len(log.of("rota.job")) == 2, what="two lines")
    started, completed = log.of("rota.job")
    assert (started.levelno, started.getMessage()) == (
        logging.DEBUG,
        f"work #{handle.id} (q) attempt 1/2 started",
    )
    assert completed.getMessage().startswith(f"work #{handle.id} (q) attempt 1/2 completed in ")


# -- ctx.log ------------------------------------------------------------------------------------


def sync_steps(args: Item, ctx: SyncContext) -> int:
    ctx.log(f"step {args.n}")
    return args.n


async def async_steps(args: Item, ctx: Context) -> int:
    ctx.log(f"step {args.n}")
    return args.n


async def test_ctx_log_lines_name_their_job_in_the_text_and_the_fields(
    make_app: Callable[..., App], lines: Callable[..., Lines]
) -> None:
    log = lines()
    app = make_app()
    on_loop = app.job(name="steps.async", queue="q")(async_steps)
    on_thread = app.job(name="steps.thread", queue="q")(sync_steps)
    handles = {"async": await on_loop.enqueue(Item(1)), "thread": await on_thread.enqueue(Item(2))}
    async with app.run():
        for handle in handles.values():
            assert await handle.result(timeout=10) is not None
    for mode, n in (("async", 1), ("thread", 2)):
        handle = handles[mode]
        [record] = [r for r in log.of("rota.job.log") if r.job_id == handle.id]  # type: ignore[attr-defined]
        assert record.getMessage() == f"steps.{mode} #{handle.id} (q): step {n}"
        assert record.levelno == logging.INFO
        assert fields(record, "job_id", "job", "queue", "attempt") == (
            handle.id,
            f"steps.{mode}",
            "q",
            1,
        )
        assert [entry.message for entry in await handle.logs()] == [f"step {n}"]


async def test_ctx_log_lines_from_a_child_process_name_their_job_in_the_parent(
    make_app: Callable[..., App], tmp_path: Path, lines: Callable[..., Lines]
) -> None:
    log = lines()
    app = make_app(str(tmp_path / "jobs.db"), import_name="modes_app:app")
    app.include(modes_app.registry)
    sync = await modes_app.report_sync.enqueue(modes_app.Report(steps=2))
    asynchronous = await modes_app.report_async.enqueue(modes_app.Report(steps=1))
    async with app.run(processes=1):
        await sync.result(timeout=30)
        await asynchronous.result(timeout=30)
    got = [(r.getMessage(), r.job_id, r.job) for r in log.of("rota.job.log")]  # type: ignore[attr-defined]
    assert got == [
        (f"modes.report_sync #{sync.id} (procs): sync step 1", sync.id, "modes.report_sync"),
        (f"modes.report_sync #{sync.id} (procs): sync step 2", sync.id, "modes.report_sync"),
        (
            f"modes.report_async #{asynchronous.id} (procs): async step 1",
            asynchronous.id,
            "modes.report_async",
        ),
    ]


# -- what it costs, and the library's silence ------------------------------------------------------


async def test_completed_jobs_cost_no_logging_call_each_when_info_is_off(
    make_app: Callable[..., App], monkeypatch: pytest.MonkeyPatch, lines: Callable[..., Lines]
) -> None:
    log = lines(level=logging.WARNING)
    asked: list[int] = []
    is_enabled = _joblog.job_log.isEnabledFor

    def counting(level: int) -> bool:
        asked.append(level)
        return is_enabled(level)

    monkeypatch.setattr(_joblog.job_log, "isEnabledFor", counting)
    app = make_app(concurrency=10, prefetch=50)

    @app.job(queue="q")
    async def noop(args: Item) -> None:
        return None

    n = 500
    await noop.enqueue_many([Item(i) for i in range(n)])
    async with app.run() as runtime:
        pool: Any = runtime.pools["q"].actor
        await wait_for(lambda: pool.statistics().completed == n, timeout=20, what="all jobs")
    store_calls = pool.statistics().store_calls  # the last settlements' too (at the stop)
    assert log.records == []
    assert store_calls < n / 5  # settlements go in batches...
    # ...and so does the question (INFO for completions, DEBUG for starts): not per job
    assert len(asked) <= 2 * (store_calls + 1)


def test_an_embedded_app_logs_nothing_unless_logging_is_configured(tmp_path: Path) -> None:
    script = tmp_path / "embedded.py"
    script.write_text(
        textwrap.dedent(
            """
            import logging, sys
            import anyio, msgspec, rota
            from rota.testing import drain

            class Item(msgspec.Struct):
                n: int

            app = rota.App(sys.argv[1], scheduler_interval_s=0.02)

            @app.job(queue="q", max_attempts=2, backoff=rota.fixed(0))
            async def work(args: Item, ctx: rota.Context) -> int:
                ctx.log("a line")
                if args.n:
                    raise RuntimeError("boom")
                return 1

            async def main() -> None:
                await work.enqueue_many([Item(0), Item(1)])
                result = await drain(app, timeout_s=20)
                assert (result.completed, result.failed) == (1, 1), result

            anyio.run(main, backend="trio")
            app.close()
            assert [type(h) for h in logging.getLogger("rota").handlers] == [
                logging.NullHandler
            ]
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "jobs.db")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")

"""Process mode end to end: handlers run in the queue's supervised child processes.

The handlers live in ``tests/support/modes_app.py`` (children import ``modes_app:app``); each
test builds its own App on a temporary database with ``import_name="modes_app:app"``, the
FAST options and the module's registry, and coordinates with the children through files
(``modes_app.record``: a line ``attempt pid time.time()`` per attempt started).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import modes_app
import pytest
from modes_app import Empty, Report, Reported, Script, Span, Spin
from rt_support import heartbeat, wait_for

import rota
from rota.app import App
from rota.domain.event import Event, EventKind
from rota.domain.job import JobState
from rota.execution.processes import ChildStartFailed, ProcessPool
from rota.runtime import Runtime

pytestmark = pytest.mark.anyio

Q = modes_app.QUEUE


@pytest.fixture
def new_app(make_app: Callable[..., App], tmp_path: Path) -> Callable[..., App]:
    """An App on a temporary database whose children import ``modes_app:app``."""

    def build(import_name: str = "modes_app:app", **options: Any) -> App:
        app = make_app(str(tmp_path / "jobs.db"), import_name=import_name, **options)
        app.include(modes_app.registry)
        return app

    return build


def pool_of(runtime: Runtime) -> ProcessPool:
    pool = runtime.runners[Q].processes
    assert pool is not None
    return pool


def started(path: Path) -> list[tuple[int, int, float]]:
    """The attempts a ``modes_app.record`` file lists: (attempt, pid, time.time())."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [(int(a), int(p), float(t)) for a, p, t in (line.split() for line in lines)]


def events_of(app: App, job_id: int) -> list[Event]:
    engine = app.engine()
    try:
        return [e for e in engine.events(0) if e.job_id == job_id]
    finally:
        engine.close()


# -- CPU-bound work: the loop keeps serving, two children use two cores ----------------------


def calibrate(seconds: float) -> int:
    """Loops of ``modes_app.spin_loop`` that take about ``seconds`` here."""
    loops = 100_000
    while True:
        t0 = time.perf_counter()
        modes_app.spin_loop(loops)
        took = time.perf_counter() - t0
        if took > 0.05:
            return int(loops * seconds / took)
        loops *= 4


async def run_spins(
    new_app: Callable[..., App], processes: int, loops: int
) -> tuple[float, list[Span], list[float]]:
    """Run 4 spin jobs on ``processes`` children: (wall time, their spans, heartbeat gaps)."""
    app = new_app(concurrency=4, processes=processes)
    gaps: list[float] = []
    try:
        async with app.run(), heartbeat(gaps):
            t0 = time.monotonic()
            handles = await modes_app.spin.enqueue_many([Spin(loops)] * 4)
            spans = [await h.result(timeout=30) for h in handles]
            wall = time.monotonic() - t0
    finally:
        app.close()
    return wall, spans, gaps


# Trio only: two runtimes with ~1.4 s and ~0.7 s of CPU work; running it twice adds nothing.
@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs")
async def test_cpu_bound_jobs_leave_the_loop_free_and_two_children_use_two_cores(
    new_app: Callable[..., App],
) -> None:
    loops = calibrate(0.35)
    speedups = []
    for _ in range(2):  # measured again only if a busy neighbour spoiled the first try
        wall_1, spans_1, gaps_1 = await run_spins(new_app, 1, loops)
        wall_2, spans_2, gaps_2 = await run_spins(new_app, 2, loops)
        # the event loop kept serving while pure-Python loops ran (in the children)
        assert len(gaps_1) > 50 and len(gaps_2) > 25
        assert max(gaps_1 + gaps_2) < 0.2
        # one child: the jobs ran one after another in it
        assert len({s.pid for s in spans_1}) == 1
        # two children: two pids ran jobs at the same time
        assert len({s.pid for s in spans_2}) == 2
        assert any(
            a.pid != b.pid and a.start < b.end and b.start < a.end for a in spans_2 for b in spans_2
        ), spans_2
        speedups.append(wall_1 / wall_2)
        if speedups[-1] >= 1.3:
            break
    # and the batch went faster with two
    assert max(speedups) >= 1.3, speedups


# -- a child that dies mid-job ---------------------------------------------------------------


async def test_a_child_killed_mid_job_is_replaced_and_the_job_runs_again_at_once(
    new_app: Callable[..., App], tmp_path: Path
) -> None:
    log = tmp_path / "starts"
    app = new_app(processes=1)
    async with app.run() as runtime:
        pool = pool_of(runtime)
        (first_pid,) = pool.statistics()["pids"]
        handle = await modes_app.script.enqueue(Script(str(log), crash_attempts=[1]))
        await wait_for(lambda: len(started(log)) == 1, what="attempt 1 started")
        [(attempt, pid, _)] = started(log)
        assert (attempt, pid) == (1, first_pid)
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)

        new_pid = await handle.result(timeout=10)
        (_, (attempt, pid_2, started_at)) = started(log)
        assert attempt == 2
        assert started_at - killed_at < 1.0
        assert new_pid == pid_2 != first_pid
        job = await handle.info()
        assert (job.state, job.attempt, job.stalls) == (JobState.COMPLETED, 2, 0)
        # the failed attempt says what happened to its child
        retrying = [e for e in events_of(app, handle.id) if e.kind is EventKind.RETRYING]
        assert [e.attempt for e in retrying] == [1]
        assert b"killed by SIGKILL" in (retrying[0].data or b"")
        # a new child, and one restart counted (everywhere it is reported)
        stats = pool.statistics()
        assert stats["pids"] == [new_pid]
        assert (stats["restarts"], stats["crashed_jobs"], stats["killed"]) == (1, 1, 0)
        assert pool.supervisor.statistics().total_restarts == 1
        assert runtime.describe_pools()[Q]["processes"]["restarts"] == 1


async def test_an_idle_child_that_dies_is_restarted_and_a_stop_during_its_start_is_prompt(
    new_app: Callable[..., App], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag = tmp_path / "slow-start"
    monkeypatch.setenv(modes_app.SLOW_START_FLAG, str(flag))  # children inherit it
    app = new_app(processes=1, kill_grace_s=5.0)  # a slot's stop grace: 6 s
    async with app.run() as runtime:
        pool = pool_of(runtime)
        (pid,) = pool.statistics()["pids"]
        flag.touch()  # from now on a child takes a second to import the app
        os.kill(pid, signal.SIGKILL)
        await wait_for(lambda: pool.statistics()["restarts"] == 1, what="a restart")
        assert pool.statistics()["pids"] == []  # its replacement is still starting
        t0 = time.monotonic()
    # The stop reached the slot while it was starting a child: that child is ended as soon
    # as it is up (~1 s), not after the slot's whole grace.
    assert time.monotonic() - t0 < 3.0
    assert pool.statistics()["crashed_jobs"] == 0  # it had no job


@pytest.mark.parametrize(
    ("how", "exit_text"),
    [("exit", "exited with code 3"), ("segfault", "killed by SIGSEGV")],
)
async def test_a_child_that_exits_or_segfaults_mid_job_is_restarted_and_the_job_retried(
    new_app: Callable[..., App], tmp_path: Path, how: str, exit_text: str
) -> None:
    log = tmp_path / "starts"
    app = new_app(processes=1)
    async with app.run() as runtime:
        pool = pool_of(runtime)
        handle = await modes_app.script.enqueue(Script(str(log), crash_attempts=[1], how=how))
        new_pid = await handle.result(timeout=10)
        (_, first_pid, _), (_, second_pid, _) = started(log)
        assert new_pid == second_pid != first_pid
        assert (await handle.info()).attempt == 2
        [retrying] = [e for e in events_of(app, handle.id) if e.kind is EventKind.RETRYING]
        assert exit_text in (retrying.data or b"").decode()
        stats = pool.statistics()
        assert (stats["restarts"], stats["crashed_jobs"], stats["pids"]) == (1, 1, [new_pid])


async def test_a_handler_that_calls_sys_exit_fails_its_attempt_and_its_child_lives_on(
    new_app: Callable[..., App], tmp_path: Path
) -> None:
    log = tmp_path / "starts"
    app = new_app(processes=1)
    async with app.run() as runtime:
        pool = pool_of(runtime)
        handle = await modes_app.script.enqueue(
            Script(str(log), crash_attempts=[1, 2], how="sys.exit")
        )
        pid = await handle.result(timeout=10)
        assert [(a, p) for a, p, _ in started(log)] == [(1, pid), (2, pid), (3, pid)]
        retrying = [e for e in events_of(app, handle.id) if e.kind is EventKind.RETRYING]
        assert len(retrying) == 2
        last = (retrying[0].data or b"").decode().strip().splitlines()[-1]
        assert "the handler raised SystemExit(3)" in last
        assert "a job cannot stop its worker" in last
        stats = pool.statistics()  # sys.exit ended the attempt, not the child
        assert (stats["restarts"], stats["crashed_jobs"], stats["pids"]) == (0, 0, [pid])


# -- a hung child: the hard timeout ---------------------------------------------------------


async def test_a_hung_child_is_killed_by_the_timeout_and_the_job_fails_per_policy(
    new_app: Callable[..., App], tmp_path: Path
) -> None:
    log = tmp_path / "starts"
    app = new_app(processes=1, kill_grace_s=0.2)
    async with app.run() as runtime:
        pool = pool_of(runtime)
        t0 = time.monotonic()
        # the handler ignores SIGTERM and sleeps: only the SIGKILL after the grace ends it
        handle = await modes_app.hang.enqueue(Script(str(log), crash_attempts=[1, 2], how="hang"))
        with pytest.raises(rota.JobFailed, match=r"timed out after 0\.3 s") as caught:
            await handle.result(timeout=10)
        took = time.monotonic() - t0
        assert caught.value.state is JobState.FAILED
        assert "killed by SIGKILL" in (caught.value.error or "")
        assert took < 4.0
        job = await handle.info()
        assert (job.state, job.attempt) == (JobState.FAILED, 2)
        kinds = [(e.kind, e.attempt) for e in events_of(app, handle.id)]
        assert (EventKind.RETRYING, 1) in kinds and kinds[-1] == (EventKind.FAILED, 2)
        # each attempt had a child of its own; both were killed, and neither was a crash
        assert len({pid for _, pid, _ in started(log)}) == 2
        await wait_for(lambda: len(pool.statistics()["pids"]) == 1, what="a new child")
        stats = pool.statistics()
        assert (stats["killed"], stats["restarts"], stats["crashed_jobs"]) == (2, 0, 0)
        assert pool.supervisor.statistics().total_restarts == 0
        assert stats["pids"][0] not in {pid for _, pid, _ in started(log)}


async def test_a_job_whose_first_attempt_hangs_completes_on_the_second(
    new_app: Callable[..., App], tmp_path: Path
) -> None:
    log = tmp_path / "starts"
    app = new_app(processes=1, kill_grace_s=0.2)
    async with app.run() as runtime:
        pool = pool_of(runtime)
        handle = await modes_app.hang.enqueue(Script(str(log), crash_attempts=[1], how="hang"))
        pid = await handle.result(timeout=10)
        (_, first_pid, _), (attempt, second_pid, _) = started(log)
        assert (attempt, pid) == (2, second_pid)
        assert second_pid != first_pid
        [retrying] = [e for e in events_of(app, handle.id) if e.kind is EventKind.RETRYING]
        assert b"timed out after 0.3 s" in (retrying.data or b"")
        stats = pool.statistics()
        assert (stats["killed"], stats["restarts"], stats["jobs"]) == (1, 0, 1)


# -- recycling ------------------------------------------------------------------------------


async def test_max_jobs_per_child_recycles_children_without_counting_restarts(
    new_app: Callable[..., App],
) -> None:
    app = new_app(processes=1, max_jobs_per_child=2)
    async with app.run() as runtime:
        handles = await modes_app.pid.enqueue_many([Empty()] * 5)
        pids = [await h.result(timeout=10) for h in handles]
        per_pid = Counter(pids)
        assert len(per_pid) == 3 and max(per_pid.values()) == 2, pids
        stats = pool_of(runtime).statistics()
        assert (stats["recycled"], stats["restarts"], stats["jobs"]) == (2, 0, 5)
        await wait_for(
            lambda: len(pool_of(runtime).statistics()["pids"]) == 1, what="the third child"
        )
        assert pool_of(runtime).statistics()["pids"] == [pids[-1]]


# -- the database the parent names ---------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["trio"])  # the handshake does not depend on it
@pytest.mark.parametrize("database", ["url", ":memory:"])
async def test_a_child_works_on_its_parents_database_given_as_a_url_or_memory(
    make_app: Callable[..., App], tmp_path: Path, database: str
) -> None:
    # (not a relative URL with a chdir: the child would import rota from elsewhere when
    # this checkout is on the path as a relative PYTHONPATH)
    url = f"sqlite:///{tmp_path}/jobs.db" if database == "url" else database
    app = make_app(url, import_name="modes_app:app", processes=1)
    app.include(modes_app.registry)
    async with app.run():
        handle = await modes_app.enqueue_pid.enqueue(Empty())
        # the child enqueued on this app's database (its own app says ":memory:")
        child_job = app.handle(await handle.result(timeout=10))
        assert child_job.id != handle.id
        assert (await child_job.info()).name == "modes.pid"
        assert await child_job.result(timeout=10) != os.getpid()  # and a child ran it
    if database == "url":
        assert (tmp_path / "jobs.db").is_file()


# -- progress, logs, results, print ---------------------------------------------------------


async def test_progress_logs_and_results_of_sync_and_async_handlers_reach_the_parent(
    new_app: Callable[..., App],
) -> None:
    app = new_app(processes=2)
    async with app.run() as runtime:
        sync = await modes_app.report_sync.enqueue(Report(steps=3))
        asynchronous = await modes_app.report_async.enqueue(Report(steps=4))
        sync_result = await sync.result(timeout=10)
        async_result = await asynchronous.result(timeout=10)
        children = set(pool_of(runtime).statistics()["pids"])
    # results: the handlers' Structs, encoded in the children, decoded here
    assert isinstance(sync_result, Reported) and isinstance(async_result, Reported)
    assert (sync_result.steps, sync_result.label) == ([1, 2, 3], "sync")
    assert (async_result.steps, async_result.label) == ([1, 2, 3, 4], "async")
    assert {sync_result.pid, async_result.pid} <= children
    assert os.getpid() not in children
    # progress: the last report is stored
    assert await sync.progress() == rota.Progress(value=100.0, step=3, total=3, message="sync")
    assert await asynchronous.progress() == rota.Progress(
        value=100.0, step=4, total=4, message="async"
    )
    # logs, in order, with their attempt
    assert [(e.message, e.attempt) for e in await sync.logs()] == [
        (f"sync step {i}", 1) for i in (1, 2, 3)
    ]
    assert [e.message for e in await asynchronous.logs()] == [
        f"async step {i}" for i in (1, 2, 3, 4)
    ]
    # and progress events, in order, ahead of the completion
    kinds = [e.kind for e in events_of(app, asynchronous.id)]
    assert kinds.count(EventKind.PROGRESS) == 4
    assert kinds[-1] is EventKind.COMPLETED


async def test_a_handler_that_prints_does_not_break_the_protocol(
    new_app: Callable[..., App], capfd: pytest.CaptureFixture[str]
) -> None:
    app = new_app(processes=1)
    async with app.run() as runtime:
        pool = pool_of(runtime)
        before = pool.statistics()["pids"]
        handle = await modes_app.chatty.enqueue(Empty())
        assert await handle.result(timeout=10) == "still talking"
        # the same child runs the next job: nothing was read as a frame
        assert await (await modes_app.pid.enqueue(Empty())).result(timeout=10) == before[0]
        stats = pool.statistics()
        assert (stats["pids"], stats["restarts"], stats["crashed_jobs"]) == (before, 0, 0)
    # what it printed went to the worker's stderr
    assert "hello from the child's stdout" in capfd.readouterr().err


# -- giving up ------------------------------------------------------------------------------


async def test_a_crash_loop_makes_the_process_pool_give_up_to_its_queue_supervisor(
    new_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rota.supervisors")
    app = new_app(processes=1, concurrency=1, child_max_restarts=2, child_restart_period_s=60)
    async with app.run() as runtime:
        pool = pool_of(runtime)
        [queue_sup] = runtime.queue_sups
        handle = await modes_app.crash_loop.enqueue(Empty())
        t0 = time.monotonic()
        await wait_for(
            lambda: queue_sup.statistics().restarts["processes[procs]"] >= 1,
            what="the process pool restarted by its queue supervisor",
        )
        took = time.monotonic() - t0
        assert pool.supervisor.statistics().total_restarts >= 2
        assert pool.statistics()["crashed_jobs"] >= 3
        assert (await handle.info()).attempt >= 3
        assert took < 3.0
    # 2 restarts allowed; the third crash within the period made the pool give up (and its
    # queue supervisor, rest_for_one, started it again: waited for above)
    pool_events = [
        getattr(r, "event", None)
        for r in caplog.records
        if getattr(r, "supervisor", None) == "processes[procs]"
    ]
    first_give_up = pool_events.index("supervisor_gave_up")
    assert pool_events[:first_give_up].count("child_exited") == 3
    assert pool_events[:first_give_up].count("child_restarted") == 2


# Trio only: the escalation to the runtime takes ~3.5 s (24 crashes); once is enough.
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_crash_loop_ends_app_run_with_supervisor_gave_up(
    new_app: Callable[..., App],
) -> None:
    # Each crash makes the pool give up (child_max_restarts=0); its queue supervisor
    # restarts it 5 times in 30 s, then gives up; the runtime restarts that 3 times in 60 s.
    app = new_app(
        processes=1,
        concurrency=1,
        child_max_restarts=0,
        shutdown_grace_s=0.05,
    )
    # enough jobs for ~25 crashes (a job may be held by a restarted WorkerPool meanwhile)
    await modes_app.crash_loop.enqueue_many([Empty()] * 60)
    t0 = time.monotonic()
    runtimes: list[Runtime] = []
    with pytest.raises(ExceptionGroup) as caught:
        with anyio.fail_after(20):
            async with app.run() as runtime:
                runtimes.append(runtime)
                await anyio.sleep_forever()
    took = time.monotonic() - t0
    assert caught.group_contains(rota.SupervisorGaveUp, match="supervisor 'runtime' gave up")
    assert took < 15.0
    # every level used up its intensity on the way: 4 runs of the queue supervisor, each
    # restarting the pool 5 times (the 6th exit: it gave up)
    [runtime] = runtimes
    assert runtime.root.statistics().restarts["queue-sup[procs]"] == 3
    assert runtime.queue_sups[0].statistics().restarts["processes[procs]"] == 4 * 5


# -- a child that cannot start --------------------------------------------------------------


@pytest.mark.parametrize(
    ("import_name", "cause"),
    [
        ("no_such_module_for_rota:app", "No module named 'no_such_module_for_rota'"),
        ("modes_app:no_such_app", "has no attribute 'no_such_app'"),
        ("modes_app:Empty", "is a StructMeta, not a rota.App"),
    ],
)
async def test_a_child_that_cannot_import_the_app_stops_app_run_at_start(
    new_app: Callable[..., App], import_name: str, cause: str
) -> None:
    app = new_app(import_name=import_name)
    handle = await modes_app.pid.enqueue(Empty())
    t0 = time.monotonic()
    with pytest.raises(ExceptionGroup) as caught:
        with anyio.fail_after(20):
            async with app.run():
                pytest.fail("app.run() started with children that cannot import the app")
    assert time.monotonic() - t0 < 5.0
    assert caught.group_contains(ChildStartFailed, match="could not load the app")
    assert caught.group_contains(ChildStartFailed, match=cause)
    assert (await handle.info()).state is JobState.WAITING  # nothing ran


async def test_jobs_interrupted_by_a_pool_restart_run_again_at_once_without_a_stall(
    new_app: Callable[..., App], tmp_path: Path
) -> None:
    # A job blocks in one child while a crash loop in the other makes the process pool give
    # up (child_max_restarts=0): the queue supervisor restarts the pool and the WorkerPool.
    # The blocked job must run again at once, not wait for its lease (ttl 5 s here) to
    # expire and be rescued as a stall.
    app = new_app(processes=2, concurrency=2, child_max_restarts=0, lease_ttl_s=5.0)
    log = tmp_path / "blocked.log"
    async with app.run() as runtime:
        [queue_sup] = runtime.queue_sups
        blocked = await modes_app.script.enqueue(
            Script(str(log), crash_attempts=[1], how="block-once")
        )
        await wait_for(lambda: log.exists(), what="the blocked job started")
        crasher = await modes_app.script.enqueue(
            Script(str(tmp_path / "crasher.log"), crash_attempts=[1], how="kill"),
            max_attempts=1,
        )
        t0 = time.monotonic()
        await wait_for(
            lambda: queue_sup.statistics().restarts["processes[procs]"] >= 1,
            what="the process pool restarted by its queue supervisor",
        )
        assert await blocked.result(timeout=5) > 0  # it runs again, and completes
        took = time.monotonic() - t0
        job = await blocked.info()
        assert (await crasher.info()).state is JobState.FAILED
    # The giving-up supervisor stopped the child that ran it: that attempt counts (its
    # child died under it), but it is not a stall, and it ran again at once.
    assert [attempt for attempt, _, _ in started(log)] == [1, 2]
    assert (job.state, job.attempt, job.stalls) == (JobState.COMPLETED, 2, 0)
    assert took < 4.0  # well inside the 5 s ttl: released, not rescued

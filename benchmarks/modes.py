"""Execution modes: jobs/s of no-op and of CPU-bound jobs run by ``async def`` handlers on
the event loop (async), plain ``def`` handlers on the handler threads (thread), and
``mode="process"`` handlers in the queue's child processes (process), through the public
API, on trio (rota's default), durable SQLite.

Each measurement pre-enqueues ``n`` jobs of one mode on a fresh database (rota's own
validation and ``engine.enqueue`` in large batches: not measured), starts a runtime on
that mode's queue only (``app.run(queues=[...])``: the process pool's children are
started by the runtime, before its WorkerPool claims) and times, as the drain does, from
the first handler start to the commit of the last completion (``_rota.TimedEngine``).
Within a run the modes take turns (async, thread, process), and the ratios are taken per
run.

Honesty, asserted: every job started exactly once (``_modes_app.Marks``, a file every
process maps); every job is stored as completed at its first attempt, and the completions
counted after their commits are ``n``; every job ran where its mode says (async: this
process, on the event loop's thread; thread: this process, another thread; process: a
child process, at most ``processes`` distinct ones, all of them for the CPU-bound jobs).

* no-op: the drain's workload (an ``Item``, the handler only marks its start), with the
  drain's throughput setting (concurrency 100, prefetch 100; 2 children in process mode).
* CPU-bound: ``spin(loops)``, a pure-Python loop calibrated once per invocation to
  ``CPU_JOB_S`` alone, with concurrency 2 (prefetch 2) and 2 children: async and thread
  modes are bound to one core by the GIL, process mode can use two. ``raw_cpu`` measures,
  in the same run, what the machine gives the same jobs without rota on one core and in
  2 plain processes (the raw column): a 2-vCPU VM on a shared host need not give 2x.

Alone: ``python -m benchmarks --only modes --sync FULL``.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgspec

from rota.domain.job import JobState
from rota.storage.sqlite import SqliteEngine

from ._modes_app import IMPORT_NAME, MODES, QUEUES, Marks, Spin, attach, registry, spin
from ._rota import BenchApp, count_states
from ._util import FILLER, Item, rate, scratch_dir

#: The no-op figures run with the drain's throughput setting.
NOOP_OPTIONS: dict[str, Any] = {"concurrency": 100, "prefetch": 100, "processes": 2}
#: The CPU-bound figures: two slots, two children.
CPU_OPTIONS: dict[str, Any] = {"concurrency": 2, "prefetch": 2, "processes": 2}
#: What one CPU-bound job takes alone (the loop is calibrated to it once per invocation).
CPU_JOB_S = 0.020


_loops: list[int] = []


def cpu_loops(target_s: float = CPU_JOB_S) -> int:
    """Loops of ``spin`` that took ``target_s`` here, calibrated once per invocation (the
    median of 7 probes), so that every run, mode and the raw reference do the same work.
    The machine's speed drifts: each run also times the job alone (``job_alone_ms``)."""
    if not _loops:
        probe = 100_000
        per_loop = statistics.median(_timed_spin(probe) for _ in range(7)) / probe
        _loops.append(max(1, round(target_s / per_loop)))
    return _loops[0]


def _timed_spin(loops: int) -> float:
    start = time.perf_counter()
    spin(loops)
    return time.perf_counter() - start


def _job_alone_ms(loops: int) -> float:
    return 1000 * statistics.median(_timed_spin(loops) for _ in range(5))


# -- the raw reference for CPU-bound jobs: no rota, no database ---------------------------


def _raw_worker(loops: int, jobs: int, go: Any, times: Any, k: int) -> None:
    go.wait()
    times[2 * k] = time.perf_counter()
    for _ in range(jobs):
        spin(loops)
    times[2 * k + 1] = time.perf_counter()


def raw_cpu(sync: str, n: int) -> dict[str, Any]:
    """What the machine gives the same CPU-bound jobs without rota: ``n`` calls of
    ``spin(loops)`` in this process, one after another (one core: the bound of the async
    and thread modes), and split between 2 fresh processes started beforehand, timed from
    a start signal to the last one's end (the bound of process mode with 2 children)."""
    del sync  # no database
    others = OthersCpu()
    loops = cpu_loops()
    alone = _job_alone_ms(loops)
    start = time.perf_counter()
    for _ in range(n):
        spin(loops)
    one = rate(n, time.perf_counter() - start)
    ctx = multiprocessing.get_context("spawn")  # fresh Pythons, as rota's children
    go = ctx.Event()
    times = ctx.RawArray("d", 4)
    procs = [
        ctx.Process(target=_raw_worker, args=(loops, jobs, go, times, k))
        for k, jobs in enumerate((n - n // 2, n // 2))
    ]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let both start and import
    go.set()
    for p in procs:
        p.join(timeout=600)
        assert p.exitcode == 0, (p, p.exitcode)
    starts, ends = times[0::2], times[1::2]
    assert all(starts), list(times)
    assert all(ends), list(times)
    two = rate(n, max(ends) - min(starts))
    return {
        "modes_spin_raw1": one,
        "modes_spin_raw2": two,
        "modes_spin_raw_ratio": two / one,
        "extra": {"loops": loops, "job_alone_ms": alone, "others_cores": others.cores()},
    }


class OthersCpu:
    """CPU time the rest of the machine used while a case ran, in cores (the machine is
    shared: another session's test run takes a core from the modes that need two): all
    CPUs' busy time (``/proc/stat``) minus this process's and its reaped children's."""

    def __init__(self) -> None:
        self.wall, self.busy, self.own = time.monotonic(), _busy_s(), _own_s()

    def cores(self) -> float:
        wall = time.monotonic() - self.wall
        others = (_busy_s() - self.busy) - (_own_s() - self.own)
        return max(0.0, others) / wall if wall > 0 else float("nan")


def _busy_s() -> float:
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # up to steal


def _own_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _pre_enqueue(app: BenchApp, job: Any, payloads: Sequence[msgspec.Struct]) -> None:
    engine = SqliteEngine(app.database_path, synchronous="NORMAL", clock=app.clock)
    try:
        engine.migrate()
        now = app.clock()
        for lo in range(0, len(payloads), 10_000):
            engine.enqueue([job.new_job(p, now) for p in payloads[lo : lo + 10_000]])
    finally:
        engine.close()


def _states_by_attempt(db: Path, queue: str) -> dict[tuple[str, int], int]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT state, attempt, count(*) FROM rota_jobs WHERE queue = ? "
            "GROUP BY state, attempt",
            (queue,),
        ).fetchall()
    finally:
        conn.close()
    return {(state, attempt): count for state, attempt, count in rows}


def run_mode(
    d: Path, sync: str, mode: str, kind: str, n: int, options: dict[str, Any], loops: int = 0
) -> dict[str, Any]:
    """Run ``n`` jobs of ``kind`` (``noop`` or ``spin``) in ``mode`` on a fresh database
    in ``d``; returns jobs/s and what the checks saw."""
    queue = QUEUES[mode]
    app = BenchApp(d / "bench.db", sync=sync, import_name=IMPORT_NAME, **options)
    app.include(registry)
    job = app.definition(f"modes.{kind}_{mode}")
    payloads: list[msgspec.Struct] = (
        [Item(i=i, s=FILLER) for i in range(n)]
        if kind == "noop"
        else [Spin(i=i, loops=loops) for i in range(n)]
    )
    marks = Marks(d / "marks.bin", n)
    loop_tid = 0
    try:
        _pre_enqueue(app, job, payloads)
        attach(marks)
        app.tracker.expect(n)

        async def main() -> float:
            nonlocal loop_tid
            loop_tid = threading.get_native_id()
            began = time.perf_counter()
            async with app.run(queues=[queue]):
                await anyio.to_thread.run_sync(app.tracker.reached.wait, abandon_on_cancel=True)
            return began

        began = anyio.run(main, backend="trio")
        counts = bytes(marks.count)
        bad = [i for i, c in enumerate(counts) if c != 1]
        assert not bad, f"{mode}: jobs not started exactly once: {bad[:10]} (of {len(bad)})"
        states = count_states(app, queue)
        assert states.get(JobState.COMPLETED, 0) == n == app.tracker.completed, (
            mode,
            n,
            app.tracker.completed,
            states,
        )
        by_attempt = _states_by_attempt(d / "bench.db", queue)
        assert by_attempt == {("completed", 1): n}, (mode, by_attempt)
        pids, tids = set(marks.pid), set(marks.tid)
        me = os.getpid()
        if mode == "async":
            assert pids == {me}, (mode, pids, me)
            assert tids == {loop_tid}, (mode, tids, loop_tid)
            workers = 1
        elif mode == "thread":
            assert pids == {me}, (mode, pids, me)
            assert loop_tid not in tids, (mode, tids, loop_tid)
            workers = len(tids)
        else:
            assert me not in pids, (mode, pids, me)
            assert len(pids) <= options["processes"], (mode, pids)
            if kind == "spin":
                assert len(pids) == options["processes"], (mode, pids)
            workers = len(pids)
        first = min(marks.start)
        elapsed = app.tracker.last_commit - first
        result: dict[str, Any] = {
            "rate": rate(n, elapsed),
            "startup_s": first - began,
            "workers": workers,
        }
        if kind == "spin":
            result["handler_ms"] = (
                1000 * sum(e - s for s, e in zip(marks.start, marks.end, strict=True)) / n
            )
    finally:
        attach(None)
        marks.close()
        app.close()
    return result


def _measure(sync: str, kind: str, sizes: dict[str, int], options: dict[str, Any]) -> dict:
    loops = cpu_loops() if kind == "spin" else 0
    others = OthersCpu()
    out: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for mode in MODES:
        with scratch_dir(f"modes-{mode}-") as d:
            r = run_mode(d, sync, mode, kind, sizes[mode], options, loops)
        out[f"modes_{kind}_{mode}"] = r.pop("rate")
        extra.update({f"{mode}_{k}": v for k, v in r.items()})
    if kind == "spin":
        extra["loops"], extra["job_alone_ms"] = loops, _job_alone_ms(loops)
    extra["others_cores"] = others.cores()
    return {"out": out, "extra": extra}


def noop(sync: str, sizes: dict[str, int]) -> dict[str, Any]:
    """The no-op figures of one run, and thread/async and process/async of that run."""
    m = _measure(sync, "noop", sizes, NOOP_OPTIONS)
    out = m["out"]
    a = out["modes_noop_async"]
    out["modes_noop_thread_async"] = out["modes_noop_thread"] / a
    out["modes_noop_process_async"] = out["modes_noop_process"] / a
    return {**out, "extra": m["extra"]}


def cpu(sync: str, n: int) -> dict[str, Any]:
    """The CPU-bound figures of one run, and process/thread and process/async of it."""
    m = _measure(sync, "spin", dict.fromkeys(MODES, n), CPU_OPTIONS)
    out = m["out"]
    p = out["modes_spin_process"]
    out["modes_spin_process_thread"] = p / out["modes_spin_thread"]
    out["modes_spin_process_async"] = p / out["modes_spin_async"]
    return {**out, "extra": m["extra"]}

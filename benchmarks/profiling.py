"""Profile rota's hot paths: where the drain and the in-process latency spend their time.

::

    python -m benchmarks.profiling drain   [--jobs 100000] [--sync FULL] [--top 25]
    python -m benchmarks.profiling latency [--pings 3000]  [--sync FULL] [--top 25]
    python -m benchmarks.profiling enqueue [--jobs 100000] [--sync FULL] [--top 25]
    python -m benchmarks.profiling enqueue_many [--jobs 100000] [--sync FULL] [--top 25]

Runs the workload (the same as the suite's ``drain`` / same-process ``latency`` cases)
under ``py-spy record`` (every thread: the event loop *and* the Store's engine thread,
native frames off, idle frames dropped), writes the collapsed stacks to
``benchmarks/results/profile-<what>-<sync>.txt`` (open them in speedscope or
flamegraph.pl), and prints, per thread, the functions with the most samples: *self*
(the function itself was running) and *total* (it was on the stack), in % of that
thread's busy samples.

Use ``--tool pyinstrument`` for pyinstrument's tree of the event-loop thread instead
(it does not see other threads). ``target`` is the entry point py-spy runs.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio

from ._util import ROOT, scratch_dir

RESULTS = ROOT / "benchmarks" / "results"


def run_drain(jobs: int, sync: str) -> None:
    from .rota_bench import drain

    with scratch_dir() as d:
        result = drain(d / "bench.db", sync, jobs)
    print(f"drain: {result['rate']:,.0f} jobs/s", file=sys.stderr)


def run_latency(pings: int, sync: str) -> None:
    from ._rota import make_app, ping_idle_worker

    with scratch_dir() as d:
        app, _, ping, starts = make_app(d / "bench.db", sync, pings)

        async def main() -> None:
            async with app.run():
                await ping_idle_worker(ping, starts, pings, lambda: 0.001)

        try:
            anyio.run(main, backend="trio")
            starts.check_exactly_once()
        finally:
            app.close()
    ms = sorted(x * 1000 for x in starts.latencies)
    print(f"latency: p50 {ms[len(ms) // 2]:.2f} ms over {len(ms)} pings", file=sys.stderr)


def run_enqueue(jobs: int, sync: str) -> None:
    from .rota_bench import enqueue_in_runtime

    with scratch_dir() as d:
        rate = enqueue_in_runtime(d / "bench.db", sync, jobs, 1)
    print(f"enqueue, 1 producer in app.run(): {rate:,.0f} jobs/s", file=sys.stderr)


def run_enqueue_many(jobs: int, sync: str) -> None:
    from .rota_bench import enqueue_many

    with scratch_dir() as d:
        rate = enqueue_many(d / "bench.db", sync, jobs, in_runtime=False)
    print(f"enqueue_many, 1,000 per call, no runtime: {rate:,.0f} jobs/s", file=sys.stderr)


# -- reading py-spy's collapsed stacks ------------------------------------------------------

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def _name(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("/src/", "/site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


#: Leaf frames that mean "waiting, not working" (py-spy counts a thread blocked in C as
#: active): a thread's samples there are left out of its busy time.
IDLE_LEAVES = (
    "Condition.wait (",
    "Event.wait (",
    "Thread.join (",
    "_shutdown (",
    "WorkerThread._work (",  # trio's idle thread cache
    "_EngineThread._main (",  # the Store thread blocked on its inbox (its own code is tiny)
    "get_events (",  # trio's event loop waiting in epoll
    "EpollIOManager.get_events (",
)


#: Frames of set-up, not of the measured path: samples with one of them are left out.
SETUP_FRAMES = ("pre_enqueue (", "count_states (", "_call_with_frames_removed (", "make_app (")


def summarize(collapsed: Path, top: int) -> str:
    """Per thread: busy share, and the busiest functions by self and by total samples
    (in % of that thread's busy samples)."""
    stats: dict[str, dict[str, collections.Counter[str]]] = {}
    busy: collections.Counter[str] = collections.Counter()
    seen: collections.Counter[str] = collections.Counter()
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = "?"
        if frames[0].startswith(("thread ", "process ")):
            thread = frames[0].split(": ", 1)[-1]
            frames = frames[1:]
        thread = re.sub(r"(worker thread|Trio thread) \d+", r"\1s", thread)
        if any(f.startswith(SETUP_FRAMES) for f in frames):
            continue
        seen[thread] += count
        if not frames or frames[-1].startswith(IDLE_LEAVES):
            continue
        funcs = [_name(f) for f in frames]
        per = stats.setdefault(
            thread, {"self": collections.Counter(), "total": collections.Counter()}
        )
        per["self"][funcs[-1]] += count
        for func in set(funcs):
            per["total"][func] += count
        busy[thread] += count
    out = []
    for thread, n in busy.most_common():
        out.append(f"\n== thread {thread!r}: busy {n / seen[thread]:.0%} of its samples ({n})")
        for kind in ("self", "total"):
            out.append(f"   top by {kind}:")
            for func, c in stats[thread][kind].most_common(top):
                out.append(f"   {c / n:6.1%}  {func}")
    return "\n".join(out)


RUNS: dict[str, Callable[[argparse.Namespace], None]] = {
    "drain": lambda args: run_drain(args.jobs, args.sync),
    "latency": lambda args: run_latency(args.pings, args.sync),
    "enqueue": lambda args: run_enqueue(args.jobs, args.sync),
    "enqueue_many": lambda args: run_enqueue_many(args.jobs, args.sync),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiling")
    parser.add_argument("what", choices=("drain", "latency", "enqueue", "enqueue_many", "target"))
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--pings", type=int, default=3_000)
    parser.add_argument("--sync", default="FULL", choices=("FULL", "NORMAL"))
    parser.add_argument("--tool", default="py-spy", choices=("py-spy", "pyinstrument"))
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    parser.add_argument("--target-what", default="drain", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.what == "target":  # the process py-spy profiles
        RUNS[args.target_what](args)
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.tool == "pyinstrument":
        from pyinstrument import Profiler

        profiler = Profiler(async_mode="disabled")
        with profiler:
            RUNS[args.what](args)
        out = RESULTS / f"profile-{args.what}-{args.sync}.html"
        out.write_text(profiler.output_html())
        print(profiler.output_text(unicode=False, color=False, show_all=False))
        print(f"pyinstrument tree: {out}")
        return 0
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = RESULTS / f"profile-{args.what}-{args.sync}.txt"
    command = [
        pyspy, "record", "--format", "raw", "--threads", "--rate", str(args.rate),
        "--output", str(out), "--",
        sys.executable, "-m", "benchmarks.profiling", "target", "--target-what", args.what,
        "--jobs", str(args.jobs), "--pings", str(args.pings), "--sync", args.sync,
    ]  # fmt: skip
    subprocess.run(command, cwd=ROOT, check=True)
    print(summarize(out, args.top))
    print(f"\ncollapsed stacks: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Process-mode handlers for ``tests/runtime/test_process_mode.py``.

Children import the app by name (``modes_app:app``), so the handlers live here, in an
importable module, registered on ``registry``; a test builds its own App on a temporary
database with ``import_name="modes_app:app"`` and ``include``s the registry, and the child
finds the same handlers by job name (the parent tells it the database path in ``Hello``).

Handlers that coordinate with a test do it through files (the test and the child are
different processes): ``record`` appends ``attempt pid time.time()`` lines to a file, and
the flag file named by ``SLOW_START_FLAG`` makes a child's import slow.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import sys
import time

import msgspec

import rota

QUEUE = "procs"

registry = rota.Registry()


class Spin(msgspec.Struct, frozen=True):
    loops: int
    """Iterations of a pure-Python loop (the test calibrates them to a duration)."""


class Span(msgspec.Struct, frozen=True):
    pid: int
    start: float
    end: float


class Script(msgspec.Struct, frozen=True):
    log: str
    """A file every attempt appends ``attempt pid time`` to when it starts."""
    crash_attempts: list[int] = []
    """The attempts that misbehave (``how``); the others return the child's pid."""
    how: str = "block"
    """``block`` (sleep for a minute), ``hang`` (ignore SIGTERM, then sleep for a minute),
    ``block-once`` (block, unless the log shows it ran before), ``exit`` (``os._exit(3)``),
    ``sys.exit`` (``sys.exit(3)``), ``segfault``, ``kill`` (SIGKILL itself)."""


class Report(msgspec.Struct, frozen=True):
    steps: int


class Reported(msgspec.Struct, frozen=True):
    pid: int
    steps: list[int]
    label: str


class Empty(msgspec.Struct, frozen=True):
    pass


def record(path: str, attempt: int) -> None:
    """One ``write`` call per line: lines of concurrent writers never interleave."""
    line = f"{attempt} {os.getpid()} {time.time():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def spin_loop(loops: int) -> int:
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


@registry.job(name="modes.spin", queue=QUEUE, mode="process")
def spin(args: Spin) -> Span:
    start = time.time()
    spin_loop(args.loops)
    return Span(os.getpid(), start, time.time())


@registry.job(
    name="modes.script",
    queue=QUEUE,
    mode="process",
    max_attempts=3,
    backoff=rota.fixed(0.01),
)
def script(args: Script, ctx: rota.SyncContext) -> int:
    return run_script(args, ctx.attempt)


def run_script(args: Script, attempt: int) -> int:
    if attempt in args.crash_attempts and args.how == "hang":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a sync handler has the main thread
    if args.how == "block-once" and os.path.exists(args.log):
        args = msgspec.structs.replace(args, crash_attempts=[])  # it ran before: not again
    record(args.log, attempt)
    if attempt in args.crash_attempts:
        match args.how:
            case "block" | "block-once" | "hang":
                time.sleep(60)
            case "exit":
                os._exit(3)
            case "sys.exit":
                sys.exit(3)
            case "segfault":
                ctypes.string_at(0)
            case "kill":
                os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"{args.how!r} did not end the child")
    return os.getpid()


@registry.job(
    name="modes.hang",
    queue=QUEUE,
    mode="process",
    max_attempts=2,
    timeout=0.3,
    backoff=rota.fixed(0.01),
)
def hang(args: Script, ctx: rota.SyncContext) -> int:
    """``script`` with a 0.3 s timeout: the attempts in ``crash_attempts`` hang."""
    return run_script(args, ctx.attempt)


@registry.job(name="modes.crash_loop", queue=QUEUE, mode="process", max_attempts=1000)
def crash_loop(args: Empty) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@registry.job(name="modes.pid", queue=QUEUE, mode="process")
def pid(args: Empty) -> int:
    return os.getpid()


@registry.job(name="modes.enqueue_pid", queue=QUEUE, mode="process")
def enqueue_pid(args: Empty) -> int:
    """Enqueue a ``modes.pid`` job from the child, on the database ``Hello`` named (this
    module's own app says ``:memory:``): the id of that job."""
    return pid.enqueue_sync(Empty()).id


@registry.job(name="modes.report_sync", queue=QUEUE, mode="process")
def report_sync(args: Report, ctx: rota.SyncContext) -> Reported:
    for step in range(1, args.steps + 1):
        ctx.log(f"sync step {step}")
        ctx.progress(step * 100 / args.steps, step=step, total=args.steps, message="sync")
    return Reported(os.getpid(), list(range(1, args.steps + 1)), "sync")


@registry.job(name="modes.report_async", queue=QUEUE, mode="process")
async def report_async(args: Report, ctx: rota.Context) -> Reported:
    for step in range(1, args.steps + 1):
        ctx.log(f"async step {step}")
        await ctx.progress(step * 100 / args.steps, step=step, total=args.steps, message="async")
    return Reported(os.getpid(), list(range(1, args.steps + 1)), "async")


class Linger(msgspec.Struct, frozen=True):
    log: str
    """``record`` lines: the first start (no line before it) lingers, later ones do not."""
    seconds: float


@registry.job(name="modes.linger", queue=QUEUE, mode="process", max_attempts=1)
def linger(args: Linger, ctx: rota.SyncContext) -> int:
    """On its first start only: ``seconds`` reporting progress every 50 ms (a job that
    outlives a shutdown's grace, and reports progress during it)."""
    first = not os.path.exists(args.log)
    record(args.log, ctx.attempt)
    beats = round(args.seconds / 0.05) if first else 0
    for beat in range(beats):
        time.sleep(0.05)
        ctx.progress(beat + 1, step=beat + 1, total=beats)
    return os.getpid()


@registry.job(name="modes.chatty", queue=QUEUE, mode="process")
def chatty(args: Empty) -> str:
    # Bytes that would look like a frame header (and a huge length) on the protocol pipe.
    print("\x00\x00\x00\x05hello from the child's stdout")
    print("\xff" * 64, flush=True)
    os.write(1, b"\x7f\xff\xff\xff raw bytes on fd 1\n")
    return "still talking"


#: If this environment variable names a file that exists, importing this module (what a
#: child does first) takes a second: a test's way to stop a runtime while a child starts.
SLOW_START_FLAG = "MODES_APP_SLOW_START_FLAG"
_flag = os.environ.get(SLOW_START_FLAG)
if _flag and os.path.exists(_flag):
    time.sleep(1.0)

app = rota.App(":memory:", import_name="modes_app:app")
app.include(registry)
atexit.register(app.close)  # its temporary ":memory:" directory, quietly

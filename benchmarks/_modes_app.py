"""The handlers of the execution-modes benchmark (``modes.py``), in an importable module:
process-mode children import the app by name (``benchmarks._modes_app:app``), so the
handlers live here, at module level, on ``registry``. A run builds its own ``BenchApp`` on
a temporary database with ``import_name=IMPORT_NAME`` and ``include``s the registry; a
child finds the same handlers by job name (the parent tells it the database in ``Hello``).

One queue per mode (``QUEUES``): a runtime started on the process queue alone is the only
one that starts children. Every handler marks its start in ``Marks``, a file that every
process maps (its path in ``RBENCH_MODES_MARKS``, which children inherit; not ``ROTA_*``:
rota refuses unknown ``ROTA_*`` variables): per job, the start (and, for the CPU-bound
jobs, the end) time from ``time.perf_counter()`` (CLOCK_MONOTONIC: one clock for all the
processes of a host), the pid and the native thread id that ran it, and how many times it
started. The parent reads it back: each job must have started exactly once, where its
mode says it runs.
"""

from __future__ import annotations

import mmap
import os
import threading
import time
from pathlib import Path

import msgspec

import rota

from ._util import Item

IMPORT_NAME = "benchmarks._modes_app:app"
MARKS_ENV = "RBENCH_MODES_MARKS"
MODES = ("async", "thread", "process")
QUEUES = {mode: f"modes_{mode}" for mode in MODES}


class Spin(msgspec.Struct):
    """A CPU-bound job: ``loops`` iterations of ``spin`` (calibrated by the parent)."""

    i: int
    loops: int


def spin(loops: int) -> int:
    """A pure-Python loop: holds the GIL all along."""
    total = 0
    for k in range(loops):
        total += k * k % 7
    return total


class Marks:
    """Per job ``i``: start and end times (float64), pid and native thread id (uint32),
    starts (uint8), as five arrays in one shared file mapping."""

    RECORD = 8 + 8 + 4 + 4 + 1

    def __init__(self, path: str | Path, n: int | None = None) -> None:
        self.path = str(path)
        if n is not None:  # create
            with open(self.path, "wb") as f:
                f.truncate(n * self.RECORD)
        size = os.path.getsize(self.path)
        self.n = size // self.RECORD
        with open(self.path, "r+b") as f:
            self._map = mmap.mmap(f.fileno(), size)
        view = memoryview(self._map)
        n = self.n
        self.start = view[0 : 8 * n].cast("d")
        self.end = view[8 * n : 16 * n].cast("d")
        self.pid = view[16 * n : 20 * n].cast("I")
        self.tid = view[20 * n : 24 * n].cast("I")
        self.count = view[24 * n : 25 * n]
        self._views = (view, self.start, self.end, self.pid, self.tid, self.count)

    def close(self) -> None:
        for v in reversed(self._views):
            v.release()
        self._map.close()


_marks: list[Marks | None] = [None]


def attach(marks: Marks | None) -> None:
    """The parent's side: the ``Marks`` its own handlers (async, thread) write to, and,
    through the environment, the file its children open."""
    _marks[0] = marks
    if marks is None:
        os.environ.pop(MARKS_ENV, None)
    else:
        os.environ[MARKS_ENV] = marks.path


def _current() -> Marks:
    marks = _marks[0]
    if marks is None:  # a child: open the file the parent named
        marks = _marks[0] = Marks(os.environ[MARKS_ENV])
    return marks


def begin(i: int) -> Marks:
    m = _current()
    m.start[i] = time.perf_counter()
    m.pid[i] = os.getpid()
    m.tid[i] = threading.get_native_id()
    m.count[i] += 1
    return m


registry = rota.Registry()


# -- no-op jobs (the drain's workload: an ``Item``, nothing done but the start mark) --


@registry.job(name="modes.noop_async", queue=QUEUES["async"])
async def noop_async(args: Item) -> None:
    begin(args.i)


@registry.job(name="modes.noop_thread", queue=QUEUES["thread"])
def noop_thread(args: Item) -> None:
    begin(args.i)


@registry.job(name="modes.noop_process", queue=QUEUES["process"], mode="process")
def noop_process(args: Item) -> None:
    begin(args.i)


# -- CPU-bound jobs (``spin(loops)``: ~20 ms of pure Python) --


@registry.job(name="modes.spin_async", queue=QUEUES["async"])
async def spin_async(args: Spin) -> None:
    m = begin(args.i)
    spin(args.loops)  # blocks the event loop: that is what async mode does with it
    m.end[args.i] = time.perf_counter()


@registry.job(name="modes.spin_thread", queue=QUEUES["thread"])
def spin_thread(args: Spin) -> None:
    m = begin(args.i)
    spin(args.loops)
    m.end[args.i] = time.perf_counter()


@registry.job(name="modes.spin_process", queue=QUEUES["process"], mode="process")
def spin_process(args: Spin) -> None:
    m = begin(args.i)
    spin(args.loops)
    m.end[args.i] = time.perf_counter()


#: What a child imports. Its database is never opened here: a child uses the path the
#: parent sends (and these handlers touch no database).
app = rota.App("modes-child-placeholder.db", import_name=IMPORT_NAME)
app.include(registry)

"""Shared by the benchmark modules: workloads, measurements, statistics, honesty checks.

A *measurement* is one number from one run (jobs/s, ms, MB). A ``Sample`` collects the
runs of one case (one system, one figure, one ``synchronous`` mode) and summarises them as
the median with min-max. Every case module returns ``Sample``s; the runner
(``__main__.py``) builds the table and the JSON from them.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

#: The repository root; temporary databases go under it (the same file system, and so the
#: same disk, for every system measured).
ROOT = Path(__file__).resolve().parent.parent
#: Where temporary databases are made (git-ignored through benchmarks/results/).
SCRATCH = ROOT / "benchmarks" / "results" / "tmp"

SYNC_MODES = ("FULL", "NORMAL")
#: ``PRAGMA synchronous`` values (what SQLite reports back).
PRAGMA_SYNC_VALUE = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}


class Item(msgspec.Struct):
    """The workload's payload (PEERS.md section 3): ``{"i": i, "s": "x" * 64}``."""

    i: int
    s: str


class Ping(msgspec.Struct):
    """The latency workload's payload: the producer's ``time.perf_counter()`` taken just
    before the enqueue call (CLOCK_MONOTONIC: comparable across processes on one host)."""

    i: int
    t: float


FILLER = "x" * 64


def items(n: int, start: int = 0) -> list[Item]:
    return [Item(i=i, s=FILLER) for i in range(start, start + n)]


def payload_bytes(n: int, start: int = 0) -> list[bytes]:
    encode = msgspec.json.encode
    return [encode({"i": i, "s": FILLER}) for i in range(start, start + n)]


# -- statistics --------------------------------------------------------------------------


@dataclass
class Sample:
    """The runs of one case: ``figure`` (e.g. ``drain_20k``) of ``system`` (rota, raw,
    huey, rota_engine...) on ``sync``; ``unit`` says what a value is."""

    figure: str
    system: str
    sync: str
    unit: str
    values: list[float] = field(default_factory=list)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "system": self.system,
            "sync": self.sync,
            "unit": self.unit,
            "median": self.median,
            "min": self.low,
            "max": self.high,
            "values": self.values,
            "note": self.note,
            **({"extra": self.extra} if self.extra else {}),
        }


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def rate(jobs: int, seconds: float) -> float:
    assert seconds > 0, seconds
    return jobs / seconds


# -- places ------------------------------------------------------------------------------


@contextlib.contextmanager
def scratch_dir(prefix: str = "case-") -> Iterator[Path]:
    """A fresh directory on the repository's file system, removed afterwards."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=SCRATCH) as tmp:
        yield Path(tmp)


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """Collect before a timed section, as every system gets: the same conditions."""
    gc.collect()
    yield


# -- honesty -----------------------------------------------------------------------------


def check_synchronous(conn: sqlite3.Connection, expected: str, who: str) -> None:
    """Assert a connection runs with ``PRAGMA synchronous`` = ``expected`` in WAL mode:
    a FULL run never skips the fsync of a commit."""
    (value,) = conn.execute("PRAGMA synchronous").fetchone()
    assert value == PRAGMA_SYNC_VALUE[expected], (
        f"{who}: PRAGMA synchronous is {value}, expected {expected}"
    )
    (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    assert str(mode).lower() == "wal", f"{who}: journal_mode is {mode}, expected wal"


def raw_connect(path: Path, sync: str, *, timeout: float = 30.0) -> sqlite3.Connection:
    """A stdlib connection as the raw loops use it: WAL, the run's ``synchronous``,
    autocommit (explicit ``BEGIN IMMEDIATE`` / ``COMMIT``)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=timeout, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    check_synchronous(conn, sync, "raw sqlite3")
    return conn


# -- processes ---------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MB (10^6 bytes), read with psutil."""
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 1e6


def python_child(
    module: str, *args: str, env: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[str]:
    """``python -m module args...`` with this interpreter, from the repository root."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p
    )
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=full_env,
        text=True,
        **popen,
    )


def read_json_line(proc: subprocess.Popen[str], timeout_s: float) -> Any:
    """The next line a child prints on stdout, decoded as JSON (``TimeoutError`` if it
    says nothing in time, ``RuntimeError`` if it exits)."""
    import select

    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"child {proc.args!r} said nothing in {timeout_s} s")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"child {proc.args!r} exited with {proc.wait()}")
            line = line.strip()
            if line.startswith("{") or line.startswith("["):
                return json.loads(line)


def stop_child(proc: subprocess.Popen[str], timeout_s: float = 15.0) -> None:
    """SIGTERM the child we started (by its own pid), then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result

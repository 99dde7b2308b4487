"""Idle CPU: what a ``rota worker`` with nothing to do costs, in % of one core.

::

    python -m benchmarks.idle [--seconds 10] [--runs 3] [--sync FULL] [--option NAME=VALUE ...]

The real ``rota worker benchmarks._idle_app:app`` runs on an empty database (rota's
defaults, one queue); once it has registered as an owner (and then ``--settle`` more
seconds), psutil reads the CPU time of the whole process (every thread: the event loop,
the Store's, the change feed's) at the start and the end of ``--seconds``; the figure is
(user + system) / wall time. ``--option poll_interval_s=0.05`` runs the worker with that
option (as ``ROTA_POLL_INTERVAL_S``). Prints one JSON line per run, then the median.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from ._util import python_child, scratch_dir, stop_child


def _owners(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT count(*) FROM rota_owners").fetchone()[0])
    except sqlite3.Error:
        return 0


def measure(
    db: Path, sync: str, seconds: float, settle_s: float, options: dict[str, str]
) -> dict[str, Any]:
    """One idle worker on ``db``: its CPU use over ``seconds``, after it started."""
    import psutil

    env = {"RBENCH_DB": str(db), "RBENCH_SYNC": sync}
    env.update({f"ROTA_{name.upper()}": value for name, value in options.items()})
    proc = python_child(
        "rota", "worker", "benchmarks._idle_app:app", "--quiet", env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while _owners(db) == 0:
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not register within 60 s")
            time.sleep(0.05)
        time.sleep(settle_s)
        process = psutil.Process(proc.pid)
        before, t0 = process.cpu_times(), time.monotonic()
        time.sleep(seconds)
        after, t1 = process.cpu_times(), time.monotonic()
        assert proc.poll() is None, "the worker exited while measured"
        threads = process.num_threads()
    finally:
        stop_child(proc)
    user = after.user - before.user
    system = after.system - before.system
    wall = t1 - t0
    return {
        "cpu_percent": 100 * (user + system) / wall,
        "user_s": user,
        "system_s": system,
        "wall_s": wall,
        "threads": threads,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.idle", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sync", default="FULL", choices=["FULL", "NORMAL"])
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    options = dict(option.split("=", 1) for option in args.option)
    figures = []
    for run in range(args.runs):
        with scratch_dir("idle-") as d:
            result = measure(d / "idle.db", args.sync, args.seconds, args.settle, options)
        figures.append(result["cpu_percent"])
        print(json.dumps({"run": run + 1, **result, "options": options}), flush=True)
    low, high = min(figures), max(figures)
    print(
        f"idle rota worker: {statistics.median(figures):.2f}% of a core "
        f"[{low:.2f}-{high:.2f}], median of {args.runs} x {args.seconds:g} s "
        f"({args.sync}, options {options or 'none'})"
    )


if __name__ == "__main__":
    main()

"""The floor under durable latency: what one commit's fsync costs on this disk.

::

    python -m benchmarks.fsync [--n 1000]

Two figures, in ms (p50 / p99), on a file in ``benchmarks/results/tmp`` (the disk every
benchmark uses): ``os.write`` of 4 KiB then ``os.fdatasync`` (the bare syscall), and one
autocommit ``INSERT`` on a WAL database with ``synchronous=FULL`` (SQLite's commit: the
WAL append and its fsync). A durable enqueue pays one such commit, and the claim that
starts its job another, so two are the floor of enqueue-to-start latency from another
process.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from ._util import percentile, raw_connect, scratch_dir


def measure(n: int) -> dict[str, float]:
    with scratch_dir("fsync-") as d:
        fd = os.open(d / "f", os.O_WRONLY | os.O_CREAT, 0o600)
        block = b"x" * 4096
        bare = []
        try:
            for i in range(n):
                t0 = time.perf_counter()
                os.pwrite(fd, block, (i % 256) * 4096)
                os.fdatasync(fd)
                bare.append(time.perf_counter() - t0)
        finally:
            os.close(fd)
        conn = raw_connect(d / "db", "FULL")
        commits = []
        try:
            conn.execute("CREATE TABLE t (i INTEGER PRIMARY KEY, s TEXT)")
            for _ in range(n):
                t0 = time.perf_counter()
                conn.execute("INSERT INTO t (s) VALUES (?)", ("x" * 64,))
                commits.append(time.perf_counter() - t0)
        finally:
            conn.close()
    out = {}
    for name, values in (("fdatasync_4k", bare), ("sqlite_full_commit", commits)):
        ms = [v * 1000 for v in values]
        out[f"{name}_p50_ms"] = percentile(ms, 50)
        out[f"{name}_p99_ms"] = percentile(ms, 99)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fsync", description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    print(json.dumps(measure(parser.parse_args().n)))


if __name__ == "__main__":
    main()

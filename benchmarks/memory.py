"""Memory: the resident set size (RSS) of one worker process with 1M jobs waiting.

Each system's worker runs in a child process over the shared 1M backlog
(``backlog.Backlogs``); once it has been claiming and running jobs for ``settle_s``
seconds (and at least 5,000 jobs started), its RSS is read with psutil a few times over
half a second and the largest reading is the figure (MB = 10^6 bytes). Then the child is
stopped (SIGTERM, graceful) and the backlog topped up.

* rota: the real ``rota worker`` command (``python -m rota worker
  benchmarks._worker_app:app``, the drain's settings: concurrency 100, prefetch 100);
* raw: ``python -m benchmarks.raw worker``: the raw drain loop in a bare Python process
  (the floor: an interpreter, sqlite3 and msgspec);
* huey: a consumer with 2 worker threads in one process (``peer_huey.memory_worker``).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from ._util import SCRATCH, python_child, read_json_line, rss_mb, stop_child


def measure(
    module: str, args: list[str], env: dict[str, str], *, settle_s: float
) -> dict[str, float]:
    SCRATCH.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile("w+", dir=SCRATCH) as errors:
        proc = python_child(module, *args, env=env, stdout=-1, stderr=errors)
        try:
            return _measure(proc, settle_s)
        except Exception as exc:
            errors.seek(0)
            raise RuntimeError(f"{module} {args}: {exc}\n{errors.read()[-3000:]}") from exc
        finally:
            stop_child(proc)


def _measure(proc: subprocess.Popen[str], settle_s: float) -> dict[str, float]:
    began = time.monotonic()
    read_json_line(proc, 120)  # the first progress line: started and claiming
    rss_first = rss_mb(proc.pid)
    started = 0
    while time.monotonic() - began < settle_s or started < 5000:
        progress = read_json_line(proc, 120)
        started = int(progress.get("started", progress.get("completed", 0)))
    readings = []
    for _ in range(5):
        readings.append(rss_mb(proc.pid))
        time.sleep(0.1)
    assert proc.poll() is None, "the worker exited while measured"
    return {"rss": max(readings), "rss_first_progress": rss_first, "started": started}


def rota(db: Path, sync: str, settle_s: float) -> dict[str, float]:
    env = {"RBENCH_DB": str(db), "RBENCH_SYNC": sync}
    return measure("rota", ["worker", "benchmarks._worker_app:app"], env, settle_s=settle_s)


def raw(db: Path, sync: str, settle_s: float) -> dict[str, float]:
    return measure("benchmarks.raw", ["worker", str(db), sync], {}, settle_s=settle_s)


def huey(db: Path, sync: str, settle_s: float) -> dict[str, float]:
    return measure("benchmarks.peer_huey", ["worker", str(db), sync], {}, settle_s=settle_s)

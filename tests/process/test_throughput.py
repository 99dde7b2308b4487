"""20,000 jobs through 2 ``rota worker`` processes: each runs exactly once, all complete."""

from __future__ import annotations

import signal
import time
from typing import Any

from proc_harness import Harness, wait_until

from rota.domain.job import JobState

JOBS = 20_000


def test_20000_jobs_through_two_worker_processes_run_exactly_once(harness: Harness) -> None:
    # retain_completed=None: retention must not delete completed jobs while we count them.
    options: dict[str, Any] = {"concurrency": 50, "retain_completed": None}
    workers = [harness.start_worker(**options) for _ in range(2)]

    began = time.monotonic()
    ids = harness.enqueue_many((harness.script("ok") for _ in range(JOBS)), chunk=2000)
    enqueued = time.monotonic() - began
    assert len(set(ids)) == JOBS

    def all_done() -> bool:
        assert all(w.alive for w in workers), "\n".join(w.describe() for w in workers)
        return harness.counts()[JobState.COMPLETED] == JOBS

    wait_until(all_done, 90, f"{JOBS} jobs to complete", interval_s=0.05)
    wall = time.monotonic() - began
    print(
        f"\n{JOBS} jobs, 2 processes x concurrency 50: enqueue {enqueued:.2f} s, "
        f"all completed {wall:.2f} s after the first enqueue ({JOBS / wall:,.0f} jobs/s)"
    )

    counts = harness.counts()
    assert counts[JobState.COMPLETED] == JOBS
    assert sum(counts.values()) == JOBS
    starts = harness.starts()
    assert len(starts) == JOBS  # no job started twice...
    assert {job_id for job_id, _, _ in starts} == set(ids)  # ...and none was lost
    assert {attempt for _, attempt, _ in starts} == {1}
    per_worker = {w.pid: sum(1 for _, _, pid in starts if pid == w.pid) for w in workers}
    print(f"jobs per worker process: {sorted(per_worker.values())}")
    assert sum(per_worker.values()) == JOBS
    # Both share the work: a worker whose transactions run back to back must not starve
    # the other of SQLite's write lock (it once got 0 of 20,000 under load).
    assert min(per_worker.values()) >= JOBS // 20, per_worker
    assert all(harness.get(job_id).stalls == 0 for job_id in ids[:: JOBS // 100])

    for worker in workers:
        worker.send(signal.SIGTERM)
    assert [w.wait(15) for w in workers] == [0, 0]
    for worker in workers:
        assert "lease" not in worker.stderr() and "Traceback" not in worker.stderr()

"""Fencing across runtimes: a frozen worker (alive, not renewing) loses its lease to a live
one, and its late settlement is refused (DESIGN.md section 5)."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from proc_harness import Harness, wait_until

from rota.domain.event import EventKind
from rota.domain.job import JobState


def _stopped(pid: int) -> bool:
    """Whether the process is stopped (state T in /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] in ("T", "t")


def test_frozen_worker_loses_its_lease_and_its_late_settlement_is_refused(
    harness: Harness,
) -> None:
    options: dict[str, Any] = {"lease_ttl_s": 1.5}
    job_id = harness.enqueue("sleep", seconds=1.0)
    first = harness.start_worker(**options)
    harness.wait_started(job_id, 1, timeout_s=10)
    first.send(signal.SIGSTOP)
    wait_until(lambda: _stopped(first.pid), 5, "the first worker to stop")
    frozen_at = time.monotonic()

    # The first owner's pid is alive: the second runtime must not release its leases at
    # start; only the lease's expiry hands the job over.
    second = harness.start_worker(**options)
    assert "released" not in second.stderr()
    restart = harness.wait_started(job_id, 2, timeout_s=10)
    takeover = time.monotonic() - frozen_at
    assert restart == (job_id, 2, second.pid)
    done = harness.wait_state(job_id, JobState.COMPLETED, timeout_s=10)
    assert (done.attempt, done.stalls) == (2, 1)
    [stalled] = [e for e in harness.events(job_id) if e.kind is EventKind.STALLED]
    assert f":{first.pid}:" in (stalled.data or b"").decode()  # the first owner's lease
    print(f"\nfrozen -> second worker started the job: {takeover * 1000:.0f} ms (ttl 1.5 s)")

    # Thaw the first worker: its attempt ends long after its lease was taken over.
    first.send(signal.SIGCONT)
    wait_until(
        lambda: "lease lost" in first.stderr() or "settlements refused" in first.stderr(),
        10,
        "the first worker to notice it lost the lease",
    )
    # Give it time to try anything else (renewal ticks every 0.5 s, sweeps every 0.1 s).
    time.sleep(1.0)
    assert harness.get(job_id) == done  # nothing the first worker did changed the job
    assert harness.starts() == [(job_id, 1, first.pid), (job_id, 2, second.pid)]
    kinds = [e.kind for e in harness.events(job_id)]
    assert kinds.count(EventKind.COMPLETED) == 1
    assert kinds.count(EventKind.ACTIVE) == 2

    # Both workers are still healthy and stop cleanly.
    assert first.alive and second.alive
    for worker in (first, second):
        worker.send(signal.SIGTERM)
    assert (first.wait(10), second.wait(10)) == (0, 0)

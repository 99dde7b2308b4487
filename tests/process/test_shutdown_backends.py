"""``rota worker`` shuts down as an embedded runtime does (``tests/runtime/test_shutdown.py``),
on both backends: on SIGTERM a job that outlives ``shutdown_grace_s`` (reporting progress
all along, never looking at ``ctx.cancelled``) is stopped waiting for at the grace and
handed back uncounted, and the process exits at about the grace; the next worker runs it
as attempt 1 of 1, which ``rota jobs list`` shows as ``1/1``."""

from __future__ import annotations

import signal
import time

import pytest
from proc_harness import Harness

from rota.cli import main
from rota.domain.job import JobState

GRACE_S = 1.0
#: Every job of the scripted queue in a child process.
PROCESS_QUEUE = '{"scripted": {"mode": "process", "processes": 1}}'


@pytest.mark.parametrize(
    ("backend", "mode"),
    [("asyncio", "thread"), ("trio", "thread"), ("asyncio", "async"), ("asyncio", "process")],
)
def test_sigterm_stops_waiting_for_a_job_at_the_grace_and_hands_it_back(
    harness: Harness, capsys: pytest.CaptureFixture[str], backend: str, mode: str
) -> None:
    job_id = harness.enqueue(
        "linger", seconds=30.0, thread=mode != "async", options={"max_attempts": 1}
    )
    options = {"shutdown_grace_s": GRACE_S}
    if mode == "process":
        options["queue_config"] = PROCESS_QUEUE  # type: ignore[assignment]
    worker = harness.start_worker("--backend", backend, **options)
    harness.wait_started(job_id, 1, timeout_s=20)
    harness.wait_until_progress(job_id)

    signalled = time.monotonic()
    worker.send(signal.SIGTERM)
    assert worker.wait(GRACE_S + 10) == 0, worker.describe()
    took = time.monotonic() - signalled
    with capsys.disabled():
        print(f"\n{backend} {mode}: SIGTERM -> exit 0 in {took:.2f} s (grace {GRACE_S} s)")
    assert GRACE_S - 0.1 <= took <= GRACE_S + 2.0, worker.describe()
    released = harness.get(job_id)
    assert (released.state, released.attempt, released.stalls, released.error) == (
        JobState.WAITING,
        0,
        0,
        None,
    ), worker.describe()

    again = harness.start_worker("--backend", backend, **options)
    done = harness.wait_state(job_id, JobState.COMPLETED, timeout_s=20)
    assert (done.attempt, done.max_attempts) == (1, 1)
    again.send(signal.SIGTERM)
    assert again.wait(10) == 0

    capsys.readouterr()
    assert main(["jobs", "list", "--db", str(harness.db)]) == 0
    [row] = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert row[:5] == [str(job_id), "scripted.thread" if mode != "async" else "scripted",
                       "scripted", "completed", "1/1"]  # fmt: skip

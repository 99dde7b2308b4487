"""``rota worker`` on SIGTERM: jobs that finish within ``shutdown_grace_s`` complete, the
others are released (no stall counted) and run on the next start; the process exits 0."""

from __future__ import annotations

import os
import shutil
import signal
import time
from typing import Any

from proc_harness import Harness, wait_until

from rota.domain.job import JobState

GRACE_S = 1.0


def test_sigterm_completes_short_jobs_releases_long_ones_and_exits_0(harness: Harness) -> None:
    options: dict[str, Any] = {"concurrency": 2, "shutdown_grace_s": GRACE_S}
    long = harness.enqueue("sleep", seconds=3.0)  # outlives the grace period
    short = harness.enqueue("sleep", seconds=0.5)  # finishes within it
    worker = harness.start_worker(**options)
    harness.wait_started(long, 1, timeout_s=10)
    harness.wait_started(short, 1, timeout_s=10)

    signalled = time.monotonic()
    worker.send(signal.SIGTERM)
    assert worker.wait(GRACE_S + 4) == 0, worker.describe()
    took = time.monotonic() - signalled
    print(f"\nSIGTERM -> exit 0 in {took * 1000:.0f} ms (grace {GRACE_S} s)")
    assert GRACE_S - 0.2 <= took <= GRACE_S + 3  # it waited the grace period, not more
    assert "rota worker: stopped" in worker.stdout()

    finished = harness.get(short)
    assert (finished.state, finished.attempt, finished.result) == (
        JobState.COMPLETED,
        1,
        b'"done"',
    )
    released = harness.get(long)
    assert released.state is JobState.WAITING
    assert (released.stalls, released.owner, released.token, released.error) == (
        0,
        None,
        None,
        None,
    )
    assert released.attempt == 0  # the interrupted attempt is taken back, uncounted
    assert harness.engine.list_owners() == []  # the owner removed itself

    # The next run picks the released job up at once and completes it.
    again = harness.start_worker(**options)
    assert harness.wait_started(long, 2, timeout_s=5)[1] == 1  # attempt 1 again
    done = harness.wait_state(long, JobState.COMPLETED, timeout_s=10)
    assert (done.attempt, done.stalls) == (1, 0)
    assert harness.start_counts() == {long: 2, short: 1}
    again.send(signal.SIGTERM)
    assert again.wait(5) == 0  # nothing running: it stops at once


def test_sigint_stops_an_idle_worker_at_once(harness: Harness) -> None:
    worker = harness.start_worker()
    signalled = time.monotonic()
    worker.send(signal.SIGINT)
    assert worker.wait(5) == 0, worker.describe()
    assert time.monotonic() - signalled < 2
    assert "rota worker: stopped" in worker.stdout()
    assert harness.engine.list_owners() == []


def test_second_signal_stops_at_once(harness: Harness) -> None:
    options: dict[str, Any] = {"shutdown_grace_s": 20}
    job_id = harness.enqueue("sleep", seconds=60.0)
    worker = harness.start_worker(**options)
    harness.wait_started(job_id, 1, timeout_s=10)
    worker.send(signal.SIGTERM)
    wait_until(lambda: "stopping" in worker.stdout(), 5, "the worker to start stopping")
    signalled = time.monotonic()
    worker.send(signal.SIGTERM)
    worker.wait(3)  # "a second signal stops at once", not after the 20 s grace
    print(f"\nsecond SIGTERM -> exit in {(time.monotonic() - signalled) * 1000:.0f} ms")

    # The lease keeps the job safe: the next start runs it again.
    harness.start_worker(**options)
    assert harness.wait_started(job_id, 2, timeout_s=5)[1] == 1  # released uncounted


def test_graceful_restarts_do_not_use_up_attempts_of_jobs_that_never_started(
    harness: Harness,
) -> None:
    # concurrency 1, prefetch 1: the blocker runs, the flaky job waits in the buffer; at
    # shutdown the pool hands it back unstarted, its attempt not counted.
    options: dict[str, Any] = {"concurrency": 1, "prefetch": 1, "shutdown_grace_s": 0}
    blocker = harness.enqueue("sleep", seconds=60.0)
    flaky = harness.enqueue("raise")  # fails every attempt; max_attempts 3
    for run in range(1, 3):  # e.g. two deploys
        worker = harness.start_worker(**options)
        harness.wait_started(blocker, run, timeout_s=5)
        assert harness.get(flaky).state is JobState.ACTIVE  # claimed ahead
        worker.send(signal.SIGTERM)
        assert worker.wait(5) == 0
        assert harness.get(flaky).state is JobState.WAITING
    assert flaky not in harness.start_counts()  # it never started
    assert harness.engine.cancel(blocker) is JobState.CANCELLED

    harness.start_worker(**options)
    failed = harness.wait_state(flaky, JobState.FAILED, timeout_s=10)
    attempts = [attempt for job_id, attempt, _ in harness.starts() if job_id == flaky]
    assert attempts == [1, 2, 3], f"ran {len(attempts)} time(s): {failed.error}"


def test_a_job_that_calls_sys_exit_does_not_stop_the_worker_process(harness: Harness) -> None:
    exits = harness.enqueue("sys.exit")  # max_attempts 3
    fine = harness.enqueue("ok")
    worker = harness.start_worker(concurrency=1)
    failed = harness.wait_state(exits, JobState.FAILED, timeout_s=10)
    assert failed.attempt == 3
    assert failed.error is not None
    assert "a job cannot stop its worker" in failed.error.strip().splitlines()[-1]
    assert harness.wait_state(fine, JobState.COMPLETED, timeout_s=10).result == b'"done"'
    assert worker.alive, worker.describe()  # still running
    worker.send(signal.SIGINT)
    assert worker.wait(5) == 0, worker.describe()


def test_ctrl_c_while_a_job_keeps_the_loop_busy_still_shuts_down_gracefully(
    harness: Harness,
) -> None:
    job_id = harness.enqueue("block", seconds=1.0)  # a CPU-bound step: the loop is busy
    worker = harness.start_worker(shutdown_grace_s=5)
    harness.wait_started(job_id, 1, timeout_s=10)
    worker.send(signal.SIGINT)  # arrives while the handler runs, not through it
    assert worker.wait(10) == 0, worker.describe()
    assert "rota worker: stopped" in worker.stdout()
    done = harness.get(job_id)
    assert (done.state, done.attempt) == (JobState.COMPLETED, 1)  # finished within the grace


def test_a_database_replaced_under_a_worker_stops_it_with_one_line(harness: Harness) -> None:
    worker = harness.start_worker()
    replacement = harness.workdir / "restored.db"
    shutil.copy(harness.db, replacement)
    os.replace(replacement, harness.db)  # a restore from a backup, under the running worker
    code = worker.wait(10)
    assert code != 0, worker.describe()
    lines = [line for line in worker.stderr().splitlines() if line.startswith("rota: ")]
    assert lines and f"database file {harness.db} was replaced by another file" in lines[-1]

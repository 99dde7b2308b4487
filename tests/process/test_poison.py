"""A poison job (it kills its worker process on every attempt) fails after ``max_stalls``
+ 1 stalls; the restarted worker then runs normally instead of crash-looping."""

from __future__ import annotations

import signal
import time

from proc_harness import Harness

from rota.domain.event import EventKind
from rota.domain.job import DEFAULT_MAX_STALLS, FINISHED_STATES, JobState

MAX_RESTARTS = 5


def test_poison_job_fails_after_max_stalls_and_the_worker_then_runs_normally(
    harness: Harness,
) -> None:
    poison = harness.enqueue("exit")  # os._exit(3) on every attempt
    worker, dead = harness.supervise(
        lambda: harness.get(poison).state is JobState.FAILED,
        max_restarts=MAX_RESTARTS,
        timeout_s=30,
    )

    failed = harness.get(poison)
    stalls = DEFAULT_MAX_STALLS + 1
    assert failed.stalls == stalls
    assert failed.error is not None and "poison" in failed.error, failed.error
    assert [w.returncode for w in dead] == [3] * stalls
    assert harness.starts() == [(poison, n + 1, w.pid) for n, w in enumerate(dead)]
    kinds = [e.kind for e in harness.events(poison)]
    assert kinds.count(EventKind.STALLED) == stalls and kinds[-1] is EventKind.FAILED

    # The last restart released the poison as failed; it keeps running normally.
    worker.wait_ready()
    ok = harness.enqueue("ok")
    harness.wait_state(ok, JobState.COMPLETED, timeout_s=5)
    stay_until = time.monotonic() + 2.0
    while time.monotonic() < stay_until:
        assert worker.alive, worker.describe()
        time.sleep(0.05)
    assert harness.start_counts()[poison] == stalls  # not run again
    worker.send(signal.SIGTERM)
    assert worker.wait(5) == 0


def test_jobs_claimed_with_a_poison_job_but_never_started_are_not_failed(
    harness: Harness,
) -> None:
    # concurrency 1 and the default prefetch ("auto"): a job is claimed only for a free
    # slot until jobs have been seen to end (none has: the poison job kills the process
    # first), so the innocent job is never held beside the poison job when it does.
    poison = harness.enqueue("exit")
    innocent = harness.enqueue("ok")
    worker, dead = harness.supervise(
        lambda: (
            harness.get(poison).state is JobState.FAILED
            and harness.get(innocent).state in FINISHED_STATES
        ),
        max_restarts=MAX_RESTARTS,
        timeout_s=30,
        concurrency=1,
    )
    assert harness.get(poison).state is JobState.FAILED
    survivor = harness.get(innocent)
    assert survivor.state is JobState.COMPLETED, survivor.error
    assert (survivor.attempt, survivor.stalls) == (1, 0)  # never charged for the crashes
    assert harness.start_counts()[innocent] == 1
    assert len(dead) == DEFAULT_MAX_STALLS + 1
    worker.send(signal.SIGTERM)
    assert worker.wait(5) == 0


def test_a_job_that_kills_its_worker_once_completes_on_the_next_attempt(
    harness: Harness,
) -> None:
    once = harness.enqueue("exit", exit_on_attempt=1)  # dies on attempt 1 only
    others = [harness.enqueue("ok") for _ in range(3)]
    worker, dead = harness.supervise(
        lambda: harness.get(once).state in FINISHED_STATES,
        max_restarts=MAX_RESTARTS,
        timeout_s=30,
    )
    done = harness.get(once)
    assert (done.state, done.attempt, done.stalls) == (JobState.COMPLETED, 2, 1)
    assert [w.returncode for w in dead] == [3]
    for job_id in others:
        harness.wait_state(job_id, JobState.COMPLETED, timeout_s=5)
    assert harness.start_counts()[once] == 2
    worker.send(signal.SIGTERM)
    assert worker.wait(5) == 0

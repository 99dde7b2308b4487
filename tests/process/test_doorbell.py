"""The doorbell between real processes: a ``rota worker`` that polls only every minute
still starts a job enqueued by another process (this test's) at once, because the
producer's commit rings it; and a cancel asked for by another process stops its job at
once. The bounds are generous (a loaded machine); the poll could not meet them."""

from __future__ import annotations

import signal
import time

from proc_harness import Harness, wait_until

from rota.domain.job import JobState
from rota.storage.feed import ring

#: The worker's poll: no test here waits that long.
POLL_S = 60.0
#: "At once", on a loaded 2-core machine.
SOON_S = 10.0


def test_a_worker_polling_every_minute_starts_another_process_job_at_once(
    harness: Harness,
) -> None:
    worker = harness.start_worker(poll_interval_s=POLL_S)
    [owner] = harness.engine.list_owners()
    assert owner.doorbell is not None  # recorded with its owner row
    time.sleep(0.2)  # its pools' first claims found nothing: only a wake-up starts a job
    for n in range(3):
        t0 = time.monotonic()
        job_id = harness.enqueue("ok")
        harness.wait_state(job_id, JobState.COMPLETED, timeout_s=SOON_S)
        took = time.monotonic() - t0
        assert took < SOON_S, (n, took)
        assert worker.alive, worker.describe()
    worker.send(signal.SIGTERM)
    assert worker.wait(15.0) == 0, worker.describe()
    assert harness.engine.list_owners() == []  # its doorbell went with its owner row
    assert ring([owner.doorbell]) == 0  # and nobody listens there any more


def test_a_cancel_from_another_process_stops_a_job_at_once(harness: Harness) -> None:
    worker = harness.start_worker(poll_interval_s=POLL_S)
    job_id = harness.enqueue("hang")
    wait_until(lambda: harness.starts(), SOON_S, "the job to start")
    assert harness.app.handle(job_id).cancel_sync() is JobState.ACTIVE
    job = harness.wait_state(job_id, JobState.CANCELLED, timeout_s=SOON_S)
    assert job.error == "cancelled on request"
    assert worker.alive, worker.describe()

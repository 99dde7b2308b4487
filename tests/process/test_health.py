"""``rota health`` as a container health check runs it: against a live ``rota worker``
process, and the same worker killed with SIGKILL (its owner row stays behind, its pid is
gone). Exit status: 0 healthy, 1 unhealthy (one line per problem), 2 usage or no
database. Also: a ``ROTA_*`` variable that names no option does not stop a worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from proc_harness import REPO, Harness

from rota.domain.job import JobState


def rota(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROTA_")}
        env["PYTHONPATH"] = str(REPO / "src")
    return subprocess.run(
        [sys.executable, "-m", "rota", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_health_of_a_live_worker_and_of_a_killed_one(harness: Harness) -> None:
    db = str(harness.db)
    harness.enqueue("hang")  # a queue with work: it needs a worker
    worker = harness.start_worker(heartbeat_interval_s=0.2)

    healthy = rota("health", "--db", db)
    assert (healthy.returncode, healthy.stderr) == (0, ""), healthy.stdout
    assert healthy.stdout == "ok: 1 live worker; queues scripted served; database writable\n"
    by_app = rota("health", "scripted:app", env=harness.env())  # the app's queues
    assert (by_app.returncode, by_app.stdout) == (0, healthy.stdout), by_app.stderr
    other = rota("health", "--db", db, "--queue", "scripted", "--queue", "mail")
    assert (other.returncode, other.stdout) == (1, "queue 'mail': no live worker serves it\n")

    [owner] = harness.engine.list_owners()
    worker.kill()  # SIGKILL: no clean stop, its owner row stays, its heartbeat is fresh
    dead = rota("health", "--db", db)
    assert dead.returncode == 1, dead.stdout + dead.stderr
    assert dead.stdout == (
        f"queue 'scripted': no live worker serves it ({owner.id}: pid {worker.pid} gone)\n"
    )
    assert dead.stderr == ""

    missing = rota("health", "--db", db + ".typo")
    assert missing.returncode == 2
    assert missing.stderr.startswith("rota: no database at ")
    assert not Path(db + ".typo").exists()


def test_a_rota_variable_that_is_no_option_does_not_stop_a_worker(harness: Harness) -> None:
    worker = harness.start_worker(env="prod", concurency=3)  # ROTA_ENV, ROTA_CONCURENCY
    job_id = harness.enqueue("ok")
    harness.wait_state(job_id, JobState.COMPLETED, timeout_s=10)
    assert worker.alive
    assert "rota: warning: ROTA_CONCURENCY is not a rota option (ignored), did you mean " \
        "ROTA_CONCURRENCY?\nrota: warning: ROTA_ENV is not a rota option (ignored)\n" \
        in worker.stderr()  # fmt: skip

"""Smoke tests of ``rota info`` and ``rota jobs list|show|retry|cancel`` with ``--db``,
against a database a real worker process is using."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from proc_harness import Harness, wait_until

from rota.cli import main
from rota.domain.event import Owner
from rota.domain.job import JobState
from rota.storage.sqlite import SqliteEngine


def rota(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``rota`` command line (without this process's ``ROTA_*`` variables)."""
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROTA_")}
    return subprocess.run(
        [sys.executable, "-m", "rota", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _ids(listing: str) -> dict[int, list[str]]:
    """``rota jobs list`` rows by job id."""
    rows = [line.split() for line in listing.splitlines()[1:]]
    return {int(row[0]): row for row in rows}


@pytest.fixture
def busy(harness: Harness) -> dict[str, int]:
    """A worker (ttl 1.5 s) and a job in each interesting state."""
    jobs = {
        "completed": harness.enqueue("ok"),
        "failed": harness.enqueue("unrecoverable"),
        "active": harness.enqueue("hang"),
        "delayed": harness.job.enqueue_sync(harness.script("ok"), delay=3600).id,
    }
    harness.start_worker(lease_ttl_s=1.5)
    for state in ("completed", "failed", "active"):
        harness.wait_state(jobs[state], JobState(state), timeout_s=10)
    return jobs


def test_info_shows_counts_per_queue_and_live_owners(
    harness: Harness, busy: dict[str, int]
) -> None:
    [worker] = harness.workers
    result = rota("info", "--db", str(harness.db))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"database: {harness.db}"
    header = lines[1].split()
    assert header == ["queue", *(s.value for s in JobState), "paused"]
    row = dict(zip(header[1:], lines[2].split()[1:], strict=False))
    assert lines[2].split()[0] == "scripted"
    assert row == {
        "waiting": "0",
        "delayed": "1",
        "active": "1",
        "completed": "1",
        "failed": "1",
        "cancelled": "0",
    }
    assert "owners: 1" in result.stdout
    assert f"pid {worker.pid} (alive)  queues scripted" in result.stdout

    worker.kill()  # its owner row stays behind, its pid gone
    result = rota("info", "--db", str(harness.db))
    assert f"pid {worker.pid} (gone)" in result.stdout


#: What a worker reports of its pools, with figures missing and unknown ones added.
POOLS = {
    "images": {
        "concurrency": 10, "running": 3,
        "threads": {"size": 10, "alive": 4, "busy": 1, "abandoned": 0},
        "processes": {"size": 2, "pids": [123, 124], "busy": 1, "jobs": 57,
                      "restarts": 1, "recycled": 0, "killed": 0, "new": "x"},
    },
    "mail": {"concurrency": 5, "running": 0, "future": {"size": 1}},
    "odd": {"threads": {"size": 2}, "processes": {"busy": 0}},
    "broken": 5,
}  # fmt: skip


def test_info_shows_each_owners_pools_as_of_its_last_heartbeat(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "info.db")
    engine = SqliteEngine(db)
    engine.migrate()
    now = engine.now_ms()
    base = {"host": "elsewhere", "started_at_ms": now, "heartbeat_at_ms": now}
    engine.register_owner(  # the older owner: listed first
        Owner(id="quiet", pid=1, queues=["mail"], **{**base, "started_at_ms": now - 1})
    )
    engine.register_owner(
        Owner(id="busy", pid=2, queues=["images", "mail", "odd", "broken"], pools=POOLS, **base)
    )
    engine.close()

    assert main(["info", "--db", db]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert out.count("(pools as of the last heartbeat)") == 1
    quiet = next(i for i, line in enumerate(lines) if line.startswith("  quiet  pid 1 "))
    busy = next(i for i, line in enumerate(lines) if line.startswith("  busy  pid 2 "))
    assert busy == quiet + 1  # an owner without pools has no pool lines
    assert lines[busy + 1 : busy + 5] == [
        "    images: concurrency 10, running 3; threads 4/10 (1 busy, 0 abandoned); "
        "processes 2/2 pids 123,124 (1 busy, 57 jobs, 1 restarts, 0 recycled, 0 killed)",
        "    mail: concurrency 5, running 0",  # no threads / processes parts
        "    odd: threads ?/2; processes ?/? (0 busy)",  # missing figures tolerated
        "    broken: no figures",
    ]
    assert lines[busy + 5 :] == []


def test_info_without_pools_says_nothing_of_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "info.db")
    engine = SqliteEngine(db)
    engine.migrate()
    now = engine.now_ms()
    engine.register_owner(
        Owner(id="w", host="elsewhere", pid=1, started_at_ms=now, heartbeat_at_ms=now)
    )
    engine.close()
    assert main(["info", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "pools as of" not in out
    assert out.splitlines()[-1].startswith("  w  pid 1  queues ")


def test_jobs_list_filters_by_state(harness: Harness, busy: dict[str, int]) -> None:
    result = rota("jobs", "list", "--db", str(harness.db))
    assert result.returncode == 0, result.stderr
    rows = _ids(result.stdout)
    assert sorted(rows) == sorted(busy.values())
    for state, job_id in busy.items():
        assert rows[job_id][1:4] == ["scripted", "scripted", state]
    assert "unrecoverable: scripted: cannot succeed" in result.stdout

    failed = rota("jobs", "list", "--db", str(harness.db), "--state", "failed")
    assert list(_ids(failed.stdout)) == [busy["failed"]]
    assert rota("jobs", "list", "--db", str(harness.db), "--queue", "nope").stdout == (
        "id  name  queue  state  attempt  priority  error\n"
    )


@pytest.mark.parametrize("id_first", [False, True], ids=["db-then-id", "id-then-db"])
def test_jobs_show_takes_the_id_before_or_after_db(
    harness: Harness, busy: dict[str, int], id_first: bool
) -> None:
    job_id, db = str(busy["completed"]), ["--db", str(harness.db)]
    args = [job_id, *db] if id_first else [*db, job_id]
    result = rota("jobs", "show", "--json", *args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["id"] == busy["completed"]


def test_jobs_show_retry_cancel(harness: Harness, busy: dict[str, int]) -> None:
    def jobs(action: str, job_id: int | str) -> subprocess.CompletedProcess[str]:
        json = ["--json"] if action == "show" else []
        return rota("jobs", action, "--db", str(harness.db), str(job_id), *json)

    shown = jobs("show", busy["completed"])
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert (data["id"], data["state"], data["attempt"]) == (busy["completed"], "completed", 1)
    assert json.loads(data["payload"])["action"] == "ok"
    assert json.loads(data["result"]) == "done"

    # The module:app spelling reads the app's database (ROTA_DATABASE for scripted:app).
    by_app = rota(
        "jobs", "show", "scripted:app", str(busy["completed"]), "--json", env=harness.env()
    )
    assert by_app.returncode == 0, by_app.stderr
    assert json.loads(by_app.stdout)["state"] == "completed"

    missing = jobs("show", 999999)
    assert missing.returncode == 2
    assert "999999" in missing.stderr and "Traceback" not in missing.stderr

    retried = jobs("retry", busy["failed"])
    assert (retried.returncode, retried.stdout) == (0, f"job {busy['failed']}: waiting\n")
    harness.wait_started(busy["failed"], 2, timeout_s=5)  # the worker runs it again
    harness.wait_state(busy["failed"], JobState.FAILED, timeout_s=5)

    cancelled = jobs("cancel", busy["delayed"])
    assert (cancelled.returncode, cancelled.stdout) == (0, f"job {busy['delayed']}: cancelled\n")
    assert harness.get(busy["delayed"]).state is JobState.CANCELLED

    running = jobs("cancel", busy["active"])
    assert running.returncode == 0, running.stderr
    assert running.stdout == (
        f"job {busy['active']}: active (cancel requested: its worker stops it)\n"
    )
    # The worker's renewer (every ttl/3 = 0.5 s) sees the request and stops the job.
    stopped = harness.wait_state(busy["active"], JobState.CANCELLED, timeout_s=5)
    assert stopped.error == "cancelled on request"
    wait_until(lambda: harness.counts()[JobState.ACTIVE] == 0, 5, "no active job")
    assert harness.start_counts() == {
        busy["completed"]: 1,
        busy["failed"]: 2,
        busy["active"]: 1,
    }

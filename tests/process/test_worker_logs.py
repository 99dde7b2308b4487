"""What a real ``rota worker`` prints, by default and with ``--log-format json`` or ``-q``:
the banner on stdout (owner, version, backend, database, each queue), and on stderr a line
per finished job and a warning per failed attempt with the right numbers (the next attempt
and its delay, or failed for good with the traceback), ``ctx.log`` lines naming their job."""

from __future__ import annotations

import json
import re
import signal
from typing import Any

import pytest
from proc_harness import Harness, Worker

import rota
from rota.domain.job import JobState


def run_jobs(
    harness: Harness, *args: str, log_level: str | None = None
) -> tuple[Worker, dict[str, int]]:
    """Enqueue one job of each kind, run a worker over them until they are done, stop it
    (SIGINT); the worker and the job ids."""
    jobs = {
        "ok": harness.enqueue("ok"),
        "raise": harness.enqueue("raise"),
        "unrecoverable": harness.enqueue("unrecoverable"),
        "progress": harness.job.enqueue_sync(harness.script("progress", steps=2)).id,
    }
    worker = harness.start_worker(*args, log_level=log_level)
    for name, state in (
        ("ok", JobState.COMPLETED),
        ("raise", JobState.FAILED),
        ("unrecoverable", JobState.FAILED),
        ("progress", JobState.COMPLETED),
    ):
        harness.wait_state(jobs[name], state, timeout_s=15)
    worker.send(signal.SIGINT)
    assert worker.wait(15) == 0, worker.describe()
    return worker, jobs


def job_lines(stderr: str) -> list[str]:
    """The messages of the rota.job lines (after ``time LEVEL rota.job: ``), with the level."""
    found = []
    for line in stderr.splitlines():
        match = re.match(r"^\S+ \S+ (INFO|WARNING) (rota\.job(?:\.log)?): (.*)$", line)
        if match:
            found.append(f"{match[1]} {match[2]}: {match[3]}")
    return found


def test_a_worker_prints_a_banner_and_a_line_per_finished_job_and_failed_attempt(
    harness: Harness,
) -> None:
    worker, jobs = run_jobs(harness)
    out = worker.stdout().splitlines()
    banner = re.fullmatch(
        r"rota worker (\S+): rota (\S+), backend trio, database (\S+) \(Ctrl-C to stop\)", out[0]
    )
    assert banner is not None, worker.describe()
    owner, version, database = banner.groups()
    assert owner.split(":")[1] == str(worker.pid)
    assert (version, database) == (rota.__version__, str(harness.db.resolve()))
    assert out[1] == "  queue scripted: concurrency 10, prefetch auto, modes async, thread"
    assert out[2:] == ["rota worker: stopping (finishing running jobs)...", "rota worker: stopped"]

    lines = job_lines(worker.stderr())
    ok, fail, bad, steps = (jobs[k] for k in ("ok", "raise", "unrecoverable", "progress"))

    def one(prefix: str) -> str:
        [line] = [line for line in lines if line.startswith(prefix)]
        return line

    assert re.fullmatch(
        rf"INFO rota\.job: scripted #{ok} \(scripted\) attempt 1/3 completed in [\d.]+ ms",
        one(f"INFO rota.job: scripted #{ok} "),
    )
    for attempt in (1, 2):
        line = one(f"WARNING rota.job: scripted #{fail} (scripted) attempt {attempt}/3 ")
        assert line.endswith(
            f": RuntimeError: scripted failure on attempt {attempt}; retry {attempt + 1}/3 in 50 ms"
        )
    last = one(f"WARNING rota.job: scripted #{fail} (scripted) attempt 3/3 ")
    assert last.endswith(
        ": RuntimeError: scripted failure on attempt 3; failed for good: in the dead-letter set"
    )
    stderr = worker.stderr()
    traceback = stderr[stderr.index(last.split(": ", 1)[1]) :].splitlines()[1:5]
    assert traceback[0] == "Traceback (most recent call last):", stderr
    assert re.fullmatch(
        rf"WARNING rota\.job: scripted #{bad} \(scripted\) attempt 1/3 failed after [\d.]+ ms: "
        r"unrecoverable: scripted: cannot succeed; failed for good: in the dead-letter set",
        one(f"WARNING rota.job: scripted #{bad} "),
    )
    assert [line for line in lines if line.startswith("INFO rota.job.log:")] == [
        f"INFO rota.job.log: scripted #{steps} (scripted): step 1",
        f"INFO rota.job.log: scripted #{steps} (scripted): step 2",
    ]
    assert one(f"INFO rota.job: scripted #{steps} ").startswith(
        f"INFO rota.job: scripted #{steps} (scripted) attempt 1/3 completed in "
    )
    assert "child_started" not in stderr  # the supervision tree's routine: at debug only


def test_json_logs_are_one_object_per_line_with_the_jobs_fields(harness: Harness) -> None:
    worker, jobs = run_jobs(harness, "--log-format", "json")
    records = [json.loads(line) for line in worker.stderr().splitlines()]  # every line
    assert {r["level"] for r in records} <= {"DEBUG", "INFO", "WARNING", "ERROR"}
    assert all({"timestamp", "level", "logger", "message"} <= r.keys() for r in records)
    [started] = [r for r in records if r["logger"] == "rota.worker"]
    assert started["owner"].split(":")[1] == str(worker.pid)
    assert started["queues"] == [
        {"queue": "scripted", "concurrency": 10, "prefetch": "auto", "modes": ["async", "thread"]}
    ]
    outcomes: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        if r["logger"] == "rota.job":
            outcomes.setdefault(r["job_id"], []).append(r)
    [ok] = outcomes[jobs["ok"]]
    assert {k: ok[k] for k in ("job", "queue", "attempt", "max_attempts", "outcome")} == {
        "job": "scripted",
        "queue": "scripted",
        "attempt": 1,
        "max_attempts": 3,
        "outcome": "completed",
    }
    assert ok["level"] == "INFO" and ok["duration_s"] >= 0
    first, second, last = outcomes[jobs["raise"]]
    assert [(r["attempt"], r["outcome"], r.get("retry_in_s")) for r in (first, second, last)] == [
        (1, "retrying", 0.05),
        (2, "retrying", 0.05),
        (3, "failed", None),
    ]
    assert last["error"] == "RuntimeError: scripted failure on attempt 3"
    assert last["traceback"].startswith("Traceback (most recent call last):")
    assert "\n" not in last["message"]
    [bad] = outcomes[jobs["unrecoverable"]]
    assert (bad["level"], bad["outcome"], bad["error"]) == (
        "WARNING",
        "failed",
        "unrecoverable: scripted: cannot succeed",
    )
    logged = [r for r in records if r["logger"] == "rota.job.log"]
    assert [(r["message"], r["job_id"], r["job"]) for r in logged] == [
        (f"scripted #{jobs['progress']} (scripted): step {n}", jobs["progress"], "scripted")
        for n in (1, 2)
    ]


@pytest.mark.parametrize("quiet", ["-q", "--quiet"])
def test_quiet_keeps_the_warnings_and_drops_the_info_lines(harness: Harness, quiet: str) -> None:
    worker, jobs = run_jobs(harness, quiet)
    lines = job_lines(worker.stderr())
    assert lines != [] and all(line.startswith("WARNING rota.job: ") for line in lines)
    ids = [int(re.findall(r"#(\d+) ", line)[0]) for line in lines]
    assert sorted(ids) == sorted([jobs["raise"]] * 3 + [jobs["unrecoverable"]])
    assert "(Ctrl-C to stop)" in worker.stdout()  # the banner is not a log line

"""The log line of an ended attempt: its words and its fields (``rota.domain.report``)."""

from __future__ import annotations

from typing import Any

import pytest

from rota.domain.report import OUTCOMES, attempt_ended

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "jobs.py", line 3, in resize\n'
    "RuntimeError: card declined\n"
)
JOB: dict[str, Any] = {
    "job_id": 42,
    "name": "jobs.resize",
    "queue": "images",
    "attempt": 2,
    "max_attempts": 5,
}
FIELDS = {"job_id": 42, "job": "jobs.resize", "queue": "images", "attempt": 2, "max_attempts": 5}


def test_a_completed_attempt() -> None:
    line = attempt_ended(**JOB, outcome="completed", duration_s=0.0123)
    assert line.message == "jobs.resize #42 (images) attempt 2/5 completed in 12 ms"
    assert line.fields == {**FIELDS, "outcome": "completed", "duration_s": 0.0123}
    assert line.traceback is None


def test_a_retry_names_the_next_attempt_and_the_delay_and_the_errors_last_line() -> None:
    line = attempt_ended(**JOB, outcome="retrying", duration_s=1.5, error=TRACEBACK, retry_in_s=4.0)
    assert line.message == (
        "jobs.resize #42 (images) attempt 2/5 failed after 1.5 s: RuntimeError: card "
        "declined; retry 3/5 in 4.0 s"
    )
    assert line.fields == {
        **FIELDS,
        "outcome": "retrying",
        "duration_s": 1.5,
        "error": "RuntimeError: card declined",
        "retry_in_s": 4.0,
    }
    assert line.traceback is None  # only when the job fails for good


def test_a_retry_without_delay_is_now() -> None:
    line = attempt_ended(**JOB, outcome="retrying", error="child died", retry_in_s=0)
    assert line.message.endswith("attempt 2/5 failed: child died; retry 3/5 now")


def test_failed_for_good_says_so_and_carries_the_whole_traceback() -> None:
    line = attempt_ended(**{**JOB, "attempt": 5}, outcome="failed", duration_s=0.2, error=TRACEBACK)
    assert line.message == (
        "jobs.resize #42 (images) attempt 5/5 failed after 200 ms: RuntimeError: card "
        "declined; failed for good: in the dead-letter set"
    )
    assert line.traceback == TRACEBACK.strip()
    assert line.fields["outcome"] == "failed"
    assert line.fields["error"] == "RuntimeError: card declined"


def test_a_one_line_error_has_no_traceback() -> None:
    line = attempt_ended(**JOB, outcome="failed", error="unrecoverable: no such mailbox")
    assert line.message.endswith(
        "attempt 2/5 failed: unrecoverable: no such mailbox; failed for good: in the "
        "dead-letter set"
    )
    assert line.traceback is None


def test_a_corrupt_rows_line_does_without_max_attempts() -> None:
    line = attempt_ended(
        **{**JOB, "max_attempts": None}, outcome="failed", error="corrupt row: job 42"
    )
    assert line.message.startswith("jobs.resize #42 (images) attempt 2 failed: corrupt row")
    assert line.fields["max_attempts"] is None


@pytest.mark.parametrize(
    ("outcome", "error", "text"),
    [
        ("cancelled", "cancelled on request", "attempt 2/5 cancelled after 3.0 s: cancelled on"),
        ("lost", None, "attempt 2/5 lost its lease after 3.0 s: stopped, not settled here"),
    ],
)
def test_cancelled_and_lost(outcome: str, error: str | None, text: str) -> None:
    line = attempt_ended(**JOB, outcome=outcome, duration_s=3.0, error=error)
    assert text in line.message
    assert line.fields["outcome"] == outcome


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.00007, "0.07 ms"), (0.0046, "4.6 ms"), (0.05, "50 ms"), (4, "4.0 s"), (125, "125 s")],
)
def test_durations_read_at_a_glance(seconds: float, text: str) -> None:
    line = attempt_ended(**JOB, outcome="completed", duration_s=seconds)
    assert line.message.endswith(f"completed in {text}")


def test_an_unknown_outcome_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown attempt outcome 'done'"):
        attempt_ended(**JOB, outcome="done")
    assert OUTCOMES == ("completed", "cancelled", "retrying", "failed", "lost")

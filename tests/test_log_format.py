"""``rota worker``'s log output (``rota._log_format``): text lines and JSON lines, the
record's structured fields, tracebacks, and nothing stored that can act on a terminal."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from rota._log_format import JsonFormatter, RoutineSupervision, TextFormatter, formatter


def record(
    message: str = "jobs.resize #42 (images) attempt 1/5 completed in 12 ms",
    *,
    name: str = "rota.job",
    level: int = logging.INFO,
    exc_info: object = None,
    **extra: object,
) -> logging.LogRecord:
    made = logging.getLogger(name).makeRecord(
        name,
        level,
        "x.py",
        1,
        message,
        (),
        exc_info,
        extra=extra,  # type: ignore[arg-type]
    )
    made.created = 1_700_000_000.25
    return made


def test_a_json_line_holds_the_time_level_logger_message_and_the_records_fields() -> None:
    line = JsonFormatter().format(
        record(job_id=42, job="jobs.resize", queue="images", attempt=1, outcome="completed")
    )
    assert "\n" not in line
    assert json.loads(line) == {
        "timestamp": "2023-11-14T22:13:20.250+00:00",
        "level": "INFO",
        "logger": "rota.job",
        "message": "jobs.resize #42 (images) attempt 1/5 completed in 12 ms",
        "job_id": 42,
        "job": "jobs.resize",
        "queue": "images",
        "attempt": 1,
        "outcome": "completed",
    }


def test_a_traceback_goes_in_the_json_object_and_after_the_text_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        with_exception = record("failed", level=logging.WARNING, exc_info=sys.exc_info())
    data = json.loads(JsonFormatter().format(with_exception))
    assert data["message"] == "failed"
    assert data["traceback"].startswith("Traceback (most recent call last):")
    assert data["traceback"].endswith("RuntimeError: boom")
    stored = record("failed for good")  # a job's stored traceback, carried as exc_text
    stored.exc_text = "Traceback (most recent call last):\n  ...\nRuntimeError: boom"
    assert json.loads(JsonFormatter().format(stored))["traceback"] == stored.exc_text
    text = TextFormatter().format(stored)
    assert text.endswith(" INFO rota.job: failed for good\n" + stored.exc_text)


def test_values_json_cannot_hold_are_written_as_text_not_lost() -> None:
    odd = record("odd", surrogate="\ud800", thing=object(), big=2**70, nan=float("nan"))
    data = json.loads(JsonFormatter().format(odd))
    assert data["surrogate"] == "\\ud800"
    assert data["thing"].startswith("<object object at ")
    assert data["big"] == str(2**70)
    assert data["message"] == "odd"


def test_nothing_stored_can_act_on_the_terminal() -> None:
    hostile = "job \x1b[2J\x1b]0;pwned\x07 \u202eevil\r\nforged INFO line"
    text = TextFormatter().format(record(hostile))
    assert "\n" not in text  # one line: no forged second one
    assert text.endswith(r"rota.job: job \x1b[2J\x1b]0;pwned\x07 \u202eevil\r\nforged INFO line")
    line = JsonFormatter().format(record(hostile))
    assert "\x1b" not in line and "\u202e" not in line and "\n" not in line
    assert json.loads(line)["message"] == hostile  # the same text, escaped


def test_routine_supervision_records_are_left_out_and_the_rest_pass() -> None:
    keep = RoutineSupervision()
    started = record("started", name="rota.supervisors", event="child_started")
    stopped = record("normal", name="rota.supervisors", event="child_exited")
    restarted = record("restarted", name="rota.supervisors", event="child_restarted")
    crashed = record("crash", name="rota.supervisors", level=logging.WARNING, event="child_exited")
    job = record(event="child_started")  # another logger: not the supervisors'
    assert [keep.filter(r) for r in (started, stopped, restarted, crashed, job)] == [
        False,
        False,
        True,
        True,
        True,
    ]


def test_formats_by_name() -> None:
    assert isinstance(formatter("text"), TextFormatter)
    assert isinstance(formatter("json"), JsonFormatter)
    with pytest.raises(ValueError, match="unknown log format 'xml' \\(text or json\\)"):
        formatter("xml")

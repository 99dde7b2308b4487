"""The Engine contract for rows rota did not write (a bad migration, a hand edit, a disk
that flipped bits): they are read as far as they can be; the reads the runtime and the CLI
rely on report such a row and go on, never die with ``KeyError`` or an unnamed "JSON is
malformed". The rows are damaged through the engine kind's hooks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from engine_kinds import EngineHooks

from rota.domain.event import Owner
from rota.domain.job import JobState, NewJob
from rota.errors import JobNotFound
from rota.storage.engine import Engine, Failure

if TYPE_CHECKING:
    from tests.storage.conftest import FakeClock

# --- owners -----------------------------------------------------------------------------

#: column -> an impossible value for it
CORRUPT_OWNER_VALUES: dict[str, list[Any]] = {
    "queues": ["not json", "[1, 2]", '{"a": 1}', None, 7],
    "pid": [-1, 0, 2**40, "abc", 1.5, None],
    "host": [None, b"\x00bytes"],
    "started_at_ms": ["yesterday", None],
    "heartbeat_at_ms": [None, 2.5],
}
CORRUPT_OWNER_CASES = [
    pytest.param(column, value, id=f"{column}={value!r}")
    for column, values in CORRUPT_OWNER_VALUES.items()
    for value in values
]


def owner(id_: str, started: int, **fields: Any) -> Owner:
    values: dict[str, Any] = {
        "host": "h1", "pid": 100, "started_at_ms": started, "heartbeat_at_ms": started,
        "queues": ["default"],
    }  # fmt: skip
    return Owner(id=id_, **{**values, **fields})


@pytest.mark.parametrize(("column", "value"), CORRUPT_OWNER_CASES)
def test_list_owners_skips_a_corrupt_owner_with_a_warning_naming_it_and_the_column(
    engine: Engine,
    hooks: EngineHooks,
    column: str,
    value: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for id_, started in (("a", 10), ("bad", 20), ("c", 30)):
        engine.register_owner(owner(id_, started))
    hooks.set_owner_column("bad", column, value)
    with caplog.at_level(logging.WARNING, logger="rota.storage"):
        owners = engine.list_owners()
    assert owners == [owner("a", 10), owner("c", 30)]
    [warning] = [r.getMessage() for r in caplog.records]
    assert "'bad'" in warning and column in warning


@pytest.mark.parametrize(("column", "value"), CORRUPT_OWNER_CASES)
def test_owner_records_keep_a_corrupt_owner_and_name_its_unreadable_columns(
    engine: Engine, hooks: EngineHooks, column: str, value: Any
) -> None:
    engine.register_owner(owner("a", 10, pools={"q": {"running": 1}}))
    engine.register_owner(owner("bad", 20))
    hooks.set_owner_column("bad", column, value)
    records = {record.id: record for record in engine.owner_records()}
    good, bad = records["a"], records["bad"]
    assert (good.owner(), good.corrupt) == (owner("a", 10, pools={"q": {"running": 1}}), ())
    assert (bad.id, bad.corrupt, bad.owner()) == ("bad", (column,), None)
    assert getattr(bad, column) is None  # the unreadable value is not passed on
    fields = {"host": "h1", "pid": 100, "started_at_ms": 20, "heartbeat_at_ms": 20}
    readable = {name: v for name, v in fields.items() if name != column}
    assert {name: getattr(bad, name) for name in readable} == readable


def test_an_owner_with_unreadable_pools_stays_usable(
    engine: Engine, hooks: EngineHooks, caplog: pytest.LogCaptureFixture
) -> None:
    engine.register_owner(owner("a", 10, pools={"q": {}}))
    hooks.set_owner_column("a", "pools", b"\xff garbage")
    with caplog.at_level(logging.WARNING, logger="rota.storage"):
        assert engine.list_owners() == [owner("a", 10)]
        [record] = engine.owner_records()
    assert (record.corrupt, record.pools, record.owner()) == (("pools",), None, owner("a", 10))
    assert all("'a'" in m and "pools" in m for m in [r.getMessage() for r in caplog.records])


def test_an_owner_id_that_is_not_text_is_shown_and_marked(
    engine: Engine, hooks: EngineHooks
) -> None:
    engine.register_owner(owner("a", 10))
    hooks.set_owner_column("a", "id", b"\x1bblob")
    assert engine.list_owners() == []
    [record] = engine.owner_records()
    assert (record.id, record.corrupt) == ("\x1bblob", ("id",))


# --- jobs ---------------------------------------------------------------------------------


def test_count_leaves_out_unknown_states_and_unknown_states_finds_them(
    engine: Engine,
    hooks: EngineHooks,
    make_job: Callable[..., NewJob],
    clock: FakeClock,
) -> None:
    ids = engine.enqueue([make_job(queue="a") for _ in range(5)])
    engine.claim("a", "w", 1, 1000)  # ids[0] active
    hooks.set_job_column(ids[1], "state", "bogus")  # in no partial index
    hooks.set_job_column(ids[2], "state", "done")
    hooks.set_job_column(ids[2], "finished_at_ms", clock.now_ms)  # in rota_jobs_finished
    hooks.set_job_column(ids[3], "state", "")
    assert engine.count() == {**dict.fromkeys(JobState, 0), "active": 1, "waiting": 1}
    assert engine.count("a") == engine.count()
    total, jobs = engine.unknown_states()
    assert total == 3
    assert [(j.id, j.queue, j.state, j.corrupt) for j in jobs] == [
        (ids[1], "a", "bogus", ("state",)),
        (ids[2], "a", "done", ("state",)),
        (ids[3], "a", "", ("state",)),
    ]
    assert engine.unknown_states(limit=1) == (3, jobs[:1])


def test_list_summaries_reads_every_row_and_marks_the_corrupt_ones(
    engine: Engine, hooks: EngineHooks, make_job: Callable[..., NewJob]
) -> None:
    ids = engine.enqueue(
        [make_job(queue="a", priority=i) for i in range(6)] + [make_job(queue="b")]
    )
    hooks.set_job_column(ids[1], "state", "bogus")
    hooks.set_job_column(ids[2], "backoff", "{not json")  # not a listed column
    hooks.set_job_column(ids[3], "payload", b"\x00 not json")  # nor is this
    hooks.set_job_column(ids[4], "priority", "high")
    hooks.set_job_column(ids[5], "name", b"\xffblob")
    summaries = engine.list_summaries(queue="a")
    assert [(s.id, s.corrupt) for s in summaries] == [
        (ids[0], ()),
        (ids[1], ("state",)),
        (ids[2], ()),
        (ids[3], ()),
        (ids[4], ("priority",)),
        (ids[5], ("name",)),
    ]
    assert (summaries[1].state, summaries[4].priority, summaries[5].name) == ("bogus", None, None)
    first = summaries[0]
    assert (first.name, first.queue, first.state, first.attempt, first.max_attempts) == (
        "task", "a", "waiting", 0, 3,
    )  # fmt: skip
    assert (first.priority, first.error) == (0, None)


def test_list_summaries_filters_and_pages_like_list_jobs(
    engine: Engine, make_job: Callable[..., NewJob]
) -> None:
    engine.enqueue([make_job(queue=q) for q in "abab"] + [make_job(queue="a", delay_s=9)])
    engine.claim("a", "w", 1, 1000)
    for queue in (None, "a", "b", "nope"):
        for state in (None, *JobState):
            for limit, offset in ((100, 0), (1, 1), (0, 0)):
                page = {"queue": queue, "state": state, "limit": limit, "offset": offset}
                assert [s.id for s in engine.list_summaries(**page)] == [
                    j.id for j in engine.list_jobs(**page)
                ], page
    with pytest.raises(ValueError, match="limit and offset must be >= 0"):
        engine.list_summaries(limit=-1)


def test_a_summary_carries_only_the_end_of_a_long_error(
    engine: Engine, make_job: Callable[..., NewJob]
) -> None:
    [job_id] = engine.enqueue([make_job()])
    [job] = engine.claim("default", "w", 1, 1000)
    error = "x" * 100_000 + "\nRuntimeError: the last line"
    engine.fail(Failure(job_id, job.token or 0, error, delay_ms=0))
    [summary] = engine.list_summaries()
    assert summary.error is not None and error.endswith(summary.error)
    assert summary.error.endswith("RuntimeError: the last line") and len(summary.error) == 1000


def test_job_record_reads_a_job_as_stored_and_names_what_rota_cannot_read(
    engine: Engine, hooks: EngineHooks, make_job: Callable[..., NewJob]
) -> None:
    good, bad = engine.enqueue([make_job(payload=b'{"a": 1}'), make_job()])
    record = engine.job_record(good)
    assert record.corrupt == ()
    job = engine.get(good)
    expected = {f: getattr(job, f) for f in job.__struct_fields__ if f != "backoff"}
    assert {k: v for k, v in record.columns.items() if k != "backoff"} == {
        **expected, "cancel_requested": 0, "state": "waiting",
    }  # fmt: skip
    for column, value in {
        "state": "bogus",
        "backoff": "{not json",
        "payload": b"\x00 not json",
        "cancel_requested": 7,
        "attempt": "one",
        "result": b"{",
    }.items():
        hooks.set_job_column(bad, column, value)
    record = engine.job_record(bad)
    assert record.corrupt == (
        "state", "payload", "attempt", "backoff", "cancel_requested", "result",
    )  # fmt: skip
    assert (record.columns["state"], record.columns["backoff"]) == ("bogus", "{not json")
    with pytest.raises(JobNotFound, match="999"):
        engine.job_record(999)


# --- jobs failed for good as corrupt: reported once, by whoever can -------------------------


def job_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "rota.job"]


def test_a_row_failed_at_claim_is_logged_by_the_engine_with_the_job_named(
    engine: Engine,
    make_job: Callable[..., NewJob],
    hooks: EngineHooks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    [job_id] = engine.enqueue([make_job(name="jobs.resize", queue="images")])
    hooks.set_job_column(job_id, "backoff", "garbage")
    with caplog.at_level(logging.WARNING, logger="rota.job"):
        assert engine.claim("images", "w", 1, 1000) == []  # nobody else can report it
    [record] = job_lines(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(
        f"jobs.resize #{job_id} (images) attempt 1 failed: corrupt row: job {job_id}, "
        "column 'backoff'"
    )
    assert record.getMessage().endswith("; failed for good: in the dead-letter set")
    fields = {k: getattr(record, k) for k in ("job_id", "job", "queue", "attempt", "outcome")}
    assert fields == {
        "job_id": job_id,
        "job": "jobs.resize",
        "queue": "images",
        "attempt": 1,
        "outcome": "failed",
    }


def test_a_failure_whose_row_went_corrupt_is_reported_to_the_settler_not_logged_twice(
    engine: Engine,
    make_job: Callable[..., NewJob],
    hooks: EngineHooks,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine.enqueue([make_job(), make_job()])
    first, second = engine.claim("default", "w", 2, 1000)
    for job in (first, second):
        hooks.set_job_column(job.id, "backoff", "garbage")
    with caplog.at_level(logging.WARNING, logger="rota.job"):
        settled = engine.settle_and_claim(
            [], [Failure(first.id, first.token or 0, "RuntimeError: boom")], None
        )
        assert job_lines(caplog) == []  # the worker pool logs it, from the report
        [failed] = settled.failed
        assert (failed.job_id, failed.state, failed.run_at_ms) == (
            first.id,
            JobState.FAILED,
            clock.now_ms,
        )
        assert failed.error is not None
        assert failed.error.startswith("RuntimeError: boom\nfailed for good: corrupt row: job")
        assert failed.error == engine.get(first.id).error
        # fail() alone has no one to report to: the engine logs it
        engine.fail(Failure(second.id, second.token or 0, "RuntimeError: boom"))
        [record] = job_lines(caplog)
    assert record.getMessage().startswith(f"task #{second.id} (default) attempt 1 failed: ")
    assert f"failed for good: corrupt row: job {second.id}, column 'backoff'" in (
        record.getMessage()
    )


def test_the_retention_pass_logs_each_job_it_fails_for_an_unknown_state(
    engine: Engine,
    make_job: Callable[..., NewJob],
    hooks: EngineHooks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    [job_id] = engine.enqueue([make_job(name="jobs.mail", queue="mail")])
    hooks.set_job_column(job_id, "state", "bogus")
    with caplog.at_level(logging.WARNING, logger="rota.job"):
        assert engine.quarantine_corrupt() == [job_id]
    [record] = job_lines(caplog)
    assert record.getMessage() == (
        f"jobs.mail #{job_id} (mail) attempt 0 failed: corrupt row: job {job_id}, column "
        "'state': 'bogus' is not a job state; failed for good: in the dead-letter set"
    )

"""Rows rota did not write (a bad migration, a hand edit, a disk that flipped bits) are read
as far as they can be: the reads the runtime and the CLI rely on report such a row and go
on, never die with ``KeyError`` or an unnamed "JSON is malformed"."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from rota.domain.event import Owner
from rota.domain.job import JobState, NewJob
from rota.errors import JobNotFound, StorageError
from rota.storage import schema
from rota.storage.engine import Failure
from rota.storage.sqlite import SqliteEngine

if TYPE_CHECKING:
    from tests.storage.conftest import FakeClock

# --- owners -----------------------------------------------------------------------------

#: Owners' columns as rota_owners declares them, without NOT NULL: what a hand-made or
#: damaged table may hold.
LOOSE_OWNERS = """
CREATE TABLE loose (
    id TEXT PRIMARY KEY, host TEXT, pid INTEGER, started_at_ms INTEGER,
    heartbeat_at_ms INTEGER, queues TEXT, pools BLOB, doorbell TEXT
) WITHOUT ROWID;
INSERT INTO loose SELECT * FROM rota_owners;
DROP TABLE rota_owners;
ALTER TABLE loose RENAME TO rota_owners;
"""

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


@pytest.fixture
def raw(file_engine: SqliteEngine, file_path: str) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the engine's file, NOT NULL dropped from rota_owners."""
    conn = sqlite3.connect(file_path, isolation_level=None)
    conn.executescript(LOOSE_OWNERS)
    yield conn
    conn.close()


def owner(id_: str, started: int, **fields: Any) -> Owner:
    values: dict[str, Any] = {
        "host": "h1", "pid": 100, "started_at_ms": started, "heartbeat_at_ms": started,
        "queues": ["default"],
    }  # fmt: skip
    return Owner(id=id_, **{**values, **fields})


def corrupt_owner(conn: sqlite3.Connection, owner_id: str, column: str, value: Any) -> None:
    conn.execute(f"UPDATE rota_owners SET {column} = ? WHERE id = ?", (value, owner_id))


@pytest.mark.parametrize(("column", "value"), CORRUPT_OWNER_CASES)
def test_list_owners_skips_a_corrupt_owner_with_a_warning_naming_it_and_the_column(
    file_engine: SqliteEngine,
    raw: sqlite3.Connection,
    column: str,
    value: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for id_, started in (("a", 10), ("bad", 20), ("c", 30)):
        file_engine.register_owner(owner(id_, started))
    corrupt_owner(raw, "bad", column, value)
    with caplog.at_level(logging.WARNING, logger="rota.storage"):
        owners = file_engine.list_owners()
    assert owners == [owner("a", 10), owner("c", 30)]
    [warning] = [r.getMessage() for r in caplog.records]
    assert "'bad'" in warning and column in warning


@pytest.mark.parametrize(("column", "value"), CORRUPT_OWNER_CASES)
def test_owner_records_keep_a_corrupt_owner_and_name_its_unreadable_columns(
    file_engine: SqliteEngine, raw: sqlite3.Connection, column: str, value: Any
) -> None:
    file_engine.register_owner(owner("a", 10, pools={"q": {"running": 1}}))
    file_engine.register_owner(owner("bad", 20))
    corrupt_owner(raw, "bad", column, value)
    records = {record.id: record for record in file_engine.owner_records()}
    good, bad = records["a"], records["bad"]
    assert (good.owner(), good.corrupt) == (owner("a", 10, pools={"q": {"running": 1}}), ())
    assert (bad.id, bad.corrupt, bad.owner()) == ("bad", (column,), None)
    assert getattr(bad, column) is None  # the unreadable value is not passed on
    fields = {"host": "h1", "pid": 100, "started_at_ms": 20, "heartbeat_at_ms": 20}
    readable = {name: v for name, v in fields.items() if name != column}
    assert {name: getattr(bad, name) for name in readable} == readable


def test_an_owner_with_unreadable_pools_stays_usable(
    file_engine: SqliteEngine, raw: sqlite3.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    file_engine.register_owner(owner("a", 10, pools={"q": {}}))
    corrupt_owner(raw, "a", "pools", b"\xff garbage")
    with caplog.at_level(logging.WARNING, logger="rota.storage"):
        assert file_engine.list_owners() == [owner("a", 10)]
        [record] = file_engine.owner_records()
    assert (record.corrupt, record.pools, record.owner()) == (("pools",), None, owner("a", 10))
    assert all("'a'" in m and "pools" in m for m in [r.getMessage() for r in caplog.records])


def test_an_owner_id_that_is_not_text_is_shown_and_marked(
    file_engine: SqliteEngine, raw: sqlite3.Connection
) -> None:
    file_engine.register_owner(owner("a", 10))
    corrupt_owner(raw, "a", "id", b"\x1bblob")
    assert file_engine.list_owners() == []
    [record] = file_engine.owner_records()
    assert (record.id, record.corrupt) == ("\x1bblob", ("id",))


# --- jobs ---------------------------------------------------------------------------------


@pytest.fixture
def unchecked(file_engine: SqliteEngine, file_path: str) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to the engine's file that ignores CHECK constraints."""
    conn = sqlite3.connect(file_path, isolation_level=None)
    conn.execute("PRAGMA ignore_check_constraints = ON")
    yield conn
    conn.close()


def set_column(conn: sqlite3.Connection, job_id: int, column: str, value: Any) -> None:
    conn.execute(f"UPDATE rota_jobs SET {column} = ? WHERE id = ?", (value, job_id))


def test_count_leaves_out_unknown_states_and_unknown_states_finds_them(
    file_engine: SqliteEngine,
    unchecked: sqlite3.Connection,
    make_job: Callable[..., NewJob],
    clock: FakeClock,
) -> None:
    ids = file_engine.enqueue([make_job(queue="a") for _ in range(5)])
    file_engine.claim("a", "w", 1, 1000)  # ids[0] active
    set_column(unchecked, ids[1], "state", "bogus")  # in no partial index
    set_column(unchecked, ids[2], "state", "done")
    set_column(unchecked, ids[2], "finished_at_ms", clock.now_ms)  # in rota_jobs_finished
    set_column(unchecked, ids[3], "state", "")
    assert file_engine.count() == {**dict.fromkeys(JobState, 0), "active": 1, "waiting": 1}
    assert file_engine.count("a") == file_engine.count()
    total, jobs = file_engine.unknown_states()
    assert total == 3
    assert [(j.id, j.queue, j.state, j.corrupt) for j in jobs] == [
        (ids[1], "a", "bogus", ("state",)),
        (ids[2], "a", "done", ("state",)),
        (ids[3], "a", "", ("state",)),
    ]
    assert file_engine.unknown_states(limit=1) == (3, jobs[:1])


def test_list_summaries_reads_every_row_and_marks_the_corrupt_ones(
    file_engine: SqliteEngine, unchecked: sqlite3.Connection, make_job: Callable[..., NewJob]
) -> None:
    ids = file_engine.enqueue(
        [make_job(queue="a", priority=i) for i in range(6)] + [make_job(queue="b")]
    )
    set_column(unchecked, ids[1], "state", "bogus")
    set_column(unchecked, ids[2], "backoff", "{not json")  # not a listed column
    set_column(unchecked, ids[3], "payload", b"\x00 not json")  # nor is this
    set_column(unchecked, ids[4], "priority", "high")
    set_column(unchecked, ids[5], "name", b"\xffblob")
    summaries = file_engine.list_summaries(queue="a")
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
    file_engine: SqliteEngine, make_job: Callable[..., NewJob]
) -> None:
    file_engine.enqueue([make_job(queue=q) for q in "abab"] + [make_job(queue="a", delay_s=9)])
    file_engine.claim("a", "w", 1, 1000)
    for queue in (None, "a", "b", "nope"):
        for state in (None, *JobState):
            for limit, offset in ((100, 0), (1, 1), (0, 0)):
                page = {"queue": queue, "state": state, "limit": limit, "offset": offset}
                assert [s.id for s in file_engine.list_summaries(**page)] == [
                    j.id for j in file_engine.list_jobs(**page)
                ], page
    with pytest.raises(ValueError, match="limit and offset must be >= 0"):
        file_engine.list_summaries(limit=-1)


def test_list_summaries_reads_no_payload_result_or_progress(
    file_engine: SqliteEngine, make_job: Callable[..., NewJob]
) -> None:
    file_engine.enqueue([make_job()])
    statements: list[str] = []
    file_engine._conn.set_trace_callback(statements.append)
    try:
        file_engine.list_summaries()
    finally:
        file_engine._conn.set_trace_callback(None)
    assert statements and not any(
        column in statement
        for statement in statements
        for column in ("payload", "result", "progress", "*")
    )


def test_a_summary_carries_only_the_end_of_a_long_error(
    file_engine: SqliteEngine, make_job: Callable[..., NewJob]
) -> None:
    [job_id] = file_engine.enqueue([make_job()])
    [job] = file_engine.claim("default", "w", 1, 1000)
    error = "x" * 100_000 + "\nRuntimeError: the last line"
    file_engine.fail(Failure(job_id, job.token or 0, error, delay_ms=0))
    [summary] = file_engine.list_summaries()
    assert summary.error is not None and error.endswith(summary.error)
    assert summary.error.endswith("RuntimeError: the last line") and len(summary.error) == 1000


def test_job_record_reads_a_job_as_stored_and_names_what_rota_cannot_read(
    file_engine: SqliteEngine, unchecked: sqlite3.Connection, make_job: Callable[..., NewJob]
) -> None:
    good, bad = file_engine.enqueue([make_job(payload=b'{"a": 1}'), make_job()])
    record = file_engine.job_record(good)
    assert record.corrupt == ()
    job = file_engine.get(good)
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
        set_column(unchecked, bad, column, value)
    record = file_engine.job_record(bad)
    assert record.corrupt == (
        "state", "payload", "attempt", "backoff", "cancel_requested", "result",
    )  # fmt: skip
    assert (record.columns["state"], record.columns["backoff"]) == ("bogus", "{not json")
    with pytest.raises(JobNotFound, match="999"):
        file_engine.job_record(999)


# --- opening without creating -----------------------------------------------------------


def test_open_existing_refuses_a_missing_file_without_creating_it(tmp_path: Path) -> None:
    missing = tmp_path / "sub" / ".." / "typo.db"
    with pytest.raises(StorageError, match=f"^no database at {tmp_path / 'typo.db'}"):
        SqliteEngine.open_existing(missing)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StorageError, match="private"):
        SqliteEngine.open_existing(":memory:")
    with pytest.raises(StorageError, match="is a directory"):
        SqliteEngine.open_existing(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not sqlite at all"], ids=["empty", "text"])
def test_open_existing_refuses_a_file_that_is_not_a_rota_database(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "other.db"
    path.write_bytes(content)
    with pytest.raises(StorageError, match=r"not a rota database|corrupt or is not a rota"):
        SqliteEngine.open_existing(path)
    assert path.read_bytes() == content  # left as it was
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(StorageError, match="not a rota database"):
        SqliteEngine.open_existing(foreign)
    conn = sqlite3.connect(foreign)
    assert [n for (n,) in conn.execute("SELECT name FROM sqlite_master")] == ["t"]
    conn.close()


def test_open_existing_brings_an_older_rota_schema_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in schema.MIGRATIONS[:1]:
        for statement in migration.statements:
            conn.execute(statement)
        conn.execute(schema.SET_SCHEMA_VERSION, (migration.version,))
    conn.close()
    engine = SqliteEngine.open_existing(path)
    try:
        assert engine.migrate() == schema.SCHEMA_VERSION
        assert engine.list_owners() == []
    finally:
        engine.close()


# --- jobs failed for good as corrupt: reported once, by whoever can -------------------------


def job_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "rota.job"]


def test_a_row_failed_at_claim_is_logged_by_the_engine_with_the_job_named(
    file_engine: SqliteEngine,
    make_job: Callable[..., NewJob],
    raw: sqlite3.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    [job_id] = file_engine.enqueue([make_job(name="jobs.resize", queue="images")])
    raw.execute("UPDATE rota_jobs SET backoff = 'garbage' WHERE id = ?", (job_id,))
    with caplog.at_level(logging.WARNING, logger="rota.job"):
        assert file_engine.claim("images", "w", 1, 1000) == []  # nobody else can report it
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
    file_engine: SqliteEngine,
    make_job: Callable[..., NewJob],
    raw: sqlite3.Connection,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    file_engine.enqueue([make_job(), make_job()])
    first, second = file_engine.claim("default", "w", 2, 1000)
    raw.execute(
        "UPDATE rota_jobs SET backoff = 'garbage' WHERE id IN (?, ?)", (first.id, second.id)
    )
    with caplog.at_level(logging.WARNING, logger="rota.job"):
        settled = file_engine.settle_and_claim(
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
        assert failed.error == file_engine.get(first.id).error
        # fail() alone has no one to report to: the engine logs it
        file_engine.fail(Failure(second.id, second.token or 0, "RuntimeError: boom"))
        [record] = job_lines(caplog)
    assert record.getMessage().startswith(f"task #{second.id} (default) attempt 1 failed: ")
    assert f"failed for good: corrupt row: job {second.id}, column 'backoff'" in (
        record.getMessage()
    )


def test_the_retention_pass_logs_each_job_it_fails_for_an_unknown_state(
    file_engine: SqliteEngine,
    make_job: Callable[..., NewJob],
    raw: sqlite3.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    [job_id] = file_engine.enqueue([make_job(name="jobs.mail", queue="mail")])
    raw.execute("PRAGMA ignore_check_constraints = ON")
    raw.execute("UPDATE rota_jobs SET state = 'bogus' WHERE id = ?", (job_id,))
    with caplog.at_level(logging.WARNING, logger="rota.job"):
        assert file_engine.quarantine_corrupt() == [job_id]
    [record] = job_lines(caplog)
    assert record.getMessage() == (
        f"jobs.mail #{job_id} (mail) attempt 0 failed: corrupt row: job {job_id}, column "
        "'state': 'bogus' is not a job state; failed for good: in the dead-letter set"
    )

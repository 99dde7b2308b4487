"""SqliteEngine, what no other engine shares: opening a database file without creating
it, and a listing that reads no payload (seen in the statements it runs). How every engine
reads corrupt rows is tested in ``contract/test_corrupt_rows.py``."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from rota.domain.job import NewJob
from rota.errors import StorageError
from rota.storage import schema
from rota.storage.sqlite import SqliteEngine


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

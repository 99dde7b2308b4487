"""The engines the contract tests run against, and the few hooks under the port they need.

An engine joins the contract tests with one ``EngineKind`` in ``KINDS``: how to make a
fresh database, how to open an engine on it (migrated, with the test's clock and random
draws), and an ``EngineHooks`` for what a test must do that the port does not offer (read
the stored rows to prove nothing changed, corrupt a column, make a commit fail). Every
test in this folder then runs once per kind, as ``test_x[<kind name>]``.
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from rota.storage.engine import Engine
from rota.storage.sqlite import SqliteEngine

__all__ = ["KINDS", "EngineHooks", "EngineKind", "SqliteHooks", "SqliteKind"]


class EngineHooks(Protocol):
    """What a contract test needs of one engine's database beyond the port."""

    def rows(self) -> list[tuple[Any, ...]]:
        """Every stored column of every job, in id order: equal before and after an
        operation means the operation changed nothing, to the byte."""
        ...

    def log_count(self) -> int:
        """How many log lines are stored, for every job together."""
        ...

    def in_transaction(self) -> bool:
        """Whether the engine's connection has a transaction open."""
        ...

    def set_job_column(self, job_id: int, column: str, value: Any) -> None:
        """Store ``value`` in a job's column as it is, past every check the schema makes
        (a hand edit or a damaged file). An engine whose column type cannot hold the value
        at all calls ``pytest.skip``: such a row cannot exist there."""
        ...

    def set_owner_column(self, owner_id: str, column: str, value: Any) -> None:
        """The same for a column of an owner row (NULL included)."""
        ...

    def refusing_commits(self) -> AbstractContextManager[None]:
        """Inside, every commit of the engine fails (nothing else does)."""
        ...


class EngineKind(Protocol):
    """One engine the contract tests run against."""

    name: str
    """The test id: ``test_x[name]``."""
    several_connections: bool
    """Several engines can open one database (tests marked ``several_connections`` run
    only on such kinds)."""

    def database(self, directory: Path) -> AbstractContextManager[str]:
        """A fresh, empty database (its files, if any, under ``directory``): its address,
        dropped on exit."""
        ...

    def open(
        self, address: str, *, clock: Callable[[], int], rng: random.Random, **options: Any
    ) -> Engine:
        """A migrated engine on the database at ``address``; ``options`` are the engine's
        own (``record_events``)."""
        ...

    def hooks(self, engine: Engine) -> EngineHooks:
        """The hooks of an engine this kind opened."""
        ...


# --- SQLite -------------------------------------------------------------------------------

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


class SqliteHooks:
    """Plain SQL on the engine's own connection (an in-memory database has no other)."""

    def __init__(self, engine: SqliteEngine) -> None:
        self._conn: sqlite3.Connection = engine._conn
        self._loose_owners = False

    def rows(self) -> list[tuple[Any, ...]]:
        return self._conn.execute("SELECT * FROM rota_jobs ORDER BY id").fetchall()

    def log_count(self) -> int:
        count: int = self._conn.execute("SELECT count(*) FROM rota_logs").fetchone()[0]
        return count

    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def set_job_column(self, job_id: int, column: str, value: Any) -> None:
        self._conn.execute("PRAGMA ignore_check_constraints = ON")
        try:
            self._conn.execute(f"UPDATE rota_jobs SET {column} = ? WHERE id = ?", (value, job_id))
        finally:
            self._conn.execute("PRAGMA ignore_check_constraints = OFF")

    def set_owner_column(self, owner_id: str, column: str, value: Any) -> None:
        if not self._loose_owners:
            self._conn.executescript(LOOSE_OWNERS)
            self._loose_owners = True
        self._conn.execute(f"UPDATE rota_owners SET {column} = ? WHERE id = ?", (value, owner_id))

    @contextmanager
    def refusing_commits(self) -> Iterator[None]:
        def no_commit(action: int, arg1: str | None, *_: Any) -> int:
            if action == sqlite3.SQLITE_TRANSACTION and arg1 == "COMMIT":
                return sqlite3.SQLITE_DENY
            return sqlite3.SQLITE_OK

        self._conn.set_authorizer(no_commit)
        try:
            yield
        finally:
            self._conn.set_authorizer(None)


class SqliteKind:
    """``SqliteEngine`` on a file (WAL, several connections) or in memory (one)."""

    def __init__(self, name: str, *, in_memory: bool) -> None:
        self.name = name
        self.in_memory = in_memory
        self.several_connections = not in_memory

    def __repr__(self) -> str:
        return f"SqliteKind({self.name!r})"

    @contextmanager
    def database(self, directory: Path) -> Iterator[str]:
        yield ":memory:" if self.in_memory else str(directory / "rota.db")

    def open(
        self, address: str, *, clock: Callable[[], int], rng: random.Random, **options: Any
    ) -> Engine:
        engine = SqliteEngine(address, clock=clock, rng=rng, **options)
        engine.migrate()
        return engine

    def hooks(self, engine: Engine) -> EngineHooks:
        assert isinstance(engine, SqliteEngine)
        return SqliteHooks(engine)


#: Every engine the contract tests run against. Adding one is one line here (and its kind).
KINDS: list[EngineKind] = [
    SqliteKind("sqlite", in_memory=False),
    SqliteKind("sqlite-memory", in_memory=True),
]


@contextmanager
def scratch_directory() -> Iterator[Path]:
    """A temporary directory, for a database made outside a pytest fixture (Hypothesis)."""
    with tempfile.TemporaryDirectory(prefix="rota-contract-") as directory:
        yield Path(directory)

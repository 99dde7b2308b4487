"""Storage: the Engine port and the engines behind it.

Synchronous code that runs on the Store's dedicated thread; it imports only the domain.

* ``rota.storage.engine``: the port (``Engine``) and the values crossing it.
* ``rota.storage.ops``: one typed request per operation (``Op[T]``), how callers reach it.
* ``rota.storage.url``: ``DatabaseUrl``, ``open_engine`` and ``open_change_feed``: an
  engine (and a change feed) from a path or URL, the one way the rest of rota opens a
  database.
* ``rota.storage.feed``: the ``ChangeFeed`` port (noticing other connections' commits) and
  the SQLite feed with its same-host doorbell.
* ``rota.storage.sqlite``: ``SqliteEngine``, the embedded default.
* ``rota.storage.schema``: its schema (numbered migrations) and every SQL statement.

Only the port and ``open_engine`` are re-exported here: importing ``rota.storage`` (as the
actors do, for the ``Engine`` protocol) does not load a concrete engine.
"""

from rota.storage.engine import (
    ClaimRequest,
    Completion,
    Engine,
    Failure,
    LeaseRef,
    Renewed,
    Rescued,
    Settled,
)
from rota.storage.url import DatabaseUrl, open_change_feed, open_engine, redact

__all__ = [
    "ClaimRequest",
    "Completion",
    "DatabaseUrl",
    "Engine",
    "Failure",
    "LeaseRef",
    "Renewed",
    "Rescued",
    "Settled",
    "open_change_feed",
    "open_engine",
    "redact",
]

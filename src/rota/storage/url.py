"""Where a database is: ``DatabaseUrl`` (a path or a URL, parsed once) and ``open_engine``.

::

    url = DatabaseUrl.parse("sqlite:///jobs.db")     # also "jobs.db", ":memory:"
    engine = open_engine(url, synchronous="NORMAL")  # an Engine; the caller closes it

Every database rota is given (``App(...)``, ``Config.database``, ``ROTA_DATABASE``, the CLI's
``--db``, a process-mode child's handshake) goes through here, so no module outside
``rota.storage`` names a concrete engine. The accepted forms are listed in ``ACCEPTED``;
anything else is a ``ConfigError`` saying what is wrong, with a password never shown.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from rota.errors import ConfigError
from rota.storage.engine import Engine

if TYPE_CHECKING:
    from rota.storage.feed import ChangeFeed

__all__ = ["ACCEPTED", "DatabaseUrl", "open_change_feed", "open_engine", "redact"]

#: The forms of a database rota opens, as error messages list them.
ACCEPTED: Final = (
    "a file path (jobs.db, ./data/jobs.db, /srv/jobs.db), sqlite:///relative.db, "
    "sqlite:////absolute/path.db, or :memory:"
)

#: ``scheme://...``: a URL (anything else without a known scheme is a file path).
_URL: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
#: A scheme rota knows, however it goes on (``sqlite:/x`` is a malformed URL, not a path).
_KNOWN: Final = re.compile(r"^((?:sqlite|postgres|postgresql)(?:\+[A-Za-z0-9_]+)?):", re.I)
_POSTGRES: Final = re.compile(r"^postgres(?:ql)?(?:\+[a-z0-9_]+)?$")
#: ``user:password@`` after ``scheme://``: the password runs to the last ``@`` (it may
#: hold an unencoded ``@`` or ``/``).
_USERINFO: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@]*):.*@")
_PASSWORD_OPTION: Final = re.compile(r"([?&](?:password|passwd)=)[^&#]*", re.I)
_MEMORY: Final = ":memory:"


def redact(text: str) -> str:
    """``text`` with a URL's password replaced by ``***`` (in ``user:password@`` and in a
    ``password=`` query option); a plain path as it is."""
    if not _URL.match(text):
        return text
    text = _USERINFO.sub(lambda m: f"{m.group(1)}:***@", text, count=1)
    return _PASSWORD_OPTION.sub(lambda m: f"{m.group(1)}***", text)


def _refuse(text: str, problem: str) -> ConfigError:
    return ConfigError(f"database {redact(text)!r} {problem}; rota opens {ACCEPTED}")


class DatabaseUrl(msgspec.Struct, frozen=True):
    """A database address, parsed: ``DatabaseUrl.parse(text)``.

    ``scheme`` is ``"sqlite"`` (the only engine of this version) and ``path`` the SQLite
    file as given (relative paths stay relative to the working directory), or
    ``":memory:"``. ``str(url)`` is the path: a plain path is itself an accepted form, so
    it parses back to the same ``DatabaseUrl``."""

    scheme: Literal["sqlite"]
    path: str

    @classmethod
    def parse(cls, text: str) -> DatabaseUrl:
        """The database ``text`` names, or ``ConfigError`` saying what is wrong with it:

        * a plain path: ``jobs.db``, ``./data/jobs.db``, ``/srv/jobs.db`` (taken as it is:
          no ``~`` expansion, no URL decoding);
        * ``sqlite:///relative.db`` (three slashes: relative to the working directory) and
          ``sqlite:////absolute/path.db`` (four: ``"sqlite:///" + "/absolute/path.db"``);
        * ``:memory:``, ``sqlite://:memory:``, ``sqlite:///:memory:``: a private database.

        Refused: an empty string; another scheme (``mysql://``, ``http://``); a malformed
        SQLite URL (``sqlite:/x``, ``sqlite://jobs.db`` with its host part, no file); a
        query string or fragment (``?synchronous=NORMAL``: options are options, not parts
        of the address); ``postgresql://`` and ``postgres://`` until this version of rota
        has a PostgreSQL engine."""
        if not isinstance(text, str):
            raise ConfigError(
                f"the database must be a str (a path or URL), got {type(text).__name__}"
            )
        if not text:
            raise ConfigError(f"the database is empty: give {ACCEPTED}")
        if text == _MEMORY:
            return cls("sqlite", _MEMORY)
        match = _URL.match(text) or _KNOWN.match(text)
        if match is None:
            return cls("sqlite", text)
        scheme = match.group(1).lower()
        if _POSTGRES.match(scheme):
            raise ConfigError(
                f"database {redact(text)!r}: this version of rota has no PostgreSQL engine "
                f"yet (it stores jobs in SQLite); give {ACCEPTED}"
            )
        if scheme != "sqlite":
            raise _refuse(text, f"has an unknown database URL scheme {scheme!r}")
        if not text[len("sqlite") :].startswith("://"):
            raise _refuse(text, "is not a SQLite URL (sqlite: must be followed by //)")
        rest = text[len("sqlite://") :]
        if "?" in rest or "#" in rest:
            raise _refuse(
                text,
                "takes no query options (set synchronous with the synchronous option or "
                "ROTA_SYNCHRONOUS; a file whose name holds '?' or '#' is given as a plain "
                "path)",
            )
        if rest in (_MEMORY, f"/{_MEMORY}"):
            return cls("sqlite", _MEMORY)
        if rest in ("", "/"):
            raise _refuse(text, "names no file")
        if not rest.startswith("/"):
            host = rest.split("/", 1)[0]
            raise _refuse(text, f"has a host part ({host!r}), which a SQLite URL cannot have")
        return cls("sqlite", rest[1:])

    def __str__(self) -> str:
        return self.path

    @property
    def memory(self) -> bool:
        """A private in-memory database: each connection opened on it has its own."""
        return self.path == _MEMORY

    def absolute(self) -> DatabaseUrl:
        """The same database named independently of the working directory (an absolute
        path, symbolic links resolved)."""
        return self if self.memory else DatabaseUrl(self.scheme, os.path.realpath(self.path))

    def shared(self, directory: str) -> DatabaseUrl:
        """The same database, as several connections can share it: ``:memory:`` becomes a
        file in ``directory`` (private to whoever owns the directory, which removes it);
        any other database is itself."""
        if not self.memory:
            return self
        return DatabaseUrl(self.scheme, os.path.join(directory, "memory.db"))

    def same_database(self, other: DatabaseUrl) -> bool:
        """Whether both name one database (two ``:memory:`` ones never do)."""
        if self.memory or other.memory:
            return False
        return self.scheme == other.scheme and (
            os.path.realpath(self.path) == os.path.realpath(other.path)
        )


def open_engine(
    database: str | os.PathLike[str] | DatabaseUrl,
    *,
    synchronous: Literal["FULL", "NORMAL"] | None = None,
    clock: Callable[[], int] | None = None,
    busy_timeout_s: float | None = None,
    create: bool = True,
    own_doorbell: str | None = None,
) -> Engine:
    """A new engine on ``database`` (a ``DatabaseUrl``, or text ``DatabaseUrl.parse``
    takes); the caller owns it and closes it. Call ``migrate()`` before using it.

    ``synchronous``, ``clock``, ``busy_timeout_s``: the engine's (None: its default).
    ``create=False`` (the CLI) opens only a rota database that exists, migrated to this
    version's schema: ``StorageError`` for a missing file, a foreign one or ``:memory:``.
    A ``:memory:`` database is private to the engine: several connections that must see
    one database use ``DatabaseUrl.shared``. ``own_doorbell``: the doorbell of the runtime
    whose Store opens the engine (its change feed's): the engine never rings it, since
    that runtime wakes its own queues."""
    url = database if isinstance(database, DatabaseUrl) else DatabaseUrl.parse(os.fspath(database))
    from rota.storage.sqlite import SqliteEngine  # here: importing the port loads no engine

    options: dict[str, Any] = {}
    if synchronous is not None:
        options["synchronous"] = synchronous
    if clock is not None:
        options["clock"] = clock
    if busy_timeout_s is not None:
        options["busy_timeout_s"] = busy_timeout_s
    if create:
        engine = SqliteEngine(url.path, **options)
    else:
        engine = SqliteEngine.open_existing(url.path, **options)
    if own_doorbell is not None:
        engine.own_doorbell = own_doorbell
    return engine


def open_change_feed(
    database: str | os.PathLike[str] | DatabaseUrl,
    *,
    poll_interval_s: float,
    confirm: Callable[[], bool] | None = None,
) -> ChangeFeed:
    """A new change feed on ``database`` (``rota.storage.feed``): how a runtime notices
    other connections' commits. ``confirm`` is asked whether a change the feed saw was
    another connection's (the runtime asks its Store, whose own commits never show)."""
    url = database if isinstance(database, DatabaseUrl) else DatabaseUrl.parse(os.fspath(database))
    from rota.storage.feed import SqliteChangeFeed

    return SqliteChangeFeed(url.path, poll_interval_s=poll_interval_s, confirm=confirm)

"""Noticing other connections' commits: the ``ChangeFeed`` port and the SQLite feed.

A runtime learns that another process committed work (an enqueue, a retry, a cancel
request) from its change feed, which is separate from the Store that executes its own
operations. The SQLite feed combines two signals:

* a **doorbell**: a UNIX datagram socket per runtime (``Doorbell``), its address recorded
  with the runtime's owner row. A ``SqliteEngine`` that commits work for a queue rings the
  doorbells of the runtimes on its host that serve it (``Ringer``: one non-blocking
  ``sendto`` each, every error ignored), so a waiting feed wakes at once;
* a **poll** of ``PRAGMA data_version`` on the feed's own connection, every
  ``poll_interval_s``: the fallback for whatever rings no doorbell (a lost datagram, a
  hand edit, an older rota, a writer on another host's mount).

PostgreSQL's feed will ``LISTEN`` on a connection of its own, its engine ``NOTIFY`` in the
writing transaction. See docs/architecture.md ("The change feed").
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import secrets
import select
import socket
import sqlite3
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

import msgspec

__all__ = [
    "RING_CACHE_S",
    "ChangeFeed",
    "Doorbell",
    "Ringer",
    "SqliteChangeFeed",
    "ring",
]

log = logging.getLogger("rota.storage")

#: How long a ``Ringer`` keeps the doorbells it read before reading them again: a runtime
#: that starts meanwhile is found by its poll (and its pools claim when they start).
RING_CACHE_S: Final = 1.0
#: What a ring says (its content is never read: any datagram wakes the feed).
_RING: Final = b"\x01"
_QUEUES: Final = msgspec.json.Decoder(list[str])


@runtime_checkable
class ChangeFeed(Protocol):
    """How a runtime notices other connections' commits (the port).

    ``wait`` blocks one thread; ``close`` may be called from any other, and ends a
    ``wait`` under way."""

    doorbell: str | None
    """Where writers on this host ring this feed (recorded with its runtime's owner row),
    or None if they cannot."""

    def wait(self, timeout_s: float) -> bool:
        """Block until another connection may have committed since the previous ``wait``
        returned (True), or ``timeout_s`` passed with nothing seen (False). A false
        positive is allowed, a miss is not (within the feed's polling interval). Returns
        False at once once closed."""
        ...

    def close(self) -> None:
        """Release the feed's resources and end a ``wait`` under way. Idempotent."""
        ...


# -- the doorbell ---------------------------------------------------------------------------


def _sockaddr(address: str) -> str:
    """The socket address of a doorbell address: ``@name`` is Linux's abstract namespace."""
    return "\0" + address[1:] if address.startswith("@") else address


def _is_doorbell_address(address: str) -> bool:
    """Whether ``address`` is one ``_new_address`` makes (``@rota-...`` or a file named
    ``rota-...``): an owner row read from the database names nothing else to ring."""
    name = address[1:] if address.startswith("@") else os.path.basename(address)
    return name.startswith("rota-")


def _new_address() -> str:
    name = f"rota-{os.getpid()}-{secrets.token_hex(6)}"
    if sys.platform.startswith("linux"):
        return "@" + name  # no file: nothing to clean up, nothing left behind by a crash
    return str(Path(tempfile.gettempdir()) / f"{name}.sock")


class Doorbell:
    """The receiving end: a bound, non-blocking UNIX datagram socket.

    ``address`` is ``@name`` (Linux's abstract namespace: gone with the socket) or a
    socket file's path (elsewhere, or when given; a stale socket file there is replaced,
    and the file is removed on ``close``). ``OSError`` if it cannot be bound."""

    def __init__(self, address: str | None = None) -> None:
        if not hasattr(socket, "AF_UNIX"):
            raise OSError("UNIX sockets are not available on this platform")
        self.address = address if address is not None else _new_address()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.setblocking(False)
            if not self.address.startswith("@"):
                _remove_stale_socket(self.address)
            self._sock.bind(_sockaddr(self.address))
        except BaseException:
            self._sock.close()
            raise
        self._closed = False

    def fileno(self) -> int:
        """The socket's file descriptor (to wait on it)."""
        return self._sock.fileno()

    def drain(self) -> int:
        """Read every ring waiting; return how many there were."""
        n = 0
        while True:
            try:
                self._sock.recv(64)
            except (BlockingIOError, InterruptedError):
                return n
            except OSError:
                return n
            n += 1

    def close(self) -> None:
        """Close the socket (and remove its file, if it has one). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._sock.close()
        if not self.address.startswith("@"):
            with contextlib.suppress(OSError):
                os.unlink(self.address)


def _remove_stale_socket(path: str) -> None:
    """A socket file left at ``path`` by a process that died: nobody can be bound to it
    under our fresh random name, so it is removed (anything else there is left alone, and
    the bind then fails)."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


_sender: socket.socket | None = None
_sender_lock = threading.Lock()


def _sending_socket() -> socket.socket:
    """The process's one unbound datagram socket that rings are sent from (``sendto`` is
    thread-safe; opening a socket per ring cost ~50 µs more). Closed at exit."""
    global _sender
    sock = _sender
    if sock is None:
        with _sender_lock:
            if _sender is None:
                new = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                new.setblocking(False)
                atexit.register(new.close)
                _sender = new
            sock = _sender
    return sock


def ring(addresses: Collection[str]) -> int:
    """Ring these doorbells once each; return how many rings were accepted. Never blocks,
    never raises: a doorbell nobody listens at any more (a runtime that died), or one
    whose socket buffer is full (its runtime is about to wake anyway), is skipped."""
    if not addresses or not hasattr(socket, "AF_UNIX"):
        return 0
    try:
        sock = _sending_socket()
    except OSError:
        return 0
    sent = 0
    for address in addresses:
        try:
            sock.sendto(_RING, _sockaddr(address))
            sent += 1
        except OSError:
            continue
    return sent


class Ringer:
    """The ringing end, for one engine: whom to ring after a commit, and the rings.

    ``load(host)`` returns the ``(queues as stored (JSON), doorbell)`` of the owners on
    ``host`` that have a doorbell; it is called at most every ``cache_s`` (and never
    raises out: a failed read rings nobody). ``skip`` is the doorbell of the runtime this
    engine works for: its own commits need not wake it (it wakes its queues itself)."""

    def __init__(
        self,
        load: Callable[[str], Sequence[tuple[object, object]]],
        *,
        host: str | None = None,
        skip: str | None = None,
        cache_s: float = RING_CACHE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self.host = host if host is not None else socket.gethostname()
        self.skip = skip
        self._cache_s = cache_s
        self._clock = clock
        self._loaded_at = -math.inf
        self._doorbells: list[tuple[str, frozenset[str]]] = []
        self.rings = 0
        """Rings sent (accepted by a socket) so far."""

    def wanted(self) -> bool:
        """Whether a ring may reach anyone: a runtime on this host has a doorbell, or it is
        time to look again (a cheap test, for every commit of a producer with no runtime
        on its host)."""
        return bool(self._doorbells) or self._clock() - self._loaded_at >= self._cache_s

    def doorbells(self, queues: Collection[str] | None) -> list[str]:
        """The doorbells to ring for work in ``queues`` (None: every queue)."""
        now = self._clock()
        if now - self._loaded_at >= self._cache_s:
            self._loaded_at = now
            self._doorbells = self._read()
        if not self._doorbells:  # no runtime on this host (a producer's usual case): fast
            return []
        return [
            address
            for address, served in self._doorbells
            if address != self.skip and (queues is None or not served.isdisjoint(queues))
        ]

    def ring(self, queues: Collection[str] | None) -> int:
        """Ring this host's runtimes serving any of ``queues`` (None: all of them)."""
        addresses = self.doorbells(queues)
        if not addresses:
            return 0
        sent = ring(addresses)
        self.rings += sent
        return sent

    def _read(self) -> list[tuple[str, frozenset[str]]]:
        try:
            rows = self._load(self.host)
        except Exception as exc:  # rings are an optimisation: the feeds' polls remain
            log.debug("could not read the doorbells of this host: %r", exc)
            return []
        doorbells = []
        for queues, address in rows:
            if isinstance(queues, str):
                queues = queues.encode()
            if not isinstance(address, str) or not address or not isinstance(queues, bytes):
                continue  # an owner row rota cannot read: its feed polls
            if not _is_doorbell_address(address):
                continue  # not a doorbell rota made: never send to someone else's socket
            try:
                served = frozenset(_QUEUES.decode(queues))
            except msgspec.DecodeError:
                continue
            doorbells.append((address, served))
        return doorbells


# -- the SQLite feed ------------------------------------------------------------------------


class SqliteChangeFeed:
    """The SQLite ``ChangeFeed``: a doorbell, and ``PRAGMA data_version`` polled on a
    connection of its own every ``poll_interval_s``.

    With ``doorbell=True`` (the default) it binds a ``Doorbell`` (if that fails, it says so
    in a warning and polls alone: ``self.doorbell`` is then None). The connection opens the
    database read-only in spirit (it never writes) and without creating it: until the file
    exists, nothing is reported. One thread waits at a time.

    The poll sees every commit, the runtime's own too. ``confirm`` (called on the waiting
    thread when the poll sees a change) tells them apart: False means nobody else committed
    (the runtime asks its Store's connection, where its own commits never show), and the
    change is not reported. Rings need no confirming: an engine never rings its own
    runtime."""

    def __init__(
        self,
        path: str,
        *,
        poll_interval_s: float,
        doorbell: bool = True,
        confirm: Callable[[], bool] | None = None,
    ) -> None:
        if not (poll_interval_s > 0 and math.isfinite(poll_interval_s)):
            raise ValueError(f"poll_interval_s must be > 0, got {poll_interval_s!r}")
        self._path = os.path.abspath(path)
        self._poll_interval_s = float(poll_interval_s)
        self._confirm = confirm
        self._bell: Doorbell | None = None
        if doorbell:
            try:
                self._bell = Doorbell()
            except OSError as exc:
                log.warning(
                    "no doorbell for this runtime (%s): it notices other processes' "
                    "commits by polling alone, every %g s",
                    exc,
                    self._poll_interval_s,
                )
        self.doorbell: str | None = None if self._bell is None else self._bell.address
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._poller = select.poll()
        self._poller.register(self._wake_r, select.POLLIN)
        if self._bell is not None:
            self._poller.register(self._bell.fileno(), select.POLLIN)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._closed = self._waiting = self._released = False
        self._version = self._read_version()
        self._next_poll = time.monotonic() + self._poll_interval_s
        self.rings = 0
        """Waits that a ring ended."""
        self.polls = 0
        """Waits that the poll ended (a commit no ring announced)."""
        self.dismissed = 0
        """Changes the poll saw that ``confirm`` said were the runtime's own."""

    def wait(self, timeout_s: float) -> bool:
        """True as soon as another connection may have committed (a ring, or the poll saw a
        change); False after ``timeout_s`` or once closed."""
        with self._lock:
            if self._closed:
                return False
            if self._waiting:
                raise RuntimeError("SqliteChangeFeed.wait: one thread waits at a time")
            self._waiting = True
        try:
            return self._wait(timeout_s)
        finally:
            with self._lock:
                self._waiting = False
                if self._closed:
                    self._release()

    def _wait(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + max(timeout_s, 0.0)
        bell = self._bell
        while True:
            now = time.monotonic()
            if now >= self._next_poll:  # on its own schedule, however long each wait is
                self._next_poll = now + self._poll_interval_s
                if self._changed():
                    if self._confirm is None or self._confirm():
                        self.polls += 1
                        self._seen()  # rings already waiting announce what this reports
                        return True
                    self.dismissed += 1
            left = deadline - now
            if left <= 0:
                return False
            until = min(left, self._next_poll - now)
            events = self._poller.poll(max(math.ceil(until * 1000), 0))
            if self._closed:
                return False
            if bell is not None and any(fd == bell.fileno() for fd, _ in events):
                self._seen()
                self.rings += 1
                return True

    def _seen(self) -> None:
        """The caller is about to be told of every commit so far: read the rings waiting,
        then the version (in that order: a ring read here was sent after its commit, so
        that commit is at most this version), so neither reports them again."""
        if self._bell is not None:
            self._bell.drain()
        version = self._read_version()
        if version is not None:
            self._version = version

    def _changed(self) -> bool:
        version = self._read_version()
        if version is None:
            return False
        last, self._version = self._version, version
        return last is not None and version != last

    def _read_version(self) -> int | None:
        """``data_version`` on the feed's connection (opened on first use); None if the
        database cannot be read now (not created yet, deleted): the next poll retries."""
        try:
            if self._conn is None:
                uri = Path(self._path).as_uri() + "?mode=rw"
                self._conn = sqlite3.connect(
                    uri, uri=True, timeout=0, isolation_level=None, check_same_thread=False
                )
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error as exc:
            log.debug("change feed: cannot read data_version of %s: %r", self._path, exc)
            self._close_connection()
            return None

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def close(self) -> None:
        """Close the doorbell and the connection; a wait under way returns. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._waiting:
                with contextlib.suppress(OSError):
                    os.write(self._wake_w, b"x")  # the waiter releases on its way out
                return
            self._release()

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self._close_connection()
        if self._bell is not None:
            self._bell.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

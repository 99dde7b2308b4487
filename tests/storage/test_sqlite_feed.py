"""The change feed (rota.storage.feed): SqliteChangeFeed's poll and doorbell, Doorbell,
ring and Ringer. Timing bounds are generous (a loaded 2-core machine): what they tell
apart is "at once" (well under a second) from "after the poll interval" (a minute)."""

from __future__ import annotations

import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rota.domain.job import NewJob
from rota.storage import feed as feed_module
from rota.storage.feed import ChangeFeed, Doorbell, Ringer, SqliteChangeFeed, ring
from rota.storage.sqlite import SqliteEngine

MakeJob = Callable[..., NewJob]
#: A poll interval no test waits for: a wait that ends early was ended by a ring.
NEVER_S = 60.0


@pytest.fixture
def writer(file_path: str) -> Iterator[SqliteEngine]:
    """Another connection (another process, as far as the feed can tell)."""
    engine = SqliteEngine(file_path)
    engine.migrate()
    yield engine
    engine.close()


@pytest.fixture
def open_feed(file_path: str) -> Iterator[Callable[..., SqliteChangeFeed]]:
    feeds: list[SqliteChangeFeed] = []

    def open_(**kwargs: object) -> SqliteChangeFeed:
        kwargs.setdefault("poll_interval_s", NEVER_S)
        feed = SqliteChangeFeed(file_path, **kwargs)  # type: ignore[arg-type]
        feeds.append(feed)
        return feed

    yield open_
    for feed in feeds:
        feed.close()


def in_thread(fn: Callable[[], object], delay_s: float) -> threading.Thread:
    def run() -> None:
        time.sleep(delay_s)
        fn()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


# -- the poll -----------------------------------------------------------------------------------


def test_the_poll_reports_another_connections_commit_and_then_nothing_more(
    writer: SqliteEngine, open_feed: Callable[..., SqliteChangeFeed], make_job: MakeJob
) -> None:
    feed = open_feed(poll_interval_s=0.01, doorbell=False)
    assert isinstance(feed, ChangeFeed)
    assert feed.doorbell is None
    assert feed.wait(0.05) is False  # nothing committed: a timeout
    writer.enqueue([make_job()])
    started = time.monotonic()
    assert feed.wait(5.0) is True
    assert time.monotonic() - started < 1.0
    assert feed.wait(0.05) is False  # the same commit is not reported twice
    assert (feed.polls, feed.rings) == (1, 0)


def test_a_commit_between_two_waits_is_reported_by_the_next(
    writer: SqliteEngine, open_feed: Callable[..., SqliteChangeFeed], make_job: MakeJob
) -> None:
    feed = open_feed(poll_interval_s=0.01, doorbell=False)
    writer.enqueue([make_job()])  # nobody is waiting now
    time.sleep(0.02)  # its poll is due
    assert feed.wait(0.0) is True


def test_the_poll_keeps_its_interval_whatever_the_waits_timeouts(
    writer: SqliteEngine, open_feed: Callable[..., SqliteChangeFeed], make_job: MakeJob
) -> None:
    feed = open_feed(poll_interval_s=NEVER_S, doorbell=False)
    writer.enqueue([make_job()])
    for _ in range(20):  # short waits, back to back: none of them polls before its time
        assert feed.wait(0.01) is False
    assert feed.polls == 0


def test_a_feed_on_a_database_not_created_yet_reports_nothing_and_creates_nothing(
    tmp_path: Path, make_job: MakeJob
) -> None:
    path = tmp_path / "later.db"
    feed = SqliteChangeFeed(str(path), poll_interval_s=0.01, doorbell=False)
    try:
        assert feed.wait(0.05) is False
        assert not path.exists()
        engine = SqliteEngine(str(path))
        try:
            engine.migrate()
            feed.wait(0.05)  # the file exists now: the feed takes its version
            engine.enqueue([make_job()])
            assert feed.wait(5.0) is True
        finally:
            engine.close()
    finally:
        feed.close()


def test_a_change_the_confirmation_says_is_the_callers_own_is_not_reported(
    writer: SqliteEngine, open_feed: Callable[..., SqliteChangeFeed], make_job: MakeJob
) -> None:
    answers = [False, True]
    asked: list[bool] = []

    def confirm() -> bool:
        asked.append(answers[len(asked)])
        return asked[-1]

    feed = open_feed(poll_interval_s=0.01, doorbell=False, confirm=confirm)
    writer.enqueue([make_job()])  # "the runtime's own" commit (confirm says False)
    assert feed.wait(0.1) is False
    assert (asked, feed.dismissed, feed.polls) == ([False], 1, 0)
    writer.enqueue([make_job()])  # another connection's (confirm says True)
    assert feed.wait(5.0) is True
    assert (asked, feed.dismissed, feed.polls) == ([False, True], 1, 1)


# -- the doorbell -------------------------------------------------------------------------------


def test_a_ring_ends_a_wait_at_once(open_feed: Callable[..., SqliteChangeFeed]) -> None:
    feed = open_feed()
    assert feed.doorbell is not None
    address = feed.doorbell
    thread = in_thread(lambda: ring([address]), 0.05)
    started = time.monotonic()
    try:
        assert feed.wait(NEVER_S) is True
    finally:
        thread.join()
    assert time.monotonic() - started < 5.0  # not the 60 s poll
    assert (feed.rings, feed.polls) == (1, 0)


def test_rings_waiting_before_a_wait_end_it_at_once_and_count_once(
    open_feed: Callable[..., SqliteChangeFeed],
) -> None:
    feed = open_feed()
    assert feed.doorbell is not None
    assert ring([feed.doorbell, feed.doorbell, feed.doorbell]) == 3
    assert feed.wait(NEVER_S) is True
    assert feed.wait(0.05) is False  # all three were read by the first wait


def test_the_commit_that_rang_is_not_reported_again_by_the_poll(
    writer: SqliteEngine, open_feed: Callable[..., SqliteChangeFeed], make_job: MakeJob
) -> None:
    feed = open_feed(poll_interval_s=0.01)
    assert feed.doorbell is not None
    writer.enqueue([make_job()])  # commits, then rings (as an engine does)
    ring([feed.doorbell])
    assert feed.wait(5.0) is True
    assert feed.wait(0.1) is False  # several polls: no second report of that commit


def test_a_feed_whose_doorbell_cannot_be_bound_polls_alone_and_says_so(
    writer: SqliteEngine,
    open_feed: Callable[..., SqliteChangeFeed],
    make_job: MakeJob,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(feed_module.Doorbell, "__init__", refuse)
    with caplog.at_level(logging.WARNING, logger="rota.storage"):
        feed = open_feed(poll_interval_s=0.01)
    assert feed.doorbell is None
    assert any("polling alone" in r.getMessage() for r in caplog.records)
    writer.enqueue([make_job()])
    assert feed.wait(5.0) is True


def test_a_doorbell_in_the_abstract_namespace_leaves_no_file() -> None:
    if os.uname().sysname != "Linux":
        pytest.skip("Linux only")
    bell = Doorbell()
    try:
        assert bell.address.startswith("@rota-")
        assert ring([bell.address]) == 1
        assert bell.drain() == 1
        assert bell.drain() == 0
    finally:
        bell.close()
    assert ring([bell.address]) == 0  # nobody listens there any more


def test_a_doorbell_at_a_path_replaces_a_stale_socket_file_and_removes_its_own(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "bell.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(path)
    stale.close()  # a socket file whose process is gone
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    assert ring([path]) == 0  # ringing it is harmless
    bell = Doorbell(path)
    try:
        assert ring([path]) == 1
        assert bell.drain() == 1
    finally:
        bell.close()
        bell.close()  # idempotent
    assert not os.path.exists(path)


def test_a_doorbell_never_replaces_a_file_that_is_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "precious.txt"
    path.write_text("keep me")
    with pytest.raises(OSError, match="Address already in use"):
        Doorbell(str(path))
    assert path.read_text() == "keep me"


def test_ringing_addresses_nobody_listens_at_never_raises(tmp_path: Path) -> None:
    assert ring([]) == 0
    assert ring(["@rota-nobody-here", str(tmp_path / "missing.sock"), "/", "x" * 200]) == 0


def test_a_full_doorbell_drops_rings_without_blocking_the_ringer() -> None:
    bell = Doorbell()
    try:
        started = time.monotonic()
        sent = sum(ring([bell.address]) for _ in range(5000))
        assert time.monotonic() - started < 10.0
        assert 0 < sent < 5000  # the socket's buffer filled up: the rest were dropped
        assert bell.drain() == sent
    finally:
        bell.close()


# -- close --------------------------------------------------------------------------------------


def test_close_ends_a_wait_under_way_and_is_idempotent(
    open_feed: Callable[..., SqliteChangeFeed],
) -> None:
    feed = open_feed()
    address = feed.doorbell
    assert address is not None
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(feed.wait(NEVER_S)))
    waiter.start()
    time.sleep(0.05)
    started = time.monotonic()
    feed.close()
    waiter.join(10.0)
    assert not waiter.is_alive()
    assert results == [False]
    assert time.monotonic() - started < 5.0
    feed.close()  # idempotent
    assert feed.wait(NEVER_S) is False  # closed: returns at once
    assert ring([address]) == 0  # its doorbell is gone


def test_one_thread_waits_at_a_time(open_feed: Callable[..., SqliteChangeFeed]) -> None:
    feed = open_feed()
    waiter = threading.Thread(target=lambda: feed.wait(NEVER_S))
    waiter.start()
    try:
        time.sleep(0.05)
        with pytest.raises(RuntimeError, match="one thread waits at a time"):
            feed.wait(0.01)
    finally:
        feed.close()
        waiter.join(10.0)


def test_a_poll_interval_that_is_not_a_positive_number_is_refused(file_path: str) -> None:
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="poll_interval_s must be > 0"):
            SqliteChangeFeed(file_path, poll_interval_s=bad)


# -- the Ringer ----------------------------------------------------------------------------------


@pytest.fixture
def bells() -> Iterator[dict[str, Doorbell]]:
    made = {name: Doorbell() for name in ("a", "b", "c")}
    yield made
    for bell in made.values():
        bell.close()


def test_a_ringer_rings_only_doorbells_serving_the_queues_except_its_own(
    bells: dict[str, Doorbell],
) -> None:
    a, b, c = bells["a"], bells["b"], bells["c"]
    rows = [('["q1", "q2"]', a.address), ('["q2"]', b.address), ('["q3"]', c.address)]
    ringer = Ringer(lambda host: rows, host="h", skip=b.address)
    assert ringer.ring({"q2"}) == 1  # a serves q2; b does too, but b is its own
    assert (a.drain(), b.drain(), c.drain()) == (1, 0, 0)
    assert ringer.ring({"q4"}) == 0
    assert ringer.ring(None) == 2  # every queue: a and c
    assert (a.drain(), b.drain(), c.drain()) == (1, 0, 1)
    assert ringer.rings == 3


def test_a_ringer_reads_the_doorbells_of_its_host_at_most_once_per_cache_period(
    bells: dict[str, Doorbell],
) -> None:
    now = [100.0]
    reads: list[str] = []

    def load(host: str) -> list[tuple[object, object]]:
        reads.append(host)
        return [('["q"]', bells["a"].address)]

    ringer = Ringer(load, host="this-host", cache_s=1.0, clock=lambda: now[0])
    assert ringer.ring({"q"}) == 1
    now[0] += 0.5
    assert ringer.ring({"q"}) == 1
    assert reads == ["this-host"]
    now[0] += 0.6
    assert ringer.ring({"q"}) == 1
    assert reads == ["this-host", "this-host"]


def test_a_ringer_with_nobody_to_ring_is_not_wanted_until_it_is_time_to_look_again(
    bells: dict[str, Doorbell],
) -> None:
    """A producer with no runtime on its host skips noting and ringing on every commit
    (``wanted``), and still finds a runtime that starts within one cache period."""
    now = [100.0]
    rows: list[tuple[object, object]] = []
    ringer = Ringer(lambda host: rows, host="h", cache_s=1.0, clock=lambda: now[0])
    assert ringer.wanted()  # never looked yet
    assert ringer.ring({"q"}) == 0
    assert not ringer.wanted()  # nobody, and looked just now
    rows.append(('["q"]', bells["a"].address))  # a runtime starts
    now[0] += 0.5
    assert not ringer.wanted()
    now[0] += 0.6
    assert ringer.wanted()
    assert ringer.ring({"q"}) == 1
    assert ringer.wanted()  # someone to ring: every commit rings


def test_a_ringer_never_rings_a_socket_rota_did_not_make(tmp_path: Path) -> None:
    """A doorbell address comes from a row anyone with the database may write: only the
    addresses rota makes (``@rota-...``, a file named ``rota-...``) are rung."""
    other = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    other.bind(str(tmp_path / "someone-else.sock"))
    other.setblocking(False)
    ours = Doorbell(str(tmp_path / "rota-test.sock"))
    try:
        rows: list[tuple[object, object]] = [
            ('["q"]', str(tmp_path / "someone-else.sock")),
            ('["q"]', "@someone-else"),
            ('["q"]', ours.address),
        ]
        assert Ringer(lambda host: rows).ring({"q"}) == 1
        assert ours.drain() == 1
        with pytest.raises(BlockingIOError):
            other.recv(64)
    finally:
        other.close()
        ours.close()


def test_a_ringer_whose_read_fails_or_meets_bad_rows_rings_what_it_can(
    bells: dict[str, Doorbell],
) -> None:
    def broken(host: str) -> list[tuple[object, object]]:
        raise OSError("disk on fire")

    assert Ringer(broken).ring({"q"}) == 0
    rows: list[tuple[object, object]] = [
        ("not json", bells["a"].address),
        ('["q"]', None),
        ('["q"]', 42),
        (b'["q"]', bells["b"].address),
        ('{"q": 1}', bells["c"].address),
    ]
    ringer = Ringer(lambda host: rows)
    assert ringer.ring({"q"}) == 1
    assert bells["b"].drain() == 1

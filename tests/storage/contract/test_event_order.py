"""The Engine contract of the event stream's order: event ids increase in commit order.

A reader that has read every event up to id N never later sees an event with an id <= N
committed, so one cursor (the last id read) is all a reader keeps, and it loses nothing.
A sequence alone does not give this: a transaction that took id 5 could commit after one
that took id 6 was read, and a reader past 6 would never see 5.

``check_stream`` runs writers on several engines at once (enqueues, claims, settlements;
each in turn holds a transaction open with ``batch()`` while the others try to commit) and
a reader polling ``events(after_id=cursor)``: the reader never gets an id at or below its
cursor, and in the end it has seen every event written, exactly once. SQLite has one
writer at a time, so there it holds by construction; the last two tests show the same
check failing on a fake engine that takes an event's id when the event is written (a
shared sequence, as PostgreSQL's ``nextval``) and makes it visible when its transaction
commits, with no lock ordering the two.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import count
from typing import Any

import pytest

from rota.domain.event import Event, EventKind
from rota.domain.job import NewJob
from rota.storage.engine import ClaimRequest, Completion, Engine, Failure, Settled

MakeJob = Callable[..., NewJob]
TTL = 60_000
WRITERS = 3
ROUNDS = 24
HOLD_S = 0.01
"""How long a slow writer keeps its transaction open (the others try to commit meanwhile)."""


class Reader:
    """A reader of the stream that keeps one cursor: the last event id it read."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.cursor = 0
        self.seen: list[int] = []

    def poll(self) -> None:
        for event in self.engine.events(self.cursor, limit=100):
            assert event.id > self.cursor, (
                f"event {event.id} read after the cursor had passed {self.cursor}"
            )
            self.cursor = event.id
            self.seen.append(event.id)

    def check_saw_everything(self) -> list[int]:
        """Every event written, read exactly once and in order; returns their ids."""
        everything = [e.id for e in self.engine.events(0, limit=10**6)]
        missed = sorted(set(everything) - set(self.seen))
        assert not missed, (
            f"the reader missed events {missed}: they were committed after it had read past "
            "them (ids not in commit order)"
        )
        assert self.seen == everything
        return everything


def write(engine: Any, make_job: MakeJob, writer: int, hold_s: float) -> int:
    """One writer's work on its own queue, every third round in a slow transaction;
    returns how many events it wrote."""
    queue, owner = f"q{writer}", f"w{writer}"
    written = 0
    for round_ in range(ROUNDS):
        if round_ % WRITERS == writer:  # slow: the writers take turns holding a transaction
            with engine.batch():
                written += len(engine.enqueue([make_job(queue=queue), make_job(queue=queue)]))
                time.sleep(hold_s)  # the others try to commit meanwhile
                claimed = engine.claim(queue, owner, 1, TTL)
                written += len(claimed)
        else:
            written += len(engine.enqueue([make_job(queue=queue)]))
            claimed = engine.claim(queue, owner, 2, TTL)
            written += len(claimed)
        done, again = claimed[::2], claimed[1::2]
        settled = engine.settle_and_claim(
            [Completion(job.id, job.token) for job in done],
            [Failure(job.id, job.token, "again", delay_ms=0) for job in again],
            ClaimRequest(queue, owner, 1, TTL),
        )
        assert settled.lost == []
        written += len(done) + len(again) + len(settled.claimed)  # completed, retrying, active
        for job in settled.claimed:
            engine.complete(job.id, job.token, None)
            written += 1
    return written


def check_stream(
    writers: list[Any], reader: Reader, make_job: MakeJob, hold_s: float = HOLD_S
) -> None:
    """The writers write at once from threads while the reader polls; then the reader has
    seen every event exactly once (and the writers wrote what they said)."""
    written: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def run(engine: Any, writer: int) -> None:
        try:
            written.append(write(engine, make_job, writer, hold_s))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e, i)) for i, e in enumerate(writers)]

    def follow() -> None:
        try:
            while not done.is_set():
                reader.poll()
                time.sleep(0.0005)
        except BaseException as exc:
            errors.append(exc)

    following = threading.Thread(target=follow)
    following.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    following.join()
    if errors:
        raise errors[0]
    reader.poll()  # what committed since the last poll
    everything = reader.check_saw_everything()
    assert len(everything) == sum(written) > WRITERS * ROUNDS * 3


@pytest.mark.several_connections
def test_event_ids_increase_in_commit_order_for_every_reader(
    engine_factory: Callable[..., Engine], make_job: MakeJob
) -> None:
    writers = [engine_factory() for _ in range(WRITERS)]
    check_stream(writers, Reader(engine_factory()), make_job)


# --- the check fails an engine that breaks the contract ---------------------------------


class SharedSequence:
    """What the fake engines share: the id sequences, the jobs, the committed events."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.event_ids = count(1)
        self.job_ids = count(1)
        self.tokens = count(1)
        self.waiting: dict[str, deque[int]] = {}
        self.committed: list[Event] = []


class TakesIdsBeforeTheLock:
    """A fake engine with the fault the contract forbids: an event takes its id from the
    shared sequence when it is written, and becomes visible when its transaction commits;
    nothing orders the two. Only what ``check_stream`` uses (jobs change at once; only the
    events wait for the commit)."""

    def __init__(self, shared: SharedSequence) -> None:
        self.shared = shared
        self.pending: list[Event] | None = None

    @contextmanager
    def batch(self) -> Iterator[None]:
        self.pending = []
        try:
            yield
        finally:
            events, self.pending = self.pending, None
        with self.shared.lock:
            self.shared.committed.extend(events)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        if self.pending is not None:
            yield
        else:
            with self.batch():
                yield

    def _emit(self, kind: EventKind, job_id: int, queue: str, attempt: int) -> None:
        assert self.pending is not None
        with self.shared.lock:
            event_id = next(self.shared.event_ids)
        self.pending.append(
            Event(id=event_id, at_ms=0, kind=kind, job_id=job_id, queue=queue, name="task",
                  attempt=attempt)
        )  # fmt: skip

    def enqueue(self, jobs: list[NewJob]) -> list[int]:
        ids = []
        with self._transaction():
            for job in jobs:
                with self.shared.lock:
                    job_id = next(self.shared.job_ids)
                    self.shared.waiting.setdefault(job.queue, deque()).append(job_id)
                self._emit(EventKind.ENQUEUED, job_id, job.queue, 0)
                ids.append(job_id)
        return ids

    def claim(self, queue: str, owner: str, n: int, ttl_ms: int) -> list[Any]:
        claimed = []
        with self._transaction():
            for _ in range(n):
                with self.shared.lock:
                    waiting = self.shared.waiting.get(queue)
                    if not waiting:
                        break
                    job = Leased(waiting.popleft(), next(self.shared.tokens), queue)
                self._emit(EventKind.ACTIVE, job.id, queue, 1)
                claimed.append(job)
        return claimed

    def complete(self, job_id: int, token: int, result: bytes | None) -> None:
        with self._transaction():
            self._emit(EventKind.COMPLETED, job_id, "", 1)

    def settle_and_claim(
        self, completions: list[Completion], failures: list[Failure], claim: ClaimRequest
    ) -> Settled:
        with self._transaction():
            for completion in completions:
                self._emit(EventKind.COMPLETED, completion.job_id, claim.queue, 1)
            for failure in failures:
                self._emit(EventKind.RETRYING, failure.job_id, claim.queue, 1)
                with self.shared.lock:
                    self.shared.waiting[claim.queue].append(failure.job_id)
            claimed = self.claim(claim.queue, claim.owner, claim.n, claim.ttl_ms)
        return Settled(lost=[], claimed=claimed)

    def events(self, after_id: int = 0, *, limit: int = 1000) -> list[Event]:
        with self.shared.lock:
            newer = sorted((e for e in self.shared.committed if e.id > after_id), key=id_of)
        return newer[:limit]


class Leased:
    """A job as the fake engine hands it out."""

    def __init__(self, job_id: int, token: int, queue: str) -> None:
        self.id, self.token, self.queue = job_id, token, queue


def id_of(event: Event) -> int:
    return event.id


def test_a_reader_misses_an_event_committed_below_its_cursor(make_job: MakeJob) -> None:
    """The failure the contract rules out, step by step."""
    shared = SharedSequence()
    slow, fast = TakesIdsBeforeTheLock(shared), TakesIdsBeforeTheLock(shared)
    reader = Reader(TakesIdsBeforeTheLock(shared))
    with slow.batch():
        slow.enqueue([make_job()])  # takes event id 1
        fast.enqueue([make_job()])  # takes id 2 and commits
        reader.poll()  # reads 2: the cursor passes 1
        assert (reader.cursor, reader.seen) == (2, [2])
    reader.poll()  # 1 is committed now, below the cursor: never read
    assert reader.seen == [2]
    with pytest.raises(AssertionError, match=r"the reader missed events \[1\]"):
        reader.check_saw_everything()


def test_the_check_fails_an_engine_that_takes_ids_before_the_write_lock(
    make_job: MakeJob,
) -> None:
    """``check_stream``, as run on every engine above, fails the fake: the slow writers'
    events commit below ids the reader has already read."""
    shared = SharedSequence()
    writers = [TakesIdsBeforeTheLock(shared) for _ in range(WRITERS)]
    with pytest.raises(AssertionError, match="the reader missed events"):
        check_stream(writers, Reader(TakesIdsBeforeTheLock(shared)), make_job, hold_s=0.02)

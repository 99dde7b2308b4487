"""SqliteEngine rings doorbells after committing work: which operations ring, whom (the
runtimes of this host serving the queue, never the engine's own), and when (after the
commit, never for what was rolled back)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from rota.domain.event import Owner
from rota.domain.job import JobState, NewJob
from rota.errors import StorageError
from rota.storage.engine import Completion, LeaseRef
from rota.storage.feed import Doorbell
from rota.storage.sqlite import SqliteEngine

if TYPE_CHECKING:
    from tests.storage.conftest import FakeClock

MakeJob = Callable[..., NewJob]
HOST = socket.gethostname()


class Bells:
    """Doorbells of fake runtimes registered as owners of the database."""

    def __init__(self, engine: SqliteEngine) -> None:
        self.engine = engine
        self.bells: dict[str, Doorbell] = {}

    def add(self, name: str, queues: list[str], *, host: str = HOST) -> Doorbell:
        bell = self.bells[name] = Doorbell()
        self.engine.register_owner(
            Owner(id=name, host=host, pid=1, started_at_ms=0, heartbeat_at_ms=0,
                  queues=queues, doorbell=bell.address)
        )  # fmt: skip
        return bell

    def rung(self) -> dict[str, int]:
        """How often each doorbell was rung since the last look (those rung at all)."""
        counts = {name: bell.drain() for name, bell in self.bells.items()}
        return {name: n for name, n in counts.items() if n}

    def close(self) -> None:
        for bell in self.bells.values():
            bell.close()


@pytest.fixture
def admin(file_engine: SqliteEngine) -> SqliteEngine:
    """The connection that registers the fake runtimes."""
    return file_engine


@pytest.fixture
def bells(admin: SqliteEngine) -> Iterator[Bells]:
    made = Bells(admin)
    yield made
    made.close()


@pytest.fixture
def producer(file_path: str, open_engine: Callable[..., SqliteEngine]) -> SqliteEngine:
    """A producer's engine: another connection, which rings."""
    return open_engine(file_path)


def test_an_enqueue_rings_the_runtimes_of_this_host_that_serve_its_queue(
    bells: Bells, producer: SqliteEngine, make_job: MakeJob
) -> None:
    bells.add("images", ["images"])
    bells.add("both", ["images", "mail"])
    bells.add("mail", ["mail"])
    bells.add("elsewhere", ["images"], host=HOST + "-other")
    producer.enqueue([make_job(queue="images")])
    assert bells.rung() == {"images": 1, "both": 1}
    producer.enqueue([make_job(queue="mail"), make_job(queue="images")])
    assert bells.rung() == {"images": 1, "both": 1, "mail": 1}  # one ring each per commit
    producer.enqueue([make_job(queue="reports", delay_s=60)])
    assert bells.rung() == {}  # nobody serves it


def test_a_delayed_job_rings_too(bells: Bells, producer: SqliteEngine, make_job: MakeJob) -> None:
    # The runtime learns the job's time from a claim that comes up short.
    bells.add("r", ["q"])
    producer.enqueue([make_job(queue="q", delay_s=60)])
    assert bells.rung() == {"r": 1}


def test_an_engine_never_rings_its_own_runtime(
    bells: Bells, producer: SqliteEngine, make_job: MakeJob
) -> None:
    own = bells.add("own", ["q"])
    bells.add("other", ["q"])
    producer.own_doorbell = own.address
    assert producer.own_doorbell == own.address
    producer.enqueue([make_job(queue="q")])
    assert bells.rung() == {"other": 1}


def test_a_batch_rings_once_after_its_commit(
    bells: Bells, producer: SqliteEngine, make_job: MakeJob
) -> None:
    bells.add("q1", ["q1"])
    bells.add("q2", ["q2"])
    with producer.batch():
        producer.enqueue([make_job(queue="q1")])
        producer.enqueue([make_job(queue="q1")])
        assert bells.rung() == {}  # not before the commit
        producer.enqueue([make_job(queue="q2")])
    assert bells.rung() == {"q1": 1, "q2": 1}


def test_what_is_rolled_back_rings_nobody(
    bells: Bells, producer: SqliteEngine, make_job: MakeJob
) -> None:
    bells.add("r", ["q"])
    with pytest.raises(RuntimeError), producer.batch():
        producer.enqueue([make_job(queue="q")])
        raise RuntimeError("changed my mind")
    assert bells.rung() == {}
    assert producer.count("q")[JobState.WAITING] == 0
    producer.enqueue([make_job(queue="other")])  # the next commit does not ring for it
    assert bells.rung() == {}


def test_a_failed_write_rings_nobody(
    bells: Bells, producer: SqliteEngine, make_job: MakeJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    bells.add("r", ["q"])
    original = producer._insert_keyless

    def fail_after_announcing(rows: list[tuple[Any, ...]]) -> None:
        original(rows)
        raise StorageError("disk full")

    monkeypatch.setattr(producer, "_insert_keyless", fail_after_announcing)
    with pytest.raises(StorageError):
        producer.enqueue([make_job(queue="q")])
    assert bells.rung() == {}
    monkeypatch.undo()
    producer.enqueue([make_job(queue="other")])
    assert bells.rung() == {}


def test_retry_promote_resume_and_a_cancel_request_ring_the_jobs_queue(
    bells: Bells, admin: SqliteEngine, producer: SqliteEngine, make_job: MakeJob
) -> None:
    bells.add("r", ["q"])
    [delayed, _, second] = admin.enqueue(
        [make_job(queue="q", delay_s=60), make_job(queue="q"), make_job(queue="q")]
    )
    assert bells.rung() == {"r": 1}  # the admin's engine rings too
    assert producer.cancel(second) is JobState.CANCELLED
    assert bells.rung() == {}  # waiting -> cancelled: nothing for a runtime to do
    producer.retry(second)
    assert bells.rung() == {"r": 1}
    producer.promote(delayed)
    assert bells.rung() == {"r": 1}
    [held] = admin.claim("q", "w", 1, 30_000)
    assert held.id != second
    assert producer.cancel(held.id) is JobState.ACTIVE  # asked to stop: its runtime checks
    assert bells.rung() == {"r": 1}
    producer.set_paused("q", True)
    assert bells.rung() == {}
    producer.set_paused("q", False)
    assert bells.rung() == {"r": 1}
    producer.cancel(second)
    assert producer.retry_failed("q") == [second]
    assert bells.rung() == {"r": 1}
    assert producer.retry_failed("q") == []  # nothing retried: no ring
    assert bells.rung() == {}


def test_jobs_handed_back_ring_the_runtimes_that_serve_them(
    bells: Bells, producer: SqliteEngine, make_job: MakeJob, clock: FakeClock
) -> None:
    # A runtime that stops (release), hands back unstarted jobs (unclaim), releases a dead
    # owner's leases (release_owner) or rescues expired ones (rescue_expired): the other
    # runtimes serving those queues take them at once, without waiting for a poll.
    bells.add("q", ["q"])
    bells.add("other", ["other"])
    producer.enqueue([make_job(queue="q") for _ in range(4)] + [make_job(queue="x")])
    bells.rung()
    a, b, c, d = producer.claim("q", "w", 4, 1000)
    assert None not in (a.token, b.token, c.token, d.token)
    assert producer.release([LeaseRef(a.id, a.token or 0)]) == [a.id]
    assert bells.rung() == {"q": 1}
    assert producer.unclaim([LeaseRef(b.id, b.token or 0)]) == [b.id]
    assert bells.rung() == {"q": 1}
    assert producer.release_owner("w", as_stall=False) == [c.id, d.id]
    assert bells.rung() == {"q": 1}
    assert producer.release([LeaseRef(a.id, 12345)]) == []  # nothing handed back
    assert bells.rung() == {}
    [e] = producer.claim("q", "w", 1, 1000)
    clock.advance(2000)  # its lease expired
    assert producer.rescue_expired().requeued == [e.id]
    assert bells.rung() == {"q": 1}
    assert producer.rescue_expired().requeued == []
    assert bells.rung() == {}


def test_claims_settlements_and_renewals_ring_nobody(
    bells: Bells, producer: SqliteEngine, make_job: MakeJob
) -> None:
    bells.add("r", ["q"])
    producer.enqueue([make_job(queue="q") for _ in range(3)])
    bells.rung()
    [a, b] = producer.claim("q", "w", 2, 30_000)
    assert a.token is not None and b.token is not None
    producer.renew([LeaseRef(a.id, a.token)], 30_000)
    producer.settle_and_claim([Completion(a.id, a.token)], [], None)
    producer.heartbeat("r")
    assert bells.rung() == {}


def test_a_stale_doorbell_is_harmless(
    bells: Bells, producer: SqliteEngine, make_job: MakeJob
) -> None:
    dead = bells.add("dead", ["q"])
    live = bells.add("live", ["q"])
    dead.close()  # its runtime died without removing its owner row
    [job_id] = producer.enqueue([make_job(queue="q")])
    assert producer.get(job_id).state is JobState.WAITING
    assert live.drain() == 1


def test_an_owner_that_registers_later_is_rung_once_the_cache_expires(
    bells: Bells, producer: SqliteEngine, make_job: MakeJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    ringer = producer._ringer
    assert ringer is not None
    monkeypatch.setattr(ringer, "_clock", lambda: now[0])
    producer.enqueue([make_job(queue="q")])  # reads the doorbells: none yet
    bells.add("late", ["q"])
    producer.enqueue([make_job(queue="q")])
    assert bells.rung() == {}  # within the cache period: its poll finds the job
    now[0] += 1.1
    producer.enqueue([make_job(queue="q")])
    assert bells.rung() == {"late": 1}


def test_a_memory_database_rings_nobody(open_engine: Callable[..., SqliteEngine]) -> None:
    engine = open_engine(":memory:")
    assert engine._ringer is None

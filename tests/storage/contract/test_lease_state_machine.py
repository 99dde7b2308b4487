"""A Hypothesis state machine of the lease lifecycle against each real engine (one test per
engine kind, each example on a fresh database).

The model is ``rota.domain.lifecycle``: every rule applies the pure function to the
model's copy of the job and the operation to the engine, and the two must agree field by
field. Several owners claim, renew, complete and fail; owners crash (forget their leases,
or are released as dead); the clock moves; the rescue sweep runs.

Owners also stop cleanly (their leases handed back uncounted) and pools crash (their
running jobs released as stalls).

Invariants: no completion or renewal by a non-holder; every job in exactly one state; a
job's attempt number is exactly the attempts counted against it (claims, less the clean
hand-backs), so it never exceeds ``max_attempts``, and an attempt that ends without a
settlement (a dead owner, a crashed pool, an expired lease) is counted; stalls never
exceed ``max_stalls + 1``; a holder that keeps renewing is never rescued; no job is lost;
the event stream is exactly the events of the model's transitions, in order.
"""

from __future__ import annotations

import random
from contextlib import ExitStack

import msgspec
import pytest
from engine_kinds import EngineKind, scratch_directory
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from rota.domain import FailureKind, JobOptions, JobState, backoff, lifecycle
from rota.domain.event import EventKind
from rota.domain.job import Job
from rota.errors import LeaseLost
from rota.storage.engine import FailedAttempt, Failure, LeaseRef

TTL_MS = 10_000
QUEUE = "q"
OWNERS = ("w1", "w2", "w3")
STEADY = "steady"  # renews before every tick of the clock: must never lose a lease
START_MS = 1_700_000_000_000

#: fields the engine and the model must agree on (the token is the engine's to draw)
#: (priority, delay_s, max_attempts, max_stalls, backoff wait_s) of an enqueued job
JOB_SHAPES = st.tuples(
    st.integers(-2, 2),
    st.sampled_from([None, 0.0, 1.0, 15.0]),
    st.integers(1, 4),
    st.integers(0, 3),
    st.sampled_from([0.0, 1.0, 20.0]),
)

COMPARED = (
    "state", "priority", "run_at_ms", "attempt", "max_attempts", "stalls", "max_stalls",
    "owner", "token", "lease_expires_at_ms", "cancel_requested", "finished_at_ms", "result",
    "error",
)  # fmt: skip


#: the event of the state an attempt ends in
OUTCOME = {
    JobState.WAITING: EventKind.RETRYING,
    JobState.DELAYED: EventKind.RETRYING,
    JobState.FAILED: EventKind.FAILED,
    JobState.CANCELLED: EventKind.CANCELLED,
}


class Clock:
    def __init__(self) -> None:
        self.now = START_MS

    def __call__(self) -> int:
        return self.now


class LeaseLifecycle(RuleBasedStateMachine):
    leases = Bundle("leases")
    kind: EngineKind
    """The engine kind under test (a subclass per kind sets it)."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.database = ExitStack()
        address = self.database.enter_context(
            self.kind.database(self.database.enter_context(scratch_directory()))
        )
        self.engine = self.kind.open(address, clock=self.clock, rng=random.Random(0))
        self.model: dict[int, Job] = {}
        self.counted: dict[int, int] = {}
        """Attempts counted against each job: claims, less clean hand-backs."""
        self.held: dict[str, set[tuple[int, int]]] = {o: set() for o in (*OWNERS, STEADY)}
        self.events: list[tuple[EventKind, int, int, bytes | None]] = []

    def teardown(self) -> None:
        self.engine.close()
        self.database.close()

    # -- helpers ----------------------------------------------------------------------

    def expect(self, job: Job) -> None:
        self.model[job.id] = job

    def emit(self, kind: EventKind, job: Job, data: str | None = None) -> None:
        self.events.append((kind, job.id, job.attempt, None if data is None else data.encode()))

    def stalled(self, before: Job, after: Job) -> None:
        """The events of a job taken back as a stall: STALLED, then how it ended."""
        self.emit(EventKind.STALLED, after, lifecycle.stall_error(before))
        self.emit(OUTCOME[after.state], after, after.error)

    def holds(self, job_id: int, token: int) -> bool:
        job = self.model[job_id]
        return job.state is JobState.ACTIVE and job.token == token

    def promote_model(self) -> None:
        for job in list(self.model.values()):
            if job.queue == QUEUE and lifecycle.is_due(job, self.clock.now):
                self.expect(lifecycle.promote(job, self.clock.now))

    # -- rules ------------------------------------------------------------------------

    @initialize(jobs=st.lists(JOB_SHAPES, min_size=2, max_size=6))
    def enqueue_some(self, jobs: list[tuple[int, float | None, int, int, float]]) -> None:
        for shape in jobs:
            self.enqueue(*shape)

    @rule(shape=JOB_SHAPES)
    def enqueue_one(self, shape: tuple[int, float | None, int, int, float]) -> None:
        self.enqueue(*shape)

    def enqueue(
        self,
        priority: int,
        delay_s: float | None,
        max_attempts: int,
        max_stalls: int,
        wait_s: float,
    ) -> None:
        options = JobOptions(
            queue=QUEUE,
            priority=priority,
            delay_s=delay_s,
            max_attempts=max_attempts,
            max_stalls=max_stalls,
            backoff=backoff.fixed(wait_s),
        )
        new = lifecycle.new_job("task", b"{}", options, self.clock.now)
        [job_id] = self.engine.enqueue([new])
        assert job_id not in self.model
        stored = self.engine.get(job_id)
        assert stored.state is (JobState.DELAYED if new.delayed else JobState.WAITING)
        assert (stored.run_at_ms, stored.attempt, stored.stalls) == (new.run_at_ms, 0, 0)
        self.expect(stored)
        self.emit(EventKind.ENQUEUED, stored)

    @rule(target=leases, owner=st.sampled_from((*OWNERS, STEADY)), n=st.integers(1, 3))
    def claim(self, owner: str, n: int) -> object:
        self.promote_model()
        ready = sorted(
            (j for j in self.model.values() if j.state is JobState.WAITING and j.queue == QUEUE),
            key=lambda j: (j.priority, j.run_at_ms, j.id),
        )
        claimed = self.engine.claim(QUEUE, owner, n, TTL_MS)
        assert [j.id for j in claimed] == [j.id for j in ready[:n]]
        out = []
        for job in claimed:
            assert job.token is not None
            assert job.token not in {t for _, t in self.held[owner]}
            self.expect(
                lifecycle.claim(self.model[job.id], owner, job.token, self.clock.now, TTL_MS)
            )
            self.emit(EventKind.ACTIVE, self.model[job.id])
            self.counted[job.id] = self.counted.get(job.id, 0) + 1
            self.held[owner].add((job.id, job.token))
            out.append((owner, job.id, job.token))
        return multiple(*out)

    @rule(owner=st.sampled_from(OWNERS))
    def renew_all(self, owner: str) -> None:
        self.renew(owner)

    def renew(self, owner: str) -> None:
        refs = sorted(self.held[owner])
        result = self.engine.renew([LeaseRef(j, t) for j, t in refs], TTL_MS)
        holding = {j for j, t in refs if self.holds(j, t)}
        assert set(result.renewed) == holding
        assert set(result.lost) == {j for j, _ in refs} - holding
        assert set(result.cancel_requested) == {
            j for j in holding if self.model[j].cancel_requested
        }
        for job_id in holding:
            token = self.model[job_id].token
            assert token is not None
            self.expect(lifecycle.renew(self.model[job_id], token, self.clock.now, TTL_MS))
        if owner == STEADY:
            assert result.lost == [], "a holder that keeps renewing lost its lease"
        if result.lost:
            event("renew: stale token reported lost")

    @rule(lease=consumes(leases), result=st.binary(max_size=8))
    def complete(self, lease: tuple[str, int, int], result: bytes) -> None:
        owner, job_id, token = lease
        self.held[owner].discard((job_id, token))
        before = self.engine.get(job_id)
        if self.holds(job_id, token):
            self.engine.complete(job_id, token, result)
            self.expect(lifecycle.complete(self.model[job_id], token, result, self.clock.now))
            self.emit(EventKind.COMPLETED, self.model[job_id])
        else:
            if owner == STEADY:
                raise AssertionError("the steady owner lost a lease it kept renewing")
            with pytest.raises(LeaseLost):
                self.engine.complete(job_id, token, result)
            event("complete: stale token refused")
            assert self.engine.get(job_id) == before, "a non-holder changed the job"

    @rule(
        lease=consumes(leases),
        kind=st.sampled_from(list(FailureKind)),
        delay_ms=st.sampled_from([None, 0, 500]),
        settle=st.booleans(),
    )
    def fail(
        self, lease: tuple[str, int, int], kind: FailureKind, delay_ms: int | None, settle: bool
    ) -> None:
        """A failed attempt, alone (``fail``) or in a settlement (``settle_and_claim``,
        which reports what became of it: the worker's log lines come from that)."""
        owner, job_id, token = lease
        self.held[owner].discard((job_id, token))
        before = self.engine.get(job_id)
        failure = Failure(job_id, token, "boom", kind=kind, delay_ms=delay_ms)
        if self.holds(job_id, token):
            expected = lifecycle.fail(
                self.model[job_id], token, "boom", self.clock.now, kind=kind, delay_ms=delay_ms
            )
            if settle:
                settled = self.engine.settle_and_claim([], [failure], None)
                assert settled.lost == []
                assert settled.failed == [
                    FailedAttempt(job_id, expected.state, expected.run_at_ms, "boom")
                ]
            else:
                assert self.engine.fail(failure) is expected.state
            self.expect(expected)
            self.emit(OUTCOME[expected.state], expected, "boom")
        else:
            if settle:
                settled = self.engine.settle_and_claim([], [failure], None)
                assert (settled.lost, settled.failed) == ([job_id], [])
            else:
                with pytest.raises(LeaseLost):
                    self.engine.fail(failure)
            event("fail: stale token refused")
            assert self.engine.get(job_id) == before, "a non-holder changed the job"

    @rule(owner=st.sampled_from(OWNERS), released=st.booleans())
    def crash_owner(self, owner: str, released: bool) -> None:
        """The owner dies: it forgets its leases. If ``released``, a restart on the same
        host notices the dead pid and takes its leases back at once (as stalls)."""
        self.held[owner].clear()
        if released:
            ids = self.engine.release_owner(owner, as_stall=True)
            mine = [
                j for j in self.model.values() if j.state is JobState.ACTIVE and j.owner == owner
            ]
            assert sorted(ids) == sorted(j.id for j in mine)
            for job in mine:
                self.expect(lifecycle.release(job, self.clock.now, as_stall=True))
                self.stalled(job, self.model[job.id])

    @rule(owner=st.sampled_from(OWNERS))
    def shut_down_owner(self, owner: str) -> None:
        """The owner stops cleanly: every lease it holds is handed back, uncounted (a job
        asked to cancel ends cancelled)."""
        self.held[owner].clear()
        ids = self.engine.release_owner(owner, as_stall=False)
        mine = [j for j in self.model.values() if j.state is JobState.ACTIVE and j.owner == owner]
        assert sorted(ids) == sorted(j.id for j in mine)
        for job in mine:
            after = lifecycle.release(job, self.clock.now, as_stall=False)
            self.expect(after)
            if after.state is JobState.WAITING:
                self.counted[job.id] -= 1
            else:
                self.emit(EventKind.CANCELLED, after, after.error)

    @rule(owner=st.sampled_from(OWNERS), crashed=st.booleans())
    def pool_stops(self, owner: str, crashed: bool) -> None:
        """The owner's pool stops with its jobs running: cleanly (handed back
        uncounted), or because it crashed (released as stalls: counted)."""
        refs = sorted(self.held[owner])
        self.held[owner].clear()
        ids = self.engine.release([LeaseRef(j, t) for j, t in refs], as_stall=crashed)
        holding = sorted(j for j, t in refs if self.holds(j, t))
        assert sorted(ids) == holding
        for job_id in holding:
            job = self.model[job_id]
            after = lifecycle.release(job, self.clock.now, as_stall=crashed)
            self.expect(after)
            if crashed:
                self.stalled(job, after)
            elif after.state is JobState.WAITING:
                self.counted[job_id] -= 1
            else:
                self.emit(EventKind.CANCELLED, after, after.error)

    @rule(ms=st.sampled_from([1, 1_000, TTL_MS // 2, TTL_MS - 1]), sweep=st.booleans())
    def tick(self, ms: int, sweep: bool) -> None:
        """Time passes; the steady owner renews first, as its renewer would (every ttl/3);
        then, maybe, the Scheduler's sweep runs."""
        self.renew(STEADY)
        self.clock.now += ms
        if sweep:
            self.rescue()

    @rule(ms=st.sampled_from([TTL_MS, 3 * TTL_MS]))
    @precondition(lambda self: not self.held[STEADY])
    def long_pause(self, ms: int) -> None:
        """A long pause, only while the steady owner holds nothing."""
        self.clock.now += ms

    @rule()
    def rescue(self) -> None:
        expired = [j for j in self.model.values() if lifecycle.is_expired(j, self.clock.now)]
        result = self.engine.rescue_expired()
        rescued = {*result.requeued, *result.failed, *result.cancelled}
        assert rescued == {j.id for j in expired}
        reported = {job.id: job for job in result.stalled}  # as they are now: for the logs
        assert reported.keys() == rescued
        assert not any(self.model[j].owner == STEADY for j in rescued), "steady holder rescued"
        for job in expired:
            after = lifecycle.stall(job, self.clock.now)
            assert reported[job.id] == after
            self.expect(after)
            self.stalled(job, after)
            bucket = {
                JobState.FAILED: result.failed,
                JobState.CANCELLED: result.cancelled,
            }.get(after.state, result.requeued)
            assert job.id in bucket
            event(f"rescue: {after.state}")

    @rule(data=st.data())
    @precondition(lambda self: bool(self.model))
    def cancel(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.model)))
        before = self.model[job_id]
        expected = lifecycle.cancel(before, self.clock.now)
        assert self.engine.cancel(job_id) is expected.state
        self.expect(expected)
        if before.state in (JobState.WAITING, JobState.DELAYED):
            self.emit(EventKind.CANCELLED, expected, expected.error)

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def engine_agrees_with_model_and_nothing_is_lost(self) -> None:
        stored = {j.id: j for j in self.engine.list_jobs(limit=10_000)}
        assert stored.keys() == self.model.keys(), "a job was lost or appeared"
        for job_id, job in stored.items():
            want = msgspec.structs.asdict(self.model[job_id])
            got = msgspec.structs.asdict(job)
            diff = {f: (got[f], want[f]) for f in COMPARED if got[f] != want[f]}
            assert not diff, f"job {job_id}: engine vs model {diff}"

    @invariant()
    def every_job_in_exactly_one_state(self) -> None:
        seen: dict[int, JobState] = {}
        for state in JobState:
            for job in self.engine.list_jobs(state=state, limit=10_000):
                assert job.id not in seen, f"job {job.id} in {seen[job.id]} and {state}"
                seen[job.id] = state
        assert seen.keys() == self.model.keys()
        counts = self.engine.count()
        assert sum(counts.values()) == len(self.model)
        assert counts == {s: sum(1 for v in seen.values() if v is s) for s in JobState}

    @invariant()
    def events_are_those_of_the_model_transitions(self) -> None:
        got = [(e.kind, e.job_id, e.attempt, e.data) for e in self.engine.events(limit=10**6)]
        assert got == self.events

    @invariant()
    def every_attempt_counts_once_and_none_runs_past_max_attempts(self) -> None:
        for job_id, job in self.model.items():
            assert job.attempt == self.counted.get(job_id, 0), f"job {job_id}"
            assert job.attempt <= job.max_attempts, f"job {job_id}: attempt {job.attempt}"
            assert job.stalls <= job.max_stalls + 1, f"job {job_id}: {job.stalls} stalls"


SETTINGS = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_lease_lifecycle(engine_kind: EngineKind) -> None:
    machine = type(f"LeaseLifecycle[{engine_kind.name}]", (LeaseLifecycle,), {"kind": engine_kind})
    run_state_machine_as_test(machine, settings=SETTINGS)

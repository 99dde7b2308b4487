"""Typed storage operations: one request per ``Engine`` operation, carrying its result type.

An ``Op[T]`` is a frozen msgspec Struct naming one engine operation and its arguments;
``op.apply(engine)`` runs it on an engine and returns a ``T``. Everything that reaches the
database goes through one generic door that takes any op: ``StoreClient.run(op)`` inside a
runtime (the Store runs ops in batches, one transaction per batch: group commit), and
``StorageAccess.run(op)`` / ``run_sync(op)`` for an App (through its runtime's Store when
called on the runtime's loop, else on a per-thread engine)::

    from rota.storage import ops

    job = await store.run(ops.Get(job_id))        # mypy knows: Job
    state = await store.run(ops.Retry(job_id))     # JobState

Adding an operation is one ``Op`` class here plus the method on each engine (declared in
the ``Engine`` protocol): no Store message, client method or string to add.
"""

from __future__ import annotations

import logging
from typing import Any, Generic, TypeVar

import msgspec

from rota.domain.event import Event, LogEntry, Owner
from rota.domain.job import FINISHED_STATES, Job, JobState, NewJob
from rota.storage.engine import (
    ClaimRequest,
    Completion,
    Engine,
    Failure,
    JobRecord,
    JobSummary,
    LeaseRef,
    OwnerRecord,
    Renewed,
    Rescued,
    Settled,
)

__all__ = [
    "AddLog",
    "Cancel",
    "CancelRequested",
    "Claim",
    "Complete",
    "Count",
    "Enqueue",
    "EnqueueAndClaim",
    "Events",
    "Fail",
    "Get",
    "GetByKey",
    "GetRecord",
    "Heartbeat",
    "LastEventId",
    "ListJobs",
    "ListOwners",
    "ListSummaries",
    "Logs",
    "Op",
    "OwnerRecords",
    "PausedQueues",
    "ProbeWrite",
    "Promote",
    "PromoteDue",
    "Prune",
    "PruneEvents",
    "Purge",
    "QuarantineCorrupt",
    "Queues",
    "QueuesWithWork",
    "RegisterOwner",
    "Release",
    "ReleaseOwner",
    "Remove",
    "RemoveOwner",
    "Renew",
    "RescueExpired",
    "Retry",
    "RetryFailed",
    "SetPaused",
    "SetProgress",
    "SettleAndClaim",
    "Unclaim",
    "UnknownStates",
]

log = logging.getLogger("rota.store")

T = TypeVar("T")


class Op(msgspec.Struct, Generic[T], frozen=True):
    """One storage operation whose result is a ``T``: ``apply(engine)`` runs it."""

    def apply(self, engine: Engine) -> T:
        """Run the operation on ``engine`` (inside the caller's transaction, if any)."""
        raise NotImplementedError(f"{type(self).__name__}.apply")


# -- jobs in and out (the hot path) -----------------------------------------------------


class Enqueue(Op[list[int]], frozen=True):
    """``Engine.enqueue``: the new jobs' ids, in order."""

    jobs: list[NewJob]

    def apply(self, engine: Engine) -> list[int]:
        return engine.enqueue(self.jobs)


class EnqueueAndClaim(Op[tuple[list[int], list[Job]]], frozen=True):
    """Enqueue, then claim for an idle local pool, in one transaction (one commit): an
    in-process enqueue to an idle queue starts its job without a second fsync. The claim
    honours the queue's order, so it takes the new jobs only if nothing is ahead of them.
    Returns (ids, claimed). A claim that fails claims nothing and never fails the enqueue."""

    jobs: list[NewJob]
    claim: ClaimRequest

    def apply(self, engine: Engine) -> tuple[list[int], list[Job]]:
        ids = engine.enqueue(self.jobs)
        c = self.claim
        try:
            claimed = engine.claim(c.queue, c.owner, c.n, c.ttl_ms)
        except Exception as exc:  # if it broke the transaction, the commit reports it
            log.warning("claim after enqueue failed (the jobs wait for the pool): %r", exc)
            claimed = []
        return ids, claimed


class Claim(Op[list[Job]], frozen=True):
    """``Engine.claim``: the jobs leased, active, in claim order."""

    request: ClaimRequest

    def apply(self, engine: Engine) -> list[Job]:
        r = self.request
        return engine.claim(r.queue, r.owner, r.n, r.ttl_ms)


class Renew(Op[Renewed], frozen=True):
    """``Engine.renew``."""

    leases: list[LeaseRef]
    ttl_ms: int

    def apply(self, engine: Engine) -> Renewed:
        return engine.renew(self.leases, self.ttl_ms)


class CancelRequested(Op[list[int]], frozen=True):
    """``Engine.cancel_requested``: the held jobs asked to cancel (a read)."""

    leases: list[LeaseRef]

    def apply(self, engine: Engine) -> list[int]:
        return engine.cancel_requested(self.leases)


class Complete(Op[None], frozen=True):
    """``Engine.complete``; ``LeaseLost`` if the token no longer holds."""

    completion: Completion

    def apply(self, engine: Engine) -> None:
        c = self.completion
        engine.complete(c.job_id, c.token, c.result)


class Fail(Op[JobState], frozen=True):
    """``Engine.fail``: the job's new state; ``LeaseLost`` as for ``Complete``."""

    failure: Failure

    def apply(self, engine: Engine) -> JobState:
        return engine.fail(self.failure)


class SettleAndClaim(Op[Settled], frozen=True):
    """``Engine.settle_and_claim``: the WorkerPool's fast path, one transaction."""

    completions: list[Completion]
    failures: list[Failure]
    claim: ClaimRequest | None

    def apply(self, engine: Engine) -> Settled:
        return engine.settle_and_claim(self.completions, self.failures, self.claim)


class Unclaim(Op[list[int]], frozen=True):
    """``Engine.unclaim``: hand back leases whose attempt never started."""

    leases: list[LeaseRef]

    def apply(self, engine: Engine) -> list[int]:
        return engine.unclaim(self.leases)


class Release(Op[list[int]], frozen=True):
    """``Engine.release``: take back interrupted attempts (``as_stall``: they count)."""

    leases: list[LeaseRef]
    as_stall: bool = False

    def apply(self, engine: Engine) -> list[int]:
        return engine.release(self.leases, as_stall=self.as_stall)


# -- maintenance ------------------------------------------------------------------------


class ReleaseOwner(Op[list[int]], frozen=True):
    """``Engine.release_owner``: every lease an owner holds."""

    owner: str
    as_stall: bool

    def apply(self, engine: Engine) -> list[int]:
        return engine.release_owner(self.owner, as_stall=self.as_stall)


class PromoteDue(Op[int], frozen=True):
    """``Engine.promote_due``: due delayed jobs of one queue (or all) to waiting."""

    queue: str | None = None

    def apply(self, engine: Engine) -> int:
        return engine.promote_due(self.queue)


class RescueExpired(Op[Rescued], frozen=True):
    """``Engine.rescue_expired``: every expired lease but ``spare`` is a stall."""

    spare: list[LeaseRef] = []

    def apply(self, engine: Engine) -> Rescued:
        return engine.rescue_expired(self.spare)


class QuarantineCorrupt(Op[list[int]], frozen=True):
    """``Engine.quarantine_corrupt``: fail for good the rows in an unknown state."""

    def apply(self, engine: Engine) -> list[int]:
        return engine.quarantine_corrupt()


class Prune(Op[int], frozen=True):
    """``Engine.prune``: delete finished jobs (retention); how many."""

    queue: str | None = None
    states: frozenset[JobState] = FINISHED_STATES
    older_than_ms: int | None = None
    keep_last: int | None = None

    def apply(self, engine: Engine) -> int:
        return engine.prune(
            queue=self.queue,
            states=self.states,
            older_than_ms=self.older_than_ms,
            keep_last=self.keep_last,
        )


class PruneEvents(Op[int], frozen=True):
    """``Engine.prune_events``: delete events older than ``older_than_ms``."""

    older_than_ms: int

    def apply(self, engine: Engine) -> int:
        return engine.prune_events(self.older_than_ms)


class ProbeWrite(Op[None], frozen=True):
    """``Engine.probe_write``: can a write be made now (nothing changes)."""

    def apply(self, engine: Engine) -> None:
        engine.probe_write()


# -- owners (runtimes) ------------------------------------------------------------------


class RegisterOwner(Op[None], frozen=True):
    """``Engine.register_owner``."""

    owner: Owner

    def apply(self, engine: Engine) -> None:
        engine.register_owner(self.owner)


class Heartbeat(Op[None], frozen=True):
    """``Engine.heartbeat`` (``pools``: None keeps those recorded)."""

    owner_id: str
    pools: dict[str, Any] | None = None

    def apply(self, engine: Engine) -> None:
        engine.heartbeat(self.owner_id, self.pools)


class RemoveOwner(Op[None], frozen=True):
    """``Engine.remove_owner``."""

    owner_id: str

    def apply(self, engine: Engine) -> None:
        engine.remove_owner(self.owner_id)


class ListOwners(Op[list[Owner]], frozen=True):
    """``Engine.list_owners``: the owners the runtime can rely on."""

    def apply(self, engine: Engine) -> list[Owner]:
        return engine.list_owners()


class OwnerRecords(Op[list[OwnerRecord]], frozen=True):
    """``Engine.owner_records``: every owner row, corrupt ones marked."""

    def apply(self, engine: Engine) -> list[OwnerRecord]:
        return engine.owner_records()


# -- queues -----------------------------------------------------------------------------


class SetPaused(Op[None], frozen=True):
    """``Engine.set_paused``."""

    queue: str
    paused: bool

    def apply(self, engine: Engine) -> None:
        engine.set_paused(self.queue, self.paused)


class PausedQueues(Op[set[str]], frozen=True):
    """``Engine.paused_queues``."""

    def apply(self, engine: Engine) -> set[str]:
        return engine.paused_queues()


class Queues(Op[list[str]], frozen=True):
    """``Engine.queues``: every queue that has jobs."""

    def apply(self, engine: Engine) -> list[str]:
        return engine.queues()


class QueuesWithWork(Op[list[str]], frozen=True):
    """``Engine.queues_with_work``: the queues with unfinished jobs."""

    def apply(self, engine: Engine) -> list[str]:
        return engine.queues_with_work()


class Count(Op[dict[JobState, int]], frozen=True):
    """``Engine.count``: jobs by state (of one queue, or all)."""

    queue: str | None = None

    def apply(self, engine: Engine) -> dict[JobState, int]:
        return engine.count(self.queue)


class RetryFailed(Op[list[int]], frozen=True):
    """``Engine.retry_failed``: the ids retried."""

    queue: str
    limit: int = 1000

    def apply(self, engine: Engine) -> list[int]:
        return engine.retry_failed(self.queue, limit=self.limit)


class Purge(Op[int], frozen=True):
    """``Engine.purge``: delete a queue's waiting and delayed jobs; how many."""

    queue: str

    def apply(self, engine: Engine) -> int:
        return engine.purge(self.queue)


# -- one job ----------------------------------------------------------------------------


class Get(Op[Job], frozen=True):
    """``Engine.get``; ``JobNotFound``."""

    job_id: int

    def apply(self, engine: Engine) -> Job:
        return engine.get(self.job_id)


class GetByKey(Op[Job], frozen=True):
    """``Engine.get_by_key``; ``JobNotFound``."""

    key: str

    def apply(self, engine: Engine) -> Job:
        return engine.get_by_key(self.key)


class GetRecord(Op[JobRecord], frozen=True):
    """``Engine.job_record``: the row as stored, for display."""

    job_id: int

    def apply(self, engine: Engine) -> JobRecord:
        return engine.job_record(self.job_id)


class Cancel(Op[JobState], frozen=True):
    """``Engine.cancel``: the state after (``active``: cancel requested)."""

    job_id: int

    def apply(self, engine: Engine) -> JobState:
        return engine.cancel(self.job_id)


class Retry(Op[JobState], frozen=True):
    """``Engine.retry``: a failed or cancelled job runs again."""

    job_id: int

    def apply(self, engine: Engine) -> JobState:
        return engine.retry(self.job_id)


class Promote(Op[JobState], frozen=True):
    """``Engine.promote``: a delayed job is ready now."""

    job_id: int

    def apply(self, engine: Engine) -> JobState:
        return engine.promote(self.job_id)


class Remove(Op[None], frozen=True):
    """``Engine.remove``: delete a job that is not active."""

    job_id: int

    def apply(self, engine: Engine) -> None:
        engine.remove(self.job_id)


class SetProgress(Op[None], frozen=True):
    """``Engine.set_progress``, fenced by the token."""

    job_id: int
    token: int
    progress: bytes

    def apply(self, engine: Engine) -> None:
        engine.set_progress(self.job_id, self.token, self.progress)


class AddLog(Op[None], frozen=True):
    """``Engine.add_log``, fenced by the token."""

    job_id: int
    token: int
    message: str

    def apply(self, engine: Engine) -> None:
        engine.add_log(self.job_id, self.token, self.message)


class Logs(Op[list[LogEntry]], frozen=True):
    """``Engine.logs``: a job's log lines, oldest first."""

    job_id: int
    limit: int = 100
    offset: int = 0

    def apply(self, engine: Engine) -> list[LogEntry]:
        return engine.logs(self.job_id, limit=self.limit, offset=self.offset)


# -- listings and events ----------------------------------------------------------------


class ListJobs(Op[list[Job]], frozen=True):
    """``Engine.list_jobs``: one page, in id order."""

    queue: str | None = None
    state: JobState | None = None
    limit: int = 100
    offset: int = 0

    def apply(self, engine: Engine) -> list[Job]:
        return engine.list_jobs(
            queue=self.queue, state=self.state, limit=self.limit, offset=self.offset
        )


class ListSummaries(Op[list[JobSummary]], frozen=True):
    """``Engine.list_summaries``: the page ``ListJobs`` would return, for display."""

    queue: str | None = None
    state: JobState | None = None
    limit: int = 100
    offset: int = 0

    def apply(self, engine: Engine) -> list[JobSummary]:
        return engine.list_summaries(
            queue=self.queue, state=self.state, limit=self.limit, offset=self.offset
        )


class UnknownStates(Op[tuple[int, list[JobSummary]]], frozen=True):
    """``Engine.unknown_states``: how many rows hold an unknown state, and the first few."""

    limit: int = 20

    def apply(self, engine: Engine) -> tuple[int, list[JobSummary]]:
        return engine.unknown_states(self.limit)


class Events(Op[list[Event]], frozen=True):
    """``Engine.events``: events after ``after_id``, oldest first."""

    after_id: int = 0
    limit: int = 1000
    queue: str | None = None

    def apply(self, engine: Engine) -> list[Event]:
        return engine.events(self.after_id, limit=self.limit, queue=self.queue)


class LastEventId(Op[int], frozen=True):
    """``Engine.last_event_id``: where a new reader starts."""

    def apply(self, engine: Engine) -> int:
        return engine.last_event_id()

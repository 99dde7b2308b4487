"""The lifecycle rules, as pure functions of a job and the current time.

Each function takes a ``Job`` and returns the ``Job`` it becomes; none does I/O, reads a
clock or draws a random number (``u`` is the caller's uniform draw for backoff jitter).
Engines implement the same rules in their own query language; the property tests check
that an engine and these functions agree on every step.

::

                 enqueue
                    │        promote (run_at reached)
        ┌───────────┴──> delayed ──────────┐
        │                  ▲               ▼
        └──────────────> waiting ──claim──> active ──complete──> completed
                           ▲   ▲             │
           fail / stall,   │   └─────────────┤  fail / stall, no backoff
           with backoff ───┼─── delayed <────┤  fail / stall, with backoff
                           │                 ├──> failed     attempts exhausted,
                 release ──┘                 │               unrecoverable, poison
                                             └──> cancelled  cancel (waiting, delayed:
                                                             at once; active: on request)
"""

from __future__ import annotations

import msgspec

from rota.domain.backoff import Backoff, Custom, StoredBackoff
from rota.domain.job import Job, JobOptions, JobState, NewJob
from rota.domain.outcome import FailureKind
from rota.errors import JobStateError, LeaseLost

__all__ = [
    "InvalidTransition",
    "cancel",
    "claim",
    "complete",
    "fail",
    "is_due",
    "is_expired",
    "new_job",
    "promote",
    "release",
    "renew",
    "retry",
    "retry_delay_ms",
    "stall",
    "stall_error",
    "unclaim",
]


class InvalidTransition(JobStateError):
    """The job is not in a state this rule applies to (a ``rota.JobStateError``)."""

    def __init__(self, job: Job, rule: str) -> None:
        super().__init__(f"cannot {rule} job {job.id}: it is {job.state}")


def new_job(name: str, payload: bytes, options: JobOptions, now_ms: int) -> NewJob:
    """The job ``enqueue`` stores: ready now, or delayed until ``run_at``."""
    if options.run_at_ms is not None:
        run_at_ms = options.run_at_ms
    elif options.delay_s is not None:
        run_at_ms = now_ms + round(options.delay_s * 1000)
    else:
        run_at_ms = now_ms
    backoff = options.backoff
    stored: StoredBackoff = backoff.fallback if isinstance(backoff, Custom) else backoff
    return NewJob(
        name=name,
        queue=options.queue,
        payload=payload,
        priority=options.priority,
        run_at_ms=max(run_at_ms, now_ms),
        delayed=run_at_ms > now_ms,
        max_attempts=options.max_attempts,
        max_stalls=options.max_stalls,
        backoff=stored,
        timeout_ms=None if options.timeout_s is None else round(options.timeout_s * 1000),
        key=options.key,
        created_at_ms=now_ms,
    )


def is_due(job: Job, now_ms: int) -> bool:
    """A delayed job whose time has come."""
    return job.state is JobState.DELAYED and job.run_at_ms <= now_ms


def is_expired(job: Job, now_ms: int) -> bool:
    """An active job whose lease ran out (its holder is presumed dead)."""
    return (
        job.state is JobState.ACTIVE
        and job.lease_expires_at_ms is not None
        and job.lease_expires_at_ms <= now_ms
    )


def promote(job: Job, now_ms: int) -> Job:
    """delayed → waiting once ``run_at`` is reached."""
    if not is_due(job, now_ms):
        raise InvalidTransition(job, "promote")
    return _replace(job, state=JobState.WAITING)


def claim(job: Job, owner: str, token: int, now_ms: int, ttl_ms: int) -> Job:
    """waiting → active: a new attempt under a fresh lease."""
    if job.state is not JobState.WAITING:
        raise InvalidTransition(job, "claim")
    return _replace(
        job,
        state=JobState.ACTIVE,
        attempt=job.attempt + 1,
        owner=owner,
        token=token,
        lease_expires_at_ms=now_ms + ttl_ms,
    )


def _check_lease(job: Job, token: int) -> None:
    if job.state is not JobState.ACTIVE or job.token != token:
        raise LeaseLost(job.id, token)


def renew(job: Job, token: int, now_ms: int, ttl_ms: int) -> Job:
    """Extend the lease of its holder; any other token gets ``LeaseLost``."""
    _check_lease(job, token)
    return _replace(job, lease_expires_at_ms=now_ms + ttl_ms)


def complete(job: Job, token: int, result: bytes | None, now_ms: int) -> Job:
    """active → completed, for the lease holder only (fencing)."""
    _check_lease(job, token)
    return _finish(job, JobState.COMPLETED, now_ms, result=result, error=None)


def retry_delay_ms(backoff: Backoff, attempt: int, u: float) -> int:
    """The wait before the next attempt, after ``attempt`` attempts failed."""
    return round(backoff.delay_s(attempt, u) * 1000)


def fail(
    job: Job,
    token: int,
    error: str,
    now_ms: int,
    *,
    kind: FailureKind = FailureKind.ERROR,
    delay_ms: int | None = None,
    u: float = 0.5,
) -> Job:
    """The holder reports a failed attempt.

    ``CANCELLED`` ends the job cancelled; ``UNRECOVERABLE`` or exhausted attempts end it
    failed; otherwise it waits ``delay_ms`` (default: the job's backoff) and runs again.
    """
    if delay_ms is not None and delay_ms < 0:
        raise ValueError(f"delay_ms must be >= 0, got {delay_ms!r}")
    _check_lease(job, token)
    if kind is FailureKind.CANCELLED:
        return _finish(job, JobState.CANCELLED, now_ms, error=error)
    if kind is FailureKind.UNRECOVERABLE or job.attempt >= job.max_attempts:
        return _finish(job, JobState.FAILED, now_ms, error=error)
    return _requeue(job, now_ms, error, delay_ms, u)


def stall_error(job: Job) -> str:
    """The error recorded when a job's lease is found expired."""
    return f"stalled: lease of {job.owner} expired during attempt {job.attempt}"


def stall(job: Job, now_ms: int, *, u: float = 0.5, error: str | None = None) -> Job:
    """An expired lease: the attempt counts as failed and follows the backoff.

    Past ``max_stalls`` the job fails as poison (it may be what kills its workers); a job
    that was asked to cancel ends cancelled instead of running again.
    """
    if not is_expired(job, now_ms):
        raise InvalidTransition(job, "rescue a live lease of")
    return release(job, now_ms, as_stall=True, u=u, error=error)


def release(
    job: Job, now_ms: int, *, as_stall: bool, u: float = 0.5, error: str | None = None
) -> Job:
    """Take an active job back from its owner, whatever its lease.

    ``as_stall=True`` (the owner died, or its pool crashed): a stall, as in ``stall``: the
    interrupted attempt counts. ``as_stall=False`` (the owner is shutting down cleanly):
    the job is ready again at once, in its old place in the queue, and nothing is counted
    against it: the interrupted attempt is taken back (``attempt - 1``), so it runs again
    under the same attempt number and ``attempt`` never exceeds ``max_attempts``.
    """
    if job.state is not JobState.ACTIVE:
        raise InvalidTransition(job, "release")
    if job.cancel_requested:
        return _finish(job, JobState.CANCELLED, now_ms, error="cancelled while its owner was lost")
    if not as_stall:  # interrupted, not rescheduled: it keeps its place in the queue
        return _uncounted(job)
    error = error if error is not None else stall_error(job)
    stalled = _replace(job, stalls=job.stalls + 1)
    if stalled.stalls > stalled.max_stalls:
        return _finish(
            stalled,
            JobState.FAILED,
            now_ms,
            error=f"{error}; failed as poison after {stalled.stalls} stalls",
        )
    if stalled.attempt >= stalled.max_attempts:
        return _finish(stalled, JobState.FAILED, now_ms, error=error)
    return _requeue(stalled, now_ms, error, None, u)


def unclaim(job: Job, token: int) -> Job:
    """Undo a claim whose attempt never started (a job claimed ahead, then handed back at
    shutdown): waiting again, the attempt not counted. Fenced by the token."""
    _check_lease(job, token)
    return _uncounted(job)


def _uncounted(job: Job) -> Job:
    """An active job handed back as if its attempt had not been made: waiting again, in
    its old place in the queue, the attempt taken back."""
    return _replace(
        job,
        state=JobState.WAITING,
        attempt=max(job.attempt - 1, 0),
        owner=None,
        token=None,
        lease_expires_at_ms=None,
    )


def cancel(job: Job, now_ms: int) -> Job:
    """waiting or delayed → cancelled at once; active → cancel requested (its worker stops
    it and reports ``CANCELLED``, or a rescue ends it cancelled); finished: unchanged."""
    if job.state in (JobState.WAITING, JobState.DELAYED):
        return _finish(job, JobState.CANCELLED, now_ms, error="cancelled")
    if job.state is JobState.ACTIVE:
        return _replace(job, cancel_requested=True)
    return job


def retry(job: Job, now_ms: int) -> Job:
    """failed or cancelled → waiting, as a fresh job: due now, attempts and stalls back to
    0, no result. The last error is kept (it says why the job needed a retry); priority,
    options and progress are unchanged."""
    if job.state not in (JobState.FAILED, JobState.CANCELLED):
        raise InvalidTransition(job, "retry")
    return _replace(
        job,
        state=JobState.WAITING,
        run_at_ms=now_ms,
        attempt=0,
        stalls=0,
        owner=None,
        token=None,
        lease_expires_at_ms=None,
        cancel_requested=False,
        finished_at_ms=None,
        result=None,
    )


def _requeue(job: Job, now_ms: int, error: str, delay_ms: int | None, u: float) -> Job:
    if delay_ms is None:
        delay_ms = retry_delay_ms(job.backoff, job.attempt, u)
    return _replace(
        job,
        state=JobState.DELAYED if delay_ms > 0 else JobState.WAITING,
        run_at_ms=now_ms + delay_ms,
        owner=None,
        token=None,
        lease_expires_at_ms=None,
        error=error,
    )


def _finish(
    job: Job, state: JobState, now_ms: int, *, result: bytes | None = None, error: str | None
) -> Job:
    return _replace(
        job,
        state=state,
        finished_at_ms=now_ms,
        owner=None,
        token=None,
        lease_expires_at_ms=None,
        cancel_requested=False,
        result=result,
        error=error,
    )


def _replace(job: Job, **changes: object) -> Job:
    return msgspec.structs.replace(job, **changes)

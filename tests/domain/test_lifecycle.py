from __future__ import annotations

import msgspec
import pytest

from rota.domain import FailureKind, JobOptions, JobState, backoff, lifecycle
from rota.domain.job import Job
from rota.errors import LeaseLost

NOW = 1_000_000
TTL = 30_000


def stored(options: JobOptions = JobOptions(), job_id: int = 1, now: int = NOW) -> Job:
    """What an engine would read back right after enqueueing."""
    new = lifecycle.new_job("task", b"{}", options, now)
    return Job(
        id=job_id,
        name=new.name,
        queue=new.queue,
        state=JobState.DELAYED if new.delayed else JobState.WAITING,
        payload=new.payload,
        priority=new.priority,
        run_at_ms=new.run_at_ms,
        attempt=0,
        max_attempts=new.max_attempts,
        stalls=0,
        max_stalls=new.max_stalls,
        backoff=new.backoff,
        timeout_ms=new.timeout_ms,
        key=new.key,
        created_at_ms=new.created_at_ms,
    )


def claimed(options: JobOptions = JobOptions(), token: int = 11) -> Job:
    return lifecycle.claim(stored(options), "w1", token, NOW, TTL)


def test_new_job_ready_or_delayed() -> None:
    assert not lifecycle.new_job("t", b"", JobOptions(), NOW).delayed
    delayed = lifecycle.new_job("t", b"", JobOptions(delay_s=2.5), NOW)
    assert delayed.delayed
    assert delayed.run_at_ms == NOW + 2500
    at = lifecycle.new_job("t", b"", JobOptions(run_at_ms=NOW + 10), NOW)
    assert (at.delayed, at.run_at_ms) == (True, NOW + 10)
    past = lifecycle.new_job("t", b"", JobOptions(run_at_ms=NOW - 10), NOW)
    assert (past.delayed, past.run_at_ms) == (False, NOW)
    assert lifecycle.new_job("t", b"", JobOptions(timeout_s=1.5), NOW).timeout_ms == 1500


def test_custom_backoff_is_stored_as_its_fallback() -> None:
    opts = JobOptions(backoff=backoff.custom(lambda n: 1.0, fallback=backoff.fixed(9)))
    assert lifecycle.new_job("t", b"", opts, NOW).backoff == backoff.fixed(9)


def test_claim_sets_lease_and_counts_attempt() -> None:
    job = claimed()
    assert job.state is JobState.ACTIVE
    assert (job.attempt, job.owner, job.token, job.lease_expires_at_ms) == (1, "w1", 11, NOW + TTL)
    assert job.lease is not None and job.lease.token == 11
    with pytest.raises(lifecycle.InvalidTransition, match="cannot claim"):
        lifecycle.claim(job, "w2", 12, NOW, TTL)


def test_promote_only_when_due() -> None:
    job = stored(JobOptions(delay_s=1))
    with pytest.raises(lifecycle.InvalidTransition):
        lifecycle.promote(job, NOW + 999)
    assert lifecycle.promote(job, NOW + 1000).state is JobState.WAITING


def test_complete_is_fenced_by_token() -> None:
    job = claimed(token=11)
    with pytest.raises(LeaseLost):
        lifecycle.complete(job, 99, b"r", NOW)
    done = lifecycle.complete(job, 11, b"r", NOW + 5)
    assert (done.state, done.result, done.finished_at_ms, done.token) == (
        JobState.COMPLETED,
        b"r",
        NOW + 5,
        None,
    )
    with pytest.raises(LeaseLost):  # settled: the token holds nothing any more
        lifecycle.complete(done, 11, b"r", NOW)


def test_renew_extends_only_for_holder_even_after_expiry() -> None:
    job = claimed(token=11)
    assert lifecycle.renew(job, 11, NOW + TTL + 5, TTL).lease_expires_at_ms == NOW + 2 * TTL + 5
    with pytest.raises(LeaseLost):
        lifecycle.renew(job, 12, NOW, TTL)


def test_fail_retries_with_backoff_then_fails_when_exhausted() -> None:
    opts = JobOptions(max_attempts=2, backoff=backoff.fixed(3))
    job = claimed(opts)
    retried = lifecycle.fail(job, 11, "oops", NOW)
    assert (retried.state, retried.run_at_ms, retried.error) == (
        JobState.DELAYED,
        NOW + 3000,
        "oops",
    )
    assert retried.owner is None and retried.token is None
    second = lifecycle.claim(lifecycle.promote(retried, NOW + 3000), "w1", 12, NOW + 3000, TTL)
    failed = lifecycle.fail(second, 12, "again", NOW + 3001)
    assert (failed.state, failed.attempt, failed.finished_at_ms) == (
        JobState.FAILED,
        2,
        NOW + 3001,
    )


def test_fail_kinds_and_explicit_delay() -> None:
    job = claimed(JobOptions(max_attempts=5))
    assert lifecycle.fail(job, 11, "x", NOW, delay_ms=0).state is JobState.WAITING
    assert lifecycle.fail(job, 11, "x", NOW, delay_ms=50).run_at_ms == NOW + 50
    unrecoverable = lifecycle.fail(job, 11, "bad", NOW, kind=FailureKind.UNRECOVERABLE)
    assert unrecoverable.state is JobState.FAILED
    cancelled = lifecycle.fail(job, 11, "stop", NOW, kind=FailureKind.CANCELLED)
    assert cancelled.state is JobState.CANCELLED
    with pytest.raises(LeaseLost):
        lifecycle.fail(job, 12, "x", NOW)
    with pytest.raises(ValueError, match="delay_ms"):
        lifecycle.fail(job, 11, "x", NOW, delay_ms=-1)


def test_stall_counts_attempt_follows_backoff_and_poisons() -> None:
    opts = JobOptions(max_attempts=5, max_stalls=1, backoff=backoff.fixed(2))
    job = claimed(opts)
    with pytest.raises(lifecycle.InvalidTransition, match="live lease"):
        lifecycle.stall(job, NOW + TTL - 1)
    first = lifecycle.stall(job, NOW + TTL)
    assert (first.state, first.stalls, first.run_at_ms) == (JobState.DELAYED, 1, NOW + TTL + 2000)
    assert first.error is not None and "stalled" in first.error
    again = lifecycle.claim(
        lifecycle.promote(first, first.run_at_ms), "w2", 5, first.run_at_ms, TTL
    )
    poison = lifecycle.stall(again, first.run_at_ms + TTL)
    assert (poison.state, poison.stalls) == (JobState.FAILED, 2)
    assert poison.error is not None and "poison" in poison.error


def test_stall_on_last_attempt_fails() -> None:
    job = claimed(JobOptions(max_attempts=1, max_stalls=3))
    assert lifecycle.stall(job, NOW + TTL).state is JobState.FAILED


def test_release_graceful_requeues_at_once_in_its_place_without_stall() -> None:
    job = claimed(JobOptions(max_attempts=1))
    released = lifecycle.release(job, NOW + 1, as_stall=False)
    assert (released.state, released.stalls, released.attempt, released.run_at_ms) == (
        JobState.WAITING,
        0,
        0,  # the interrupted attempt is taken back: max_attempts=1 still allows a run
        job.run_at_ms,  # its old place in the queue, not the back of it
    )


def test_unclaim_hands_back_an_unstarted_attempt() -> None:
    job = claimed(token=11)
    back = lifecycle.unclaim(job, 11)
    assert (back.state, back.attempt, back.owner, back.token, back.run_at_ms) == (
        JobState.WAITING,
        0,
        None,
        None,
        job.run_at_ms,
    )
    with pytest.raises(LeaseLost):
        lifecycle.unclaim(job, 12)


def test_cancel_in_each_state() -> None:
    assert lifecycle.cancel(stored(), NOW).state is JobState.CANCELLED
    assert lifecycle.cancel(stored(JobOptions(delay_s=5)), NOW).state is JobState.CANCELLED
    active = lifecycle.cancel(claimed(), NOW)
    assert (active.state, active.cancel_requested) == (JobState.ACTIVE, True)
    assert lifecycle.stall(active, NOW + TTL).state is JobState.CANCELLED
    done = lifecycle.complete(claimed(), 11, None, NOW)
    assert lifecycle.cancel(done, NOW) == done


def test_transitions_are_pure() -> None:
    job = claimed()
    before = msgspec.structs.asdict(job)
    lifecycle.fail(job, 11, "x", NOW)
    lifecycle.stall(job, NOW + TTL)
    assert msgspec.structs.asdict(job) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"queue": ""}, "queue"),
        ({"delay_s": 1, "run_at_ms": 5}, "not both"),
        ({"delay_s": -1}, "delay_s"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_stalls": -1}, "max_stalls"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"key": ""}, "key"),
    ],
)
def test_options_validation_names_the_option(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JobOptions(**kwargs)  # type: ignore[arg-type]


def test_retry_restarts_a_finished_job_and_keeps_its_error() -> None:
    failed = lifecycle.fail(claimed(JobOptions(max_attempts=1)), 11, "boom", NOW)
    again = lifecycle.retry(failed, NOW + 5)
    assert (again.state, again.attempt, again.stalls, again.run_at_ms) == (
        JobState.WAITING,
        0,
        0,
        NOW + 5,
    )
    assert again.error == "boom"
    assert again.finished_at_ms is None
    assert lifecycle.retry(lifecycle.cancel(stored(), NOW), NOW).state is JobState.WAITING
    with pytest.raises(lifecycle.InvalidTransition, match="cannot retry"):
        lifecycle.retry(stored(), NOW)

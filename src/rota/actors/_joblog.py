"""The log lines of ended attempts (the worker pool's, the Scheduler's rescues):
``rota.domain.report`` composes them, ``log_attempt`` writes them to the ``rota.job``
logger, with the job's fields in the record (``extra``) and, when a job failed for good
with a traceback, that traceback as the record's ``exc_text``: every formatter prints it
after the message, as it would an exception's."""

from __future__ import annotations

import logging
from typing import Final

from rota.actors._instruments import Instruments
from rota.domain.instrument import AttemptEnded, AttemptOutcome
from rota.domain.job import Job
from rota.domain.report import JOB_LOG, attempt_ended, attempt_started, last_line

__all__ = ["job_log", "log_attempt", "log_started", "report_attempt"]

job_log: Final = logging.getLogger(JOB_LOG)


def log_attempt(
    level: int,
    *,
    job_id: int,
    name: str,
    queue: str,
    attempt: int,
    max_attempts: int,
    outcome: str,
    duration_s: float | None = None,
    error: str | None = None,
    retry_in_s: float | None = None,
) -> None:
    """Log one ended attempt at ``level`` (nothing is composed if the level is off)."""
    if not job_log.isEnabledFor(level):
        return
    line = attempt_ended(
        job_id=job_id,
        name=name,
        queue=queue,
        attempt=attempt,
        max_attempts=max_attempts,
        outcome=outcome,
        duration_s=duration_s,
        error=error,
        retry_in_s=retry_in_s,
    )
    # The record made here, not by ``job_log.log``: the caller's file and line would say
    # nothing to a reader of these lines, and looking them up is a tenth of their cost.
    record = job_log.makeRecord(
        job_log.name, level, __file__, 0, line.message, (), None, "log_attempt", line.fields
    )
    record.exc_text = line.traceback
    job_log.handle(record)


def report_attempt(
    level: int,
    job: Job,
    outcome: AttemptOutcome,
    *,
    instruments: Instruments | None,
    duration_s: float | None = None,
    error: str | None = None,
    retry_in_s: float | None = None,
) -> None:
    """An attempt of ``job`` ended: tell the instruments that watch attempts, and log its
    line at ``level``. The one place both happen, for the pool's attempts and the
    Scheduler's rescued stalls alike."""
    if instruments is not None and instruments.attempts:
        instruments.attempt_ended(
            AttemptEnded(
                job_id=job.id,
                name=job.name,
                queue=job.queue,
                attempt=job.attempt,
                max_attempts=job.max_attempts,
                outcome=outcome,
                seconds=duration_s,
                error=None if error is None else last_line(error),
            )
        )
    log_attempt(
        level,
        job_id=job.id,
        name=job.name,
        queue=job.queue,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        outcome=outcome,
        duration_s=duration_s,
        error=error,
        retry_in_s=retry_in_s,
    )


def log_started(job: Job) -> None:
    """Log at DEBUG that an attempt starts (the caller checked that DEBUG is on)."""
    line = attempt_started(
        job_id=job.id,
        name=job.name,
        queue=job.queue,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
    )
    job_log.debug(line.message, extra=line.fields, stacklevel=2)

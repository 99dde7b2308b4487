"""The domain: jobs, their options and leases, backoff, and the lifecycle rules.

Pure and synchronous: nothing here does I/O, reads a clock or imports another layer.
"""

from rota.domain.backoff import (
    DEFAULT_BACKOFF,
    Backoff,
    Custom,
    Exponential,
    Fixed,
    Linear,
    StoredBackoff,
    custom,
    exponential,
    fixed,
    linear,
)
from rota.domain.job import FINISHED_STATES, Job, JobOptions, JobState, Lease, NewJob
from rota.domain.outcome import FailureKind, Retry, Unrecoverable

__all__ = [
    "DEFAULT_BACKOFF",
    "FINISHED_STATES",
    "Backoff",
    "Custom",
    "Exponential",
    "FailureKind",
    "Fixed",
    "Job",
    "JobOptions",
    "JobState",
    "Lease",
    "Linear",
    "NewJob",
    "Retry",
    "StoredBackoff",
    "Unrecoverable",
    "custom",
    "exponential",
    "fixed",
    "linear",
]

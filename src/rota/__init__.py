"""rota: a durable job queue and actor runtime for Python.

The public namespace is this module; everything else is an implementation module whose
names may change.
"""

import logging as _logging

from rota.app import (
    App,
    Context,
    EventStream,
    JobDefinition,
    JobHandle,
    QueueHandle,
    Registry,
    SyncContext,
)
from rota.config import Config, QueueConfig
from rota.domain.backoff import custom, exponential, fixed, linear
from rota.domain.event import Event, EventKind, LogEntry, Progress
from rota.domain.instrument import AttemptEnded, Instrument
from rota.domain.job import Job, JobOptions, JobState
from rota.domain.outcome import Retry, Unrecoverable
from rota.errors import (
    ConfigError,
    CorruptRow,
    JobFailed,
    JobNotFound,
    JobStateError,
    LeaseLost,
    PayloadError,
    RotaError,
    StorageError,
    SupervisorGaveUp,
)
from rota.runtime import Health, Runtime

__all__ = [
    "App",
    "AttemptEnded",
    "Config",
    "ConfigError",
    "Context",
    "CorruptRow",
    "Event",
    "EventKind",
    "EventStream",
    "Health",
    "Instrument",
    "Job",
    "JobDefinition",
    "JobFailed",
    "JobHandle",
    "JobNotFound",
    "JobOptions",
    "JobState",
    "JobStateError",
    "LeaseLost",
    "LogEntry",
    "PayloadError",
    "Progress",
    "QueueConfig",
    "QueueHandle",
    "Registry",
    "Retry",
    "RotaError",
    "Runtime",
    "StorageError",
    "SupervisorGaveUp",
    "SyncContext",
    "Unrecoverable",
    "custom",
    "exponential",
    "fixed",
    "linear",
]

__version__ = "0.1.0.dev0"

# Quiet by default: rota logs through the "rota" logger and leaves output to the app.
_logging.getLogger("rota").addHandler(_logging.NullHandler())

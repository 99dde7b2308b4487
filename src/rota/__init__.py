"""rota: a durable job queue and actor runtime for Python.

The public namespace is this module; everything else is an implementation module whose
names may change.
"""

import logging as _logging

from rota.app import App, Context, JobHandle, Registry, SyncContext
from rota.config import Config
from rota.domain.backoff import custom, exponential, fixed, linear
from rota.domain.event import Event, EventKind, Progress
from rota.domain.instrument import AttemptEnded, Instrument
from rota.domain.job import JobOptions, JobState
from rota.domain.outcome import Retry, Unrecoverable
from rota.errors import (
    ActorNotRunning,
    CallTimeout,
    ConfigError,
    CorruptRow,
    JobFailed,
    JobNotFound,
    JobStateError,
    LeaseLost,
    MailboxFull,
    PayloadError,
    RotaError,
    StorageError,
    SupervisorGaveUp,
)

__all__ = [
    "ActorNotRunning",
    "App",
    "AttemptEnded",
    "CallTimeout",
    "Config",
    "ConfigError",
    "Context",
    "CorruptRow",
    "Event",
    "EventKind",
    "Instrument",
    "JobFailed",
    "JobHandle",
    "JobNotFound",
    "JobOptions",
    "JobState",
    "JobStateError",
    "LeaseLost",
    "MailboxFull",
    "PayloadError",
    "Progress",
    "Registry",
    "Retry",
    "RotaError",
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

"""Every error rota raises, in one tree.

::

    RotaError                     base of everything rota raises on purpose
    ├── ConfigError               an unknown or invalid option or argument ("did you mean
    │   │                         ...?"); also a ValueError
    │   └── ConfigTypeError       one of the wrong type; also a TypeError
    ├── StorageError              the database cannot do what was asked: full disk, corrupt
    │   │                         file, locked past the retry budget, failed migration.
    │   │                         Nothing already committed is lost.
    │   └── CorruptRow            one job row cannot be read back (names the job and the
    │                             column); a worker fails that job and goes on
    ├── LeaseLost                 a renew / complete / fail carried a token that no longer
    │                             holds the job's lease (it expired and was taken over):
    │                             nothing was changed (fencing)
    ├── JobNotFound               no job with that id; also a LookupError
    ├── JobStateError             the job is not in a state the operation applies to (retry
    │                             a job that has not failed, promote one that is not
    │                             delayed, remove a running one); also a ValueError
    ├── JobFailed                 the job whose result was awaited failed or was cancelled
    ├── PayloadError              a job payload does not match its schema; names the field
    ├── WaitTimeout               a wait ran out first (``result(timeout=)``,
    │                             ``rota.testing.drain``); also a TimeoutError
    ├── UsageError                a call made where or when it cannot work (a blocking call
    │                             on the runtime's own thread, ``app.run()`` entered while
    │                             it runs); also a RuntimeError
    ├── ChildStartFailed          a process-mode child could not start (it could not import
    │                             the app): ``app.run()`` stops at start
    ├── ActorError                the actor kernel (rota's own actors: the runtime handles
    │   │                         these, an App's calls never raise them)
    │   ├── ActorNotRunning       the actor has stopped (or not started): the message was
    │   │                         not delivered, or its reply will never come
    │   ├── CallTimeout           ``call`` got no reply within its timeout
    │   └── MailboxFull           ``try_cast`` found the bounded mailbox full
    └── SupervisorGaveUp          a supervisor exceeded its restart intensity, stopped its
                                  children and escalates to its parent (``app.run()``
                                  raises it when the runtime gives up)

Control flow that *handlers* raise is not an error of rota's and lives apart (see
``rota.domain.outcome``): ``Retry(delay_s)`` asks for another attempt, ``Unrecoverable``
fails the job at once without retrying.

An error says what is wrong in words an operator can act on: which option, which field,
which file, and what was kept.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "ActorError",
    "ActorNotRunning",
    "CallTimeout",
    "ChildStartFailed",
    "ConfigError",
    "ConfigTypeError",
    "CorruptRow",
    "JobFailed",
    "JobNotFound",
    "JobStateError",
    "LeaseLost",
    "MailboxFull",
    "PayloadError",
    "RotaError",
    "StorageError",
    "SupervisorGaveUp",
    "UsageError",
    "WaitTimeout",
]


class RotaError(Exception):
    """Base class of every error rota raises on purpose."""


class ConfigError(RotaError, ValueError):
    """An option or an argument is unknown or has an invalid value (out of its range, a
    name that does not exist); the message names it."""

    @classmethod
    def unknown_option(cls, name: str, known: Iterable[str], where: str) -> ConfigError:
        """``unknown option 'concurency' for WorkerConfig, did you mean 'concurrency'?``"""
        return cls(f"unknown option {name!r} for {where}{did_you_mean(name, known)}")


class ConfigTypeError(ConfigError, TypeError):
    """An option or an argument of the wrong type (a ``TypeError`` too)."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``", did you mean 'x'?"`` for the closest known name, else the list of known names."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    return f", did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"


class StorageError(RotaError):
    """The database could not perform an operation.

    Raised for a full disk, a corrupt or foreign file, a database still locked after the
    retry budget, or a failed migration. The operation that raised changed nothing
    (unless the message says the runtime's Store did not answer in time: it may still
    apply it); everything committed before it is kept. ``transient`` is true for faults of the
    environment that may pass by themselves (a full disk, a lock, an I/O error, a file
    made read-only): a running worker waits them out instead of giving up.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class CorruptRow(StorageError):
    """A stored job row that cannot be read back: a column that does not decode (a
    backoff that is not a policy, a payload that is not JSON, an unknown state). Workers
    fail such a job for good, with this error, and go on with the others."""

    def __init__(self, job_id: int, column: str, detail: str) -> None:
        super().__init__(f"corrupt row: job {job_id}, column {column!r}: {detail}")
        self.job_id = job_id
        self.column = column


class LeaseLost(RotaError):
    """The token presented no longer holds the job's lease; nothing was changed."""

    def __init__(self, job_id: int, token: int) -> None:
        super().__init__(f"lease on job {job_id} lost: token {token} no longer holds it")
        self.job_id = job_id
        self.token = token


class JobNotFound(RotaError, LookupError):
    """No job has that id (or key)."""

    def __init__(self, job: int | str) -> None:
        super().__init__(f"no job {job!r}")
        self.job = job


class JobStateError(RotaError, ValueError):
    """The job is not in a state the operation applies to (retry a job that has not
    failed, promote one that is not delayed, remove a running one); nothing was changed.
    The message names the job and its state."""


class JobFailed(RotaError):
    """A job ended without a result: ``state`` is failed or cancelled, ``error`` says why."""

    def __init__(self, job_id: int, state: str, error: str | None) -> None:
        last = (error or "").strip().splitlines()[-1:] or ["no error recorded"]
        super().__init__(f"job {job_id} {state}: {last[0]}")
        self.job_id = job_id
        self.state = state
        self.error = error


class PayloadError(RotaError, ValueError):
    """A payload does not match its job's schema. ``field`` names the offending path."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class WaitTimeout(RotaError, TimeoutError):
    """A wait ran out before what it waited for happened (``JobHandle.result(timeout=)``,
    ``result_sync``, ``rota.testing.drain``): nothing was changed. A ``TimeoutError`` too."""


class UsageError(RotaError, RuntimeError):
    """A call made where or when it cannot work: a blocking ``*_sync`` call on the thread
    that runs the app's runtime, ``app.run()`` entered while it runs, ``isolated()`` with
    the runtime running. The message says what to do instead. A ``RuntimeError`` too."""


class ChildStartFailed(RotaError):
    """A process-mode child process could not start: it could not import the app (the
    message has the child's error), it exited or could not be spawned, or it did not
    answer within ``child_start_timeout_s``. ``app.run()`` stops at start with it."""


class ActorError(RotaError):
    """Base class of the actor kernel's errors."""


class ActorNotRunning(ActorError):
    """The actor is not running: the message was not delivered or will get no reply."""


class CallTimeout(ActorError, TimeoutError):
    """A ``call`` got no reply within its timeout. The actor may still handle it."""


class MailboxFull(ActorError):
    """``try_cast`` found the actor's bounded mailbox full; the message was not sent."""


class SupervisorGaveUp(RotaError):
    """A supervisor restarted children more often than its intensity allows.

    It has stopped all its children (in reverse start order) and raises this to its parent,
    which treats it like any other child crash (escalation). ``__cause__`` is the exit that
    broke the limit.
    """

    def __init__(self, supervisor: str, restarts: int, period_s: float) -> None:
        super().__init__(
            f"supervisor {supervisor!r} gave up: more than {restarts} restarts in {period_s:g} s"
        )
        self.supervisor = supervisor
        self.restarts = restarts
        self.period_s = period_s

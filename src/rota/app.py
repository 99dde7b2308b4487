"""``rota.App``: define jobs, enqueue them, run them.

::

    app = rota.App("jobs.db")

    class Resize(msgspec.Struct):
        url: str
        width: int = 128

    @app.job(queue="images", max_attempts=5, backoff=rota.exponential(1.0, max_s=60), timeout=30)
    async def resize(args: Resize, ctx: rota.Context) -> str:
        await ctx.progress(50, message="downloaded")
        ctx.log("resizing")
        return "done"

    handle = await resize.enqueue(Resize(url="..."), delay=10, priority=1)
    async with app.run():                      # the supervised runtime, in your task group
        print(await handle.result(timeout=60))

Producers work with or without a running runtime: inside one, enqueues go through its
Store (group commit, and the right WorkerPool wakes at once); outside, each call commits on
a connection of its own (``enqueue_sync`` for code that is not async at all).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import inspect
import logging
import math
import os
import random
import re
import sys
import tempfile
import threading
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Generic, Literal, TypeVar, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import msgspec

from rota import _encoding
from rota.actors._backend import current_backend, is_cancellation
from rota.actors._throttle import Throttled
from rota.actors.worker_pool import JobRun
from rota.config import LIVE_HEARTBEATS, Config
from rota.domain import lifecycle
from rota.domain.backoff import Backoff, Custom, Exponential, Fixed, Linear
from rota.domain.event import Event, EventKind, LogEntry, Owner, Progress
from rota.domain.instrument import Instrument
from rota.domain.job import (
    DEFAULT_QUEUE,
    FINISHED_STATES,
    INT64_MAX,
    MAX_DURATION_S,
    Job,
    JobOptions,
    JobState,
    NewJob,
    option_error,
)
from rota.domain.outcome import FailureKind
from rota.domain.report import LOG_LINES, job_fields, job_label
from rota.errors import (
    ConfigError,
    CorruptRow,
    JobFailed,
    PayloadError,
    StorageError,
    did_you_mean,
)
from rota.execution import QueueRunners, attempt
from rota.execution.processes import Interrupted, ProcessPool, ProcessSettings
from rota.execution.threads import ThreadHooks, ThreadPool
from rota.execution.wire import Hello, JobDone
from rota.runtime import Runtime
from rota.storage.engine import Completion, Engine, Failure
from rota.storage.feed import SqliteChangeFeed
from rota.storage.sqlite import SqliteEngine

__all__ = [
    "UNKNOWN_JOB_DELAY_S",
    "App",
    "Context",
    "EventStream",
    "JobDefinition",
    "JobHandle",
    "Mode",
    "QueueHandle",
    "Registry",
    "SyncContext",
]

log = logging.getLogger("rota.job")
#: What handlers write with ``ctx.log``, prefixed with their job (name, id, queue).
log_lines = logging.getLogger(LOG_LINES)
_app_log = logging.getLogger("rota.app")

#: A job's payload type: anything msgspec validates (a Struct, a dataclass, an attrs class,
#: a TypedDict, a NamedTuple, int, str, list[...], dict[...]...).
P = TypeVar("P")
#: Where a handler runs: on the event loop, on a handler thread, or in a child process.
Mode = Literal["async", "thread", "process"]
_MODES: tuple[str, ...] = typing.get_args(Mode)
R = TypeVar("R")
T = TypeVar("T")

_JSON = msgspec.json.Encoder()
_PROGRESS = msgspec.json.Decoder(Progress)
#: First poll delay when waiting for another connection's commits (then doubling).
_FIRST_POLL_S = 0.002
#: A job whose name a worker has no handler for runs again after its backoff, but not
#: sooner than this: a rolling deploy may have enqueued a job type that this worker does
#: not have yet, and the job must neither spin nor use up its attempts in a moment.
UNKNOWN_JOB_DELAY_S: Final = 5.0
#: How often the warning about one unknown job name repeats (with a count) per worker.
_UNKNOWN_JOB_LOG_EVERY_S: Final = 60.0
#: The longest poll delay when waiting for another connection's commits.
_LAST_POLL_S = 0.1


# -- inside a handler ---------------------------------------------------------------------


class _ContextBase:
    """What a running handler knows, in every mode."""

    __slots__ = ("_app", "_run", "attempt", "job", "job_id", "max_attempts", "name", "queue")

    def __init__(self, app: App, run: JobRun | None, job: Job) -> None:
        self._app = app
        self._run = run
        self.job: Job = job
        self.job_id: int = job.id
        self.name: str = job.name
        self.queue: str = job.queue
        self.attempt: int = job.attempt
        self.max_attempts: int = job.max_attempts

    def log(self, message: str) -> None:
        """Append a line to the job's log (stored with the next progress report or when the
        attempt ends) and log it at INFO on the ``rota.job.log`` logger, prefixed with the
        job (``jobs.resize #42 (images): ...``; the job's fields in the record). A lone
        surrogate, which UTF-8 cannot store, is kept escaped (``\\ud800``)."""
        line = str(message)
        if not line.isascii():
            line = line.encode("utf-8", "backslashreplace").decode("utf-8")
        self._add_log(line)
        _log_line(self.job, line)

    def _add_log(self, line: str) -> None:
        assert self._run is not None
        self._run.logs.append(line)

    def _extra(self) -> dict[str, Any]:
        return _job_extra(self.job)


def _job_extra(job: Job) -> dict[str, Any]:
    """A job's fields in log records (``extra``)."""
    return job_fields(job.name, job.id, job.queue, job.attempt)


def _log_line(job: Job, line: str) -> None:
    """A line a handler logged (``ctx.log``, here or in a child process), on
    ``rota.job.log``: the job named in the text, its fields in the record."""
    if log_lines.isEnabledFor(logging.INFO):
        log_lines.info(f"{job_label(job.name, job.id, job.queue)}: {line}", extra=_job_extra(job))


def _progress(
    value: float | None, step: int | None, total: int | None, message: str | None
) -> bytes:
    """A progress report as stored, its arguments checked first (in every mode, since
    every context reports through here): ``TypeError`` or ``ValueError`` naming the
    argument, raised in the handler that called ``progress``."""
    if value is None and step is None and total is None and message is None:
        raise TypeError("progress() needs at least one of value, step, total, message")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"progress() value must be an int or a float, got {value!r}")
        try:
            value = float(value)
        except OverflowError:
            raise ValueError(f"progress() value is too large for a float: {value!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"progress() value must be a finite number, got {value!r}")
    for name, count in (("step", step), ("total", total)):
        if count is not None:
            if isinstance(count, bool) or not isinstance(count, int):
                raise TypeError(f"progress() {name} must be an int, got {count!r}")
            if not 0 <= count <= INT64_MAX:
                raise ValueError(f"progress() {name} must be between 0 and 2**63-1, got {count!r}")
    if step is not None and total is not None and step > total:
        raise ValueError(f"progress() step must be <= total, got step={step} of total={total}")
    if message is not None:
        if not isinstance(message, str):
            raise TypeError(f"progress() message must be a str, got {type(message).__name__}")
        try:
            message.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"progress() message cannot be encoded as UTF-8: {exc}") from None
    return _JSON.encode(Progress(value=value, step=step, total=total, message=message))


class Context(_ContextBase):
    """What a running ``async def`` handler knows and can report. One per attempt."""

    __slots__ = ()

    async def progress(
        self,
        value: float | None = None,
        *,
        step: int | None = None,
        total: int | None = None,
        message: str | None = None,
    ) -> None:
        """Report progress: a number (a percentage, a count), and/or the step this attempt
        is at (``step`` of ``total``) with a message. Stored on the job and emitted as a
        ``progress`` event.

        At least one argument; ``value`` a finite int or float (not a bool; stored as a
        float), ``step`` and ``total`` ints >= 0 with ``step <= total`` when both are given,
        ``message`` a str. Anything else raises ``TypeError`` or ``ValueError`` naming the
        argument, here in the handler, and stores nothing."""
        await self._report(_progress(value, step, total, message))

    async def _report(self, data: bytes) -> None:
        assert self._run is not None
        await self._app._report_progress(self._run, data)


class SyncContext(_ContextBase):
    """What a running plain ``def`` handler knows and can report (thread mode, and sync
    handlers in process mode). ``progress`` returns once the report is stored."""

    __slots__ = ("_stop",)

    def __init__(
        self, app: App, run: JobRun | None, job: Job, stop: threading.Event | None = None
    ) -> None:
        super().__init__(app, run, job)
        self._stop = stop

    def progress(
        self,
        value: float | None = None,
        *,
        step: int | None = None,
        total: int | None = None,
        message: str | None = None,
    ) -> None:
        """Report progress (see ``Context.progress``, and its checks of the arguments);
        blocks this thread, never the event loop, until it is stored."""
        self._report(_progress(value, step, total, message))

    @property
    def cancelled(self) -> bool:
        """True once nobody waits for this attempt any more (it timed out, was cancelled
        or its lease was lost): a thread cannot be killed, so a long handler may check this
        and return early. Whatever it returns then is dropped."""
        return self._stop is not None and self._stop.is_set()

    def _report(self, data: bytes) -> None:
        app, run = self._app, self._run
        assert run is not None
        token = app._runtime_token
        if token is None:
            raise RuntimeError("progress() needs the runtime this job runs in; it has stopped")
        anyio.from_thread.run(app._report_progress, run, data, token=token)


# -- job definitions ------------------------------------------------------------------------


class _NoInstance:
    """What nothing is an instance of: the payload class of types whose values are checked
    by decoding alone (``JobDefinition._cls``)."""


class JobDefinition(Generic[P, R]):
    """A registered job type: its name, payload schema, handler and default options."""

    def __init__(
        self,
        fn: Callable[..., Awaitable[R]] | Callable[..., R],
        *,
        name: str,
        payload_type: Any,
        result_type: Any,
        options: JobOptions,
        takes_context: bool,
        mode: Mode | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        #: ``async def`` (runs on the event loop or in a child) or plain ``def`` (on a
        #: handler thread or in a child)
        self.is_async = inspect.iscoroutinefunction(fn)
        #: the mode asked for at registration (None: by the handler's kind and its queue)
        self.mode = mode
        self.payload_type = payload_type
        self.result_type = result_type
        self.options = options
        self.takes_context = takes_context
        self._decoder = msgspec.json.Decoder(payload_type)
        shape = _encoding.shape(payload_type)
        self._shape = shape
        #: instances of this class are payloads as they are (one isinstance per enqueue);
        #: anything else is a dict of the fields, or a value checked by decoding alone
        self._cls: type = shape.cls or _NoInstance
        #: whether a NaN written as null could pass the decoding check (``encode``)
        self._null_check = _encoding.may_hold_null(payload_type)
        self._result_decoder = msgspec.json.Decoder(result_type)
        #: results: checked against the annotation unless it is ``Any`` (or missing)
        self._result_checked = result_type is not Any and result_type is not object
        self._result_null_check = _encoding.may_hold_null(result_type)
        #: whether a handler may return None (without an annotation, ``Any``, ``None``,
        #: ``X | None``...)
        self.returns_none = not self._result_checked or _decodes(self._result_decoder, b"null")
        self.app: App | None = None

    def __repr__(self) -> str:
        return f"<job {self.name!r} queue={self.options.queue!r}>"

    async def __call__(self, args: P, ctx: Context) -> R:
        fn = cast(Callable[..., Awaitable[R]], self.fn)
        return await (fn(args, ctx) if self.takes_context else fn(args))

    def mode_on(self, queue_mode: Mode | None) -> Mode:
        """Where its jobs run on a queue configured with ``queue_mode``: the mode it was
        registered with, else the queue's, else by the handler's kind."""
        return self.mode or queue_mode or ("async" if self.is_async else "thread")

    def call_sync(self, args: P, ctx: SyncContext) -> R:
        """Call a plain ``def`` handler."""
        return cast(R, self.fn(args, ctx) if self.takes_context else self.fn(args))

    # payloads

    def encode(self, args: P | dict[str, Any]) -> bytes:
        """The stored payload, validated against the schema before anything is stored:
        ``PayloadError`` names the field, also for what JSON cannot hold (NaN, infinities,
        lone surrogates, nesting too deep, values of unsupported types). A payload type with
        fields (a Struct, a dataclass, an attrs class, a NamedTuple) takes an instance, or
        a dict of its fields (a TypedDict: only that); any other type, a value that decodes
        as it."""
        if not isinstance(args, self._cls):
            args = self._from_fields(args)
        try:
            data = _JSON.encode(args)
            if self._null_check and data.find(b"null") >= 0:  # NaN, inf come out as null
                _encoding.check_floats(args)
            # msgspec does not check field types at construction: check them now
            self._decoder.decode(data)
        except msgspec.ValidationError as exc:
            if "got `null`" in str(exc):  # a NaN or an infinity where null does not decode?
                _unencodable_floats(self.name, args)
            raise _payload_error(self.name, exc, self.payload_type, args) from None
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise _unencodable(self.name, _encoding.explain(args, exc)) from None
        return data

    def _from_fields(self, args: Any) -> Any:
        """A payload that is not an instance of the payload class: a dict of its fields,
        checked (unknown keys refused, naming the closest field) and converted; a value of
        a type without fields, as it is (the decoding check validates it)."""
        shape = self._shape
        if shape.fields is None:
            return args
        if not isinstance(args, dict):
            wanted = _type_name(self.payload_type)
            instead = "" if shape.cls is None else f"a {wanted} or "
            raise PayloadError(
                f"job {self.name!r} takes a {wanted}, got {type(args).__name__}: pass "
                f"{instead}a dict of its fields"
            )
        for key in args:
            if key not in shape.names:
                raise PayloadError(
                    f"invalid payload for job {self.name!r}: unknown field {key!r}"
                    f"{did_you_mean(str(key), sorted(shape.names))}",
                    field=str(key),
                )
        value: Any = args
        if shape.positional:  # written as an array: the fields in their order
            value = [] if shape.tag is None else [shape.tag[1]]
            for field in shape.fields:
                if field.encode_name in args:
                    value.append(args[field.encode_name])
                elif field.required:
                    raise PayloadError(
                        f"invalid payload for job {self.name!r}: Object missing required "
                        f"field `{field.encode_name}`",
                        field=field.encode_name,
                    )
                elif field.default is not msgspec.NODEFAULT:
                    value.append(field.default)
                else:
                    value.append(field.default_factory())
        try:
            return msgspec.convert(value, self.payload_type)
        except msgspec.ValidationError as exc:
            raise _payload_error(self.name, exc, self.payload_type, args) from None
        except RecursionError:
            raise _unencodable(self.name, _encoding.too_deep(args)) from None

    def decode(self, payload: bytes) -> P:
        """A stored payload as its type; ``msgspec.ValidationError`` for one that does not
        match the schema, and ``msgspec.DecodeError`` for one that does not decode at all
        (not JSON, or nested deeper than msgspec recurses: a corrupt row), so callers need
        to catch only ``DecodeError`` (``bad_payload`` says which it was)."""
        try:
            return cast(P, self._decoder.decode(payload))
        except RecursionError as exc:
            raise msgspec.DecodeError(f"nested too deeply ({exc})") from None

    def encode_result(self, value: Any) -> bytes | None:
        """What a handler returned, as stored (None for None), checked against its return
        annotation first, in every mode: a value of another type (``TypeError``) or one
        JSON cannot hold, such as NaN (``ValueError``), fails the attempt instead of
        completing the job with a result nobody can decode. A handler without a return
        annotation (or ``-> Any``) may return anything JSON holds; returning None costs
        nothing."""
        if value is None and self.returns_none:
            return None
        try:
            data = _JSON.encode(value)
            if self._result_null_check and data.find(b"null") >= 0:
                _encoding.check_floats(value)  # NaN and infinities come out as null
            if self._result_checked:
                self._result_decoder.decode(data)
        except msgspec.ValidationError as exc:
            if "got `null`" in str(exc) and value is not None:
                try:  # a NaN or an infinity, where null does not decode?
                    _encoding.check_floats(value)
                except _encoding.Unencodable as found:
                    raise self._unencodable_result(value, found) from None
            raise TypeError(
                f"job {self.name!r} returned {_clip(value)}, which does not match its return "
                f"annotation `{_type_name(self.result_type)}`: {exc}"
            ) from None
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise self._unencodable_result(value, _encoding.explain(value, exc)) from None
        return data

    def _unencodable_result(self, value: Any, found: _encoding.Unencodable) -> ValueError:
        return ValueError(
            f"job {self.name!r} returned {_clip(value)}, which JSON cannot hold: {found}"
        )

    def decode_result(self, data: bytes | None) -> R:
        return cast(R, None if data is None else self._result_decoder.decode(data))

    # producing

    def _app(self) -> App:
        if self.app is None:
            raise ConfigError(f"job {self.name!r} is in a Registry not yet included in an App")
        return self.app

    def new_job(self, args: P | dict[str, Any], now_ms: int, **overrides: Any) -> NewJob:
        options = _options(self.options, overrides)
        return lifecycle.new_job(self.name, self.encode(args), options, now_ms)

    async def enqueue(self, args: P | dict[str, Any], **options: Any) -> JobHandle[R]:
        """Store one job (options: ``delay``, ``run_at``, ``priority``, ``job_id``/``key``,
        ``queue``, ``max_attempts``, ``timeout``...); returns its handle once committed."""
        [handle] = await self.enqueue_many([args], **options)
        return handle

    async def enqueue_many(
        self, many: Iterable[P | dict[str, Any]], **options: Any
    ) -> list[JobHandle[R]]:
        """Store many jobs in one transaction; all are validated before any is stored."""
        app = self._app()
        now = app.clock()
        jobs = [self.new_job(args, now, **options) for args in many]
        ids = await app._enqueue(jobs)
        if jobs and jobs[0].queue not in app._queues_checked:  # the options: one queue
            await app._check_served(jobs[0].queue)
        return [JobHandle(app, job_id, self) for job_id in ids]

    def enqueue_sync(self, args: P | dict[str, Any], **options: Any) -> JobHandle[R]:
        """``enqueue`` for code that is not async (a web view, a script)."""
        [handle] = self.enqueue_many_sync([args], **options)
        return handle

    def enqueue_many_sync(
        self, many: Iterable[P | dict[str, Any]], **options: Any
    ) -> list[JobHandle[R]]:
        app = self._app()
        now = app.clock()
        jobs = [self.new_job(args, now, **options) for args in many]
        ids = app._direct(lambda engine: engine.enqueue(jobs))
        if jobs and jobs[0].queue not in app._queues_checked:  # the options: one queue
            app._check_served_sync(jobs[0].queue)
        return [JobHandle(app, job_id, self) for job_id in ids]


def bad_payload(job: Job, definition: JobDefinition[Any, Any], exc: msgspec.DecodeError) -> str:
    """Why a stored payload cannot be run: it does not match the job's schema (e.g. the
    schema changed since it was enqueued), or the row is corrupt (not JSON at all)."""
    if isinstance(exc, msgspec.ValidationError):
        return f"payload does not match {_type_name(definition.payload_type)}: {exc}"
    return str(CorruptRow(job.id, "payload", f"not valid JSON ({exc})"))


def unknown_job(job: Job, where: str, known: Iterable[str], warnings: Throttled) -> tuple[str, int]:
    """A job whose name has no handler ``where`` ("this worker", or its child process):
    the error its attempt fails with, and the delay (ms) before it runs again (its stored
    backoff, at least ``UNKNOWN_JOB_DELAY_S``). Logs a WARNING naming the job, its id and
    queue, with the closest name known here: once per name, then at most every minute."""
    known = sorted(known)
    close = did_you_mean(job.name, known) if known else " (it has no jobs)"
    if not close.startswith(","):  # no close match: some of the names it knows
        shown = ", ".join(repr(name) for name in known[:10])
        close = f" (it knows {len(known)}: {shown}{', ...' if len(known) > 10 else ''})"
    error = f"no handler for job {job.name!r} in {where}{close}"
    warnings.warning(
        job.name,
        "job %d (queue %r, attempt %d of %d): %s; retried per its policy, so that a worker "
        "that has it (a newer version, during a deploy) runs it",
        job.id,
        job.queue,
        job.attempt,
        job.max_attempts,
        error,
        extra=_job_extra(job),
    )
    delay_ms = lifecycle.retry_delay_ms(job.backoff, job.attempt, random.random())
    return error, max(delay_ms, round(UNKNOWN_JOB_DELAY_S * 1000))


def _payload_error(name: str, exc: msgspec.ValidationError, tp: Any, value: Any) -> PayloadError:
    """Name the offending field of ``value`` (of type ``tp``) as a dotted path
    (``inner.x``), also for missing ones, by name where msgspec gives a position (a
    NamedTuple's ``[0]``) or hides a dict's key (``[...]``)."""
    message = str(exc)
    path = ""
    if "- at `$" in message:
        message, path = message.rsplit(" - at `$", 1)
        path = _encoding.name_path(tp, value, path.rstrip("`"))
        message = f"{message} - at `${path}`"
    missing = re.match(r"Object missing required field `([^`]+)`", message)
    parts = [p for p in (path.lstrip("."), missing.group(1) if missing else "") if p]
    return PayloadError(
        f"invalid payload for job {name!r}: {message}", field=".".join(parts) or None
    )


def _decodes(decoder: msgspec.json.Decoder[Any], data: bytes) -> bool:
    try:
        decoder.decode(data)
    except msgspec.ValidationError:
        return False
    return True


def _type_name(tp: Any) -> str:
    """An annotation as written: ``int``, ``list[int]``, ``Doubled``, ``None``."""
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__qualname__
    return repr(tp).replace("typing.", "")


def _clip(value: Any, limit: int = 200) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[:limit] + "..."


def _unencodable(name: str, exc: _encoding.Unencodable) -> PayloadError:
    return PayloadError(f"invalid payload for job {name!r}: {exc}", field=exc.field)


def _unencodable_floats(name: str, args: Any) -> None:
    try:
        _encoding.check_floats(args)
    except _encoding.Unencodable as exc:
        raise _unencodable(name, exc) from None


class _OptionTypes(msgspec.Struct, forbid_unknown_fields=True):
    """The types job options must have (``backoff`` is checked apart: it may be custom)."""

    queue: str | None = None
    priority: int | None = None
    delay_s: float | None = None
    run_at_ms: int | None = None
    max_attempts: int | None = None
    timeout_s: float | None = None
    max_stalls: int | None = None
    key: str | None = None


def _check_option_types(
    options: dict[str, Any], where: str, names: dict[str, str] | None = None
) -> None:
    """Check job options' types, then their ranges (``option_error``): ``ConfigError``
    naming the option as the caller wrote it (``names``: field -> that name)."""
    names = names or {}
    backoff = options.get("backoff")
    if backoff is not None and not isinstance(backoff, (Fixed, Exponential, Linear, Custom)):
        raise ConfigError(f"invalid {where} option 'backoff': {backoff!r} is not a policy")
    try:
        msgspec.convert({k: v for k, v in options.items() if k != "backoff"}, _OptionTypes)
    except msgspec.ValidationError as exc:
        for field, value in options.items():  # which one: name it as the caller did
            if field != "backoff":
                try:
                    msgspec.convert({field: value}, _OptionTypes)
                except msgspec.ValidationError as one:
                    wrong = str(one).split(" - at `", 1)[0]
                    raise ConfigError(
                        f"invalid {where} option {names.get(field, field)!r}: {wrong}"
                    ) from None
        raise ConfigError(f"invalid {where} option: {exc}") from None
    for field, value in options.items():
        error = option_error(field, value)
        if error is not None:
            raise ConfigError(f"invalid {where} option {names.get(field, field)!r}: {error}")


_OPTION_ALIASES = {
    "delay": "delay_s",
    "timeout": "timeout_s",
    "job_id": "key",
    "run_at": "run_at_ms",
}


def _options(base: JobOptions, overrides: dict[str, Any]) -> JobOptions:
    """Per-call options over a job's defaults; unknown names, wrong types and values out
    of range raise ConfigError naming the option."""
    if not overrides:
        return base
    changes = {}
    names = {}
    for name, value in overrides.items():
        field = _OPTION_ALIASES.get(name, name)
        if field not in JobOptions.__struct_fields__:
            known = [*JobOptions.__struct_fields__, *_OPTION_ALIASES]
            raise ConfigError.unknown_option(name, known, "enqueue")
        if field == "run_at_ms" and hasattr(value, "timestamp"):
            value = _epoch_ms(name, value)
        changes[field] = value
        names[field] = name
    _check_option_types(changes, "enqueue", names)
    if "delay_s" in changes:
        changes.setdefault("run_at_ms", None)
    elif "run_at_ms" in changes:
        changes.setdefault("delay_s", None)
    try:
        return msgspec.structs.replace(base, **changes)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid enqueue option: {exc}") from None


def _epoch_ms(name: str, when: Any) -> int:
    """A ``datetime`` (anything with ``timestamp()``) in ms since the epoch."""
    try:
        return round(float(when.timestamp()) * 1000)
    except (OverflowError, ValueError, OSError) as exc:
        raise ConfigError(
            f"invalid enqueue option {name!r}: {when!r} is not a time a job can run at ({exc})"
        ) from None


# -- handles ----------------------------------------------------------------------------------


class JobHandle(Generic[R]):
    """A job that was enqueued: read its state, wait for its result, cancel it."""

    def __init__(self, app: App, job_id: int, definition: JobDefinition[Any, R] | None) -> None:
        self.app = app
        self.id = job_id
        self.definition = definition

    def __repr__(self) -> str:
        return f"<JobHandle {self.id}>"

    async def info(self) -> Job:
        """The stored job (``JobNotFound`` if it was removed)."""
        return cast(Job, await self.app._engine_call("get", self.id))

    async def status(self) -> JobState:
        return (await self.info()).state

    async def result(self, timeout: float | None = None) -> R:
        """Wait until the job finishes; its decoded return value. ``JobFailed`` if it
        failed or was cancelled; ``TimeoutError`` after ``timeout`` seconds;
        ``StorageError`` naming the job if the stored result does not decode (as the
        return annotation: stored by another version of the job, or damaged)."""
        with anyio.fail_after(timeout):
            job = await self.app._wait_finished(self.id)
        return self._outcome(job)

    def _outcome(self, job: Job) -> R:
        """A finished job's decoded result, or ``JobFailed``."""
        if job.state is JobState.COMPLETED:
            try:
                if self.definition is None:
                    return cast(R, None if job.result is None else msgspec.json.decode(job.result))
                return self.definition.decode_result(job.result)
            except (msgspec.DecodeError, RecursionError) as exc:
                raise self._undecodable(job, "result", exc) from None
        raise JobFailed(job.id, job.state, job.error)

    def _undecodable(self, job: Job, what: str, exc: BaseException) -> StorageError:
        """A stored value that does not decode: stored by another version of the job (its
        type changed), or damaged."""
        annotation = ""
        if what == "result" and self.definition is not None:
            annotation = f" as its return annotation `{_type_name(self.definition.result_type)}`"
        return StorageError(
            f"job {job.id} ({job.name!r}): its stored {what} does not decode{annotation}: "
            f"{exc} (stored by another version of the job, or damaged)"
        )

    async def cancel(self) -> JobState:
        """Cancel: a waiting or delayed job at once; a running one (in any process) is
        stopped by its worker within about 100 ms (it returns ``ACTIVE``: asked to stop)."""
        return await self.app._cancel(self.id)

    async def progress(self) -> Progress | None:
        """The last progress reported (None: none yet); ``StorageError`` naming the job if
        the stored one does not decode (damaged), never a raw msgspec error."""
        return self._progress_of(await self.info())

    def _progress_of(self, job: Job) -> Progress | None:
        if job.progress is None:
            return None
        try:
            return _PROGRESS.decode(job.progress)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise self._undecodable(job, "progress", exc) from None

    async def logs(self, *, limit: int = 100, offset: int = 0) -> list[LogEntry]:
        return cast(
            list[LogEntry], await self.app._engine_call("logs", self.id, limit=limit, offset=offset)
        )

    # -- the same, blocking: for code that is not async (a web view, a script) --

    def info_sync(self) -> Job:
        """``info`` for code that is not async: reads on this thread's own connection."""
        return self._blocking("info_sync", lambda engine: engine.get(self.id))

    def status_sync(self) -> JobState:
        """``status`` for code that is not async."""
        return self._blocking("status_sync", lambda engine: engine.get(self.id)).state

    def result_sync(self, timeout: float | None = None) -> R:
        """``result`` for code that is not async: polls the database (2 ms, doubling up to
        100 ms) until the job finishes; ``JobFailed`` if it failed or was cancelled,
        ``TimeoutError`` after ``timeout`` seconds (0: one read)."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        delay_s = _FIRST_POLL_S
        while True:
            job = self._blocking("result_sync", lambda engine: engine.get(self.id))
            if job.state in FINISHED_STATES:
                return self._outcome(job)
            pause = delay_s
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"job {self.id} did not finish within {timeout:g} s "
                        f"(it is {job.state.value})"
                    )
                pause = min(pause, left)
            time.sleep(pause)
            delay_s = min(delay_s * 2, _LAST_POLL_S)

    def cancel_sync(self) -> JobState:
        """``cancel`` for code that is not async (a running job is stopped by its worker,
        in this process or another: it returns ``ACTIVE``, asked to stop)."""
        return self._blocking("cancel_sync", lambda engine: engine.cancel(self.id))

    def progress_sync(self) -> Progress | None:
        """``progress`` for code that is not async."""
        return self._progress_of(self._blocking("progress_sync", lambda e: e.get(self.id)))

    def logs_sync(self, *, limit: int = 100, offset: int = 0) -> list[LogEntry]:
        """``logs`` for code that is not async."""
        return self._blocking(
            "logs_sync", lambda engine: engine.logs(self.id, limit=limit, offset=offset)
        )

    def _blocking(self, method: str, fn: Callable[[Engine], T]) -> T:
        """Run ``fn`` on this thread's own engine, unless this thread runs the app's
        runtime: blocking it would stop the jobs the caller waits for (``RuntimeError``
        naming the async method to await instead)."""
        app = self.app
        if app._runtime_thread == threading.get_ident():
            raise RuntimeError(
                f"JobHandle.{method}() blocks this thread, which runs the event loop of the "
                "app's runtime: the jobs it waits for could not run. Use "
                f"`await handle.{method.removesuffix('_sync')}()` here"
            )
        return app._direct(fn)


class QueueHandle:
    """Manage one queue: counts, listing, retry, cancel, pause, clean..."""

    def __init__(self, app: App, name: str) -> None:
        self.app = app
        self.name = name

    async def counts(self) -> dict[JobState, int]:
        return cast(dict[JobState, int], await self.app._engine_call("count", self.name))

    async def jobs(
        self, state: JobState | str | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[Job]:
        """One page of jobs (by id), optionally in one state."""
        state = None if state is None else JobState(state)
        jobs = await self.app._engine_call(
            "list_jobs", queue=self.name, state=state, limit=limit, offset=offset
        )
        return cast(list[Job], jobs)

    async def get(self, job_id: int) -> Job:
        return cast(Job, await self.app._engine_call("get", job_id))

    async def retry(self, job_id: int) -> JobState:
        """Run a failed or cancelled job again (attempts start over)."""
        state = cast(JobState, await self.app._engine_call("retry", job_id))
        self.app._wake([self.name])
        return state

    async def retry_failed(self, *, limit: int = 1000) -> int:
        """Retry every failed and cancelled job of the queue (up to ``limit``, oldest
        first), in one transaction; returns how many."""
        retried = await self.app._engine_call("retry_failed", self.name, limit=limit)
        self.app._wake([self.name])
        return len(retried)

    async def cancel(self, job_id: int) -> JobState:
        """As ``JobHandle.cancel``."""
        return await self.app._cancel(job_id)

    async def promote(self, job_id: int) -> JobState:
        """Make a delayed job ready now."""
        state = cast(JobState, await self.app._engine_call("promote", job_id))
        self.app._wake([self.name])
        return state

    async def remove(self, job_id: int) -> None:
        """Delete a job that is not running."""
        await self.app._engine_call("remove", job_id)

    async def pause(self) -> None:
        """Stop every runtime from starting jobs of this queue (running ones finish)."""
        await self._set_paused(True)

    async def resume(self) -> None:
        await self._set_paused(False)

    async def _set_paused(self, paused: bool) -> None:
        runtime = self.app._runtime
        if runtime is not None and self.name in runtime.queues:
            await (runtime.pause(self.name) if paused else runtime.resume(self.name))
        else:
            await self.app._engine_call("set_paused", self.name, paused)

    async def is_paused(self) -> bool:
        return self.name in cast(set[str], await self.app._engine_call("paused_queues"))

    async def drain(self) -> int:
        """Delete every waiting and delayed job of the queue; returns how many."""
        return cast(int, await self.app._engine_call("drain", self.name))

    async def clean(
        self,
        state: JobState | str = JobState.COMPLETED,
        *,
        older_than_s: float | None = None,
        keep_last: int | None = None,
    ) -> int:
        """Delete finished jobs in ``state`` older than ``older_than_s`` (and/or beyond the
        newest ``keep_last``); with neither, all of them. Returns how many.
        ``older_than_s``: 0 to ten years; ``keep_last``: >= 0."""
        if older_than_s is not None and not 0 <= older_than_s <= MAX_DURATION_S:
            raise ConfigError(
                f"clean option 'older_than_s' must be between 0 and {MAX_DURATION_S:.0f} s, "
                f"got {older_than_s!r}"
            )
        if keep_last is not None and not 0 <= keep_last <= INT64_MAX:
            raise ConfigError(f"clean option 'keep_last' must be >= 0, got {keep_last!r}")
        return cast(
            int,
            await self.app._engine_call(
                "prune",
                queue=self.name,
                states={JobState(state)},
                older_than_ms=None if older_than_s is None else round(older_than_s * 1000),
                keep_last=keep_last,
            ),
        )


# -- registry and app ---------------------------------------------------------------------------


class Registry:
    """Job definitions, to register in a plugin module and ``App.include`` later::

    registry = rota.Registry()

    @registry.job(queue="mail")
    async def send_mail(args: Mail) -> None: ...
    """

    def __init__(self) -> None:
        self.jobs: dict[str, JobDefinition[Any, Any]] = {}

    @typing.overload
    def job(self, fn: Callable[..., Awaitable[R]]) -> JobDefinition[Any, R]: ...

    @typing.overload
    def job(self, fn: Callable[..., R]) -> JobDefinition[Any, R]: ...

    @typing.overload
    def job(
        self,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        max_attempts: int | None = None,
        backoff: Backoff | None = None,
        timeout: float | None = None,
        max_stalls: int | None = None,
        mode: Mode | None = None,
    ) -> Callable[[Callable[..., Any]], JobDefinition[Any, Any]]: ...

    def job(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        max_attempts: int | None = None,
        backoff: Backoff | None = None,
        timeout: float | None = None,
        max_stalls: int | None = None,
        mode: Mode | None = None,
    ) -> Any:
        """Register a handler ``handler(args: T[, ctx])``; usable as ``@job`` or
        ``@job(queue=..., ...)``. Its payload type ``T`` is the first parameter's
        annotation: any type msgspec validates (a Struct, a dataclass, an attrs class, a
        TypedDict, a NamedTuple, int, str, list[...], dict[...]...); its result type is the
        return annotation (what it returns is checked against it before its job completes:
        see ``JobDefinition.encode_result``).

        ``name`` (stored with each job, and how a worker finds the handler) defaults to the
        function's ``__qualname__`` (``resize``, ``Images.resize``): the same however its
        module is imported (``pkg.jobs``, ``jobs``, ``__main__``). Two functions with one
        name in an app are a ``ConfigError``: give one a ``name``.

        Where it runs (``mode``): an ``async def`` handler on the event loop, a plain
        ``def`` one on a handler thread; ``mode="process"`` runs either in the queue's
        child processes (so does a queue configured with ``mode="process"``)."""

        def register(fn: Callable[..., Any]) -> JobDefinition[Any, Any]:
            definition = _define(
                fn,
                name=name,
                mode=mode,
                queue=queue,
                priority=priority,
                max_attempts=max_attempts,
                backoff=backoff,
                timeout=timeout,
                max_stalls=max_stalls,
            )
            self.add(definition)
            return self._adopt(definition)

        return register if fn is None else register(fn)

    def _adopt(self, definition: JobDefinition[Any, Any]) -> JobDefinition[Any, Any]:
        return definition

    def add(self, definition: JobDefinition[Any, Any]) -> None:
        """Register ``definition`` under its name: ``ConfigError`` if another function has
        that name. The same function registered again (its module imported a second time,
        under another name: ``pkg.jobs`` and ``jobs``) replaces itself."""
        existing = self.jobs.get(definition.name)
        if (
            existing is not None
            and existing.fn is not definition.fn
            and not _same_source(existing.fn, definition.fn)
        ):
            raise ConfigError(
                f"two jobs are named {definition.name!r}: {_where(existing.fn)} and "
                f"{_where(definition.fn)}; give one of them a name of its own: "
                f"@app.job(name='...') (a job's name is stored with each of its jobs; by "
                "default it is its function's name, whichever way its module is imported)"
            )
        self.jobs[definition.name] = definition


def _same_source(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    """Whether two functions are one function of one file, loaded twice (compiled twice:
    two closures of one code object, made by one factory, are two jobs)."""
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    return (
        code_a is not None
        and code_b is not None
        and code_a is not code_b
        and code_a.co_filename == code_b.co_filename
        and getattr(a, "__qualname__", None) == getattr(b, "__qualname__", None)
    )


def _where(fn: Callable[..., Any]) -> str:
    """A handler as a user finds it: ``module.function (file:line)``."""
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    code = getattr(fn, "__code__", None)
    return name if code is None else f"{name} ({code.co_filename}:{code.co_firstlineno})"


def _define(
    fn: Callable[..., Any], *, name: str | None, mode: Mode | None, **opts: Any
) -> JobDefinition[Any, Any]:
    if not callable(fn) or inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise ConfigError(f"job handler {fn!r} must be a function (async def or def)")
    if mode is not None and mode not in _MODES:
        raise ConfigError(
            f"job {fn.__qualname__}: unknown mode {mode!r}{did_you_mean(str(mode), _MODES)} "
            f"(known: {', '.join(_MODES)})"
        )
    is_async = inspect.iscoroutinefunction(fn)
    if mode == "async" and not is_async:
        raise ConfigError(
            f"job {fn.__qualname__}: mode 'async' needs an 'async def' handler; a plain def "
            "handler runs in mode 'thread' (the default for it) or 'process'"
        )
    if mode == "thread" and is_async:
        raise ConfigError(
            f"job {fn.__qualname__}: mode 'thread' is for plain def handlers; an 'async def' "
            "handler runs on the event loop (mode 'async') or in mode 'process'"
        )
    params = list(inspect.signature(fn).parameters.values())
    if not 1 <= len(params) <= 2:
        raise ConfigError(
            f"job handler {fn.__qualname__} must take (args) or (args, ctx), got {len(params)}"
        )
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # a NameError, mostly: a type defined where it is not seen
        raise ConfigError(
            f"job handler {fn.__qualname__}: its annotations do not resolve ({exc}); "
            "define the types they name at module level, or import them there"
        ) from None
    payload_type = _payload_type(fn, params[0].name, hints)
    result_type = hints.get("return", Any)
    if name is not None and option_error("name", name) is not None:
        raise ConfigError(f"job {fn.__qualname__}: option 'name' {option_error('name', name)}")
    options = {k: v for k, v in opts.items() if v is not None}
    if "timeout" in options:
        options["timeout_s"] = options.pop("timeout")
    _check_option_types(options, f"job {fn.__qualname__}", {"timeout_s": "timeout"})
    try:
        job_options = JobOptions(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"job {fn.__qualname__}: {exc}") from None
    return JobDefinition(
        fn,
        name=name or fn.__qualname__,
        payload_type=payload_type,
        result_type=result_type,
        options=job_options,
        takes_context=len(params) == 2,
        mode=mode,
    )


def _payload_type(fn: Callable[..., Any], param: str, hints: dict[str, Any]) -> Any:
    """The payload type of a handler: its first parameter's annotation, which must be a
    type msgspec validates (``ConfigError`` saying what to annotate, or what is wrong)."""
    if param not in hints:
        raise ConfigError(
            f"job handler {fn.__qualname__}: annotate its first parameter {param!r} with the "
            "type of the job's input (a msgspec.Struct, a dataclass, an attrs class, a "
            "TypedDict, a NamedTuple, or int, str, list[...], dict[...]...), e.g. "
            f"`def {fn.__name__}({param}: Resize, ctx: rota.Context)`"
        )
    payload_type = hints[param]
    try:
        msgspec.json.Decoder(payload_type)
        unsupported = _encoding.unsupported_types(payload_type)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"job handler {fn.__qualname__}: its payload type `{_type_name(payload_type)}` "
            f"is not one msgspec can validate: {exc}"
        ) from None
    if unsupported:
        cls = unsupported[0]
        raise ConfigError(
            f"job handler {fn.__qualname__}: its payload type `{_type_name(payload_type)}` "
            f"holds {cls.__qualname__}, which is not a type msgspec can validate (a plain "
            "class): make it a msgspec.Struct, a dataclass or an attrs class"
        )
    return payload_type


class _AppRegistry(Registry):
    """An app's own registry: what it registers is bound to the app at once."""

    def __init__(self, app: App) -> None:
        super().__init__()
        self.app = app

    def _adopt(self, definition: JobDefinition[Any, Any]) -> JobDefinition[Any, Any]:
        definition.app = self.app
        return definition


class App:
    """A rota application: its database, its jobs, and the runtime that runs them.

    ``App(database="rota.db", **options)``; the options are those of ``rota.Config``
    (an unknown one raises ``ConfigError`` with the closest known name).
    """

    def __init__(
        self,
        database: str = "rota.db",
        *,
        config: Config | None = None,
        clock: Callable[[], int] | None = None,
        import_name: str | None = None,
        instruments: Iterable[Instrument] = (),
        **options: Any,
    ) -> None:
        base = config if config is not None else Config()
        #: how child processes (process mode) import this app: ``"package.module:app"``;
        #: found by looking for the app among the imported modules if not given
        self.import_name = import_name
        #: hooks for metrics, tracing, dashboards (``rota.Instrument``): every runtime of
        #: this app calls them; add more with ``instruments.append`` before ``run()``
        self.instruments: list[Instrument] = list(instruments)
        for instrument in self.instruments:
            if not isinstance(instrument, Instrument):
                raise ConfigError(f"instruments: {instrument!r} is not a rota.Instrument")
        self.thread_hooks = ThreadHooks()
        self.config = base.replace(database=str(database), where="rota.App", **options)
        #: ms since the epoch; tests pass ``rota.testing.Clock`` to control time
        self.clock: Callable[[], int] = clock if clock is not None else _now_ms
        self.registry = _AppRegistry(self)
        #: register a job handler: ``@app.job`` or ``@app.job(queue=..., ...)`` (see
        #: ``Registry.job``)
        self.job = self.registry.job
        self._runtime: Runtime | None = None
        self._runtime_token: anyio.lowlevel.EventLoopToken | None = None
        #: the thread that runs the runtime's event loop (``threading.get_ident``)
        self._runtime_thread: int | None = None
        self._local = threading.local()
        self._engines: list[Engine] = []
        self._engines_lock = threading.Lock()
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        #: warnings about jobs with a name this app has no handler for (``unknown_job``)
        self._unknown = Throttled(log, _UNKNOWN_JOB_LOG_EVERY_S)
        self.database_path = self._resolve_database(self.config.database)
        #: the queues enqueued to whose workers were looked for (``_check_served``)
        self._queues_checked: set[str] = set()
        self._queues_checked_lock = threading.Lock()

    def _resolve_database(self, database: str) -> str:
        if database == ":memory:":
            # Several connections (the Store, producers, the watcher) must see one database:
            # a private temporary file behaves like :memory: for every caller.
            self._tmpdir = tempfile.TemporaryDirectory(prefix="rota-")
            return str(Path(self._tmpdir.name) / "memory.db")
        return database

    def __repr__(self) -> str:
        return f"<rota.App {self.database_path!r} jobs={sorted(self.registry.jobs)}>"

    # -- registering --

    def include(self, registry: Registry) -> None:
        """Add a plugin's job definitions to this app."""
        for definition in registry.jobs.values():
            self.registry.add(definition)
            definition.app = self

    def on_thread_start(self, fn: Callable[[], object]) -> Callable[[], object]:
        """Register a per-thread start hook (a decorator): it runs on every thread that
        runs sync handlers (each handler thread, and the main thread of each child
        process), once, before that thread's first job. Open a connection per thread::

            local = threading.local()

            @app.on_thread_start
            def connect() -> None:
                local.db = sqlite3.connect("app.db")

        An exception fails the job that was about to run (and is tried again before the
        next job on that thread)."""
        self.thread_hooks.start.append(fn)
        return fn

    def on_thread_stop(self, fn: Callable[[], object]) -> Callable[[], object]:
        """Register a per-thread stop hook: it runs on the thread when the thread stops
        (at shutdown, or when it is replaced), if its start hooks ran; stop hooks run in
        reverse order of registration."""
        self.thread_hooks.stop.append(fn)
        return fn

    def definition(self, name: str) -> JobDefinition[Any, Any]:
        try:
            return self.registry.jobs[name]
        except KeyError:
            raise ConfigError.unknown_option(name, self.registry.jobs, "this app's jobs") from None

    def queue(self, name: str = DEFAULT_QUEUE) -> QueueHandle:
        return QueueHandle(self, name)

    def handle(self, job_id: int) -> JobHandle[Any]:
        return JobHandle(self, job_id, None)

    @property
    def queues(self) -> list[str]:
        """The queues this app's runtime works on."""
        if self.config.queues is not None:
            return list(self.config.queues)
        return sorted({d.options.queue for d in self.registry.jobs.values()})

    # -- running --

    def engine(self, *, synchronous: Literal["FULL", "NORMAL"] | None = None) -> SqliteEngine:
        """A new engine on this app's database (the caller owns and closes it)."""
        return SqliteEngine(
            self.database_path,
            synchronous=synchronous or self.config.synchronous,
            clock=self.clock,
        )

    @contextlib.asynccontextmanager
    async def run(self, **options: Any) -> AsyncIterator[Runtime]:
        """Run the supervised runtime inside the current task group (trio or asyncio)::

            async with app.run():
                ...   # jobs run in the background; leaving the block shuts down gracefully

        ``options`` override ``Config`` options for this runtime (``queues``,
        ``concurrency``...). The runtime runs on the caller's event loop: a ``backend``
        set to the other one is a ``ConfigError`` (unset, it runs on either)."""
        if self._runtime is not None:
            raise RuntimeError("this app's runtime is already running")
        config = self.config.replace(where="App.run", **options) if options else self.config
        if not _same_database(config.database, self.config.database):
            raise ConfigError(
                f"App.run got database {config.database!r}, but this app's database is "
                f"{self.config.database!r}: a runtime works on its app's database"
            )
        queues = config.queues if config.queues is not None else self.queues
        backend = current_backend()
        if config.backend is not None and config.backend != backend:
            raise ConfigError(
                f"App.run: backend {config.backend!r} is set (App(backend=...), ROTA_BACKEND "
                f"or --backend), but app.run() runs under {backend}: an embedded runtime runs on "
                f"its caller's event loop and cannot switch; run the program under "
                f"{config.backend} (e.g. anyio.run(main, backend={config.backend!r})), or leave "
                "backend unset to run on whichever loop calls app.run()"
            )

        def store_engine() -> Engine:
            engine = self.engine(synchronous=config.synchronous)
            engine.own_doorbell = runtime.owner.doorbell  # its runtime wakes itself
            return engine

        runtime = Runtime(
            config=config,
            queues=queues,
            engine_factory=store_engine,
            runners=lambda queue: self._runners(queue, config, backend),
            change_feed=lambda confirm: SqliteChangeFeed(
                self.database_path, poll_interval_s=config.poll_interval_s, confirm=confirm
            ),
            clock=self.clock,
            instruments=self.instruments,
        )
        body_error: Exception | None = None
        async with anyio.create_task_group() as tg:
            # Before the start: a sync handler may report progress as soon as jobs run.
            self._runtime_token = anyio.lowlevel.current_token()
            self._runtime_thread = threading.get_ident()
            try:
                await tg.start(runtime.run)
            except BaseException:
                self._runtime_token = self._runtime_thread = None
                raise
            self._runtime = runtime
            try:
                yield runtime
            except Exception as exc:  # re-raised as itself below, not inside a group
                body_error = exc
            finally:
                # Cleared once stopped, not before: jobs that run on during the grace period
                # report progress and logs through this runtime, as before the shutdown (a
                # sync handler's ctx.progress needs its loop, or it fails the attempt).
                try:
                    with anyio.CancelScope(shield=True):
                        await runtime.stop()
                finally:
                    self._runtime = None
                    self._runtime_token = self._runtime_thread = None
        if body_error is not None:
            raise body_error

    def close(self) -> None:
        """Close the producers' connections (and remove a ``:memory:`` database)."""
        self._close_engines()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def _close_engines(self) -> None:
        """Close the producers' per-thread connections (the next use opens new ones)."""
        with self._engines_lock:
            engines, self._engines = self._engines, []
        for engine in engines:
            engine.close()
        self._local = threading.local()

    # -- executing (called by the WorkerPool) --

    def mode(self, definition: JobDefinition[Any, Any], queue: str | None = None) -> Mode:
        """Where ``definition``'s jobs run on ``queue`` (default: its own queue): the mode
        it was registered with, else ``process`` if the queue is configured so, else by
        the handler's kind (``async`` or ``thread``)."""
        return definition.mode_on(self.config.for_queue(queue or definition.options.queue).mode)

    def _needs_processes(self, queue: str, config: Config) -> bool:
        queue_mode = config.for_queue(queue).mode
        return queue_mode == "process" or any(
            d.options.queue == queue and d.mode_on(queue_mode) == "process"
            for d in self.registry.jobs.values()
        )

    def _runners(self, queue: str, config: Config, backend: str) -> QueueRunners:
        """One queue's thread pool (always: threads start when a sync job needs one) and
        process pool (if a job of the queue runs in process mode)."""
        settings = config.for_queue(queue)
        processes = None
        if self._needs_processes(queue, config):
            processes = ProcessPool(
                queue=queue,
                settings=ProcessSettings(
                    size=settings.processes,
                    max_jobs_per_child=settings.max_jobs_per_child,
                    kill_grace_s=config.kill_grace_s,
                    start_timeout_s=config.child_start_timeout_s,
                    max_restarts=config.child_max_restarts,
                    restart_period_s=config.child_restart_period_s,
                ),
                hello=Hello(
                    app=self._import_spec(),
                    path=list(sys.path),
                    database=str(Path(self.database_path).resolve()),
                    backend=backend,
                ),
            )
        runners = QueueRunners(
            queue=queue,
            mode=settings.mode,
            threads=ThreadPool(queue=queue, size=settings.concurrency, hooks=self.thread_hooks),
            processes=processes,
        )
        runners.execute = functools.partial(self._execute, runners=runners, backend=backend)
        return runners

    def _import_spec(self) -> str:
        """How a child process imports this app (``Hello.app``)."""
        if self.import_name is not None:
            return self.import_name
        main_attr = None
        for module_name, module in list(sys.modules.items()):
            namespace = getattr(module, "__dict__", None)
            if not isinstance(namespace, dict):
                continue
            for attr, value in list(namespace.items()):
                if value is self:
                    if module_name != "__main__":
                        return f"{module_name}:{attr}"
                    main_attr = attr
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        if main_attr is not None and main_file:
            return f"path:{Path(main_file).resolve()}:{main_attr}"
        raise ConfigError(
            "process mode needs child processes to import this app, and it is not a "
            "module-level variable of an importable module: define it at module level, "
            "or pass App(..., import_name='package.module:app')"
        )

    async def _execute(
        self, run: JobRun, runners: QueueRunners, backend: str
    ) -> Completion | Failure:
        job = run.job
        definition = self.registry.jobs.get(job.name)
        if definition is None:  # a newer version's job, or a name another app uses
            error, delay_ms = unknown_job(job, "this worker", self.registry.jobs, self._unknown)
            return Failure(job.id, run.token, error, FailureKind.ERROR, delay_ms)
        # (a pool claims only its own queue's jobs: the queue's mode is the runners')
        mode = definition.mode_on(runners.mode)
        if mode == "process":
            return await self._execute_in_child(run, definition, runners)
        try:
            args = definition.decode(job.payload)
        except msgspec.DecodeError as exc:
            error = bad_payload(job, definition, exc)
            return Failure(job.id, run.token, error, FailureKind.UNRECOVERABLE)
        if mode == "thread":
            return await self._execute_on_thread(run, definition, args, runners.threads)
        ctx = Context(self, run, job)
        timeout_s = job.timeout_s
        try:
            if timeout_s is None:  # the common case: no scope to open and close per job
                result = await definition(args, ctx)
            else:
                with anyio.move_on_after(timeout_s) as scope:
                    result = await definition(args, ctx)
                if scope.cancelled_caught:
                    return self._failure(definition, run, f"timed out after {timeout_s:g} s")
            data = definition.encode_result(result)
        except BaseException as exc:  # SystemExit too: it ends the attempt, not the worker
            if is_cancellation(exc):
                raise
            return self._settle(definition, run, attempt.failed(job.id, exc, backend=backend))
        finally:
            if run.logs:
                await self._flush_logs_at_end(run)
        return Completion(job.id, run.token, data)

    async def _execute_on_thread(
        self, run: JobRun, definition: JobDefinition[Any, Any], args: Any, threads: ThreadPool
    ) -> Completion | Failure:
        job = run.job
        stop = threading.Event()
        ctx = SyncContext(self, run, job, stop)
        timeout_s = job.timeout_s
        try:
            finished, done = await threads.run_sync(
                functools.partial(
                    attempt.run_sync,
                    job.id,
                    lambda: definition.call_sync(args, ctx),
                    definition.encode_result,
                ),
                cancelled=stop,
                timeout_s=timeout_s,
            )
        except BaseException as exc:  # a per-thread start hook failed: this attempt fails
            if is_cancellation(exc):
                raise
            finished, done = True, attempt.failed(job.id, exc)
        finally:
            if run.logs:
                await self._flush_logs_at_end(run)
        if not finished or done is None:
            return self._failure(
                definition,
                run,
                f"timed out after {timeout_s:g} s (its thread cannot be killed: it was left "
                "to finish alone and its result will be dropped)",
            )
        return self._settle(definition, run, done)

    async def _execute_in_child(
        self, run: JobRun, definition: JobDefinition[Any, Any], runners: QueueRunners
    ) -> Completion | Failure:
        job = run.job
        pool = runners.processes
        if pool is None:
            return Failure(
                job.id,
                run.token,
                f"job {job.name!r} runs in process mode, but queue {job.queue!r} has no "
                "process pool in this worker (set mode='process' on the job's own queue, "
                "or queue_config={...: {'mode': 'process'}})",
                FailureKind.ERROR,
            )

        async def on_progress(data: bytes) -> None:
            await self._report_progress(run, data)

        def on_log(line: str) -> None:
            run.logs.append(line)
            _log_line(job, line)

        try:
            done = await pool.run_job(job, on_progress=on_progress, on_log=on_log)
        finally:
            if run.logs:
                await self._flush_logs_at_end(run)
        if isinstance(done, Interrupted):
            if done.timed_out:
                return self._failure(definition, run, done.error)
            # The child died: run the job again at once (it counts as an attempt).
            return Failure(job.id, run.token, done.error, FailureKind.ERROR, 0)
        return self._settle(definition, run, done)

    def _settle(
        self, definition: JobDefinition[Any, Any], run: JobRun, done: JobDone
    ) -> Completion | Failure:
        """The outcome to store for an attempt that ended by itself, in any mode (the
        worker pool logs it once it is stored, with what the engine made of it)."""
        job = run.job
        status = done.status
        if status == "ok":
            return Completion(job.id, run.token, done.result)
        error = done.error or status
        if status == "unrecoverable":
            return Failure(job.id, run.token, error, FailureKind.UNRECOVERABLE)
        return self._failure(definition, run, error, done.delay_ms)

    @staticmethod
    def _failure(
        definition: JobDefinition[Any, Any], run: JobRun, error: str, delay_ms: int | None = None
    ) -> Failure:
        backoff = definition.options.backoff
        if (
            delay_ms is None
            and isinstance(backoff, Custom)
            and run.job.attempt < run.job.max_attempts
        ):
            try:
                delay_ms = round(backoff.delay_s(run.job.attempt) * 1000)
            except Exception as exc:  # a broken policy fails the job, never the pool
                text = (  # its last line: what the log line of the failure shows
                    f"{error.rstrip()}\nno retry: the backoff policy {backoff.fn!r} of job "
                    f"{definition.name!r} failed for attempt {run.job.attempt}: {exc!r}"
                )
                return Failure(run.job.id, run.token, text, FailureKind.UNRECOVERABLE)
        return Failure(run.job.id, run.token, error, FailureKind.ERROR, delay_ms)

    async def _report_progress(self, run: JobRun, data: bytes) -> None:
        """Store a progress report of a running job (its pending log lines first)."""
        await self._flush_logs(run)
        await self._engine_call("set_progress", run.job.id, run.token, data)

    async def _flush_logs(self, run: JobRun) -> None:
        logs, run.logs = run.logs, []
        for line in logs:
            await self._engine_call("add_log", run.job.id, run.token, line)

    async def _flush_logs_at_end(self, run: JobRun) -> None:
        """Store an ended attempt's last log lines, even while it is being cancelled; a
        failure to store them must not change how the attempt ended."""
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await self._flush_logs(run)

    # -- storage access (through the runtime's Store if one runs here, else directly) --

    def _in_runtime_loop(self) -> bool:
        """Whether this is the loop of this app's runtime, and its Store takes calls (once
        the Store is stopping, calls go to the database directly)."""
        runtime = self._runtime
        if runtime is None or not runtime.store_ref.running:
            return False
        try:
            return anyio.lowlevel.current_token() == self._runtime_token
        except Exception:
            return False

    async def _enqueue(self, jobs: Sequence[NewJob]) -> list[int]:
        if self._in_runtime_loop():
            assert self._runtime is not None
            return await self._runtime.enqueue(jobs)
        return cast(list[int], await self._engine_call("enqueue", list(jobs)))

    # -- an enqueue to a queue that no live worker serves: said once per queue --

    def _first_check(self, queue: str) -> bool:
        """True once per queue: the first enqueue to it looks for its workers."""
        with self._queues_checked_lock:
            if queue in self._queues_checked:
                return False
            self._queues_checked.add(queue)
            return True

    def _served_here(self, queue: str) -> bool:
        runtime = self._runtime
        return runtime is not None and queue in runtime.queues

    async def _check_served(self, queue: str) -> None:
        """After the first enqueue to ``queue``: warn if no live worker serves it (a
        runtime of this app that serves it counts without a read)."""
        if not self._first_check(queue) or self._served_here(queue):
            return
        try:
            owners = cast(list[Owner], await self._engine_call("list_owners"))
        except Exception as exc:  # a warning's read never fails an enqueue that committed
            _app_log.debug("could not read the workers of queue %r: %r", queue, exc)
            return
        self._warn_if_unserved(queue, owners)

    def _check_served_sync(self, queue: str) -> None:
        """``_check_served`` for ``enqueue_sync``."""
        if not self._first_check(queue) or self._served_here(queue):
            return
        try:
            owners = self._direct(lambda engine: engine.list_owners())
        except Exception as exc:
            _app_log.debug("could not read the workers of queue %r: %r", queue, exc)
            return
        self._warn_if_unserved(queue, owners)

    def _warn_if_unserved(self, queue: str, owners: Sequence[Owner]) -> None:
        max_age_s = LIVE_HEARTBEATS * self.config.heartbeat_interval_s
        oldest = self.clock() - round(max_age_s * 1000)
        if any(queue in o.queues and o.heartbeat_at_ms >= oldest for o in owners):
            return
        _app_log.warning(
            "enqueued to queue %r, which no live worker serves (none sent a heartbeat in the "
            "last %g s): its jobs wait until a worker for it starts (rota worker module:app); "
            "said once per queue",
            queue,
            max_age_s,
            extra={"queue": queue},
        )

    def _wake(self, queues: Sequence[str]) -> None:
        if self._in_runtime_loop():
            assert self._runtime is not None
            self._runtime.wake(queues)

    async def _cancel(self, job_id: int) -> JobState:
        state = cast(JobState, await self._engine_call("cancel", job_id))
        if state is JobState.ACTIVE and self._in_runtime_loop():
            # Committed by this runtime's own Store, which its watcher does not report
            # (another connection's cancel is): have the renewers check now.
            assert self._runtime is not None
            self._runtime.check_cancels()
        return state

    async def _engine_call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One engine operation: through the Store inside a runtime (group commit), else on
        a worker thread with a connection of its own."""
        if self._in_runtime_loop():
            assert self._runtime is not None
            store = self._runtime.store
            direct = getattr(store, method, None)  # a typed Store operation of that name
            if direct is not None:
                return await direct(*args, **kwargs)
            return await store.call(method, *args, **kwargs)
        return await anyio.to_thread.run_sync(
            lambda: self._direct(lambda engine: getattr(engine, method)(*args, **kwargs))
        )

    def _direct(self, fn: Callable[[Engine], R]) -> R:
        """Run ``fn`` on this thread's own engine (created, and migrated, on first use)."""
        engine: Engine | None = getattr(self._local, "engine", None)
        if engine is None:
            engine = self.engine()
            engine.migrate()
            self._local.engine = engine
            with self._engines_lock:
                self._engines.append(engine)
        return fn(engine)

    async def _wait_finished(self, job_id: int) -> Job:
        delay_s = _FIRST_POLL_S
        while True:
            job = cast(Job, await self._engine_call("get", job_id))
            if job.state in FINISHED_STATES:
                return job
            delay_s = await self._wait_for_change(delay_s)

    async def _wait_for_change(self, delay_s: float) -> float:
        """Wait for something to have been committed: woken by this process's Store if a
        runtime runs here, else poll after ``delay_s`` (doubling, up to 0.1 s). Returns the
        next delay."""
        if self._in_runtime_loop():
            assert self._runtime is not None
            await self._runtime.wait_for_commit(0.1)
            return delay_s
        await anyio.sleep(delay_s)
        return min(delay_s * 2, _LAST_POLL_S)

    # -- events --

    def events(
        self,
        *,
        queue: str | None = None,
        kinds: Iterable[EventKind | str] | None = None,
        after_id: int | None = None,
    ) -> EventStream:
        """Job events as they are committed (by this process or any other), from now on
        (or after ``after_id``), optionally of one queue and some kinds::

            async for event in app.events(kinds=["completed", "failed"]):
                ...
        """
        if after_id is None:  # "from now on" means from this call, not the first read
            after_id = self._direct(lambda engine: engine.last_event_id())
        return EventStream(self, queue, kinds, after_id)


class EventStream:
    """An async iterator over committed job events (see ``App.events``). It holds no
    resources between reads, so leaving a loop early needs no clean-up."""

    def __init__(
        self,
        app: App,
        queue: str | None,
        kinds: Iterable[EventKind | str] | None,
        after_id: int,
    ) -> None:
        self.app = app
        self.queue = queue
        self.kinds = None if kinds is None else {EventKind(k) for k in kinds}
        self.cursor = after_id
        self._pending: collections.deque[Event] = collections.deque()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        app = self.app
        delay_s = _FIRST_POLL_S
        while True:
            while self._pending:
                event = self._pending.popleft()
                if self.kinds is None or event.kind in self.kinds:
                    return event
            batch = cast(
                list[Event],
                await app._engine_call("events", self.cursor, limit=1000, queue=self.queue),
            )
            if batch:
                self.cursor = batch[-1].id
                self._pending.extend(batch)
                delay_s = _FIRST_POLL_S
                continue
            delay_s = await app._wait_for_change(delay_s)


def _same_database(a: str, b: str) -> bool:
    return a == b or os.path.realpath(a) == os.path.realpath(b)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000

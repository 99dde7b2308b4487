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
import enum
import inspect
import logging
import re
import sys
import tempfile
import threading
import time
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Generic, Literal, NoReturn, TypeVar, cast

import anyio
import msgspec

from rota import _encoding
from rota._access import StorageAccess
from rota._encoding import type_name as _type_name
from rota.actors._backend import current_backend
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
from rota.errors import (
    ConfigError,
    JobFailed,
    PayloadError,
    StorageError,
    UsageError,
    WaitTimeout,
    did_you_mean,
)
from rota.execution import Execution
from rota.execution.context import Context, SyncContext
from rota.execution.threads import ThreadHooks
from rota.execution.wire import Hello
from rota.runtime import Runtime
from rota.storage import DatabaseUrl, open_change_feed, open_engine, ops
from rota.storage.engine import Engine

__all__ = [
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

_app_log = logging.getLogger("rota.app")

#: A job's payload type: anything msgspec validates (a Struct, a dataclass, an attrs class,
#: a TypedDict, a NamedTuple, int, str, list[...], dict[...]...).
P = TypeVar("P")
#: Where a handler runs: on the event loop, on a handler thread, or in a child process.
Mode = Literal["async", "thread", "process"]
_MODES: tuple[str, ...] = typing.get_args(Mode)
R = TypeVar("R")
T = TypeVar("T")
_E = TypeVar("_E", bound=enum.Enum)

_JSON = msgspec.json.Encoder()
_PROGRESS = msgspec.json.Decoder(Progress)
#: First poll delay when waiting for another connection's commits (then doubling).
_FIRST_POLL_S = 0.002
#: The longest poll delay when waiting for another connection's commits.
_LAST_POLL_S = 0.1


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
        """A stored result decoded as the return annotation (None stays None);
        ``msgspec.DecodeError`` if it does not match (``JobHandle.result`` reports it)."""
        return cast(R, None if data is None else self._result_decoder.decode(data))

    # producing

    def _app(self) -> App:
        if self.app is None:
            raise ConfigError(f"job {self.name!r} is in a Registry not yet included in an App")
        return self.app

    def new_job(self, args: P | dict[str, Any], now_ms: int, **overrides: Any) -> NewJob:
        """The job ``enqueue`` would store at ``now_ms``, validated (``PayloadError``,
        ``ConfigError``) but not stored."""
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
        """``enqueue_many`` for code that is not async: one transaction, on this thread's
        own connection; all are validated before any is stored."""
        app = self._app()
        now = app.clock()
        jobs = [self.new_job(args, now, **options) for args in many]
        ids = app._storage.run_sync(ops.Enqueue(jobs))
        if jobs and jobs[0].queue not in app._queues_checked:  # the options: one queue
            app._check_served_sync(jobs[0].queue)
        return [JobHandle(app, job_id, self) for job_id in ids]


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
        return await self.app._storage.run(ops.Get(self.id))

    async def status(self) -> JobState:
        """The job's state now (``JobNotFound`` if it was removed)."""
        return (await self.info()).state

    async def result(self, timeout: float | None = None) -> R:
        """Wait until the job finishes; its decoded return value. ``JobFailed`` if it
        failed or was cancelled; ``WaitTimeout`` (a ``TimeoutError``) after ``timeout``
        seconds; ``StorageError`` naming the job if the stored result does not decode (as
        the return annotation: stored by another version of the job, or damaged)."""
        with anyio.move_on_after(timeout) as scope:
            job = await self.app._wait_finished(self.id)
        if scope.cancelled_caught:
            raise WaitTimeout(f"job {self.id} did not finish within {timeout:g} s")
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
        """One page of the job's log lines (``ctx.log``), oldest first."""
        return await self.app._storage.run(ops.Logs(self.id, limit, offset))

    # -- the same, blocking: for code that is not async (a web view, a script) --

    def info_sync(self) -> Job:
        """``info`` for code that is not async: reads on this thread's own connection."""
        return self._blocking("info_sync", ops.Get(self.id))

    def status_sync(self) -> JobState:
        """``status`` for code that is not async."""
        return self._blocking("status_sync", ops.Get(self.id)).state

    def result_sync(self, timeout: float | None = None) -> R:
        """``result`` for code that is not async: polls the database (2 ms, doubling up to
        100 ms) until the job finishes; ``JobFailed`` if it failed or was cancelled,
        ``WaitTimeout`` (a ``TimeoutError``) after ``timeout`` seconds (0: one read)."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        delay_s = _FIRST_POLL_S
        while True:
            job = self._blocking("result_sync", ops.Get(self.id))
            if job.state in FINISHED_STATES:
                return self._outcome(job)
            pause = delay_s
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(
                        f"job {self.id} did not finish within {timeout:g} s "
                        f"(it is {job.state.value})"
                    )
                pause = min(pause, left)
            time.sleep(pause)
            delay_s = min(delay_s * 2, _LAST_POLL_S)

    def cancel_sync(self) -> JobState:
        """``cancel`` for code that is not async (a running job is stopped by its worker,
        in this process or another: it returns ``ACTIVE``, asked to stop)."""
        return self._blocking("cancel_sync", ops.Cancel(self.id))

    def progress_sync(self) -> Progress | None:
        """``progress`` for code that is not async."""
        return self._progress_of(self._blocking("progress_sync", ops.Get(self.id)))

    def logs_sync(self, *, limit: int = 100, offset: int = 0) -> list[LogEntry]:
        """``logs`` for code that is not async."""
        return self._blocking("logs_sync", ops.Logs(self.id, limit, offset))

    def _blocking(self, method: str, op: ops.Op[T]) -> T:
        """Run ``op`` on this thread's own engine, unless this thread runs the app's
        runtime: blocking it would stop the jobs the caller waits for (``UsageError``, a
        ``RuntimeError``, naming the async method to await instead)."""
        app = self.app
        if app._storage.on_runtime_thread():
            raise UsageError(
                f"JobHandle.{method}() blocks this thread, which runs the event loop of the "
                "app's runtime: the jobs it waits for could not run. Use "
                f"`await handle.{method.removesuffix('_sync')}()` here"
            )
        return app._storage.run_sync(op)


class QueueHandle:
    """Manage one queue: counts, listing, retry, cancel, pause, clean..."""

    def __init__(self, app: App, name: str) -> None:
        self.app = app
        self.name = name

    async def counts(self) -> dict[JobState, int]:
        """How many of the queue's jobs are in each state (every state present)."""
        return await self.app._storage.run(ops.Count(self.name))

    async def jobs(
        self, state: JobState | str | None = None, *, limit: int = 100, offset: int = 0
    ) -> list[Job]:
        """One page of jobs (by id), optionally in one state; ``ConfigError`` for a state
        that does not exist or a negative ``limit`` or ``offset``."""
        state = None if state is None else _member(JobState, state, "job state")
        return await self.app._storage.run(ops.ListJobs(self.name, state, limit, offset))

    async def get(self, job_id: int) -> Job:
        """The stored job with that id (``JobNotFound``)."""
        return await self.app._storage.run(ops.Get(job_id))

    async def retry(self, job_id: int) -> JobState:
        """Run a failed or cancelled job again (attempts start over)."""
        state = await self.app._storage.run(ops.Retry(job_id))
        self.app._wake([self.name])
        return state

    async def retry_failed(self, *, limit: int = 1000) -> int:
        """Retry every failed and cancelled job of the queue (up to ``limit``, oldest
        first), in one transaction; returns how many."""
        retried = await self.app._storage.run(ops.RetryFailed(self.name, limit))
        self.app._wake([self.name])
        return len(retried)

    async def cancel(self, job_id: int) -> JobState:
        """As ``JobHandle.cancel``."""
        return await self.app._cancel(job_id)

    async def promote(self, job_id: int) -> JobState:
        """Make a delayed job ready now."""
        state = await self.app._storage.run(ops.Promote(job_id))
        self.app._wake([self.name])
        return state

    async def remove(self, job_id: int) -> None:
        """Delete a job that is not running."""
        await self.app._storage.run(ops.Remove(job_id))

    async def pause(self) -> None:
        """Stop every runtime from starting jobs of this queue (running ones finish)."""
        await self._set_paused(True)

    async def resume(self) -> None:
        """Let every runtime start the queue's jobs again (undoes ``pause``)."""
        await self._set_paused(False)

    async def _set_paused(self, paused: bool) -> None:
        runtime = self.app._storage.runtime
        if runtime is not None and self.name in runtime.queues:
            await (runtime.pause(self.name) if paused else runtime.resume(self.name))
        else:
            await self.app._storage.run(ops.SetPaused(self.name, paused))

    async def is_paused(self) -> bool:
        """Whether the queue is paused (for every runtime on the database)."""
        return self.name in await self.app._storage.run(ops.PausedQueues())

    async def purge(self) -> int:
        """Delete every waiting and delayed job of the queue; returns how many."""
        return await self.app._storage.run(ops.Purge(self.name))

    def drain(self) -> NoReturn:
        """Renamed ``purge()``: raises ``UsageError`` (a ``RuntimeError``) saying so, and
        deletes nothing. ("Drain" in rota means working jobs off until none are left.)"""
        raise UsageError(
            "QueueHandle.drain() was renamed purge() (it deletes the queue's waiting and "
            "delayed jobs); nothing was deleted"
        )

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
        return await self.app._storage.run(
            ops.Prune(
                queue=self.name,
                states=frozenset({_member(JobState, state, "job state")}),
                older_than_ms=None if older_than_s is None else round(older_than_s * 1000),
                keep_last=keep_last,
            )
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

    ``App(database="rota.db", **options)``: ``database`` a path or a URL (``jobs.db``,
    ``sqlite:///jobs.db``, ``:memory:``; see ``rota.storage.DatabaseUrl.parse``); the
    options are those of ``rota.Config`` (an unknown one raises ``ConfigError`` with the
    closest known name).
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
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        #: where this app's connections go (``config.database``, parsed; a ``:memory:``
        #: app's private file, so that all of them see one database)
        self.database_url = self._resolve_database(self.config.database)
        #: the one door to the database: ``await self._storage.run(op)`` (``rota.storage.ops``)
        self._storage = StorageAccess(self.engine)
        #: how its jobs run: each queue's pools and executor, for every runtime
        self._execution = Execution(
            jobs=self.registry.jobs,
            thread_hooks=self.thread_hooks,
            storage=self._storage,
            hello=self._hello,
        )
        #: the queues enqueued to whose workers were looked for (``_check_served``)
        self._queues_checked: set[str] = set()
        self._queues_checked_lock = threading.Lock()

    def _resolve_database(self, database: str) -> DatabaseUrl:
        url = DatabaseUrl.parse(database)
        if url.memory:
            # Several connections (the Store, producers, the watcher) must see one database:
            # a private temporary file behaves like :memory: for every caller.
            self._tmpdir = tempfile.TemporaryDirectory(prefix="rota-")
            return url.shared(self._tmpdir.name)
        return url

    @property
    def database_path(self) -> str:
        """The database file this app's connections open (``database_url``'s path)."""
        return self.database_url.path

    @database_path.setter
    def database_path(self, path: str) -> None:
        """Point the app at another database (a path or URL)."""
        self.database_url = DatabaseUrl.parse(path)

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
        """The job registered under ``name`` (``ConfigError`` with the closest name)."""
        try:
            return self.registry.jobs[name]
        except KeyError:
            raise ConfigError.unknown_option(name, self.registry.jobs, "this app's jobs") from None

    def queue(self, name: str = DEFAULT_QUEUE) -> QueueHandle:
        """A handle to manage the queue ``name`` (nothing is read or created yet)."""
        return QueueHandle(self, name)

    def handle(self, job_id: int) -> JobHandle[Any]:
        """A handle to the job with that id, from any process (its result is decoded as
        JSON, not as a return annotation: the handle does not know the job's type)."""
        return JobHandle(self, job_id, None)

    @property
    def queues(self) -> list[str]:
        """The queues this app's runtime works on."""
        if self.config.queues is not None:
            return list(self.config.queues)
        return sorted({d.options.queue for d in self.registry.jobs.values()})

    # -- running --

    def engine(
        self,
        *,
        synchronous: Literal["FULL", "NORMAL"] | None = None,
        own_doorbell: str | None = None,
    ) -> Engine:
        """A new engine on this app's database (the caller owns and closes it);
        ``own_doorbell``: a runtime's, which the engine never rings."""
        return open_engine(
            self.database_url,
            synchronous=synchronous or self.config.synchronous,
            clock=self.clock,
            own_doorbell=own_doorbell,
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
            raise UsageError("this app's runtime is already running (app.run() is entered once)")
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
            # the Store never rings its own runtime's doorbell: that runtime wakes itself
            return self.engine(synchronous=config.synchronous, own_doorbell=runtime.owner.doorbell)

        runtime = Runtime(
            config=config,
            queues=queues,
            engine_factory=store_engine,
            runners=lambda queue: self._execution.queue_runners(queue, config, backend),
            change_feed=lambda confirm: open_change_feed(
                self.database_url, poll_interval_s=config.poll_interval_s, confirm=confirm
            ),
            clock=self.clock,
            instruments=self.instruments,
        )
        body_error: Exception | None = None
        async with anyio.create_task_group() as tg:
            # Before the start: a sync handler may report progress as soon as jobs run.
            self._storage.bind_loop()
            try:
                await tg.start(runtime.run)
            except BaseException:
                self._storage.detach()
                raise
            self._storage.attach(runtime)
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
                    self._storage.detach()
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
        self._storage.close()

    @property
    def _runtime(self) -> Runtime | None:
        """This app's runtime while it runs (in this process)."""
        return self._storage.runtime

    # -- where jobs run --

    def mode(self, definition: JobDefinition[Any, Any], queue: str | None = None) -> Mode:
        """Where ``definition``'s jobs run on ``queue`` (default: its own queue): the mode
        it was registered with, else ``process`` if the queue is configured so, else by
        the handler's kind (``async`` or ``thread``)."""
        return definition.mode_on(self.config.for_queue(queue or definition.options.queue).mode)

    def _hello(self, backend: str) -> Hello:
        """What a child process (process mode) needs to import this app."""
        return Hello(
            app=self._import_spec(),
            path=list(sys.path),
            database=str(self.database_url.absolute()),
            backend=backend,
        )

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

    # -- storage access (through the runtime's Store if one runs here, else directly) --

    def _in_runtime_loop(self) -> bool:
        """Whether this is the loop of this app's runtime, and its Store takes calls."""
        return self._storage.in_runtime_loop()

    async def _enqueue(self, jobs: Sequence[NewJob]) -> list[int]:
        if self._in_runtime_loop():
            assert self._runtime is not None
            return await self._runtime.enqueue(jobs)
        return await self._storage.run(ops.Enqueue(list(jobs)))

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
            owners = await self._storage.run(ops.ListOwners())
        except Exception as exc:  # a warning's read never fails an enqueue that committed
            _app_log.debug("could not read the workers of queue %r: %r", queue, exc)
            return
        self._warn_if_unserved(queue, owners)

    def _check_served_sync(self, queue: str) -> None:
        """``_check_served`` for ``enqueue_sync``."""
        if not self._first_check(queue) or self._served_here(queue):
            return
        try:
            owners = self._storage.run_sync(ops.ListOwners())
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
        state = await self._storage.run(ops.Cancel(job_id))
        if state is JobState.ACTIVE and self._in_runtime_loop():
            # Committed by this runtime's own Store, which its watcher does not report
            # (another connection's cancel is): have the renewers check now.
            assert self._runtime is not None
            self._runtime.check_cancels()
        return state

    async def _wait_finished(self, job_id: int) -> Job:
        delay_s = _FIRST_POLL_S
        while True:
            job = await self._storage.run(ops.Get(job_id))
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
            after_id = self._storage.run_sync(ops.LastEventId())
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
        self.kinds = None if kinds is None else {_member(EventKind, k, "event kind") for k in kinds}
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
            batch = await app._storage.run(ops.Events(self.cursor, 1000, self.queue))
            if batch:
                self.cursor = batch[-1].id
                self._pending.extend(batch)
                delay_s = _FIRST_POLL_S
                continue
            delay_s = await app._wait_for_change(delay_s)


def _member(kind: type[_E], value: _E | str, what: str) -> _E:
    """``kind(value)``, or ``ConfigError`` naming the closest of its values (``what``: how
    the message names it, e.g. "job state")."""
    try:
        return kind(value)
    except ValueError:
        known = [str(member.value) for member in kind]
        raise ConfigError(f"unknown {what} {value!r}{did_you_mean(str(value), known)}") from None


def _same_database(a: str, b: str) -> bool:
    return a == b or DatabaseUrl.parse(a).same_database(DatabaseUrl.parse(b))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000

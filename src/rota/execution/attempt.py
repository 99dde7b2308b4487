"""One attempt's ending, the same in every mode: a ``JobDone`` built from what the
handler returned or raised. The event loop, a handler thread and a child process all
classify exceptions here, so a ``Retry`` or an ``Unrecoverable`` means the same wherever
the handler ran.

An async handler that fails the way code written for the other event loop fails (asyncio
code under trio: ``RuntimeError: no running event loop``; trio code under asyncio:
``RuntimeError: must be called from async context``...) gets a last line saying how to
switch (``backend_hint``): it is what the worker logs, and what the stored error ends with.
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec

from rota.actors._backend import is_cancellation
from rota.domain.outcome import Retry, Unrecoverable
from rota.execution.wire import JobDone

__all__ = ["MAX_ERROR_CHARS", "backend_hint", "failed", "run_async", "run_sync"]

#: An attempt's error text keeps the end of a traceback (the part that names the cause).
MAX_ERROR_CHARS: Final = 8000

_JSON = msgspec.json.Encoder()


#: Exceptions that end programs, not attempts, and what a handler that raised one most
#: likely did.
_EXITS: Final = {
    SystemExit: "sys.exit(), or a library that exits: argparse's parser.error(), click "
    "in standalone mode",
    KeyboardInterrupt: "Ctrl-C stops a worker as a signal, never through a job",
    GeneratorExit: "outside a generator",
}


#: What an async handler meets when it needs the other event loop, by the loop it ran on:
#: an exception type and a part of its message (found anywhere in the exception's chain).
_OTHER_LOOP_SIGNATURES: Final[dict[str, tuple[tuple[type[BaseException], str], ...]]] = {
    "trio": (  # asyncio code under trio
        (RuntimeError, "no running event loop"),  # asyncio.get_running_loop(), sleep()...
        (RuntimeError, "no current event loop"),  # asyncio.get_event_loop() (3.12+)
        (TypeError, "trio.run received unrecognized yield message"),  # an asyncio Future
    ),
    "asyncio": (  # trio code under asyncio
        (RuntimeError, "must be called from async context"),  # trio.sleep(), trio.*
        (RuntimeError, "not running under trio"),
        (RuntimeError, "bad yield: <class 'trio."),  # a trio trap awaited by asyncio
        (AttributeError, "'RunContext' object has no attribute"),  # trio.open_nursery()
    ),
}


def backend_hint(exc: BaseException, backend: str) -> str | None:
    """How to switch loops, if ``exc`` (an async handler's, that ran on ``backend``) is the
    other loop's signature: the other framework's error, or sniffio's
    ``AsyncLibraryNotFoundError`` (a library that could not tell which loop runs it)."""
    signatures = _OTHER_LOOP_SIGNATURES.get(backend)
    if signatures is None:
        return None
    for error in _chain(exc):
        text = str(error)
        if type(error).__name__ == "AsyncLibraryNotFoundError" or any(
            isinstance(error, kind) and part in text for kind, part in signatures
        ):
            needed = "asyncio" if backend == "trio" else "trio"
            return (
                f"this handler needs {needed} (it ran on {backend}): run "
                f"`rota worker --backend {needed}` (or ROTA_BACKEND={needed} / "
                f"App(backend='{needed}'))"
            )
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, the leaves of a group, and what each was raised from or during."""
    found: list[BaseException] = []
    seen: set[int] = set()
    todo = [exc]
    while todo and len(found) < 100:
        error = todo.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        found.append(error)
        if isinstance(error, BaseExceptionGroup):
            todo.extend(error.exceptions)
        todo.extend(e for e in (error.__cause__, error.__context__) if e is not None)
    return found


def failed(job_id: int, exc: BaseException, *, backend: str | None = None) -> JobDone:
    """How a handler's exception ends its attempt. Anything it raises ends only the
    attempt, ``SystemExit`` and ``KeyboardInterrupt`` too: a job cannot stop its worker
    (the error's last line says so). ``backend``: the event loop an async handler ran on
    (None for a sync handler), for ``backend_hint``."""
    if isinstance(exc, Retry):
        return JobDone(
            job_id, "retry", error=f"retry requested: {exc.reason}", delay_ms=exc.delay_ms()
        )
    if isinstance(exc, Unrecoverable):
        return JobDone(job_id, "unrecoverable", error=f"unrecoverable: {exc.reason}")
    text = "".join(traceback.format_exception(exc))
    if not isinstance(exc, Exception):
        cause = next((why for kind, why in _EXITS.items() if isinstance(exc, kind)), None)
        text += (
            f"the handler raised {exc!r}"
            + (f" ({cause})" if cause else "")
            + ": a job cannot stop its worker, so this attempt failed instead"
        )
    elif backend is not None:
        hint = backend_hint(exc, backend)
        if hint is not None:
            text += f"{hint}\n"  # the last line: kept whatever is cut
    return JobDone(job_id, "error", error=text[-MAX_ERROR_CHARS:])


#: How a result is stored: ``JobDefinition.encode_result`` (checked against the handler's
#: return annotation; an exception fails the attempt like one the handler raised).
Encode = Callable[[Any], bytes | None]


def _json(result: Any) -> bytes | None:
    return None if result is None else _JSON.encode(result)


def _ok(job_id: int, result: Any, encode: Encode) -> JobDone:
    return JobDone(job_id, "ok", result=encode(result))


def run_sync(job_id: int, call: Callable[[], Any], encode: Encode = _json) -> JobDone:
    """Run a sync handler call to its ``JobDone`` (its result encoded by ``encode``)."""
    try:
        return _ok(job_id, call(), encode)
    except BaseException as exc:  # SystemExit too: it ends the attempt, not the thread
        return failed(job_id, exc)


async def run_async(
    job_id: int,
    call: Callable[[], Awaitable[Any]],
    encode: Encode = _json,
    backend: str | None = None,
) -> JobDone:
    """Run an async handler call (on ``backend``, for ``backend_hint``) to its
    ``JobDone``."""
    try:
        return _ok(job_id, await call(), encode)
    except BaseException as exc:
        if is_cancellation(exc):
            raise
        return failed(job_id, exc, backend=backend)

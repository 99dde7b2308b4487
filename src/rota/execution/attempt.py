"""One attempt's ending, the same in every mode: a ``JobDone`` built from what the
handler returned or raised. The event loop, a handler thread and a child process all
classify exceptions here, so a ``Retry`` or an ``Unrecoverable`` means the same wherever
the handler ran."""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec

from rota.actors._backend import is_cancellation
from rota.domain.outcome import Retry, Unrecoverable
from rota.execution.wire import JobDone

__all__ = ["MAX_ERROR_CHARS", "failed", "run_async", "run_sync"]

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


def failed(job_id: int, exc: BaseException) -> JobDone:
    """How a handler's exception ends its attempt. Anything it raises ends only the
    attempt, ``SystemExit`` and ``KeyboardInterrupt`` too: a job cannot stop its worker
    (the error's last line says so)."""
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
    job_id: int, call: Callable[[], Awaitable[Any]], encode: Encode = _json
) -> JobDone:
    try:
        return _ok(job_id, await call(), encode)
    except BaseException as exc:
        if is_cancellation(exc):
            raise
        return failed(job_id, exc)

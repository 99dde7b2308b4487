"""Handlers for the tests of what handlers hand back to rota, in every mode: return values
that do (or do not) match their annotations (``tests/runtime/test_results.py``; ``VALUES``
maps a ``Case.kind`` to what a handler returns) and progress reports with invalid
arguments (``tests/runtime/test_progress_validation.py``; ``BAD_PROGRESS``). They live here
so that process-mode children can import them (``input_app:app``)."""

from __future__ import annotations

import atexit
import math
from typing import Any

import msgspec

import rota

QUEUE = "results"

registry = rota.Registry()


class Case(msgspec.Struct, frozen=True):
    kind: str


VALUES: dict[str, Any] = {
    "five": 5,
    "text": "five",
    "none": None,
    "half": 2.5,
    "nan": math.nan,
    "inf": math.inf,
    "nested_nan": {"a": [1.0, -math.inf]},
    "object": object(),
    "surrogate": "\ud800",
}


@registry.job(name="results.int_process", queue=QUEUE, mode="process", max_attempts=1)
def int_process(args: Case) -> int:
    return VALUES[args.kind]  # type: ignore[no-any-return]


@registry.job(name="results.float_process", queue=QUEUE, mode="process", max_attempts=1)
async def float_process(args: Case) -> float:
    return VALUES[args.kind]  # type: ignore[no-any-return]


@registry.job(name="results.none_process", queue=QUEUE, mode="process", max_attempts=1)
def none_process(args: Case) -> None:
    return VALUES[args.kind]  # type: ignore[no-any-return]


@registry.job(name="results.any_process", queue=QUEUE, mode="process", max_attempts=1)
async def any_process(args: Case):  # type: ignore[no-untyped-def]  # no annotation: Any
    return VALUES[args.kind]


#: ``ctx.progress(**arguments)`` calls that must raise ``error`` naming ``argument``.
BAD_PROGRESS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"value": math.nan}, ValueError, "value"),
    ({"value": math.inf}, ValueError, "value"),
    ({"value": -math.inf, "message": "x"}, ValueError, "value"),
    ({"value": 10**400}, ValueError, "value"),
    ({"value": True}, TypeError, "value"),
    ({"value": "50"}, TypeError, "value"),
    ({"step": -1}, ValueError, "step"),
    ({"step": 1.5}, TypeError, "step"),
    ({"step": True}, TypeError, "step"),
    ({"step": 2**64}, ValueError, "step"),
    ({"total": -2}, ValueError, "total"),
    ({"total": "3"}, TypeError, "total"),
    ({"step": 5, "total": 3}, ValueError, "step"),
    ({"message": 42}, TypeError, "message"),
    ({"message": b"bytes"}, TypeError, "message"),
    ({"message": "half \ud800"}, ValueError, "message"),
    ({}, TypeError, "at least one"),
]


def refused_progress(report: Any) -> list[str]:
    """Call ``report(**arguments)`` for every ``BAD_PROGRESS`` case; what each raised, as
    ``"TypeError: ..."`` (or ``"accepted"``)."""
    outcomes = []
    for arguments, _, _ in BAD_PROGRESS:
        try:
            report(**arguments)
        except Exception as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
        else:
            outcomes.append("accepted")
    return outcomes


@registry.job(name="input.progress_sync", queue=QUEUE, mode="process")
def progress_sync(args: Case, ctx: rota.SyncContext) -> list[str]:
    outcomes = refused_progress(ctx.progress)
    ctx.progress(50, step=1, total=2, message="sync")
    return outcomes


@registry.job(name="input.progress_async", queue=QUEUE, mode="process")
async def progress_async(args: Case, ctx: rota.Context) -> list[str]:
    outcomes = []
    for arguments, _, _ in BAD_PROGRESS:
        try:
            await ctx.progress(**arguments)
        except Exception as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
        else:
            outcomes.append("accepted")
    await ctx.progress(50, step=1, total=2, message="async")
    return outcomes


app = rota.App(":memory:", import_name="input_app:app")
app.include(registry)
atexit.register(app.close)

"""Handlers whose return values do (or do not) match their return annotations, for
``tests/runtime/test_results.py``; here so that process-mode children can import them
(``results_app:app``). ``VALUES`` maps a ``Case.kind`` to what a handler returns."""

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


app = rota.App(":memory:", import_name="results_app:app")
app.include(registry)
atexit.register(app.close)

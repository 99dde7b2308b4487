"""A handler's return value is checked against its return annotation before its job is
completed, in every mode (async, thread, process): a value of the wrong type, or one JSON
cannot hold (NaN, an infinity, a lone surrogate, an unsupported type), fails the attempt
with an error naming the job and the annotation, instead of completing the job and making
``handle.result()`` raise a raw msgspec error. A stored result that does not decode (an
older version of the job, a damaged row) is a clear ``StorageError`` naming the job."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import input_app
import pytest
from input_app import VALUES, Case

import rota
from rota.app import App, JobHandle
from rota.domain.job import JobState
from rota.errors import JobFailed, StorageError

pytestmark = pytest.mark.anyio

#: (handler's annotation, what it returns) -> the words of its error (None: it completes)
CASES: list[tuple[str, str, str | None]] = [
    ("int", "five", None),
    ("int", "text", "returned 'five', which does not match its return annotation `int`"),
    ("int", "none", "returned None, which does not match its return annotation `int`"),
    ("int", "half", "returned 2.5, which does not match its return annotation `int`"),
    ("int", "nan", "returned nan, which JSON cannot hold: NaN and infinities"),
    ("float", "half", None),
    ("float", "inf", "returned inf, which JSON cannot hold: NaN and infinities"),
    ("optional", "none", None),
    ("optional", "nan", "returned nan, which JSON cannot hold"),
    ("none", "none", None),
    ("none", "five", "returned 5, which does not match its return annotation `None`"),
    ("any", "text", None),
    ("any", "none", None),
    ("any", "nested_nan", "which JSON cannot hold: NaN and infinities .* at `\\$.a\\[1\\]`"),
    ("any", "object", "which JSON cannot hold: Encoding objects of type object"),
    ("any", "surrogate", "which JSON cannot hold: a string with a lone surrogate"),
    ("list", "five", "returned 5, which does not match its return annotation `list\\[int\\]`"),
]


def define(app: App, mode: str) -> dict[str, rota.app.JobDefinition[Case, Any]]:
    """One handler per annotation, in ``mode`` (``async`` or ``thread``)."""
    if mode == "async":

        @app.job(queue="q", max_attempts=1)
        async def a_int(args: Case) -> int:
            return VALUES[args.kind]  # type: ignore[no-any-return]

        @app.job(queue="q", max_attempts=1)
        async def a_float(args: Case) -> float:
            return VALUES[args.kind]  # type: ignore[no-any-return]

        @app.job(queue="q", max_attempts=1)
        async def a_optional(args: Case) -> float | None:
            return VALUES[args.kind]  # type: ignore[no-any-return]

        @app.job(queue="q", max_attempts=1)
        async def a_none(args: Case) -> None:
            return VALUES[args.kind]  # type: ignore[no-any-return]

        @app.job(queue="q", max_attempts=1)
        async def a_any(args: Case) -> Any:
            return VALUES[args.kind]

        @app.job(queue="q", max_attempts=1)
        async def a_list(args: Case) -> list[int]:
            return VALUES[args.kind]  # type: ignore[no-any-return]

        handlers: list[Any] = [a_int, a_float, a_optional, a_none, a_any, a_list]
    else:

        @app.job(queue="q", max_attempts=1)
        def t_int(args: Case) -> int:
            return VALUES[args.kind]  # type: ignore[no-any-return]

        @app.job(queue="q", max_attempts=1)
        def t_float(args: Case) -> float:
            return VALUES[args.kind]  # type: ignore[no-any-return]

        @app.job(queue="q", max_attempts=1)
        def t_optional(args: Case) -> float | None:
            return VALUES[args.kind]  # type: ignore[no-any-return]

        @app.job(queue="q", max_attempts=1)
        def t_none(args: Case) -> None:
            return VALUES[args.kind]  # type: ignore[no-any-return]

        @app.job(queue="q", max_attempts=1)
        def t_any(args: Case):  # type: ignore[no-untyped-def]  # no annotation: Any
            return VALUES[args.kind]

        @app.job(queue="q", max_attempts=1)
        def t_list(args: Case) -> list[int]:
            return VALUES[args.kind]  # type: ignore[no-any-return]

        handlers = [t_int, t_float, t_optional, t_none, t_any, t_list]
    kinds = ["int", "float", "optional", "none", "any", "list"]
    return dict(zip(kinds, handlers, strict=True))


async def check(handle: JobHandle[Any], kind: str, words: str | None) -> None:
    if words is None:
        assert await handle.result(timeout=10) == VALUES[kind]
        return
    with pytest.raises(JobFailed) as caught:
        await handle.result(timeout=10)
    job = await handle.info()
    assert job.state is JobState.FAILED
    assert job.result is None
    assert f"job {job.name!r} " in (job.error or "")
    assert re.search(words, job.error or ""), job.error
    assert "msgspec" not in type(caught.value).__module__


@pytest.mark.parametrize("mode", ["async", "thread"])
async def test_results_are_checked_against_the_return_annotation(
    make_app: Callable[..., App], mode: str
) -> None:
    app = make_app()
    jobs = define(app, mode)
    async with app.run():
        handles = [
            (await jobs[annotation].enqueue(Case(kind)), kind, words)
            for annotation, kind, words in CASES
        ]
        for handle, kind, words in handles:
            await check(handle, kind, words)


async def test_results_are_checked_in_process_mode_too(
    make_app: Callable[..., App], tmp_path: Path
) -> None:
    app = make_app(str(tmp_path / "jobs.db"), import_name="input_app:app", processes=1)
    app.include(input_app.registry)
    jobs = {
        "int": input_app.int_process,
        "float": input_app.float_process,
        "none": input_app.none_process,
        "any": input_app.any_process,
    }
    cases = [case for case in CASES if case[0] in jobs]
    async with app.run():
        handles = [
            (await jobs[annotation].enqueue(Case(kind)), kind, words)
            for annotation, kind, words in cases
        ]
        for handle, kind, words in handles:
            await check(handle, kind, words)


async def test_a_stored_result_that_does_not_decode_is_a_storage_error_naming_the_job(
    make_app: Callable[..., App], db_path: str
) -> None:
    app = make_app(db_path)
    jobs = define(app, "async")
    async with app.run():
        typed = await jobs["int"].enqueue(Case("five"))
        untyped = await jobs["any"].enqueue(Case("five"))
        with anyio.fail_after(10):
            assert await typed.result() == 5
            assert await untyped.result() == 5
    # written by an older version of the job (another type), or damaged
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE rota_jobs SET result = ? WHERE id = ?", (b'"five"', typed.id))
        db.execute("UPDATE rota_jobs SET result = ? WHERE id = ?", (b"{oops", untyped.id))
    db.close()
    with pytest.raises(StorageError, match=rf"job {typed.id} .*result does not decode.*`int`"):
        await typed.result()
    with pytest.raises(StorageError, match=rf"job {untyped.id} .*result does not decode"):
        await untyped.result()
    with pytest.raises(StorageError, match=rf"job {untyped.id} .*result does not decode"):
        await app.handle(untyped.id).result()  # a handle without the job's definition

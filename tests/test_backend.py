"""The event loop a runtime runs on: ``backend`` ("trio" or "asyncio") from ``App(backend=)``,
``ROTA_BACKEND``, a TOML file or ``rota worker --backend``; an embedded ``app.run()`` that
cannot switch loops refuses a backend set to the other one; a handler that needs the other
framework fails with an error (and a log line) saying how to switch; ``rota.testing.drain``
on an asyncio app. Real ``rota worker`` processes: ``tests/process/test_backend.py``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sniffio
import trio

from rota import App, Config, ConfigError
from rota.cli import build_parser, main
from rota.domain.job import JobState
from rota.execution import attempt
from rota.testing import drain

#: The last line of the error of a handler that needs asyncio but ran on trio.
NEEDS_ASYNCIO = (
    "this handler needs asyncio (it ran on trio): run `rota worker --backend asyncio` "
    "(or ROTA_BACKEND=asyncio / App(backend='asyncio'))"
)
NEEDS_TRIO = (
    "this handler needs trio (it ran on asyncio): run `rota worker --backend trio` "
    "(or ROTA_BACKEND=trio / App(backend='trio'))"
)


class Ping(msgspec.Struct):
    n: int


def make_app(tmp_path: Path, **options: Any) -> App:
    app = App(str(tmp_path / "jobs.db"), **options)

    @app.job(name="needs_asyncio", queue="q", max_attempts=1)
    async def needs_asyncio(args: Ping) -> str:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(0.01)
        return f"{args.n} on {type(loop).__name__}"

    @app.job(name="needs_trio", queue="q", max_attempts=1)
    async def needs_trio(args: Ping) -> int:
        await trio.sleep(0.01)
        return args.n

    return app


# -- selecting the backend ------------------------------------------------------------------


def test_backend_is_unset_by_default_and_set_by_every_source(tmp_path: Path) -> None:
    assert Config().backend is None  # rota worker: trio; embedded: the caller's loop
    assert Config.from_options(backend="asyncio").backend == "asyncio"
    assert Config.from_env({"ROTA_BACKEND": "asyncio"}).backend == "asyncio"
    assert Config.from_env({"ROTA_BACKEND": "trio"}).backend == "trio"
    path = tmp_path / "rota.toml"
    path.write_text('[rota]\nbackend = "asyncio"\n')
    assert Config.from_toml(path).backend == "asyncio"
    app = App(str(tmp_path / "jobs.db"), backend="asyncio")
    assert app.config.backend == "asyncio"
    app.close()


@pytest.mark.parametrize(
    "build",
    [
        lambda: Config.from_options(backend="uvloop"),
        lambda: Config.from_env({"ROTA_BACKEND": "uvloop"}),
        lambda: App(":memory:", backend="curio"),
        lambda: Config(backend="uvloop"),  # type: ignore[arg-type]
    ],
    ids=["options", "environment", "app", "config"],
)
def test_an_unknown_backend_is_refused_naming_the_option(build: Any) -> None:
    with pytest.raises(ConfigError, match=r"backend.*'trio' or 'asyncio'"):
        build()


def test_worker_takes_backend_on_the_command_line() -> None:
    args = build_parser().parse_args(["worker", "jobs:app", "--backend", "asyncio"])
    assert args.backend == "asyncio"
    assert build_parser().parse_args(["worker", "jobs:app"]).backend is None


def test_worker_refuses_an_unknown_backend_before_importing_the_app(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["worker", "nowhere:app", "--backend", "uvloop"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --backend: invalid choice: 'uvloop'" in err
    assert "nowhere" not in err


# -- an embedded runtime uses its caller's loop ---------------------------------------------


@pytest.mark.anyio
async def test_an_unset_backend_runs_on_whichever_loop_calls_app_run(
    tmp_path: Path, anyio_backend: str
) -> None:
    app = make_app(tmp_path)
    handle = await app.definition(f"needs_{anyio_backend}").enqueue(Ping(1))
    result = await drain(app)
    assert (result.completed, result.failed) == (1, 0), (await handle.info()).error
    app.close()


@pytest.mark.anyio
async def test_app_run_under_the_other_loop_than_the_backend_set_is_refused(
    tmp_path: Path, anyio_backend: str
) -> None:
    other = "asyncio" if anyio_backend == "trio" else "trio"
    app = make_app(tmp_path, backend=other)
    with pytest.raises(ConfigError) as raised:
        async with app.run():
            pytest.fail("the runtime started on the wrong loop")
    message = str(raised.value)
    assert f"backend {other!r}" in message
    assert f"runs under {anyio_backend}" in message
    assert "cannot switch" in message
    # a run option is the same: the loop is the caller's
    app2 = make_app(tmp_path)
    with pytest.raises(ConfigError, match=f"backend {other!r}"):
        async with app2.run(backend=other):
            pass
    app.close()
    app2.close()


@pytest.mark.anyio
async def test_app_run_under_the_backend_set_runs(tmp_path: Path, anyio_backend: str) -> None:
    app = make_app(tmp_path, backend=anyio_backend)
    handle = await app.definition(f"needs_{anyio_backend}").enqueue(Ping(7))
    result = await drain(app)
    assert result.completed == 1
    assert await handle.result(timeout=1) is not None
    app.close()


# -- rota.testing.drain on an asyncio app ---------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_drain_runs_an_asyncio_app_s_asyncio_only_handlers(
    tmp_path: Path, anyio_backend: str
) -> None:
    app = make_app(tmp_path, backend="asyncio")
    handles = [await app.definition("needs_asyncio").enqueue(Ping(n)) for n in range(3)]
    result = await drain(app)
    assert (result.completed, result.failed) == (3, 0)
    assert [await h.result(timeout=1) for h in handles] == [
        f"{n} on _UnixSelectorEventLoop" for n in range(3)
    ]
    app.close()


@pytest.mark.trio
async def test_drain_of_an_asyncio_app_under_trio_says_it_cannot_switch(tmp_path: Path) -> None:
    app = make_app(tmp_path, backend="asyncio")
    handle = await app.definition("needs_asyncio").enqueue(Ping(1))
    with pytest.raises(ConfigError, match=r"backend 'asyncio'.*runs under trio"):
        await drain(app)
    assert await handle.status() is JobState.WAITING  # nothing ran
    app.close()


# -- a handler that needs the other framework ----------------------------------------------


@pytest.mark.anyio
async def test_a_handler_that_needs_the_other_framework_says_how_to_switch(
    tmp_path: Path, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    needs = "asyncio" if anyio_backend == "trio" else "trio"
    app = make_app(tmp_path)
    handle = await app.definition(f"needs_{needs}").enqueue(Ping(1))
    with caplog.at_level(logging.WARNING, logger="rota"):
        result = await drain(app)
    assert result.failed == 1
    job = await handle.info()
    assert job.error is not None
    hint = NEEDS_ASYNCIO if needs == "asyncio" else NEEDS_TRIO
    assert job.error.strip().splitlines()[-1] == hint
    assert any(hint in record.getMessage() for record in caplog.records), caplog.text
    app.close()


@pytest.mark.parametrize(
    ("running", "error", "hint"),
    [
        ("trio", RuntimeError("no running event loop"), NEEDS_ASYNCIO),
        ("trio", RuntimeError("There is no current event loop in thread 'x'."), NEEDS_ASYNCIO),
        (
            "trio",
            TypeError("trio.run received unrecognized yield message <Future pending>. Are..."),
            NEEDS_ASYNCIO,
        ),
        (
            "trio",
            sniffio.AsyncLibraryNotFoundError("unknown async library, or not in async context"),
            NEEDS_ASYNCIO,
        ),
        ("asyncio", RuntimeError("must be called from async context"), NEEDS_TRIO),
        ("asyncio", RuntimeError("this library is not running under trio"), NEEDS_TRIO),
        (
            "asyncio",
            RuntimeError(
                "Task got bad yield: <class 'trio._core._traps.CancelShieldedCheckpoint'>."
            ),
            NEEDS_TRIO,
        ),
    ],
)
def test_the_other_framework_s_signatures_are_recognised(
    running: str, error: BaseException, hint: str
) -> None:
    done = attempt.failed(1, error, backend=running)
    assert done.error is not None
    assert done.error.strip().splitlines()[-1] == hint


def test_a_signature_found_in_the_cause_or_a_group_counts_too() -> None:
    try:
        try:
            raise RuntimeError("no running event loop")
        except RuntimeError as exc:
            raise ValueError("the client could not connect") from exc
    except ValueError as exc:
        chained = exc
    done = attempt.failed(1, ExceptionGroup("several", [KeyError("k"), chained]), backend="trio")
    assert done.error is not None and done.error.strip().splitlines()[-1] == NEEDS_ASYNCIO


@pytest.mark.parametrize(
    ("running", "error"),
    [
        ("asyncio", RuntimeError("no running event loop")),  # asyncio's own: no hint to switch
        ("trio", RuntimeError("must be called from async context")),
        ("trio", RuntimeError("card declined")),
        (None, RuntimeError("no running event loop")),  # a sync handler: no loop to switch
    ],
)
def test_other_errors_get_no_hint(running: str | None, error: BaseException) -> None:
    done = attempt.failed(1, error, backend=running)
    assert done.error is not None
    assert "--backend" not in done.error

"""What rota raises to its users is a ``RotaError``: each public door, given bad input or
called at the wrong time, raises one (a subclass that is also the builtin it used to be:
``except ValueError`` / ``TypeError`` / ``TimeoutError`` / ``RuntimeError`` still work)."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import msgspec
import pytest

import rota
from rota import errors
from rota._access import StorageAccess
from rota.storage import ops
from rota.storage.engine import ClaimRequest
from rota.testing import Clock, drain, isolated


class Msg(msgspec.Struct):
    text: str


class Fixture:
    """An app with one job in queue "q", a waiting job, and the helpers a door needs."""

    def __init__(self) -> None:
        self.app = rota.App(":memory:", shutdown_grace_s=0.05, poll_interval_s=0.002)

        @self.app.job(name="echo", queue="q")
        async def echo(args: Msg) -> str:
            if args.text == "hang":
                await anyio.sleep_forever()
            return args.text

        self.echo = echo
        self.waiting = echo.enqueue_sync(Msg("waiting"))
        self.queue = self.app.queue("q")

    def claimed(self) -> int:
        """A job in state active (claimed by an owner that is not running)."""
        handle = self.echo.enqueue_sync(Msg("claimed"), queue="elsewhere")
        request = ClaimRequest(queue="elsewhere", owner="someone", n=1, ttl_ms=60_000)
        self.app._storage.run_sync(ops.Claim(request))
        return handle.id


Door = Callable[[Fixture], Any]


async def _in_runtime(f: Fixture, call: Callable[[], Any]) -> Any:
    async with f.app.run():
        result = call()
        if isinstance(result, Awaitable):
            await result


async def _nested_run(f: Fixture) -> None:
    async with f.app.run(), f.app.run():
        pass


async def _isolated_while_running(f: Fixture) -> None:
    async with f.app.run():
        with isolated(f.app):
            pass


async def _drain_that_times_out(f: Fixture) -> None:
    await f.echo.enqueue(Msg("hang"))
    await drain(f.app, timeout_s=0.3)


def _registry_job_not_included(f: Fixture) -> None:
    registry = rota.Registry()

    @registry.job(queue="q")
    async def lonely(args: Msg) -> None: ...

    lonely.enqueue_sync(Msg("x"))


def _run_without_jobs(f: Fixture) -> Any:
    app = rota.App(":memory:")
    f.app.close()
    f.app = app
    return _in_runtime(f, lambda: None)


#: door -> (the call, the RotaError expected, the builtin it is too, part of its message)
DOORS: dict[str, tuple[Door, type[rota.RotaError], type[Exception] | None, str]] = {
    # configuration
    "App(unknown option)": (
        lambda f: rota.App(":memory:", concurency=3),
        rota.ConfigError,
        ValueError,
        "did you mean 'concurrency'",
    ),
    "App(option out of range)": (
        lambda f: rota.App(":memory:", concurrency=0),
        rota.ConfigError,
        ValueError,
        "concurrency",
    ),
    "Config(option out of range)": (
        lambda f: rota.Config(lease_ttl_s=-1),
        rota.ConfigError,
        ValueError,
        "lease_ttl_s",
    ),
    "Config(queue_config=not a mapping)": (
        lambda f: rota.Config(queue_config=[1]),  # type: ignore[arg-type]
        errors.ConfigTypeError,
        TypeError,
        "queue_config",
    ),
    "Config(queue_config={q: unknown option})": (
        lambda f: rota.Config(queue_config={"q": {"concurency": 2}}),  # type: ignore[dict-item]
        rota.ConfigError,
        ValueError,
        "did you mean 'concurrency'",
    ),
    "JobOptions(delay_s=inf)": (
        lambda f: rota.JobOptions(delay_s=math.inf),
        rota.ConfigError,
        ValueError,
        "delay_s",
    ),
    "JobOptions(queue='')": (
        lambda f: rota.JobOptions(queue=""),
        rota.ConfigError,
        ValueError,
        "queue",
    ),
    "fixed(-1)": (lambda f: rota.fixed(-1), rota.ConfigError, ValueError, "delay must be"),
    "exponential(jitter=2)": (
        lambda f: rota.exponential(1.0, jitter=2),
        rota.ConfigError,
        ValueError,
        "jitter",
    ),
    "custom(not a callable)": (
        lambda f: rota.custom(42),  # type: ignore[arg-type]
        errors.ConfigTypeError,
        TypeError,
        "callable",
    ),
    "Retry(delay_s=-1)": (
        lambda f: rota.Retry(delay_s=-1),
        rota.ConfigError,
        ValueError,
        "delay_s",
    ),
    "app.job(no payload annotation)": (
        lambda f: f.app.job(lambda args: None),
        rota.ConfigError,
        ValueError,
        "annotate",
    ),
    "app.definition(unknown)": (
        lambda f: f.app.definition("ecoh"),
        rota.ConfigError,
        ValueError,
        "did you mean 'echo'",
    ),
    # producing
    "enqueue(bad payload)": (
        lambda f: f.echo.enqueue_sync({"text": 42}),
        rota.PayloadError,
        ValueError,
        "$.text",
    ),
    "enqueue(unknown option)": (
        lambda f: f.echo.enqueue(Msg("x"), dealy=3),
        rota.ConfigError,
        ValueError,
        "did you mean 'delay'",
    ),
    "enqueue(a Registry's job, not included)": (
        _registry_job_not_included,
        rota.ConfigError,
        ValueError,
        "not yet included",
    ),
    # reading jobs
    "handle.info(no such job)": (
        lambda f: f.app.handle(10_000).info(),
        rota.JobNotFound,
        LookupError,
        "10000",
    ),
    "handle.info_sync(no such job)": (
        lambda f: f.app.handle(10_000).info_sync(),
        rota.JobNotFound,
        LookupError,
        "10000",
    ),
    "handle.result(timeout=)": (
        lambda f: f.waiting.result(timeout=0.05),
        errors.WaitTimeout,
        TimeoutError,
        "did not finish within 0.05 s",
    ),
    "handle.result_sync(timeout=)": (
        lambda f: f.waiting.result_sync(timeout=0.05),
        errors.WaitTimeout,
        TimeoutError,
        "did not finish within 0.05 s",
    ),
    "handle.logs(limit=-1)": (
        lambda f: f.waiting.logs(limit=-1),
        rota.ConfigError,
        ValueError,
        "limit",
    ),
    "handle.info_sync() on the runtime's thread": (
        lambda f: _in_runtime(f, f.waiting.info_sync),
        errors.UsageError,
        RuntimeError,
        "await handle.info()",
    ),
    # managing queues
    "queue.jobs(unknown state)": (
        lambda f: f.queue.jobs("faild"),
        rota.ConfigError,
        ValueError,
        "did you mean 'failed'",
    ),
    "queue.jobs(offset=-1)": (
        lambda f: f.queue.jobs(offset=-1),
        rota.ConfigError,
        ValueError,
        "offset",
    ),
    "queue.retry(a waiting job)": (
        lambda f: f.queue.retry(f.waiting.id),
        rota.JobStateError,
        ValueError,
        "cannot retry",
    ),
    "queue.retry_failed(limit=-1)": (
        lambda f: f.queue.retry_failed(limit=-1),
        rota.ConfigError,
        ValueError,
        "limit",
    ),
    "queue.promote(a waiting job)": (
        lambda f: f.queue.promote(f.waiting.id),
        rota.JobStateError,
        ValueError,
        "not delayed",
    ),
    "queue.remove(an active job)": (
        lambda f: f.queue.remove(f.claimed()),
        rota.JobStateError,
        ValueError,
        "cancel it first",
    ),
    "queue.clean(active)": (
        lambda f: f.queue.clean("active"),
        rota.ConfigError,
        ValueError,
        "only finished jobs",
    ),
    "queue.clean(unknown state)": (
        lambda f: f.queue.clean("done"),
        rota.ConfigError,
        ValueError,
        "unknown job state 'done'",
    ),
    "queue.clean(older_than_s=-1)": (
        lambda f: f.queue.clean(older_than_s=-1),
        rota.ConfigError,
        ValueError,
        "older_than_s",
    ),
    "queue.drain() (renamed purge)": (
        lambda f: f.queue.drain(),
        errors.UsageError,
        RuntimeError,
        "renamed purge()",
    ),
    "app.events(unknown kind)": (
        lambda f: f.app.events(kinds=["complete"]),
        rota.ConfigError,
        ValueError,
        "did you mean 'completed'",
    ),
    # running
    "app.run(option out of range)": (
        lambda f: _in_runtime_with(f, concurrency=0),
        rota.ConfigError,
        ValueError,
        "concurrency",
    ),
    "app.run() without jobs": (
        _run_without_jobs,
        rota.ConfigError,
        ValueError,
        "at least one queue",
    ),
    "app.run() inside app.run()": (_nested_run, errors.UsageError, RuntimeError, "already"),
    # rota.testing
    "Clock.advance(-1)": (lambda f: Clock().advance(-1), rota.ConfigError, ValueError, "back"),
    "isolated() while the runtime runs": (
        _isolated_while_running,
        errors.UsageError,
        RuntimeError,
        "runtime stopped",
    ),
    "drain(timeout_s=)": (
        _drain_that_times_out,
        errors.WaitTimeout,
        TimeoutError,
        "0.3 s",
    ),
}


def _in_runtime_with(f: Fixture, **options: Any) -> Any:
    async def run() -> None:
        async with f.app.run(**options):
            pass

    return run()


@pytest.fixture
def fixture() -> Iterator[Fixture]:
    f = Fixture()
    try:
        yield f
    finally:
        f.app.close()


@pytest.mark.trio
@pytest.mark.parametrize("door", sorted(DOORS))
async def test_a_public_door_raises_a_rota_error(fixture: Fixture, door: str) -> None:
    call, expected, builtin, message = DOORS[door]
    with pytest.raises(Exception) as caught:  # noqa: PT011 (the class is checked below)
        with anyio.fail_after(10):
            result = call(fixture)
            if isinstance(result, Awaitable):
                await result
    exc = caught.value
    assert isinstance(exc, rota.RotaError), f"{door} raised {type(exc).__name__}: {exc}"
    assert isinstance(exc, expected), f"{door} raised {type(exc).__name__}: {exc}"
    if builtin is not None:
        assert isinstance(exc, builtin)
    assert message in str(exc)


def test_every_error_class_is_in_the_tree_and_documented() -> None:
    """rota.errors draws every class in its docstring (test_exports checks that); the
    README's tree names each one too."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    tree = readme[readme.index("## Errors") :]
    for name in errors.__all__:
        assert name in tree, f"{name} missing from the README's error tree"


class _FailingStore:
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def run(self, op: object) -> object:
        raise self.error


class _Runtime:
    """What StorageAccess needs of a runtime: its Store's ref and client."""

    def __init__(self, error: Exception) -> None:
        self.store_ref = type("Ref", (), {"running": True})()
        self.store = _FailingStore(error)


@pytest.mark.trio
@pytest.mark.parametrize(
    "kernel_error",
    [errors.ActorNotRunning("Store stopped"), errors.CallTimeout("no reply in 30 s")],
)
async def test_an_apps_call_never_raises_an_actor_kernel_error(
    kernel_error: errors.ActorError,
) -> None:
    """A Store that stops (it restarts after a crash) or does not answer in time gives an
    App's caller a transient StorageError naming the operation, not an actor error."""
    access = StorageAccess(lambda: pytest.fail("no engine of its own"))
    access.bind_loop()
    access.attach(_Runtime(kernel_error))  # type: ignore[arg-type]
    with pytest.raises(rota.StorageError) as caught:
        await access.run(ops.Get(1))
    assert not isinstance(caught.value, errors.ActorError)
    assert caught.value.transient
    assert "Get" in str(caught.value) and str(kernel_error) in str(caught.value)
    assert caught.value.__cause__ is kernel_error

"""A job's name does not depend on how its module was imported, and a job whose name a
worker does not know is retried, not dead-lettered at once.

* The default name is the function's ``__qualname__``: the same in ``python -m pkg.jobs``
  (``__main__``), ``import pkg.jobs``, ``import jobs`` from inside ``pkg/`` and a script's
  child process. Two different functions with one name in one app are a ``ConfigError``
  asking for ``name=``; the same function registered again (its module imported twice, under
  two names) replaces itself.
* An unknown name (a rolling deploy enqueued a job type this worker does not have yet) is
  logged as a WARNING naming the job, its id and queue, with "did you mean" against the
  names the worker knows, once per name and then throttled; the attempt fails as an error
  after the job's backoff, at least ``UNKNOWN_JOB_DELAY_S``, and the final failure says the
  name is unknown there. A worker that knows the name runs it. The same in a process-mode
  child that does not know a name its parent knows.
"""

from __future__ import annotations

import importlib
import logging
import runpy
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import modes_app
import pytest
from rt_support import Item, wait_for

import rota
from rota.app import App
from rota.domain.job import JobState
from rota.errors import ConfigError, JobFailed
from rota.execution.executor import UNKNOWN_JOB_DELAY_S
from rota.testing import Clock, drain

JOBS = textwrap.dedent(
    """
    import msgspec
    import rota

    app = rota.App("never-opened.db")  # (an App opens its database when first used)


    class Resize(msgspec.Struct):
        url: str


    @app.job(queue="images")
    async def resize(args: Resize) -> str:
        return args.url


    class Images:
        @staticmethod
        def thumbnail(args: Resize) -> str:
            return args.url


    app.job(queue="images")(Images.thumbnail)
    NAMES = sorted(app.registry.jobs)
    """
)


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Path]:
    """``pkg/jobs.py`` under ``tmp_path``; whatever a test imports from it is forgotten."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "jobs.py").write_text(JOBS)
    before = set(sys.modules)
    importlib.invalidate_caches()
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_the_default_name_is_the_same_whatever_the_module_is_imported_as(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(package))
    as_package = importlib.import_module("pkg.jobs").NAMES
    monkeypatch.syspath_prepend(str(package / "pkg"))  # `rota worker jobs:app` inside pkg/
    as_module = importlib.import_module("jobs").NAMES
    as_main = runpy.run_path(str(package / "pkg" / "jobs.py"), run_name="__main__")["NAMES"]
    as_child = runpy.run_path(str(package / "pkg" / "jobs.py"), run_name="__rota_main__")["NAMES"]
    assert as_package == as_module == as_main == as_child == ["Images.thumbnail", "resize"]


def test_two_functions_with_one_name_in_one_app_are_refused_asking_for_a_name(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(package))
    jobs = importlib.import_module("pkg.jobs")
    app: App = jobs.app

    async def resize(args: Item) -> None:  # another module's (here: another scope's) resize
        return None

    resize.__qualname__ = "resize"
    with pytest.raises(ConfigError) as caught:
        app.job(resize)
    message = str(caught.value)
    assert "two jobs are named 'resize'" in message
    assert "pkg.jobs.resize" in message and f"{__name__}.resize" in message
    assert "name=" in message
    assert app.registry.jobs["resize"].fn is jobs.resize.fn  # the first one stays

    registry = rota.Registry()
    registry.job(resize)
    with pytest.raises(ConfigError, match=r"two jobs are named 'resize'.*name="):
        app.include(registry)

    app.job(name="images.resize")(resize)  # a name of its own: fine
    assert sorted(app.registry.jobs) == ["Images.thumbnail", "images.resize", "resize"]


def test_two_jobs_made_by_one_factory_need_names_of_their_own() -> None:
    app = App("never-opened.db")

    def make(factor: int) -> Callable[[int], int]:
        def scale(args: int) -> int:
            return args * factor

        return scale

    app.job(make(2))
    with pytest.raises(ConfigError, match=r"two jobs are named 'test_two_jobs.*scale'.*name="):
        app.job(make(3))
    app.job(name="scale3")(make(3))
    assert len(app.registry.jobs) == 2


def test_a_module_imported_twice_registers_its_jobs_once(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same file imported under two names (``pkg.jobs`` and ``jobs``) registering on one
    app: the same functions, not a collision."""
    (package / "shared.py").write_text("import rota\napp = rota.App('never-opened.db')\n")
    (package / "pkg" / "more.py").write_text(
        "from shared import app\n\n\n@app.job\ndef crop(args: int) -> int:\n    return args\n"
    )
    monkeypatch.syspath_prepend(str(package))
    first = importlib.import_module("pkg.more")
    monkeypatch.syspath_prepend(str(package / "pkg"))
    second = importlib.import_module("more")
    assert first.crop is not second.crop
    app: App = importlib.import_module("shared").app
    assert list(app.registry.jobs) == ["crop"]
    assert app.registry.jobs["crop"].fn is second.crop.fn  # the latest import


# -- an unknown name in a worker ------------------------------------------------------------


async def _brand_new(args: Item) -> int:
    return args.n


async def _known(args: Item) -> int:
    return args.n


def producer_and_worker(
    make_app: Callable[..., App], db_path: str, clock: Clock, **options: Any
) -> tuple[App, App]:
    """Two apps on one database: a producer that knows ``reports.brand_new`` (a new
    version) and a worker that knows only ``reports.brand_old`` and ``reports.other``."""
    producer = make_app(db_path, clock=clock)
    producer.job(name="reports.brand_new", queue="reports", **options)(_brand_new)
    worker = make_app(db_path, clock=clock)
    worker.job(name="reports.brand_old", queue="reports")(_known)
    worker.job(name="reports.other", queue="reports")(_known)
    return producer, worker


def unknown_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The warnings that explain an unknown job (throttled); not the worker's line for each
    failed attempt (``rota.job`` records with an ``outcome``: one per attempt)."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
        and "no handler" in r.getMessage()
        and not hasattr(r, "outcome")
    ]


@pytest.mark.anyio
async def test_an_unknown_job_is_logged_and_retried_per_its_policy_then_fails_saying_so(
    make_app: Callable[..., App], db_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    producer, worker = producer_and_worker(make_app, db_path, clock, max_attempts=3)
    handles = [await producer.definition("reports.brand_new").enqueue(Item(n)) for n in (1, 2)]
    start_ms = clock()
    caplog.set_level(logging.WARNING)
    result = await drain(worker, clock=clock)
    assert result.failed == 2
    for handle in handles:
        job = await handle.info()
        assert job.state is JobState.FAILED
        assert job.attempt == 3  # retried per its policy, not failed at once
        assert "no handler for job 'reports.brand_new' in this worker" in (job.error or "")
        assert "did you mean 'reports.brand_old'" in (job.error or "")
    # Its backoff (exponential from 1 s) says 1 s, then 2 s: at least UNKNOWN_JOB_DELAY_S.
    assert result.skipped_s == pytest.approx(2 * UNKNOWN_JOB_DELAY_S, abs=0.1)
    assert clock() - start_ms == pytest.approx(2 * UNKNOWN_JOB_DELAY_S * 1000, abs=100)
    [warning] = unknown_warnings(caplog)  # 6 attempts, one line (throttled)
    # ... and the worker's line for each failed attempt, saying when it runs again
    attempts = [getattr(r, "outcome", None) for r in caplog.records if r.name == "rota.job"]
    assert sorted(o for o in attempts if o) == ["failed"] * 2 + ["retrying"] * 4
    assert "'reports.brand_new'" in warning
    assert f"job {handles[0].id}" in warning and "queue 'reports'" in warning
    assert "did you mean 'reports.brand_old'" in warning
    with pytest.raises(JobFailed, match=r"no handler for job 'reports\.brand_new'"):
        await handles[0].result(timeout=1)


@pytest.mark.anyio
async def test_an_unknown_job_waits_out_its_own_backoff_when_it_is_longer(
    make_app: Callable[..., App], db_path: str
) -> None:
    clock = Clock()
    producer, worker = producer_and_worker(
        make_app, db_path, clock, max_attempts=2, backoff=rota.fixed(60)
    )
    await producer.definition("reports.brand_new").enqueue(Item(1))
    result = await drain(worker, clock=clock)
    assert result.failed == 1
    assert result.skipped_s == pytest.approx(60, abs=0.1)


@pytest.mark.anyio
async def test_a_worker_that_knows_the_job_runs_it_after_one_that_did_not(
    make_app: Callable[..., App], db_path: str
) -> None:
    """A rolling deploy: the old worker could not run it; the new one does."""
    clock = Clock()
    producer, worker = producer_and_worker(make_app, db_path, clock, max_attempts=3)
    handle = await producer.definition("reports.brand_new").enqueue(Item(7))
    async with worker.run():
        job = await _wait_attempted(handle)
    assert job.state is JobState.DELAYED
    assert job.run_at_ms >= clock() + UNKNOWN_JOB_DELAY_S * 1000
    result = await drain(producer, clock=clock)  # the new version: it knows the name
    assert result.completed == 1
    assert await handle.result(timeout=1) == 7
    assert (await handle.info()).attempt == 2


async def _wait_attempted(handle: Any) -> Any:

    async def attempted() -> bool:
        job = await handle.info()
        return bool(job.attempt == 1 and job.state is JobState.DELAYED)

    await wait_for(attempted, what="the first attempt failed")
    return await handle.info()


@pytest.mark.anyio
async def test_a_child_process_that_does_not_know_the_job_retries_it_too(
    make_app: Callable[..., App], tmp_path: Path
) -> None:
    """The parent knows the name (registered after import), the child, which imports the
    app's module, does not: a version skew between them, handled like an unknown name."""
    clock = Clock()
    app = make_app(str(tmp_path / "jobs.db"), clock=clock, import_name="modes_app:app", processes=1)
    app.include(modes_app.registry)

    @app.job(name="procs.parent_only", queue=modes_app.QUEUE, mode="process", max_attempts=2)
    def parent_only(args: int) -> int:
        return args

    handle = await parent_only.enqueue(5)
    result = await drain(app, clock=clock)
    assert result.failed == 1
    assert result.skipped_s == pytest.approx(UNKNOWN_JOB_DELAY_S, abs=0.1)
    job = await handle.info()
    assert job.attempt == 2
    assert "no handler for job 'procs.parent_only' in this worker's child process" in (
        job.error or ""
    )

"""``rota worker`` on asyncio: a real worker process runs an asyncio-only handler
(``asyncio.get_running_loop()``, ``await asyncio.sleep``) when its backend is asyncio,
whichever way that was chosen (``--backend``, ``ROTA_BACKEND``, ``--config``,
``App(backend=)``), in the loop and in process-mode children; under trio the same handler
fails with the way to switch, in its error and in the worker's log."""

from __future__ import annotations

from typing import Any

import pytest
from proc_harness import Harness, Worker, wait_until

from rota.domain.job import JobState

NEEDS_ASYNCIO = (
    "this handler needs asyncio (it ran on trio): run `rota worker --backend asyncio` "
    "(or ROTA_BACKEND=asyncio / App(backend='asyncio'))"
)

#: Process mode for every job of the scripted queue (its children import ``scripted:app``).
PROCESS_QUEUE = '{"scripted": {"mode": "process", "processes": 1}}'


def start_asyncio_worker(harness: Harness, source: str, **options: Any) -> None:
    """A worker whose backend is asyncio, chosen through ``source``."""
    if source == "flag":
        harness.start_worker("--backend", "asyncio", **options)
    elif source == "environment":
        harness.start_worker(backend="asyncio", **options)
    elif source == "toml":
        config = harness.workdir / "rota.toml"
        config.write_text('[rota]\nbackend = "asyncio"\n')
        harness.start_worker("--config", str(config), **options)
    else:  # the app module's own App(backend="asyncio")
        harness.start_worker(extra_env={"SCRIPTED_BACKEND": "asyncio"}, **options)


@pytest.mark.parametrize("source", ["flag", "environment", "toml", "app"])
def test_an_asyncio_only_handler_runs_under_a_worker_on_asyncio(
    harness: Harness, source: str
) -> None:
    job_id = harness.enqueue("asyncio", seconds=0.05)
    start_asyncio_worker(harness, source)
    done = harness.wait_state(job_id, JobState.COMPLETED, timeout_s=10)
    assert (done.attempt, done.result) == (1, b'"done on _UnixSelectorEventLoop"')


@pytest.mark.parametrize("flags", [("--backend", "trio"), ()], ids=["--backend trio", "default"])
def test_the_same_handler_under_trio_fails_saying_how_to_switch(
    harness: Harness, flags: tuple[str, ...]
) -> None:
    job_id = harness.enqueue("asyncio", options={"max_attempts": 1})
    worker = harness.start_worker(*flags)
    failed = harness.wait_state(job_id, JobState.FAILED, timeout_s=10)
    assert failed.error is not None
    lines = failed.error.strip().splitlines()
    assert lines[-2] == "RuntimeError: no running event loop"
    assert lines[-1] == NEEDS_ASYNCIO
    assert_logged_failed_for_good(worker, job_id)


def assert_logged_failed_for_good(worker: Worker, job_id: int) -> None:
    """The worker's line for the job's last attempt ends with the hint. (The line is
    written once the outcome is stored: it may follow the stored state by a moment.)"""

    def lines() -> list[str]:
        marker = f" rota.job: scripted #{job_id} "
        return [line for line in worker.stderr().splitlines() if marker in line]

    [line] = wait_until(lines, 5.0, f"the worker's line for job {job_id}")
    assert line.endswith(f": {NEEDS_ASYNCIO}; failed for good: in the dead-letter set"), line


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_process_mode_children_run_async_handlers_on_the_worker_s_backend(
    harness: Harness, backend: str
) -> None:
    job_id = harness.enqueue("asyncio", seconds=0.05, options={"max_attempts": 1})
    worker = harness.start_worker("--backend", backend, queue_config=PROCESS_QUEUE)
    state = JobState.COMPLETED if backend == "asyncio" else JobState.FAILED
    job = harness.wait_state(job_id, state, timeout_s=20)
    [(_, _, pid)] = harness.starts()
    assert pid != worker.pid  # it ran in a child
    if backend == "asyncio":
        assert job.result == b'"done on _UnixSelectorEventLoop"'
    else:
        assert job.error is not None
        assert job.error.strip().splitlines()[-1] == NEEDS_ASYNCIO
        assert_logged_failed_for_good(worker, job_id)


def test_an_unknown_backend_in_the_environment_is_one_line(harness: Harness) -> None:
    worker = harness.start_worker(backend="curio", ready=False)
    assert worker.wait(15) == 2, worker.describe()
    assert worker.stderr().strip().splitlines() == [
        "rota: invalid option for the environment: option 'backend' must be 'trio' or "
        "'asyncio', got 'curio'"
    ]

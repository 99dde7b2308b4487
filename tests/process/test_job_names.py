"""Job names from the outside: a producer run as ``python -m pkg.jobs`` (its jobs live in
``__main__``), a worker started as ``rota worker jobs:app`` from inside ``pkg/`` (the module
is ``jobs``), and this test importing it as ``pkg.jobs`` all name the job the same, so the
worker runs what both produced."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from proc_harness import REPO, Worker, wait_until

from rota.domain.job import JobState
from rota.storage.sqlite import SqliteEngine

JOBS = textwrap.dedent(
    """
    import sys

    import msgspec

    import rota

    app = rota.App({db!r})


    class Resize(msgspec.Struct):
        url: str


    @app.job(queue="images")
    async def resize(args: Resize) -> str:
        return f"resized {{args.url}} as {{__name__}}"


    if __name__ == "__main__":
        handle = resize.enqueue_sync(Resize(sys.argv[1]))
        print(handle.id, resize.name)
    """
)


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "jobs.py").write_text(JOBS.format(db=str(tmp_path / "jobs.db")))
    before = set(sys.modules)
    importlib.invalidate_caches()
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_producers_and_a_worker_importing_the_module_differently_agree_on_the_name(
    package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTA_")}
    env["PYTHONPATH"] = str(REPO / "src")
    produced = subprocess.run(
        [sys.executable, "-m", "pkg.jobs", "a.png"],
        cwd=package,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert produced.returncode == 0, produced.stderr
    first_id, name = produced.stdout.split()
    assert name == "resize"

    monkeypatch.syspath_prepend(str(package))
    jobs = importlib.import_module("pkg.jobs")
    second_id = jobs.resize.enqueue_sync(jobs.Resize("b.png")).id
    jobs.app.close()

    worker = Worker(
        "worker",
        [sys.executable, "-m", "rota", "worker", "jobs:app", "--log-level", "warning"],
        env,
        package / "pkg",  # `rota worker jobs:app` run from inside pkg/
    )
    engine = SqliteEngine(str(package / "jobs.db"))
    try:
        for job_id, url in ((int(first_id), "a.png"), (second_id, "b.png")):
            job = wait_until(
                lambda job_id=job_id: (
                    (found := engine.get(job_id)).state in (JobState.COMPLETED, JobState.FAILED)
                    and found
                ),
                30,
                f"job {job_id} finished",
            )
            assert job.state is JobState.COMPLETED, (job.error, worker.describe())
            assert job.result == f'"resized {url} as jobs"'.encode()
        worker.send(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.describe()
    finally:
        engine.close()
        worker.close()

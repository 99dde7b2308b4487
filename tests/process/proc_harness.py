"""Helpers for the real-process tests: ``rota worker`` processes, a producer, polling.

A ``Harness`` owns one SQLite file, the worker processes started on it (killed in the
fixture's finalizer if a test leaves any behind), a producer ``App`` registering a job with
the scripted job's name, queue and payload schema, and a reading engine. Conditions are
awaited by polling the database (or a log file) with a deadline, never by fixed sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

import scripted
from scripted import Script

import rota
from rota.app import App, JobDefinition
from rota.domain.event import Event
from rota.domain.job import Job, JobState
from rota.storage.sqlite import SqliteEngine

__all__ = ["REPO", "SUPPORT", "Harness", "Script", "Worker", "read_starts", "wait_until"]

REPO = Path(__file__).resolve().parents[2]
SUPPORT = REPO / "tests" / "support"

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T | None], timeout_s: float, what: str, *, interval_s: float = 0.01
) -> T:
    """Poll ``condition`` until it returns something truthy (returned); fail after
    ``timeout_s`` seconds, naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def read_starts(log: Path) -> list[tuple[int, int, int]]:
    """The scripted job's start lines: ``(job_id, attempt, pid)`` in order."""
    if not log.exists():
        return []
    starts = []
    for line in log.read_text().splitlines():
        job_id, attempt, pid = line.split()
        starts.append((int(job_id), int(attempt), int(pid)))
    return starts


class Worker:
    """One ``rota worker scripted:app`` process; stdout and stderr go to files."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], workdir: Path):
        self.name = name
        self.stdout_path = workdir / f"{name}.out"
        self.stderr_path = workdir / f"{name}.err"
        self._out: IO[bytes] = self.stdout_path.open("wb")
        self._err: IO[bytes] = self.stderr_path.open("wb")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            list(argv), env=env, cwd=workdir, stdout=self._out, stderr=self._err
        )
        self.pid = self.proc.pid

    def __repr__(self) -> str:
        return f"<Worker {self.name} pid {self.pid} rc {self.proc.returncode}>"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return f"{self!r}\n--- stdout\n{self.stdout()}\n--- stderr\n{self.stderr()[-4000:]}"

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        """Until the worker printed its banner (its runtime started: leases of dead
        owners already released, the pools started)."""

        def ready() -> bool:
            if not self.alive:
                raise AssertionError(f"worker died before it was ready:\n{self.describe()}")
            return "Ctrl-C to stop" in self.stdout()

        wait_until(ready, timeout_s, f"{self.name} to start")

    def send(self, sig: int) -> None:
        if self.alive:
            self.proc.send_signal(sig)

    def kill(self) -> int:
        """SIGKILL (after SIGCONT, in case it is stopped) and reap it."""
        if self.alive:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        return self.wait(10.0)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout_s} s:\n{self.describe()}"
            ) from None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait()
        self._out.close()
        self._err.close()


class Harness:
    """One database, its workers, a producer and a reader (see the module docstring)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.db = workdir / "jobs.db"
        self.log = workdir / "starts.log"
        self.workers: list[Worker] = []
        self.app = App(str(self.db), lease_ttl_s=30.0)
        self.job: JobDefinition[Script, str] = self.app.job(
            name="scripted", queue="scripted", max_attempts=3, backoff=rota.fixed(0.05)
        )(scripted.scripted.fn)
        #: the same actions in thread mode (``scripted.thread``, a plain ``def``)
        self.thread_job: JobDefinition[Script, str] = self.app.job(
            name="scripted.thread", queue="scripted", max_attempts=3, backoff=rota.fixed(0.05)
        )(scripted.scripted_thread.fn)
        self.engine = SqliteEngine(str(self.db))
        self.engine.migrate()

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.engine.close()
        self.app.close()

    # -- workers ------------------------------------------------------------------------

    def env(self, **options: Any) -> dict[str, str]:
        """The environment of a worker process: ``ROTA_<OPTION>`` per option."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROTA_")}
        env["PYTHONPATH"] = os.pathsep.join([str(SUPPORT), str(REPO / "src")])  # this checkout
        env["ROTA_DATABASE"] = str(self.db)
        env["ROTA_SCHEDULER_INTERVAL_S"] = "0.1"
        for name, value in options.items():
            env[f"ROTA_{name.upper()}"] = "none" if value is None else str(value)
        return env

    def start_worker(
        self,
        *args: str,
        name: str | None = None,
        ready: bool = True,
        log_level: str | None = "warning",
        wrapper: Sequence[str] = (),
        extra_env: dict[str, str] | None = None,
        **options: Any,
    ) -> Worker:
        """Start ``rota worker scripted:app`` (under ``wrapper``, a command prefix) with
        ``ROTA_*`` options (and ``extra_env``, and ``--log-level`` unless None: the worker's
        default); by default wait until it is ready."""
        name = name or f"worker{len(self.workers) + 1}"
        argv = [sys.executable, "-m", "rota", "worker", "scripted:app"]
        if log_level is not None:
            argv += ["--log-level", log_level]
        env = {**self.env(**options), **(extra_env or {})}
        worker = Worker(name, [*wrapper, *argv, *args], env, self.workdir)
        self.workers.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    def supervise(
        self, done: Callable[[], bool], *, max_restarts: int, timeout_s: float, **options: Any
    ) -> tuple[Worker, list[Worker]]:
        """Run a worker like a process supervisor (systemd, k8s) would: restart it whenever
        it dies, until ``done()``. Returns the live worker and the dead ones, in order."""
        worker = self.start_worker(ready=False, **options)
        dead: list[Worker] = []
        deadline = time.monotonic() + timeout_s
        while not done():
            if not worker.alive:
                dead.append(worker)
                assert len(dead) <= max_restarts, "crash loop:\n" + worker.describe()
                worker = self.start_worker(ready=False, **options)
            assert time.monotonic() < deadline, f"not done after {timeout_s} s"
            time.sleep(0.01)
        return worker, dead

    # -- producing and reading ----------------------------------------------------------

    def script(self, action: str = "ok", **fields: Any) -> Script:
        """A payload that logs its starts to this harness's log file."""
        return Script(action=action, log=str(self.log), **fields)

    def enqueue(
        self,
        action: str = "ok",
        *,
        thread: bool = False,
        options: dict[str, Any] | None = None,
        **fields: Any,
    ) -> int:
        """Enqueue the scripted job (``thread``: its thread-mode twin) with ``options``
        (``enqueue``'s: ``max_attempts``...) and ``Script`` ``fields``."""
        job = self.thread_job if thread else self.job
        return job.enqueue_sync(self.script(action, **fields), **(options or {})).id

    def enqueue_many(self, payloads: Iterable[Script], *, chunk: int = 1000) -> list[int]:
        ids: list[int] = []
        batch: list[Script] = []
        for payload in payloads:
            batch.append(payload)
            if len(batch) == chunk:
                ids += [h.id for h in self.job.enqueue_many_sync(batch)]
                batch = []
        if batch:
            ids += [h.id for h in self.job.enqueue_many_sync(batch)]
        return ids

    def get(self, job_id: int) -> Job:
        return self.engine.get(job_id)

    def counts(self) -> dict[JobState, int]:
        return self.engine.count("scripted")

    def starts(self) -> list[tuple[int, int, int]]:
        return read_starts(self.log)

    def start_counts(self) -> Counter[int]:
        return Counter(job_id for job_id, _, _ in self.starts())

    def wait_state(self, job_id: int, state: JobState, timeout_s: float) -> Job:
        def reached() -> Job | None:
            job = self.get(job_id)
            return job if job.state is state else None

        try:
            return wait_until(reached, timeout_s, f"job {job_id} to be {state.value}")
        except AssertionError as exc:
            job = self.get(job_id)
            details = "\n".join(w.describe() for w in self.workers)
            raise AssertionError(f"{exc}; it is {job!r}\n{details}") from None

    def wait_started(self, job_id: int, times: int, timeout_s: float) -> tuple[int, int, int]:
        """Until the log shows the ``times``-th start of the job; that start line."""

        def started() -> tuple[int, int, int] | None:
            mine = [s for s in self.starts() if s[0] == job_id]
            return mine[times - 1] if len(mine) >= times else None

        return wait_until(started, timeout_s, f"start #{times} of job {job_id}", interval_s=0.005)

    def wait_until_progress(self, job_id: int, timeout_s: float = 10.0) -> None:
        """Until the job has reported progress."""
        wait_until(
            lambda: self.get(job_id).progress is not None, timeout_s, f"job {job_id}'s progress"
        )

    def events(self, job_id: int) -> list[Event]:
        """Every stored event of one job, in order."""
        found: list[Event] = []
        after = 0
        while batch := self.engine.events(after, limit=1000):
            found += [e for e in batch if e.job_id == job_id]
            after = batch[-1].id
        return found

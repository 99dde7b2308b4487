"""Execution modes: where a handler runs (DESIGN.md section 5).

* ``async`` (an ``async def`` handler): on the WorkerPool's worker tasks, in the event
  loop; a timeout or a cancel is a cancel scope.
* ``thread`` (a plain ``def`` handler): on the queue's pool of ``pykka`` handler threads
  (``threads.py``); the loop awaits the thread's reply without blocking.
* ``process`` (``mode="process"`` on a job or a queue, async or sync handlers): in the
  queue's supervised child processes (``processes.py``, ``child.py``), fed msgspec
  messages over pipes (``wire.py``).

Whatever the mode, the WorkerPool's ``concurrency`` worker tasks are the slots: a job
holds one while it runs, in the loop, on a thread or in a child, and its lease is renewed
by the loop meanwhile. ``QueueRunners`` bundles one queue's thread pool, process pool and
``JobExecutor`` (``executor.py``) for the runtime: the pools are supervised children of the
queue's supervisor, started before its WorkerPool and stopped after it. ``Execution``
builds them from an app's job definitions, per-thread hooks and storage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rota.actors.worker_pool import Executor
from rota.config import Config
from rota.execution.executor import Definition, JobExecutor, JobStorage, unknown_job_warnings
from rota.execution.processes import ProcessPool, ProcessSettings
from rota.execution.threads import ThreadHooks, ThreadPool
from rota.execution.wire import Hello
from rota.supervisors import ChildSpec, Restart

__all__ = ["Execution", "QueueRunners"]


class QueueRunners:
    """One queue's execution resources, and the executor the WorkerPool calls
    (``execute``)."""

    def __init__(self, *, queue: str, executor: JobExecutor) -> None:
        self.queue = queue
        self.executor = executor
        self.mode = executor.mode
        """The queue's configured mode (``QueueConfig.mode``), None if not set."""
        self.threads = executor.threads
        self.processes = executor.processes
        self.execute: Executor = executor.execute

    def children(self) -> list[ChildSpec]:
        """Supervised children to start before the queue's WorkerPool."""
        children = [
            ChildSpec(f"threads[{self.queue}]", self.threads.run, restart=Restart.PERMANENT)
        ]
        if self.processes is not None:
            children.append(self.processes.child_spec())
        return children

    def describe(self) -> dict[str, Any]:
        """The pools, as JSON-able data (``rota info``, the owner's heartbeat)."""
        described: dict[str, Any] = {"threads": self.threads.statistics()}
        if self.processes is not None:
            described["processes"] = self.processes.statistics()
        return described


class Execution:
    """How an app's jobs run: each queue's ``QueueRunners``, for every runtime it starts."""

    def __init__(
        self,
        *,
        jobs: Mapping[str, Definition],
        thread_hooks: ThreadHooks,
        storage: JobStorage,
        hello: Callable[[str], Hello],
    ) -> None:
        self.jobs = jobs
        """The app's job definitions by name (its registry: jobs included later count)."""
        self.thread_hooks = thread_hooks
        self.storage = storage
        self.hello = hello
        """What a child process needs to import the app, given the backend; called only
        for a queue that needs child processes."""
        self.unknown = unknown_job_warnings()
        """One stream of warnings per unknown job name, whatever queue or runtime meets it."""

    def needs_processes(self, queue: str, config: Config) -> bool:
        """Whether a job of ``queue`` runs in process mode (the queue then gets a process pool)."""
        queue_mode = config.for_queue(queue).mode
        return queue_mode == "process" or any(
            d.options.queue == queue and d.mode_on(queue_mode) == "process"
            for d in self.jobs.values()
        )

    def queue_runners(self, queue: str, config: Config, backend: str) -> QueueRunners:
        """One queue's thread pool (always: threads start when a sync job needs one) and
        process pool (if a job of the queue runs in process mode), and its executor."""
        settings = config.for_queue(queue)
        processes = None
        if self.needs_processes(queue, config):
            processes = ProcessPool(
                queue=queue,
                settings=ProcessSettings(
                    size=settings.processes,
                    max_jobs_per_child=settings.max_jobs_per_child,
                    kill_grace_s=config.kill_grace_s,
                    start_timeout_s=config.child_start_timeout_s,
                    max_restarts=config.child_max_restarts,
                    restart_period_s=config.child_restart_period_s,
                ),
                hello=self.hello(backend),
            )
        executor = JobExecutor(
            mode=settings.mode,
            jobs=self.jobs,
            threads=ThreadPool(queue=queue, size=settings.concurrency, hooks=self.thread_hooks),
            processes=processes,
            storage=self.storage,
            backend=backend,
            unknown=self.unknown,
        )
        return QueueRunners(queue=queue, executor=executor)

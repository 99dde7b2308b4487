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
by the loop meanwhile. ``QueueRunners`` bundles one queue's thread pool and process pool
for the runtime: they are supervised children of the queue's supervisor, started before
its WorkerPool and stopped after it.
"""

from __future__ import annotations

from typing import Any, Literal

from rota.actors.worker_pool import Executor
from rota.execution.processes import ProcessPool
from rota.execution.threads import ThreadPool
from rota.supervisors import ChildSpec, Restart

__all__ = ["QueueRunners"]


class QueueRunners:
    """One queue's execution resources, and the executor the WorkerPool calls (bound to
    them by the app: ``execute``)."""

    def __init__(
        self,
        *,
        queue: str,
        mode: Literal["process"] | None,
        threads: ThreadPool,
        processes: ProcessPool | None,
    ) -> None:
        self.queue = queue
        self.mode = mode
        """The queue's configured mode (``QueueConfig.mode``), None if not set."""
        self.threads = threads
        self.processes = processes
        self.execute: Executor

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

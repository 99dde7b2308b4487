"""A process-mode child: ``python -m rota.execution.child``, started by a ``ProcessPool``.

It keeps the two pipes it was started with for the protocol (``wire.py``) and moves its
stdin to ``/dev/null`` and its stdout to stderr, so that a handler's ``print`` shows up in
the worker's output instead of corrupting a frame. It runs in a session of its own (so a
Ctrl-C or a SIGTERM sent to the worker's process group reaches only the worker, which
shuts down gracefully and then ends its children) and ignores SIGINT besides; it exits if
its parent dies (a watchdog thread sees it re-parented), so that an orphan never runs on
with a job the database has given to someone else.

Then: read ``Hello``, import the app (``module:attr``, or ``path:/file.py:attr`` for a
script the parent runs as ``__main__``), answer ``Ready``, and run ``RunJob`` after
``RunJob`` until ``Exit`` or the end of the pipe. Sync handlers run on the main thread
(after the app's per-thread start hooks); async handlers on one event loop kept for the
child's life, in a thread of its own (an AnyIO blocking portal on the parent's backend).
"""

from __future__ import annotations

import contextlib
import logging
import os
import runpy
import signal
import sys
import threading
import time
import traceback

import anyio.from_thread
import msgspec

from rota.app import App
from rota.execution import attempt, wire
from rota.execution.context import Context, SyncContext
from rota.execution.executor import bad_payload, unknown_job, unknown_job_warnings
from rota.storage.url import DatabaseUrl


class _Channel:
    """The child's end of the protocol: one writer at a time."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, message: wire.ChildMessage) -> None:
        with self.lock:
            wire.write_frame(self.fd, message)


def _load(spec: str) -> App:
    """The app object named by ``Hello.app``."""
    if spec.startswith("path:"):
        path, _, attr = spec.removeprefix("path:").rpartition(":")
        # (job names do not depend on the module: the parent's "__main__" jobs are these)
        app = runpy.run_path(path, run_name="__rota_main__")[attr]
    else:
        module_name, _, attr = spec.partition(":")
        module = __import__(module_name, fromlist=["_"])
        app = getattr(module, attr or "app")
    if not isinstance(app, App):
        raise TypeError(f"{spec!r} is a {type(app).__name__}, not a rota.App")
    return app


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(70)


class _Runner:
    def __init__(self, app: App, channel: _Channel, backend: str) -> None:
        self.app = app
        self.channel = channel
        self.backend = backend
        self.stack = contextlib.ExitStack()
        self.portal: anyio.from_thread.BlockingPortal | None = None
        self.hooks_ran = False
        self.unknown = unknown_job_warnings()

    def run(self, message: wire.RunJob) -> wire.JobDone:
        app, job = self.app, message.job
        definition = app.registry.jobs.get(job.name)
        if definition is None:  # the parent has it: another version of the app's code?
            error, delay_ms = unknown_job(
                job, "this worker's child process", app.registry.jobs, self.unknown
            )
            return wire.JobDone(job.id, "retry", error=error, delay_ms=delay_ms)
        try:
            args = definition.decode(job.payload)
        except msgspec.DecodeError as exc:
            return wire.JobDone(job.id, "unrecoverable", error=bad_payload(job, definition, exc))
        reports = _Sent(self.channel, job.id)
        if definition.is_async:
            ctx = Context(reports, job)
            done: wire.JobDone = self._portal().call(
                attempt.run_async,
                job.id,
                lambda: definition(args, ctx),
                definition.encode_result,
                self.backend,
            )
            return done
        if not self.hooks_ran:
            try:
                app.thread_hooks.run_start()
            except Exception as exc:
                return attempt.failed(job.id, exc)
            self.hooks_ran = True
        sync_ctx = SyncContext(reports, job)
        return attempt.run_sync(
            job.id, lambda: definition.call_sync(args, sync_ctx), definition.encode_result
        )

    def _portal(self) -> anyio.from_thread.BlockingPortal:
        if self.portal is None:
            self.portal = self.stack.enter_context(
                anyio.from_thread.start_blocking_portal(self.backend)
            )
        return self.portal

    def close(self) -> None:
        if self.hooks_ran:
            self.app.thread_hooks.run_stop(f"child process {os.getpid()}")
        self.stack.close()


class _Sent:
    """A running job's ``Reports`` in a child: each line and report travels to the parent,
    which stores them."""

    __slots__ = ("channel", "job_id")

    def __init__(self, channel: _Channel, job_id: int) -> None:
        self.channel = channel
        self.job_id = job_id

    def add_log(self, line: str) -> None:
        self.channel.send(wire.LogLine(self.job_id, line))

    async def progress(self, data: bytes) -> None:
        self.channel.send(wire.ProgressReport(self.job_id, data))

    def progress_from_thread(self, data: bytes) -> None:
        self.channel.send(wire.ProgressReport(self.job_id, data))


def main() -> int:
    """A process-mode child's main: load the app, then run jobs sent over the pipe."""
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # print() in a handler goes to stderr, never into a frame
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Warnings and errors (a failing stop hook) go to stderr, the worker's output.
    logging.basicConfig(
        level=logging.WARNING, format="rota child %(process)d: %(levelname)s %(name)s: %(message)s"
    )
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    channel = _Channel(proto_out)
    hello = wire.read_frame(proto_in)
    if not isinstance(hello, wire.Hello):
        return 2
    try:
        sys.path[:] = [*hello.path, *(p for p in sys.path if p not in hello.path)]
        app = _load(hello.app)
        app.database_url = DatabaseUrl.parse(hello.database)
    except BaseException:
        channel.send(wire.StartFailed(traceback.format_exc()[-attempt.MAX_ERROR_CHARS :]))
        return 3
    channel.send(wire.Ready(os.getpid()))
    runner = _Runner(app, channel, hello.backend)
    try:
        while True:
            message = wire.read_frame(proto_in)
            if message is None or isinstance(message, wire.Exit):
                break
            if isinstance(message, wire.RunJob):
                channel.send(runner.run(message))
    finally:
        runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``rota`` command line.

::

    rota worker module:app [--queue Q ...] [--concurrency N] [--config rota.toml]
    rota info   (module:app | --db PATH)
    rota jobs   list (module:app | --db PATH) [--queue Q] [--state S] [--limit N]
    rota jobs   show|retry|cancel (module:app | --db PATH) JOB_ID
    rota demo   [--jobs N] [--db PATH]

Options come from the command line, then ``ROTA_*`` environment variables, then a TOML
file (``--config``); an unknown one is an error that names the closest known option.

``rota worker`` stops gracefully on SIGINT or SIGTERM: it stops claiming, gives running
jobs ``shutdown_grace_s`` to finish, then cancels and releases them (they run again on the
next start). A second signal cancels at once (leases still keep the jobs safe).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import msgspec

from rota.actors.scheduler import pid_alive
from rota.config import Config
from rota.domain.job import JobState
from rota.errors import ConfigError, JobNotFound, RotaError, SupervisorGaveUp
from rota.storage.sqlite import SqliteEngine

__all__ = ["main"]


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (the attribute defaults to ``app``)."""
    module_name, _, attribute = spec.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from None
    app = getattr(module, attribute or "app", None)
    if app is None:
        raise ConfigError(f"module {module_name!r} has no attribute {attribute or 'app'!r}")
    if getattr(app, "import_name", "") is None:  # process-mode children import it the same way
        app.import_name = f"{module_name}:{attribute or 'app'}"
    return app


# -- worker ------------------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    options: dict[str, Any] = {}
    if args.config:
        options.update(_non_defaults(Config.from_toml(args.config)))
    options.update(_non_defaults(Config.from_env()))
    if args.queue:
        options["queues"] = args.queue
    if args.concurrency:
        options["concurrency"] = args.concurrency
    _setup_logging(args.log_level)
    return anyio.run(_worker_main, app, options, backend="trio")


def _non_defaults(config: Config) -> dict[str, Any]:
    default = Config()
    return {
        name: getattr(config, name)
        for name in config.__struct_fields__
        if getattr(config, name) != getattr(default, name)
    }


async def _worker_main(app: Any, options: dict[str, Any]) -> int:
    log = logging.getLogger("rota.worker")
    gave_up: list[BaseException] = []
    stop = anyio.Event()
    running: list[Any] = []  # the runtime, once started (for a second signal's abort)
    try:
        async with anyio.create_task_group() as tg:
            # Listen before starting: a signal during start-up also stops gracefully.
            await tg.start(_on_signals, stop, running)
            async with app.run(**options) as runtime:
                running.append(runtime)
                print(
                    f"rota worker {runtime.owner.id}: queues {', '.join(runtime.queues)} "
                    f"on {app.database_path} (Ctrl-C to stop)",
                    flush=True,
                )
                await stop.wait()
                print("rota worker: stopping (finishing running jobs)...", flush=True)
            tg.cancel_scope.cancel()
    except* SupervisorGaveUp as group:
        gave_up.extend(group.exceptions)
    if gave_up:
        log.error("rota worker gave up: %s", gave_up[0])
        return 1
    print("rota worker: stopped", flush=True)
    return 0


async def _on_signals(
    stop: anyio.Event,
    running: list[Any],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            if not stop.is_set():
                stop.set()
                continue
            print("rota worker: second signal: cancelling running jobs now", flush=True)
            for runtime in running:
                runtime.abort()  # skip the grace period; jobs are released, not lost
            return


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# -- database commands ---------------------------------------------------------------------------


def _engine(args: argparse.Namespace) -> SqliteEngine:
    if args.db:
        path = args.db
    elif args.app:
        path = load_app(args.app).database_path
    else:
        path = Config.from_env().database
    engine = SqliteEngine(path)
    engine.migrate()
    return engine


def cmd_info(args: argparse.Namespace) -> int:
    engine = _engine(args)
    try:
        now = engine.now_ms()
        paused = engine.paused_queues()
        print(f"database: {args.db or '(from app)'}")
        rows = [("queue", *(s.value for s in JobState), "paused")]
        for queue in engine.queues():
            counts = engine.count(queue)
            rows.append(
                (queue, *(str(counts[s]) for s in JobState), "yes" if queue in paused else "")
            )
        _table(rows)
        owners = engine.list_owners()
        note = "  (pools as of the last heartbeat)" if any(o.pools for o in owners) else ""
        print(f"\nowners: {len(owners)}{note}")
        for owner in owners:
            age = (now - owner.heartbeat_at_ms) / 1000
            local = owner.host == socket.gethostname()
            alive = "" if not local else (" (alive)" if pid_alive(owner.pid) else " (gone)")
            print(
                f"  {owner.id}  pid {owner.pid}{alive}  queues {', '.join(owner.queues)}"
                f"  heartbeat {age:.1f} s ago"
            )
            for queue, pool in (owner.pools or {}).items():
                print(f"    {queue}: {_describe_pool(pool)}")
    finally:
        engine.close()
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    args.app, args.job_id = None, None
    for target in args.targets:  # `module:app` and/or a job id, in any order
        if target.isdigit() and args.job_id is None:
            args.job_id = int(target)
        elif args.app is None and not target.isdigit():
            args.app = target
        else:
            print(f"rota jobs: unexpected argument {target!r}", file=sys.stderr)
            return 2
    engine = _engine(args)
    try:
        if args.action == "list":
            state = JobState(args.state) if args.state else None
            jobs = engine.list_jobs(
                queue=args.queue, state=state, limit=args.limit, offset=args.offset
            )
            rows = [("id", "name", "queue", "state", "attempt", "priority", "error")]
            for job in jobs:
                error = (job.error or "").strip().splitlines()[-1:] or [""]
                rows.append(
                    (
                        str(job.id),
                        job.name,
                        job.queue,
                        job.state.value,
                        f"{job.attempt}/{job.max_attempts}",
                        str(job.priority),
                        error[0][:60],
                    )
                )
            _table(rows)
            return 0
        if args.job_id is None:
            print(f"rota jobs {args.action}: a job id is required", file=sys.stderr)
            return 2
        if args.action == "show":
            job = engine.get(args.job_id)
            data = msgspec.structs.asdict(job)
            for field in ("payload", "result", "progress"):
                if data[field] is not None:
                    data[field] = data[field].decode(errors="replace")
            print(msgspec.json.format(msgspec.json.encode(data)).decode())
            for entry in engine.logs(args.job_id, limit=1000):
                print(f"  log attempt {entry.attempt} @{entry.at_ms}: {entry.message}")
        elif args.action == "retry":
            print(f"job {args.job_id}: {engine.retry(args.job_id).value}")
        elif args.action == "cancel":
            state = engine.cancel(args.job_id)
            note = " (cancel requested: its worker stops it)" if state is JobState.ACTIVE else ""
            print(f"job {args.job_id}: {state.value}{note}")
    finally:
        engine.close()
    return 0


def _describe_pool(pool: Any) -> str:
    """One queue's execution pools as a worker reported them (see ``Owner.pools``), e.g.
    ``concurrency 10, running 3; threads 4/10 (1 busy, 0 abandoned); processes 2/2 pids
    123,124 (1 busy, 57 jobs, 1 restarts, 0 recycled, 0 killed)``. Missing figures are
    left out (``?`` in a fraction), unknown ones ignored: workers of other versions may
    report more or less."""

    def value(v: Any) -> str:
        return "?" if v is None else str(v)

    def counts(figures: dict[str, Any], names: Sequence[str]) -> str:
        listed = ", ".join(f"{value(figures[n])} {n}" for n in names if n in figures)
        return f" ({listed})" if listed else ""

    if not isinstance(pool, dict):
        return "no figures"
    parts = []
    head = ", ".join(f"{n} {value(pool[n])}" for n in ("concurrency", "running") if n in pool)
    if head:
        parts.append(head)
    threads = pool.get("threads")
    if isinstance(threads, dict):
        parts.append(
            f"threads {value(threads.get('alive'))}/{value(threads.get('size'))}"
            + counts(threads, ("busy", "abandoned"))
        )
    processes = pool.get("processes")
    if isinstance(processes, dict):
        pids = processes.get("pids")
        pids = pids if isinstance(pids, list) else None
        parts.append(
            f"processes {value(None if pids is None else len(pids))}"
            f"/{value(processes.get('size'))}"
            + (f" pids {','.join(str(pid) for pid in pids)}" if pids else "")
            + counts(processes, ("busy", "jobs", "restarts", "recycled", "killed"))
        )
    return "; ".join(parts) or "no figures"


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


# -- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rota", description="rota: durable jobs and actors")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run a worker for an app's queues")
    worker.add_argument("app", help="module:app, e.g. myproject.jobs:app")
    worker.add_argument("--queue", "-q", action="append", help="queue to work on (repeatable)")
    worker.add_argument("--concurrency", "-c", type=int, help="jobs at once per queue")
    worker.add_argument("--config", help="TOML file with rota options")
    worker.add_argument("--log-level", default="warning", help="logging level (default warning)")
    worker.set_defaults(fn=cmd_worker)

    info = sub.add_parser("info", help="queues, counts by state, live owners")
    info.add_argument("app", nargs="?", help="module:app (or --db)")
    info.add_argument("--db", help="SQLite file")
    info.set_defaults(fn=cmd_info)

    jobs = sub.add_parser("jobs", help="list, show, retry or cancel jobs")
    jobs.add_argument("action", choices=["list", "show", "retry", "cancel"])
    jobs.add_argument("targets", nargs="*", metavar="[module:app] [JOB_ID]")
    jobs.add_argument("--db", help="SQLite file")
    jobs.add_argument("--queue")
    jobs.add_argument("--state", choices=[s.value for s in JobState])
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--offset", type=int, default=0)
    jobs.set_defaults(fn=cmd_jobs)

    sub.add_parser("demo", help="run a worker over sample jobs on SQLite (see rota demo -h)")
    sub.add_parser("bench", help="the benchmark suite of a source checkout (see rota bench -h)")
    return parser


def _bench(rest: list[str]) -> int:
    """Run ``benchmarks/`` of a source checkout (it is not installed with rota)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "__main__.py").is_file():
        print("rota bench needs a source checkout (benchmarks/ is not installed)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(root))
    suite = importlib.import_module("benchmarks.__main__")  # not part of the package
    return int(suite.main(rest))


def _demo(rest: list[str]) -> int:
    from rota.demo import main as demo_main

    return demo_main(rest)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:  # the demo parses its own options
        return _demo(argv[1:])
    if argv[:1] == ["bench"]:  # so does the benchmark suite
        return _bench(argv[1:])
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse cannot put positionals after an option (`rota jobs show --db X 42`): the
    # jobs command takes the leftovers as its targets; anything else left over is an error.
    if extra and args.command == "jobs" and not any(e.startswith("-") for e in extra):
        args.targets = [*args.targets, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.fn(args))
    except (RotaError, JobNotFound, ValueError) as exc:
        print(f"rota: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

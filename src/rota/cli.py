"""The ``rota`` command line: ``main(argv)``, behind the ``rota`` script and ``python -m rota``.

Commands: ``worker``, ``info``, ``health``, ``jobs list|show|retry|cancel``, ``queue
pause|resume|retry-failed|clean|purge``, ``demo``, ``bench`` (``rota --help``). What each
prints, its options (command line, then ``ROTA_*`` variables, then ``--config``), its
exit statuses and its log lines are the README's "The command line" and "Logs"; the
tests in tests/test_cli.py pin them.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import logging
import logging.handlers
import math
import os
import select
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import anyio
import anyio.abc
import msgspec

from rota import __version__, _log_format
from rota.actors._backend import current_backend
from rota.actors.scheduler import owner_alive, pid_alive
from rota.config import BACKENDS, LIVE_HEARTBEATS, Config
from rota.domain.event import LogEntry, Owner
from rota.domain.job import FINISHED_STATES, JobState
from rota.errors import (
    ConfigError,
    RotaError,
    StorageError,
    SupervisorGaveUp,
    UsageError,
    did_you_mean,
)
from rota.storage import open_engine
from rota.storage.engine import Engine, JobRecord, OwnerRecord

__all__ = ["main"]


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` (the attribute defaults to ``app``): a ``rota.App``, or
    ``ConfigError`` saying what is wrong (the module is not found, its import fails, the
    attribute is missing or not an app)."""
    from rota.app import App

    module_name, _, attribute = spec.partition(":")
    attribute = attribute or "app"
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not (module_name == missing or module_name.startswith(f"{missing}.")):
            raise ConfigError(f"importing {module_name!r} failed: {_describe(exc)}") from exc
        raise ConfigError(f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # the module itself fails: its traceback is for --debug
        raise ConfigError(f"importing {module_name!r} failed: {_describe(exc)}") from exc
    if not hasattr(module, attribute):
        raise ConfigError(f"module {module_name!r} has no attribute {attribute!r}")
    app = getattr(module, attribute)
    if not isinstance(app, App):
        kind = type(app).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise ConfigError(f"{module_name}:{attribute} is {article} {kind}, not a rota.App")
    if app.import_name is None:  # process-mode children import it the same way
        app.import_name = f"{module_name}:{attribute}"
    return app


# -- worker ------------------------------------------------------------------------------------


LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")


#: ``rota worker``'s log level unless ``--log-level`` or ``--quiet`` says otherwise.
DEFAULT_LOG_LEVEL: Final = "info"


def _log_options(args: argparse.Namespace) -> tuple[str, str]:
    """The worker's log level and format: ``ConfigError`` naming a wrong one, or both
    ``--quiet`` and ``--log-level`` (which would win is a guess)."""
    if args.quiet and args.log_level is not None:
        raise ConfigError(
            f"--quiet and --log-level {args.log_level} contradict each other: "
            "--quiet is --log-level warning; give one of them"
        )
    level = "warning" if args.quiet else (args.log_level or DEFAULT_LOG_LEVEL).lower()
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"unknown log level {args.log_level!r} "
            f"({', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]})"
        )
    if args.log_format not in _log_format.FORMATS:
        raise ConfigError(
            f"unknown log format {args.log_format!r} ({' or '.join(_log_format.FORMATS)})"
        )
    return level, args.log_format


def cmd_worker(args: argparse.Namespace) -> int:
    """``rota worker``: run the app's runtime until SIGINT or SIGTERM."""
    level, log_format = _log_options(args)
    app = load_app(args.app)
    options: dict[str, Any] = {}
    if args.config:
        options.update(_non_defaults(Config.from_toml(args.config)))
    options.update(_non_defaults(Config.from_env(warn=_warn)))
    if args.queue:
        options["queues"] = args.queue
    if args.concurrency is not None:
        options["concurrency"] = args.concurrency
    if args.backend is not None:
        options["backend"] = args.backend
    # --backend, ROTA_BACKEND, the TOML file, then the app's own App(backend=...)
    backend = options.get("backend") or app.config.backend or "trio"
    held = _StartupLog(level, log_format)
    try:
        announce = log_format == "json"
        return anyio.run(_worker_main, app, options, held.started, announce, backend=backend)
    finally:
        held.end(show=args.debug)


def _non_defaults(config: Config) -> dict[str, Any]:
    default = Config()
    return {
        name: getattr(config, name)
        for name in config.__struct_fields__
        if getattr(config, name) != getattr(default, name)
    }


async def _worker_main(
    app: Any, options: dict[str, Any], started: Callable[[], None], announce: bool = False
) -> int:
    """Run the worker until a signal; ``announce``: log the banner too (as a record with
    its fields, for a reader of ``--log-format json``)."""
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
                started()
                print(_banner(app, runtime, announce), flush=True)
                await stop.wait()
                print("rota worker: stopping (finishing running jobs)...", flush=True)
            tg.cancel_scope.cancel()
    except* SupervisorGaveUp as group:
        gave_up.extend(group.exceptions)
    if gave_up:
        if running:  # after the start: logged with the rest
            log.error("rota worker gave up: %s", gave_up[0])
        else:  # the start-up's log is held (see _StartupLog): say it in one line
            print(f"rota: worker gave up at start: {_printable(str(gave_up[0]))}", file=sys.stderr)
        return 1
    print("rota worker: stopped", flush=True)
    return 0


def _banner(app: Any, runtime: Any, announce: bool) -> str:
    """What the worker says once it runs: its owner id, rota's version, the event loop,
    the database (an absolute path), and each queue's concurrency, prefetch and modes.
    The first line ends with ``(Ctrl-C to stop)``: the worker is ready. With ``announce``,
    logged too (INFO, ``rota.worker``, the same as fields)."""
    database = str(app.database_url.absolute())
    backend = current_backend()
    queues = []
    lines = [
        f"rota worker {runtime.owner.id}: rota {__version__}, backend {backend}, "
        f"database {database} (Ctrl-C to stop)"
    ]
    for queue in runtime.queues:
        settings = runtime.config.for_queue(queue)
        modes = sorted(
            {
                definition.mode_on(settings.mode)
                for definition in app.registry.jobs.values()
                if definition.options.queue == queue
            }
            or ({"process"} if settings.mode == "process" else set())
        )
        mode = ("mode " if len(modes) == 1 else "modes ") + ", ".join(modes) if modes else ""
        if "process" in modes:
            mode += f" ({settings.processes} processes)"
        lines.append(
            f"  queue {queue}: concurrency {settings.concurrency}, prefetch {settings.prefetch}"
            + (f", {mode}" if mode else ", no job registered for it")
        )
        queues.append(
            {
                "queue": queue,
                "concurrency": settings.concurrency,
                "prefetch": settings.prefetch,
                "modes": modes,
            }
        )
    if not announce:
        return "\n".join(_printable(line) for line in lines)
    logging.getLogger("rota.worker").info(
        "rota worker %s started: rota %s, backend %s, database %s, queues %s",
        runtime.owner.id,
        __version__,
        backend,
        database,
        ", ".join(runtime.queues),
        extra={
            "owner": runtime.owner.id,
            "version": __version__,
            "backend": backend,
            "database": database,
            "queues": queues,
        },
    )
    return "\n".join(_printable(line) for line in lines)


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


class _StartupLog:
    """The worker's logging: records are held until the runtime has started (then written
    out, and later ones as they come), so that a start that fails (a database that cannot
    be opened...) is the one line of its error; ``--debug`` writes them out anyway."""

    def __init__(self, level: str, log_format: str = "text") -> None:
        self.target = logging.StreamHandler()
        self.target.setFormatter(_log_format.formatter(log_format))
        self.held: logging.handlers.MemoryHandler | None = logging.handlers.MemoryHandler(
            capacity=10_000,  # beyond that, written out at once
            flushLevel=logging.CRITICAL + 1,  # never because of a level
            target=self.target,
            flushOnClose=False,
        )
        if level != "debug":
            self.target.addFilter(_log_format.RoutineSupervision())
        root = logging.getLogger()
        root.setLevel(getattr(logging, level.upper()))
        root.addHandler(self.held)

    def started(self) -> None:
        """The runtime is up: write out what was held, and log directly from now on."""
        self.end(show=True)

    def end(self, *, show: bool) -> None:
        """Stop holding records: write them out (``show``) or drop them."""
        held, self.held = self.held, None
        if held is None:
            return
        root = logging.getLogger()
        if show:
            held.flush()
        else:
            held.buffer.clear()
        root.removeHandler(held)
        root.addHandler(self.target)
        held.close()


# -- database commands ---------------------------------------------------------------------------


def _database(args: argparse.Namespace) -> str:
    if args.db:
        return str(args.db)
    if args.app:
        return str(load_app(args.app).database_url)
    return Config.from_env(warn=_warn).database


def _engine(args: argparse.Namespace) -> Engine:
    """The database the command is about, which must exist (never created here)."""
    return open_engine(_database(args), create=False)


#: How many jobs in an unknown state ``rota info`` lists (it counts them all).
UNKNOWN_STATES_SHOWN: Final = 20


def cmd_info(args: argparse.Namespace) -> int:
    """``rota info``: queues, counts, owners and their pools."""
    path = _database(args)
    engine = open_engine(path, create=False)
    try:
        now = engine.now_ms()
        paused = engine.paused_queues()
        counts = {queue: engine.count(queue) for queue in engine.queues()}
        total, unknown = engine.unknown_states(UNKNOWN_STATES_SHOWN)
        owners = engine.owner_records()
    finally:
        engine.close()
    if args.json:
        _print_json(
            {
                "database": path,
                "queues": [
                    {
                        "name": queue,
                        "paused": queue in paused,
                        "counts": {state.value: n for state, n in by_state.items()},
                    }
                    for queue, by_state in counts.items()
                ],
                "unknown_states": {
                    "total": total,
                    "jobs": [{"id": j.id, "queue": j.queue, "state": j.state} for j in unknown],
                },
                "owners": [_owner_data(owner, now) for owner in owners],
            }
        )
        return 0
    _print(f"database: {path}")
    rows = [("queue", *(s.value for s in JobState), "paused")]
    for queue, by_state in counts.items():
        rows.append(
            (queue, *(str(by_state[s]) for s in JobState), "yes" if queue in paused else "")
        )
    _table(rows)
    if total:
        print()
        _print(f"jobs in an unknown state (corrupt rows, not counted above): {total}")
        for job in unknown:
            _print(f"  {job.id}  queue {_cell(job.queue)}  state {_cell(job.state)}")
        if total > len(unknown):
            _print(f"  ... and {total - len(unknown)} more (rota jobs list marks them)")
    note = "  (pools as of the last heartbeat)" if any(o.pools for o in owners) else ""
    print()
    _print(f"owners: {len(owners)}{note}")
    for owner in owners:
        _print(_describe_owner(owner, now))
        for queue, pool in (owner.pools or {}).items():
            _print(f"    {queue}: {_describe_pool(pool)}")
    return 0


def _pid_alive_here(owner: OwnerRecord) -> bool | None:
    """Whether an owner's process runs, if it is on this host and its pid readable (None:
    it cannot be told from here)."""
    if owner.host == socket.gethostname() and owner.pid is not None:
        return pid_alive(owner.pid)
    return None


def _owner_data(owner: OwnerRecord, now: int) -> dict[str, Any]:
    """An owner row as ``rota info --json`` prints it."""
    heartbeat = owner.heartbeat_at_ms
    return {
        "id": owner.id,
        "host": owner.host,
        "pid": owner.pid,
        "alive": _pid_alive_here(owner),
        "queues": owner.queues,
        "started_at_ms": owner.started_at_ms,
        "heartbeat_at_ms": heartbeat,
        "heartbeat_age_s": None if heartbeat is None else round((now - heartbeat) / 1000, 3),
        "pools": owner.pools,
        "corrupt": list(owner.corrupt),
        "ignored": owner.owner() is None,
    }


def _describe_owner(owner: OwnerRecord, now: int) -> str:
    """``  id  pid 123 (alive)  queues a, b  heartbeat 1.2 s ago``, ``?`` for what cannot be
    read, and a mark on a corrupt row."""
    alive = {None: "", True: " (alive)", False: " (gone)"}[_pid_alive_here(owner)]
    queues = "?" if owner.queues is None else ", ".join(owner.queues)
    age = "?" if owner.heartbeat_at_ms is None else f"{(now - owner.heartbeat_at_ms) / 1000:.1f}"
    line = f"  {owner.id}  pid {_cell(owner.pid)}{alive}  queues {queues}  heartbeat {age} s ago"
    if owner.corrupt:
        ignored = "; workers ignore this owner" if owner.owner() is None else ""
        line += f"  [corrupt row: {', '.join(owner.corrupt)} unreadable{ignored}]"
    return line


def cmd_jobs(args: argparse.Namespace) -> int:
    """``rota jobs list|show|retry|cancel``."""
    args.app, args.job_id = None, None
    for target in args.targets:  # `module:app` and/or a job id, in any order
        if target.isdigit() and args.job_id is None:
            args.job_id = int(target)
        elif args.app is None and not target.isdigit():
            args.app = target
        else:
            raise ConfigError(f"jobs {args.action}: unexpected argument {target!r}")
    if args.action != "list" and args.job_id is None:
        raise ConfigError(f"jobs {args.action}: a job id is required")
    if args.json and args.action not in ("list", "show"):
        raise ConfigError(f"jobs {args.action}: --json is for jobs list and jobs show")
    engine = _engine(args)
    try:
        if args.action == "list":
            _list_jobs(engine, args)
        elif args.action == "show":
            record = engine.job_record(args.job_id)
            logs = engine.logs(args.job_id, limit=LOG_LINES_SHOWN)
            if args.json:
                _show_job(record, logs)
            else:
                _show_job_text(record, logs, engine.now_ms())
        elif args.action == "retry":
            _print(f"job {args.job_id}: {engine.retry(args.job_id).value}")
        elif args.action == "cancel":
            state = engine.cancel(args.job_id)
            note = " (cancel requested: its worker stops it)" if state is JobState.ACTIVE else ""
            _print(f"job {args.job_id}: {state.value}{note}")
    finally:
        engine.close()
    return 0


def _list_jobs(engine: Engine, args: argparse.Namespace) -> None:
    """One row per job (a summary: no payload is read), its corrupt columns named in a
    last column that is there only when some row has one."""
    state = JobState(args.state) if args.state else None
    jobs = engine.list_summaries(
        queue=args.queue, state=state, limit=args.limit, offset=args.offset
    )
    if args.json:
        _print_json(jobs)
        return
    marked = any(job.corrupt for job in jobs)
    rows: list[tuple[object, ...]] = [
        ("id", "name", "queue", "state", "attempt", "priority", "error")
        + (("corrupt",) if marked else ())
    ]
    for job in jobs:
        error = (job.error or "").strip().splitlines()[-1:] or [""]
        row = (
            job.id,
            job.name,
            job.queue,
            job.state,
            f"{_cell(job.attempt)}/{_cell(job.max_attempts)}",
            job.priority,
            error[0][:60],
        )
        rows.append(row + ((",".join(job.corrupt),) if marked else ()))
    _table(rows)


#: How many log lines of a job ``jobs show`` prints.
LOG_LINES_SHOWN: Final = 1000


def _show_job(record: JobRecord, logs: Sequence[LogEntry]) -> None:
    """The job's row as JSON, as ``Job`` would encode (payload, result and progress as
    text, the backoff as an object); a column rota cannot read is shown as stored, and
    named under ``"corrupt"``; its log lines under ``"logs"``."""
    data: dict[str, Any] = {}
    for column, value in record.columns.items():
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if column not in record.corrupt:
            if column == "backoff":
                value = msgspec.json.decode(value)
            elif column == "cancel_requested":
                value = bool(value)
        data[column] = value
    if record.corrupt:
        data["corrupt"] = list(record.corrupt)
    data["logs"] = [
        {"at_ms": entry.at_ms, "attempt": entry.attempt, "message": entry.message} for entry in logs
    ]
    _print_json(data)


#: How a job's state reads in ``jobs show`` (active: see ``_state_words``).
_STATE_WORDS: Final = {
    "waiting": "waiting (ready to run)",
    "delayed": "delayed (runs at its run-at time)",
    "completed": "completed",
    "failed": "failed (in the dead-letter set: `rota jobs retry` runs it again)",
    "cancelled": "cancelled (`rota jobs retry` runs it again)",
}
_LABEL: Final = 11  # the width of the labels of ``jobs show``


def _show_job_text(record: JobRecord, logs: Sequence[LogEntry], now: int) -> None:
    """The job for people: times as ISO 8601 dates with their age, the state in words,
    attempts as n/m, the payload, result and progress as JSON, the error and the log.
    A column rota cannot read is printed as stored (and named at the top)."""
    columns, corrupt = record.columns, record.corrupt

    def sound(column: str) -> Any:
        """The stored value, or None if it is corrupt."""
        return None if column in corrupt else columns.get(column)

    def text(column: str) -> str:
        return _cell(columns.get(column))

    def when(column: str) -> str:
        value = sound(column)
        return text(column) if not isinstance(value, int) else _when(value, now)

    def json_text(column: str) -> str:
        value = columns.get(column)
        if column in corrupt or not isinstance(value, bytes | str):
            return text(column)
        return _printable_lines(msgspec.json.format(value, indent=2))

    lines: list[tuple[str, str]] = []
    if corrupt:
        lines.append(("corrupt", f"{', '.join(corrupt)} unreadable (shown as stored)"))
    lines.append(("state", _state_words(record)))
    lines.append(("queue", text("queue")))
    lines.append(
        (
            "attempts",
            f"{text('attempt')}/{text('max_attempts')} "
            f"(stalls {text('stalls')}/{text('max_stalls')})",
        )
    )
    lines.append(("priority", text("priority")))
    lines.append(("created", when("created_at_ms")))
    lines.append(("run at", when("run_at_ms")))
    if columns.get("finished_at_ms") is not None:
        lines.append(("finished", when("finished_at_ms")))
    if columns.get("owner") is not None:
        expires = sound("lease_expires_at_ms")
        lease = (
            f" (lease until {_iso(expires)}, {_age(now - expires)})"
            if isinstance(expires, int)
            else ""
        )
        lines.append(("owner", text("owner") + lease))
    timeout = sound("timeout_ms")
    if isinstance(timeout, int):
        lines.append(("timeout", f"{timeout / 1000:g} s"))
    elif columns.get("timeout_ms") is not None:
        lines.append(("timeout", text("timeout_ms")))
    if columns.get("key") is not None:
        lines.append(("key", text("key")))
    lines.append(("backoff", _backoff_words(sound("backoff")) or text("backoff")))
    lines.append(("payload", json_text("payload")))
    lines.extend(
        (column, json_text(column))
        for column in ("result", "progress")
        if columns.get(column) is not None
    )
    if columns.get("error") is not None:
        error = columns["error"]
        error = error.decode(errors="replace") if isinstance(error, bytes) else str(error)
        lines.append(("error", _printable_lines(error.rstrip("\n"))))
    if logs:
        lines.append(
            (
                "logs",
                "\n".join(
                    f"{_iso(e.at_ms)}  attempt {e.attempt}  {_printable(e.message)}" for e in logs
                ),
            )
        )
    print(f"job {_cell(columns.get('id'))}: {text('name')}")
    indent = " " * (2 + _LABEL)
    for label, value in lines:
        first, *rest = value.split("\n")
        print(f"  {label.ljust(_LABEL)}{first}".rstrip())
        for line in rest:
            print(f"{indent}{line}".rstrip())


def _state_words(record: JobRecord) -> str:
    columns = record.columns
    state = columns.get("state")
    if "state" in record.corrupt:
        return f"{_cell(state)} (not a state rota knows)"
    if state == JobState.ACTIVE.value:
        cancel = bool(columns.get("cancel_requested")) and "cancel_requested" not in record.corrupt
        return (
            f"active{', cancel requested' if cancel else ''} (running: attempt "
            f"{_cell(columns.get('attempt'))}{'; its worker stops it' if cancel else ''})"
        )
    return _STATE_WORDS.get(str(state), _cell(state))


def _backoff_words(stored: Any) -> str | None:
    """``exponential (base 1.0, factor 2.0, jitter 0.0, max_s 300.0)``; None if the
    stored policy is not an object with a kind."""
    try:
        policy = msgspec.json.decode(stored) if isinstance(stored, str | bytes) else None
    except msgspec.DecodeError:
        return None
    if not isinstance(policy, dict) or "kind" not in policy:
        return None
    kind = policy.pop("kind")
    # the policy's own parameters first, then those every policy has
    order = [k for k in policy if k not in ("jitter", "max_s")] + ["jitter", "max_s"]
    params = ", ".join(
        f"{k} {msgspec.json.encode(policy[k]).decode()}" for k in order if k in policy
    )
    return _printable(f"{kind} ({params})" if params else str(kind))


def _iso(ms: int) -> str:
    """``2026-12-07T21:30:00Z``: a time stored in ms since the epoch, in UTC."""
    try:
        moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    except (OverflowError, ValueError, OSError):
        return f"{ms} ms since the epoch"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(delta_ms: int) -> str:
    """``3 min ago``, ``in 55 s``: how long ago (or ahead, for a negative delta)."""
    seconds = abs(delta_ms) / 1000
    if seconds < 1:
        return "just now"
    if seconds < 60:
        amount = f"{int(seconds)} s"
    elif seconds < 3600:
        amount = f"{int(seconds // 60)} min"
    elif seconds < 2 * 86_400:
        amount = f"{int(seconds // 3600)} h"
    else:
        amount = f"{int(seconds // 86_400)} days"
    return f"in {amount}" if delta_ms < 0 else f"{amount} ago"


def _when(ms: int, now: int) -> str:
    """``2026-12-07T21:30:00Z (3 min ago)``."""
    return f"{_iso(ms)} ({_age(now - ms)})"


def _printable_lines(text: str | bytes) -> str:
    """Several lines, each escaped (see ``_printable``), joined by newlines."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join(_printable(line) for line in text.split("\n"))


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


def _table(rows: Sequence[Sequence[object]]) -> None:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    for row in cells:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


# -- health -------------------------------------------------------------------------------------

#: How long ``rota health`` waits for the write lock before it calls the database locked.
HEALTH_BUSY_TIMEOUT_S: Final = 2.0


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 if the database takes a write and a live worker serves each queue (those
    given; default: the app's queues with ``module:app``, else every queue with unfinished
    jobs or served by a live worker, and at least one live worker), else 1 with one line
    per problem. Live: a heartbeat within ``--max-heartbeat-age`` (default three heartbeat
    intervals) and, on this host, a process that still runs."""
    app = load_app(args.app) if args.app and not args.db else None
    config = app.config if app is not None else Config.from_env(warn=_warn)
    path = args.db or (str(app.database_url) if app is not None else config.database)
    max_age_s = args.max_heartbeat_age or LIVE_HEARTBEATS * config.heartbeat_interval_s
    max_age_ms = round(max_age_s * 1000)
    problems: list[str] = []
    engine = open_engine(path, create=False, busy_timeout_s=HEALTH_BUSY_TIMEOUT_S)
    try:
        try:
            engine.probe_write()
        except StorageError as exc:
            problems.append(f"database {path}: not writable: {exc}")
        now = engine.now_ms()
        owners = [(owner, _not_live(owner, now, max_age_ms)) for owner in engine.owner_records()]
        live = [owner for owner, why in owners if why is None]
        if args.queue:
            queues = list(dict.fromkeys(args.queue))
        elif app is not None:
            queues = app.queues
        else:
            served = {queue for owner in live for queue in owner.queues or ()}
            queues = sorted(set(engine.queues_with_work()) | served)
    finally:
        engine.close()
    for queue in queues:
        if any(queue in (owner.queues or ()) for owner in live):
            continue
        dead = [
            f"{owner.id}: {why}" for owner, why in owners if why and queue in (owner.queues or ())
        ]
        problems.append(
            f"queue {queue!r}: no live worker serves it" + (f" ({'; '.join(dead)})" if dead else "")
        )
    if not live and not queues:
        problems.append("no live worker on this database")
    for problem in problems:
        _print(problem)
    if problems:
        return 1
    workers = f"{len(live)} live worker{'' if len(live) == 1 else 's'}"
    served_text = f"queues {', '.join(queues)} served" if queues else "no queue has work"
    _print(f"ok: {workers}; {served_text}; database writable")
    return 0


def _not_live(record: OwnerRecord, now: int, max_age_ms: int) -> str | None:
    """Why an owner (a worker's runtime) is not live, or None if it is: its row cannot be
    read; on this host, its process is gone (or its pid now names a newer process); its
    last heartbeat is older than ``max_age_ms``."""
    owner = record.owner()
    if owner is None:
        return f"corrupt row ({', '.join(record.corrupt)} unreadable)"
    here = socket.gethostname()
    local = owner.host == here
    if local and not owner_alive(owner, _this_process(here)):
        return f"pid {owner.pid} gone"
    age_ms = now - owner.heartbeat_at_ms
    if age_ms > max_age_ms:
        where = "" if local else f"; host {owner.host}"
        return f"heartbeat {age_ms / 1000:.1f} s ago, more than {max_age_ms / 1000:g} s{where}"
    return None


def _this_process(host: str) -> Owner:
    """This process as an owner would describe it: an owner row with this process's pid
    is live only if a runtime of this process registered it (``owner_alive``)."""
    return Owner(id="", host=host, pid=os.getpid(), started_at_ms=0, heartbeat_at_ms=0)


# -- queue --------------------------------------------------------------------------------------

#: ``queue retry-failed`` retries this many jobs per transaction.
RETRY_BATCH: Final = 1000
QUEUE_ACTIONS: Final = ("pause", "resume", "retry-failed", "clean", "purge")
#: actions that were renamed: the old name is refused with a pointer to the new one
RENAMED_QUEUE_ACTIONS: Final = {"drain": "purge"}
CLEANABLE: Final = tuple(sorted(state.value for state in FINISHED_STATES))


def cmd_queue(args: argparse.Namespace) -> int:
    """``rota queue pause|resume|retry-failed|clean|purge``."""
    action = args.action
    if action == "drain":  # the name BullMQ uses for it; in rota, drain means work off
        raise UsageError(
            "`rota queue drain` was renamed `rota queue purge` (it deletes the queue's "
            "waiting and delayed jobs); nothing was deleted"
        )
    if not args.targets:
        raise ConfigError(f"queue {action}: a queue name is required")
    if len(args.targets) > 2:
        raise ConfigError(f"queue {action}: unexpected argument {args.targets[2]!r}")
    args.app, queue = args.targets if len(args.targets) == 2 else (None, args.targets[0])
    if action != "clean":
        for option, value in (
            ("--state", args.state),
            ("--older-than", args.older_than),
            ("--keep-last", args.keep_last),
        ):
            if value is not None:
                raise ConfigError(f"queue {action}: {option} is for queue clean")
    app = load_app(args.app) if args.app and not args.db else None
    path = args.db or (str(app.database_url) if app is not None else _database(args))
    engine = open_engine(path, create=False)
    try:
        known = set(engine.queues()) | engine.paused_queues()
        known |= {q for owner in engine.owner_records() for q in owner.queues or ()}
        known |= set(app.queues if app is not None else ())
        if queue not in known:
            hint = did_you_mean(queue, known) if known else " (it has no queue yet)"
            raise ConfigError(
                f"queue {queue!r} is unknown on {path} (no job, worker or pause names it){hint}"
            )
        _print(f"queue {queue}: {_queue_action(engine, action, queue, args)}")
    finally:
        engine.close()
    return 0


def _queue_action(engine: Engine, action: str, queue: str, args: argparse.Namespace) -> str:
    """Do it, through the engine's operations; what was done, in words."""
    if action == "pause":
        engine.set_paused(queue, True)
        return "paused (no worker starts its jobs; running ones finish)"
    if action == "resume":
        engine.set_paused(queue, False)
        return "resumed"
    if action == "purge":
        purged = engine.purge(queue)
        return f"{purged} waiting and delayed {_jobs(purged)} deleted"
    if action == "retry-failed":
        counts = engine.count(queue)
        budget = counts[JobState.FAILED] + counts[JobState.CANCELLED]
        retried = 0
        # In batches (one transaction each), never more than there were: a job retried
        # and failed again meanwhile is not retried twice.
        while retried < budget:
            want = min(RETRY_BATCH, budget - retried)
            batch = len(engine.retry_failed(queue, limit=want))
            retried += batch
            if batch < want:
                break
        return (
            f"{retried} failed and cancelled {_jobs(retried)} retried "
            "(waiting again, attempts reset)"
        )
    state = JobState(args.state or JobState.COMPLETED.value)
    older_than, keep_last = args.older_than, args.keep_last
    deleted = engine.prune(
        queue=queue,
        states={state},
        older_than_ms=None if older_than is None else round(older_than * 1000),
        keep_last=keep_last,
    )
    limits = []
    if older_than is not None:
        limits.append(f"finished more than {older_than:g} s ago")
    if keep_last is not None:
        limits.append(f"beyond the newest {keep_last}")
    return f"{deleted} {state.value} {_jobs(deleted)} deleted" + (
        f" ({', or '.join(limits)})" if limits else ""
    )


def _jobs(count: int) -> str:
    return "job" if count == 1 else "jobs"


# -- output: nothing stored reaches the terminal raw -------------------------------------------


def _printable(text: str) -> str:
    """``text`` with every character a terminal could act on escaped, visibly: control
    characters (``\\x1b``, ``\\n``, C1 controls), format characters such as bidi
    overrides (``\\u202e``), line and paragraph separators. One line, always."""
    return _log_format.printable(text, keep_newlines=False)


def _cell(value: object) -> str:
    """A stored value as printable text: ``?`` for one that could not be read (None)."""
    if value is None:
        return "?"
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return _printable(str(value))


def _print(line: str) -> None:
    """Print one line that may hold stored text (job data, names, ids), escaped."""
    print(_printable(line))


def _print_json(data: Any) -> None:
    """Print ``data`` as one JSON document, indented, safe for a terminal (see
    ``_log_format.json_printable``)."""
    print(_log_format.json_printable(msgspec.json.format(msgspec.json.encode(data)).decode()))


def _warn(message: str) -> None:
    """A warning for the person at the terminal: one line on stderr, escaped."""
    print(f"rota: warning: {_printable(message)}", file=sys.stderr)


# -- parser -------------------------------------------------------------------------------------


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``rota`` command."""
    parser = argparse.ArgumentParser(prog="rota", description="rota: durable jobs and actors")
    parser.add_argument("--version", action="version", version=f"rota {__version__}")
    debug_help = "on an error, print its traceback (and a worker's start-up log)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    # --debug after the command too: a default that does not override the one above
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", parents=[common], help="run a worker for an app's queues")
    worker.add_argument("app", help="module:app, e.g. myproject.jobs:app")
    worker.add_argument("--queue", action="append", help="queue to work on (repeatable)")
    worker.add_argument(
        "--concurrency", "-c", type=_at_least(1), help="jobs at once per queue (>= 1)"
    )
    worker.add_argument(
        "--backend",
        choices=BACKENDS,
        help="the event loop async handlers run on: trio (the default) or asyncio (for "
        "handlers that use asyncio libraries: asyncpg, redis.asyncio, aiohttp...)",
    )
    worker.add_argument("--config", help="TOML file with rota options")
    worker.add_argument(
        "--log-level",
        help=f"{', '.join(LOG_LEVELS)} (default {DEFAULT_LOG_LEVEL}: a line per finished job)",
    )
    worker.add_argument(
        "--quiet", "-q", action="store_true", help="warnings and errors only (--log-level warning)"
    )
    worker.add_argument(
        "--log-format",
        default="text",
        help=f"{' or '.join(_log_format.FORMATS)} (json: one object per line; default text)",
    )
    worker.set_defaults(fn=lambda args: cmd_worker(args))

    database_help = (
        "the database: a path or a URL (sqlite:///relative.db, sqlite:////absolute.db); it "
        "must exist (never created here); an older rota schema is migrated"
    )
    info = sub.add_parser(
        "info", parents=[common], help="queues, counts by state, live owners, corrupt rows"
    )
    info.add_argument("app", nargs="?", help="module:app (or --db)")
    info.add_argument("--db", metavar="URL", help=database_help)
    info.add_argument("--json", action="store_true", help="one JSON document, every field")
    info.set_defaults(fn=lambda args: cmd_info(args))

    health = sub.add_parser(
        "health",
        parents=[common],
        help="exit 0 if the database takes writes and a live worker serves each queue",
    )
    health.add_argument("app", nargs="?", help="module:app (or --db): checks the app's queues")
    health.add_argument("--db", metavar="URL", help=database_help)
    health.add_argument(
        "--queue",
        action="append",
        help="a queue that needs a live worker (repeatable; default: the app's queues, or "
        "every queue with unfinished jobs or a live worker)",
    )
    health.add_argument(
        "--max-heartbeat-age",
        type=_positive_seconds,
        metavar="SECONDS",
        help=f"a worker is live if its heartbeat is this recent (default {LIVE_HEARTBEATS} "
        "x heartbeat_interval_s: 15 s) and, on this host, its process runs",
    )
    health.set_defaults(fn=lambda args: cmd_health(args))

    jobs = sub.add_parser("jobs", parents=[common], help="list, show, retry or cancel jobs")
    jobs.add_argument("action", choices=["list", "show", "retry", "cancel"])
    jobs.add_argument("targets", nargs="*", metavar="[module:app] [JOB_ID]")
    jobs.add_argument("--db", metavar="URL", help=database_help)
    jobs.add_argument("--queue")
    jobs.add_argument("--state", choices=[s.value for s in JobState])
    jobs.add_argument("--limit", type=_at_least(0), default=50)
    jobs.add_argument("--offset", type=_at_least(0), default=0)
    jobs.add_argument("--json", action="store_true", help="list, show: as JSON (show: the row)")
    jobs.set_defaults(fn=lambda args: cmd_jobs(args))

    queue = sub.add_parser(
        "queue", parents=[common], help="pause, resume, retry-failed, clean or purge a queue"
    )
    queue.add_argument(
        "action",
        choices=[*QUEUE_ACTIONS, *RENAMED_QUEUE_ACTIONS],
        metavar="{" + ",".join(QUEUE_ACTIONS) + "}",
    )
    queue.add_argument("targets", nargs="*", metavar="[module:app] QUEUE")
    queue.add_argument("--db", metavar="URL", help=database_help)
    queue.add_argument(
        "--state", choices=CLEANABLE, help="clean: the state of the jobs to delete (completed)"
    )
    queue.add_argument(
        "--older-than",
        type=_seconds,
        metavar="SECONDS",
        help="clean: only jobs finished more than this long ago",
    )
    queue.add_argument(
        "--keep-last",
        type=_at_least(0),
        metavar="N",
        help="clean: only jobs beyond the newest N (with --older-than: either selects)",
    )
    queue.set_defaults(fn=lambda args: cmd_queue(args))

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
    """The ``rota`` command; returns its exit status. An output pipe closed early (``rota
    jobs list | head``) ends it quietly, with status 141 (as SIGPIPE would)."""
    try:
        return _main(argv)
    except BrokenPipeError:  # argparse's own output (--help, --version)
        if _stdout_broken():
            return _quiet_broken_pipe()
        raise


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    lead = 0
    while argv[lead : lead + 1] == ["--debug"]:
        lead += 1
    if argv[lead : lead + 1] == ["demo"]:  # the demo parses its own options
        return _guarded(lambda: _demo(argv[lead + 1 :]), debug=lead > 0)
    if argv[lead : lead + 1] == ["bench"]:  # so does the benchmark suite
        return _guarded(lambda: _bench(argv[lead + 1 :]), debug=lead > 0)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse cannot put positionals after an option (`rota jobs show --db X 42`): the
    # jobs and queue commands take the leftovers as their targets; anything else left over
    # is an error.
    if extra and args.command in ("jobs", "queue") and not any(e.startswith("-") for e in extra):
        args.targets = [*args.targets, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return _guarded(lambda: args.fn(args), debug=args.debug)


# -- errors: one line ---------------------------------------------------------------------------

#: Errors that say what is wrong in words an operator can act on: their message is enough.
EXPECTED_ERRORS: Final = (RotaError,)


def _guarded(command: Callable[[], int], *, debug: bool) -> int:
    """Run a command; an error is one line on stderr, ``rota: ...`` (after its traceback
    with ``debug``). Exit status: the command's; 2 for an expected error (a ``RotaError``:
    a bad option, a missing database, a transition the job's state does not allow...); 1
    for anything else; 130 for Ctrl-C."""
    try:
        status = int(command())
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except SystemExit:
        raise
    except BaseException as exc:
        errors = _leaves(exc)
        if any(isinstance(e, KeyboardInterrupt) for e in errors):
            return 130
        if any(isinstance(e, BrokenPipeError) for e in errors) and _stdout_broken():
            return _quiet_broken_pipe()
        if debug:
            traceback.print_exception(exc)
        first = errors[0]
        expected = isinstance(first, EXPECTED_ERRORS)
        if expected:
            line = str(first) or type(first).__name__
        else:
            line = f"unexpected error: {_describe(first)}"
        if len(errors) > 1:
            line += f" (and {len(errors) - 1} more errors)"
        if not debug and (not expected or first.__cause__ is not None):
            line += " (run with --debug for the traceback)"
        print(f"rota: {_printable(line)}", file=sys.stderr)
        return 2 if expected else 1


#: The exit status of a command whose output pipe was closed: 128 + SIGPIPE, as a shell
#: reports a process that SIGPIPE ended (``yes | head``).
BROKEN_PIPE_STATUS: Final = 128 + signal.SIGPIPE


def _stdout_broken() -> bool:
    """Whether standard output is a pipe its reader closed (a BrokenPipeError may come from
    elsewhere, e.g. a child process's pipe): the pipe then polls as an error."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
    except (OSError, ValueError, AttributeError):  # no file (captured), or no poll()
        try:
            sys.stdout.flush()  # what a failed write left buffered fails again
        except BrokenPipeError:
            return True
        except (OSError, ValueError):
            pass
        return False
    poller.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _quiet_broken_pipe() -> int:
    """End quietly: point standard output at /dev/null, so that Python's flush at exit
    finds nowhere to fail (what the ``signal`` module's documentation recommends)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
    return BROKEN_PIPE_STATUS


def _leaves(exc: BaseException) -> list[BaseException]:
    """The errors an exception group holds (the exception itself if it is none)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _describe(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__

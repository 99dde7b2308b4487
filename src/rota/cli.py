"""The ``rota`` command line.

::

    rota [--debug] worker module:app [--queue Q ...] [--concurrency N] [--backend B]
                          [--config rota.toml]
    rota [--debug] info   (module:app | --db PATH)
    rota [--debug] jobs   list (module:app | --db PATH) [--queue Q] [--state S] [--limit N]
    rota [--debug] jobs   show|retry|cancel (module:app | --db PATH) JOB_ID
    rota demo   [--jobs N] [--db PATH]

Options come from the command line, then ``ROTA_*`` environment variables, then a TOML
file (``--config``); an unknown one is an error that names the closest known option.

``rota worker`` stops gracefully on SIGINT or SIGTERM: it stops claiming, gives running
jobs ``shutdown_grace_s`` to finish, then cancels and releases them (they run again on the
next start). A second signal cancels at once (leases still keep the jobs safe). Its log
lines of the start-up are held until the runtime has started: a start that fails is one
line (``--debug`` shows them, and the traceback).

``info`` and ``jobs`` need a rota database that exists: they never create one (a mistyped
``--db`` is an error); one of an older schema is migrated, as a worker would. They print
every row they can read and mark the corrupt ones (never die on them), and escape control
characters in anything a job, a queue or an owner stored, so that no stored text can act
on the terminal. ``jobs list`` reads only the columns it prints (no payload).

An error is one line on stderr, ``rota: ...`` (exit status 2; 1 for an unexpected error,
with a hint); ``--debug`` (before or after the command) adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import logging.handlers
import os
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

from rota.actors.scheduler import pid_alive
from rota.config import BACKENDS, Config
from rota.domain.job import JobState
from rota.errors import ConfigError, RotaError, SupervisorGaveUp
from rota.storage.engine import JobRecord, OwnerRecord
from rota.storage.sqlite import SqliteEngine

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


def cmd_worker(args: argparse.Namespace) -> int:
    level = args.log_level.lower()
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"unknown log level {args.log_level!r} "
            f"({', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]})"
        )
    app = load_app(args.app)
    options: dict[str, Any] = {}
    if args.config:
        options.update(_non_defaults(Config.from_toml(args.config)))
    options.update(_non_defaults(Config.from_env()))
    if args.queue:
        options["queues"] = args.queue
    if args.concurrency is not None:
        options["concurrency"] = args.concurrency
    if args.backend is not None:
        options["backend"] = args.backend
    # --backend, ROTA_BACKEND, the TOML file, then the app's own App(backend=...)
    backend = options.get("backend") or app.config.backend or "trio"
    held = _StartupLog(level)
    try:
        return anyio.run(_worker_main, app, options, held.started, backend=backend)
    finally:
        held.end(show=args.debug)


def _non_defaults(config: Config) -> dict[str, Any]:
    default = Config()
    return {
        name: getattr(config, name)
        for name in config.__struct_fields__
        if getattr(config, name) != getattr(default, name)
    }


async def _worker_main(app: Any, options: dict[str, Any], started: Callable[[], None]) -> int:
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
        if running:  # after the start: logged with the rest
            log.error("rota worker gave up: %s", gave_up[0])
        else:  # the start-up's log is held (see _StartupLog): say it in one line
            print(f"rota: worker gave up at start: {_printable(str(gave_up[0]))}", file=sys.stderr)
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


class _StartupLog:
    """The worker's logging: records are held until the runtime has started (then written
    out, and later ones as they come), so that a start that fails (a database that cannot
    be opened...) is the one line of its error; ``--debug`` writes them out anyway."""

    def __init__(self, level: str) -> None:
        self.target = logging.StreamHandler()
        self.target.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
        self.held: logging.handlers.MemoryHandler | None = logging.handlers.MemoryHandler(
            capacity=10_000,  # beyond that, written out at once
            flushLevel=logging.CRITICAL + 1,  # never because of a level
            target=self.target,
            flushOnClose=False,
        )
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
        return str(load_app(args.app).database_path)
    return Config.from_env().database


def _engine(args: argparse.Namespace) -> SqliteEngine:
    """The database the command is about, which must exist (never created here)."""
    return SqliteEngine.open_existing(_database(args))


#: How many jobs in an unknown state ``rota info`` lists (it counts them all).
UNKNOWN_STATES_SHOWN: Final = 20


def cmd_info(args: argparse.Namespace) -> int:
    path = _database(args)
    engine = SqliteEngine.open_existing(path)
    try:
        now = engine.now_ms()
        paused = engine.paused_queues()
        _print(f"database: {path}")
        rows = [("queue", *(s.value for s in JobState), "paused")]
        for queue in engine.queues():
            counts = engine.count(queue)
            rows.append(
                (queue, *(str(counts[s]) for s in JobState), "yes" if queue in paused else "")
            )
        _table(rows)
        total, unknown = engine.unknown_states(UNKNOWN_STATES_SHOWN)
        if total:
            print()
            _print(f"jobs in an unknown state (corrupt rows, not counted above): {total}")
            for job in unknown:
                _print(f"  {job.id}  queue {_cell(job.queue)}  state {_cell(job.state)}")
            if total > len(unknown):
                _print(f"  ... and {total - len(unknown)} more (rota jobs list marks them)")
        owners = engine.owner_records()
        note = "  (pools as of the last heartbeat)" if any(o.pools for o in owners) else ""
        print()
        _print(f"owners: {len(owners)}{note}")
        for owner in owners:
            _print(_describe_owner(owner, now))
            for queue, pool in (owner.pools or {}).items():
                _print(f"    {queue}: {_describe_pool(pool)}")
    finally:
        engine.close()
    return 0


def _describe_owner(owner: OwnerRecord, now: int) -> str:
    """``  id  pid 123 (alive)  queues a, b  heartbeat 1.2 s ago``, ``?`` for what cannot be
    read, and a mark on a corrupt row."""
    alive = ""
    if owner.host == socket.gethostname() and owner.pid is not None:
        alive = " (alive)" if pid_alive(owner.pid) else " (gone)"
    queues = "?" if owner.queues is None else ", ".join(owner.queues)
    age = "?" if owner.heartbeat_at_ms is None else f"{(now - owner.heartbeat_at_ms) / 1000:.1f}"
    line = f"  {owner.id}  pid {_cell(owner.pid)}{alive}  queues {queues}  heartbeat {age} s ago"
    if owner.corrupt:
        ignored = "; workers ignore this owner" if owner.owner() is None else ""
        line += f"  [corrupt row: {', '.join(owner.corrupt)} unreadable{ignored}]"
    return line


def cmd_jobs(args: argparse.Namespace) -> int:
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
    engine = _engine(args)
    try:
        if args.action == "list":
            _list_jobs(engine, args)
        elif args.action == "show":
            _show_job(engine.job_record(args.job_id))
            for entry in engine.logs(args.job_id, limit=1000):
                _print(f"  log attempt {entry.attempt} @{entry.at_ms}: {entry.message}")
        elif args.action == "retry":
            _print(f"job {args.job_id}: {engine.retry(args.job_id).value}")
        elif args.action == "cancel":
            state = engine.cancel(args.job_id)
            note = " (cancel requested: its worker stops it)" if state is JobState.ACTIVE else ""
            _print(f"job {args.job_id}: {state.value}{note}")
    finally:
        engine.close()
    return 0


def _list_jobs(engine: SqliteEngine, args: argparse.Namespace) -> None:
    """One row per job (a summary: no payload is read), its corrupt columns named in a
    last column that is there only when some row has one."""
    state = JobState(args.state) if args.state else None
    jobs = engine.list_summaries(
        queue=args.queue, state=state, limit=args.limit, offset=args.offset
    )
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


def _show_job(record: JobRecord) -> None:
    """The job's row as JSON, as ``Job`` would encode (payload, result and progress as
    text, the backoff as an object); a column rota cannot read is shown as stored, and
    named under ``"corrupt"``."""
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
    print(_json_printable(msgspec.json.format(msgspec.json.encode(data)).decode()))


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


# -- output: nothing stored reaches the terminal raw -------------------------------------------

_NAMED_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _printable(text: str) -> str:
    """``text`` with every character a terminal could act on escaped, visibly: control
    characters (``\\x1b``, ``\\n``, C1 controls), format characters such as bidi
    overrides (``\\u202e``), line and paragraph separators. One line, always."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else _NAMED_ESCAPES.get(c) or _escape_code(ord(c)) for c in text
    )


def _escape_code(code: int) -> str:
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _json_printable(text: str) -> str:
    """JSON text with the characters JSON leaves raw but a terminal could act on (DEL, C1
    controls, format characters: the encoder escapes C0 controls itself) written as
    ``\\uXXXX`` escapes: the same JSON, safe to print."""

    def escape(c: str) -> str:
        if c == "\n" or c.isprintable():  # newlines: the formatting's, never in a string
            return c
        code = ord(c)
        if code < 0x10000:
            return f"\\u{code:04x}"
        code -= 0x10000  # a surrogate pair, as JSON spells characters beyond the BMP
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"

    return "".join(escape(c) for c in text)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rota", description="rota: durable jobs and actors")
    debug_help = "on an error, print its traceback (and a worker's start-up log)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    # --debug after the command too: a default that does not override the one above
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", parents=[common], help="run a worker for an app's queues")
    worker.add_argument("app", help="module:app, e.g. myproject.jobs:app")
    worker.add_argument("--queue", "-q", action="append", help="queue to work on (repeatable)")
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
        "--log-level", default="warning", help=f"{', '.join(LOG_LEVELS)} (default warning)"
    )
    worker.set_defaults(fn=lambda args: cmd_worker(args))

    database_help = (
        "the SQLite file; it must exist (never created here); an older rota schema is migrated"
    )
    info = sub.add_parser(
        "info", parents=[common], help="queues, counts by state, live owners, corrupt rows"
    )
    info.add_argument("app", nargs="?", help="module:app (or --db)")
    info.add_argument("--db", help=database_help)
    info.set_defaults(fn=lambda args: cmd_info(args))

    jobs = sub.add_parser("jobs", parents=[common], help="list, show, retry or cancel jobs")
    jobs.add_argument("action", choices=["list", "show", "retry", "cancel"])
    jobs.add_argument("targets", nargs="*", metavar="[module:app] [JOB_ID]")
    jobs.add_argument("--db", help=database_help)
    jobs.add_argument("--queue")
    jobs.add_argument("--state", choices=[s.value for s in JobState])
    jobs.add_argument("--limit", type=_at_least(0), default=50)
    jobs.add_argument("--offset", type=_at_least(0), default=0)
    jobs.set_defaults(fn=lambda args: cmd_jobs(args))

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
    # jobs command takes the leftovers as its targets; anything else left over is an error.
    if extra and args.command == "jobs" and not any(e.startswith("-") for e in extra):
        args.targets = [*args.targets, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return _guarded(lambda: args.fn(args), debug=args.debug)


# -- errors: one line ---------------------------------------------------------------------------

#: Errors that say what is wrong in words an operator can act on: their message is enough.
EXPECTED_ERRORS: Final = (RotaError, ValueError)


def _guarded(command: Callable[[], int], *, debug: bool) -> int:
    """Run a command; an error is one line on stderr, ``rota: ...`` (after its traceback
    with ``debug``). Exit status: the command's; 2 for an expected error (a ``RotaError``:
    a bad option, a missing database...; a ``ValueError``: a transition the job's state
    does not allow); 1 for anything else; 130 for Ctrl-C."""
    try:
        return int(command())
    except SystemExit:
        raise
    except BaseException as exc:
        errors = _leaves(exc)
        if any(isinstance(e, KeyboardInterrupt) for e in errors):
            return 130
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


def _leaves(exc: BaseException) -> list[BaseException]:
    """The errors an exception group holds (the exception itself if it is none)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _describe(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__

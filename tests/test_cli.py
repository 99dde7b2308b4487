"""The ``rota`` command line against what the database and the environment may hold: rows
rota did not write, control characters in job data, huge payloads, a mistyped path, a bad
``module:app``; and its errors: one line on stderr, the traceback only with ``--debug``.

Most tests call ``rota.cli.main`` in this process; those that need a real worker start
(trio, logging, exit code) run ``python -m rota`` with this checkout's sources."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import tracemalloc
import unicodedata
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import rota
from rota import cli
from rota.cli import main
from rota.domain import JobOptions, lifecycle
from rota.domain.event import Owner
from rota.domain.job import JobState
from rota.errors import SupervisorGaveUp
from rota.storage.engine import Failure, JobSummary
from rota.storage.sqlite import SqliteEngine

SRC = Path(rota.__file__).resolve().parents[1]


def _engine(db: Path) -> SqliteEngine:
    engine = SqliteEngine(db)
    engine.migrate()
    return engine


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "jobs.db"
    _engine(path).close()
    return path


def enqueue(db: Path, count: int = 1, **options: Any) -> list[int]:
    payload = options.pop("payload", b'{"x": 1}')
    name = options.pop("name", "task")
    with _engine(db) as engine:
        now = engine.now_ms()
        jobs = [lifecycle.new_job(name, payload, JobOptions(**options), now)] * count
        return engine.enqueue(jobs)


def raw(db: Path, statement: str, *params: Any) -> None:
    """Write with plain sqlite3, around the CHECK constraints (what a damaged file holds)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute(statement, params)
    finally:
        conn.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def control_characters(text: str) -> list[str]:
    """The characters of ``text`` a terminal could act on (newlines between lines aside)."""
    return [c for c in text if c != "\n" and (unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp"))]


# --- 5: corrupt owner rows -----------------------------------------------------------------


def add_owners(db: Path) -> None:
    with _engine(db) as engine:
        now = engine.now_ms()
        for index, owner_id in enumerate(["good", "bad-pid", "bad-queues", "bad-pools"]):
            engine.register_owner(
                Owner(
                    id=owner_id,
                    host="elsewhere",
                    pid=100 + index,
                    started_at_ms=now + index,
                    heartbeat_at_ms=now,
                    queues=["q"],
                    pools={"q": {"concurrency": 2, "running": 1}},
                )
            )
    raw(db, "UPDATE rota_owners SET pid = 1099511627776 WHERE id = 'bad-pid'")
    raw(db, "UPDATE rota_owners SET queues = 'not json' WHERE id = 'bad-queues'")
    raw(db, "UPDATE rota_owners SET pools = x'ff00' WHERE id = 'bad-pools'")


def test_info_prints_every_owner_and_marks_the_corrupt_ones(
    capsys: pytest.CaptureFixture[str], db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    add_owners(db)
    with caplog.at_level(logging.WARNING, logger="rota.storage"):
        code, out, err = run(capsys, "info", "--db", str(db))
    assert code == 0, err
    lines = out.splitlines()
    owners = lines[lines.index("owners: 4  (pools as of the last heartbeat)") + 1 :]
    assert owners == [
        "  good  pid 100  queues q  heartbeat 0.0 s ago",
        "    q: concurrency 2, running 1",
        "  bad-pid  pid ?  queues q  heartbeat 0.0 s ago"
        "  [corrupt row: pid unreadable; workers ignore this owner]",
        "    q: concurrency 2, running 1",
        "  bad-queues  pid 102  queues ?  heartbeat 0.0 s ago"
        "  [corrupt row: queues unreadable; workers ignore this owner]",
        "    q: concurrency 2, running 1",
        "  bad-pools  pid 103  queues q  heartbeat 0.0 s ago  [corrupt row: pools unreadable]",
    ]
    for owner_id, column in [("bad-pid", "pid"), ("bad-queues", "queues"), ("bad-pools", "pools")]:
        assert any(f"owner '{owner_id}'" in m and f"column {column}" in m for m in caplog.messages)


def test_info_checks_the_liveness_of_a_local_owner_with_a_readable_pid_only(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    with _engine(db) as engine:
        now = engine.now_ms()
        for owner_id, pid in [("me", os.getpid()), ("zero", 0)]:
            engine.register_owner(
                Owner(id=owner_id, host=cli.socket.gethostname(), pid=pid,
                      started_at_ms=now, heartbeat_at_ms=now)
            )  # fmt: skip
    code, out, _ = run(capsys, "info", "--db", str(db))
    assert code == 0
    assert f"  me  pid {os.getpid()} (alive)  queues " in out
    assert "  zero  pid ?  queues " in out  # not "(alive)": kill(0) is our own group


# --- 6: corrupt job rows ---------------------------------------------------------------------


def corrupt_jobs(db: Path) -> list[int]:
    """Six jobs in queue q: fine, unknown state, garbage backoff, payload not JSON,
    priority not a number, unknown state and finished (counted by the finished index)."""
    ids = enqueue(db, 6, queue="q")
    raw(db, "UPDATE rota_jobs SET state = 'bogus' WHERE id = ?", ids[1])
    raw(db, "UPDATE rota_jobs SET backoff = '{garbage' WHERE id = ?", ids[2])
    raw(db, "UPDATE rota_jobs SET payload = x'00ff' WHERE id = ?", ids[3])
    raw(db, "UPDATE rota_jobs SET priority = 'high' WHERE id = ?", ids[4])
    raw(db, "UPDATE rota_jobs SET state = 'done', finished_at_ms = 1 WHERE id = ?", ids[5])
    return ids


def test_info_counts_what_it_can_and_lists_jobs_in_an_unknown_state_apart(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    ids = corrupt_jobs(db)
    code, out, err = run(capsys, "info", "--db", str(db))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split() == ["queue", *(s.value for s in JobState), "paused"]
    assert lines[2].split() == ["q", "4", "0", "0", "0", "0", "0"]
    start = lines.index("jobs in an unknown state (corrupt rows, not counted above): 2")
    assert lines[start + 1 :][:2] == [
        f"  {ids[1]}  queue q  state bogus",
        f"  {ids[5]}  queue q  state done",
    ]


def test_jobs_list_prints_every_row_and_marks_the_corrupt_ones(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    ids = corrupt_jobs(db)
    code, out, err = run(capsys, "jobs", "list", "--db", str(db))
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["id", "name", "queue", "state", "attempt", "priority", "error", "corrupt"]
    assert rows[1:] == [
        [str(ids[0]), "task", "q", "waiting", "0/3", "0"],
        [str(ids[1]), "task", "q", "bogus", "0/3", "0", "state"],
        [str(ids[2]), "task", "q", "waiting", "0/3", "0"],  # backoff: not listed
        [str(ids[3]), "task", "q", "waiting", "0/3", "0"],  # payload: not read
        [str(ids[4]), "task", "q", "waiting", "0/3", "?", "priority"],
        [str(ids[5]), "task", "q", "done", "0/3", "0", "state"],
    ]


def test_jobs_list_without_corrupt_rows_has_no_corrupt_column(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    enqueue(db)
    code, out, _ = run(capsys, "jobs", "list", "--db", str(db))
    assert code == 0
    assert out.splitlines()[0].split() == [
        "id", "name", "queue", "state", "attempt", "priority", "error",
    ]  # fmt: skip


def test_jobs_show_prints_a_corrupt_row_as_stored_and_names_what_is_wrong(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    [job_id] = enqueue(db)
    raw(db, "UPDATE rota_jobs SET state = 'bogus', backoff = '{garbage' WHERE id = ?", job_id)
    raw(db, "UPDATE rota_jobs SET payload = x'00ff' WHERE id = ?", job_id)
    code, out, err = run(capsys, "jobs", "show", "--db", str(db), str(job_id))
    assert code == 0, err
    shown = json.loads(out)
    assert shown["corrupt"] == ["state", "payload", "backoff"]
    assert (shown["state"], shown["backoff"]) == ("bogus", "{garbage")
    assert shown["payload"] == "\x00\ufffd"


def test_jobs_show_of_a_sound_row_is_as_before(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    [job_id] = enqueue(db, max_attempts=5)
    code, out, _ = run(capsys, "jobs", "show", str(job_id), "--db", str(db))
    assert code == 0
    shown = json.loads(out)
    assert "corrupt" not in shown
    assert (shown["state"], shown["max_attempts"], shown["cancel_requested"]) == (
        "waiting", 5, False,
    )  # fmt: skip
    assert json.loads(shown["payload"]) == {"x": 1}
    assert shown["backoff"] == {"kind": "exponential", "base": 1.0, "factor": 2.0,
                                "jitter": 0.0, "max_s": 300.0}  # fmt: skip


# --- 16: control characters ------------------------------------------------------------------

CLEAR = "\x1b[2J"


@pytest.fixture
def hostile(db: Path) -> int:
    """A job whose queue, name, error and log line, and an owner whose id, hold control
    characters (a screen clear, a title change, newlines, a C1 CSI, a bidi override)."""
    [job_id] = enqueue(db, queue=f"q{CLEAR}", name="evil\nname\u202e")
    with _engine(db) as engine:
        [job] = engine.claim(f"q{CLEAR}", "w", 1, 60_000)
        engine.add_log(job_id, job.token or 0, f"log {CLEAR}\x1b]0;title\x07 \x9b31m")
        engine.fail(Failure(job_id, job.token or 0, f"boom {CLEAR}\r\nRuntimeError: x{CLEAR}"))
        now = engine.now_ms()
        engine.register_owner(
            Owner(id=f"w{CLEAR}", host="h\n", pid=1, started_at_ms=now, heartbeat_at_ms=now,
                  queues=[f"q{CLEAR}"], pools={f"q{CLEAR}": {"concurrency": "\x1b"}})
        )  # fmt: skip
    return job_id


@pytest.mark.parametrize(
    "command", [["info"], ["jobs", "list"], ["jobs", "show"]], ids=lambda c: " ".join(c)
)
def test_control_characters_in_job_data_are_escaped(
    capsys: pytest.CaptureFixture[str], db: Path, hostile: int, command: list[str]
) -> None:
    argv = [*command, "--db", str(db)] + ([str(hostile)] if command[-1] == "show" else [])
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert control_characters(out) == []
    assert control_characters(err) == []
    assert "\\x1b[2J" in out  # visible, not acted on
    if command == ["info"]:
        assert out.splitlines()[2].split()[0] == "q\\x1b[2J"
        assert "  w\\x1b[2J  pid 1  queues q\\x1b[2J  heartbeat" in out
        assert "    q\\x1b[2J: concurrency \\x1b" in out
    elif command == ["jobs", "list"]:
        [row] = out.splitlines()[1:]
        assert row.split()[:5] == [
            str(hostile),
            "evil\\nname\\u202e",
            "q\\x1b[2J",
            "delayed",
            "1/3",
        ]
        assert row.endswith("RuntimeError: x\\x1b[2J")
    else:
        shown = json.loads(out[: out.index("\n  log attempt")])
        assert (shown["queue"], shown["name"]) == (f"q{CLEAR}", "evil\nname\u202e")
        assert shown["error"] == f"boom {CLEAR}\r\nRuntimeError: x{CLEAR}"
        assert out.splitlines()[-1].endswith(": log \\x1b[2J\\x1b]0;title\\x07 \\x9b31m")


def test_an_error_message_is_escaped_too(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, _, err = run(capsys, "jobs", "list", "--db", str(db) + CLEAR)
    assert code == 2
    assert err == f"rota: no database at {db}\\x1b[2J (is the path right? `rota worker` " \
        "creates it; this command does not)\n"  # fmt: skip


# --- 16: jobs list reads only what it prints ---------------------------------------------------


def test_jobs_list_does_not_load_payloads(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    assert set(JobSummary.__struct_fields__).isdisjoint({"payload", "result", "progress"})
    big = b'{"blob": "' + b"x" * (8 << 20) + b'"}'
    ids = enqueue(db, 3, payload=big)
    tracemalloc.start()
    try:
        code = main(["jobs", "list", "--db", str(db)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out = capsys.readouterr().out
    assert code == 0
    assert [int(line.split()[0]) for line in out.splitlines()[1:]] == ids
    assert peak < 2 << 20, f"peak {peak} bytes: payloads were read"


# --- 16: a missing database is not created ----------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["info"], ["jobs", "list"], ["jobs", "show", "1"], ["jobs", "retry", "1"],
     ["jobs", "cancel", "1"]],
    ids=lambda c: " ".join(c),
)  # fmt: skip
def test_a_missing_database_is_refused_not_created(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    typo = tmp_path / "jbos.db"
    code, out, err = run(capsys, *command, "--db", str(typo))
    assert (code, out) == (2, "")
    assert err.startswith(f"rota: no database at {typo} ") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_without_db_the_default_database_must_exist_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ROTA_DATABASE", raising=False)
    code, _, err = run(capsys, "info")
    assert code == 2
    assert err.startswith(f"rota: no database at {tmp_path / 'rota.db'} ")
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_a_rota_database_is_refused_and_left_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    code, _, err = run(capsys, "info", "--db", str(other))
    assert code == 2
    assert err.startswith("rota: ") and err.count("\n") == 1 and str(other) in err
    assert other.read_text() == "hello\n"


# --- 16: worker arguments ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_worker_concurrency_below_one_is_refused_by_the_parser(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["worker", "nowhere:app", "--concurrency", value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --concurrency/-c: must be an integer >= 1, got {value!r}" in err
    assert "nowhere" not in err  # refused before the app is imported


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module in the working directory, with an app on a missing-for-now database,
    an attribute that is not an app, and a sibling module that fails to import."""
    name = f"cli_app_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(
        f"import rota\napp = rota.App({str(tmp_path / 'jobs.db')!r})\nnumber = 5\n"
    )
    (tmp_path / f"{name}_broken.py").write_text("raise RuntimeError('broken at import')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield name
    for module in (name, f"{name}_broken"):
        sys.modules.pop(module, None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_module_xyz:app", "rota: cannot import 'no_such_module_xyz': "
         "No module named 'no_such_module_xyz'"),
        ("{m}:missing", "rota: module '{m}' has no attribute 'missing'"),
        ("{m}:number", "rota: {m}:number is an int, not a rota.App"),
        ("{m}_broken:app", "rota: importing '{m}_broken' failed: RuntimeError: broken at import"
         " (run with --debug for the traceback)"),
    ],
    ids=["no-module", "no-attribute", "not-an-app", "import-fails"],
)  # fmt: skip
@pytest.mark.parametrize("command", ["worker", "info"])
def test_a_bad_app_spec_is_one_line(
    capsys: pytest.CaptureFixture[str], app_module: str, spec: str, message: str, command: str
) -> None:
    code, out, err = run(capsys, command, spec.format(m=app_module))
    assert (code, out, err) == (2, "", message.format(m=app_module) + "\n")


def test_a_bad_log_level_is_one_line(capsys: pytest.CaptureFixture[str], app_module: str) -> None:
    code, _, err = run(capsys, "worker", f"{app_module}:app", "--log-level", "loud")
    assert (code, err) == (
        2,
        "rota: unknown log level 'loud' (debug, info, warning, error or critical)\n",
    )


def test_a_bad_log_format_is_one_line(capsys: pytest.CaptureFixture[str], app_module: str) -> None:
    code, _, err = run(capsys, "worker", f"{app_module}:app", "--log-format", "xml")
    assert (code, err) == (2, "rota: unknown log format 'xml' (text or json)\n")


@pytest.mark.parametrize("quiet", ["-q", "--quiet"])
def test_quiet_and_a_log_level_together_are_refused_not_guessed(
    capsys: pytest.CaptureFixture[str], app_module: str, quiet: str
) -> None:
    code, _, err = run(capsys, "worker", f"{app_module}:app", quiet, "--log-level", "debug")
    assert (code, err) == (
        2,
        "rota: --quiet and --log-level debug contradict each other: --quiet is --log-level "
        "warning; give one of them\n",
    )


def test_q_is_quiet_and_a_queue_is_named_in_full(capsys: pytest.CaptureFixture[str]) -> None:
    args = cli.build_parser().parse_args(["worker", "jobs:app", "-q", "--queue", "images"])
    assert (args.quiet, args.queue, args.log_level, args.log_format) == (
        True,
        ["images"],
        None,
        "text",
    )
    assert cli._log_options(args) == ("warning", "text")
    assert cli._log_options(cli.build_parser().parse_args(["worker", "jobs:app"])) == (
        "info",
        "text",
    )


# --- 16: unexpected errors, --debug -----------------------------------------------------------


def boom(args: Any) -> int:
    raise RuntimeError("boom\nsecond line")


@pytest.mark.parametrize("where", ["before", "after"])
def test_an_unexpected_error_is_one_line_and_its_traceback_is_for_debug(
    capsys: pytest.CaptureFixture[str], db: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.setattr(cli, "cmd_info", boom)
    code, _, err = run(capsys, "info", "--db", str(db))
    assert (code, err) == (
        1,
        "rota: unexpected error: RuntimeError: boom\\nsecond line "
        "(run with --debug for the traceback)\n",
    )
    argv = ["--debug", "info", "--db", str(db)] if where == "before" else [
        "info", "--db", str(db), "--debug"]  # fmt: skip
    code, _, err = run(capsys, *argv)
    assert code == 1
    assert err.startswith("Traceback (most recent call last):")
    assert 'raise RuntimeError("boom\\nsecond line")' in err
    assert err.splitlines()[-1] == "rota: unexpected error: RuntimeError: boom\\nsecond line"


def test_an_expected_error_under_debug_shows_its_traceback_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "--debug", "info", "--db", str(tmp_path / "none.db"))
    assert code == 2
    assert "Traceback (most recent call last):" in err and "StorageError" in err
    assert err.splitlines()[-1].startswith("rota: no database at ")


class GivesUpAtStart:
    """An app whose runtime gives up before it has started."""

    @contextlib.asynccontextmanager
    async def run(self, **options: Any) -> AsyncIterator[None]:
        raise SupervisorGaveUp("runtime", 3, 60)
        yield  # pragma: no cover


def test_a_worker_that_gives_up_at_start_says_so_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    started: list[bool] = []
    code = anyio.run(
        cli._worker_main, GivesUpAtStart(), {}, lambda: started.append(True), backend="trio"
    )
    assert (code, started) == (1, [])
    assert capsys.readouterr().err == (
        "rota: worker gave up at start: supervisor 'runtime' gave up: "
        "more than 3 restarts in 60 s\n"
    )


# --- 16: a worker that cannot start (real processes) -------------------------------------------


def rota_process(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m rota`` with this checkout's sources, without this process's ROTA_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTA_")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(cwd)])
    return subprocess.run(
        [sys.executable, "-m", "rota", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("database", ["directory", "text-file"])
def test_a_worker_whose_database_cannot_be_opened_says_so_in_one_line(
    tmp_path: Path, database: str
) -> None:
    path = tmp_path / "data"
    if database == "directory":
        path.mkdir()
    else:
        path.write_text("not a database\n")
    (tmp_path / "startapp.py").write_text(
        "import msgspec, rota\n"
        f"app = rota.App({str(path)!r})\n"
        "class A(msgspec.Struct):\n    x: int = 0\n"
        "@app.job(queue='q')\nasync def noop(args: A) -> None:\n    pass\n"
    )
    result = rota_process("worker", "startapp:app", cwd=tmp_path)
    assert result.returncode != 0
    [line] = result.stderr.splitlines()
    assert line.startswith("rota: ") and str(path) in line, result.stderr
    assert result.stdout == ""

    debug = rota_process("--debug", "worker", "startapp:app", cwd=tmp_path)
    assert debug.returncode == result.returncode
    assert "Traceback (most recent call last):" in debug.stderr
    assert "actor 'store' crashed" in debug.stderr  # the start-up's log, kept for --debug
    assert debug.stderr.splitlines()[-1] == line.removesuffix(
        " (run with --debug for the traceback)"
    )

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
import re
import sqlite3
import subprocess
import sys
import tomllib
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
from rota.domain.outcome import FailureKind
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
    # the heartbeats were just written: an age of a few tenths on a loaded machine is fine
    ages = [float(age) for age in re.findall(r"heartbeat (\d+\.\d) s ago", "\n".join(owners))]
    assert len(ages) == 4 and all(age < 5 for age in ages), owners
    owners = [re.sub(r"heartbeat \d+\.\d s ago", "heartbeat 0.0 s ago", o) for o in owners]
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
    code, out, err = run(capsys, "jobs", "show", "--json", "--db", str(db), str(job_id))
    assert code == 0, err
    shown = json.loads(out)
    assert shown["corrupt"] == ["state", "payload", "backoff"]
    assert (shown["state"], shown["backoff"]) == ("bogus", "{garbage")
    assert shown["payload"] == "\x00\ufffd"


def test_jobs_show_of_a_sound_row_is_as_before(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    [job_id] = enqueue(db, max_attempts=5)
    code, out, _ = run(capsys, "jobs", "show", str(job_id), "--db", str(db), "--json")
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
    "command",
    [["info"], ["jobs", "list"], ["jobs", "show"], ["jobs", "show", "--json"]],
    ids=lambda c: " ".join(c),
)
def test_control_characters_in_job_data_are_escaped(
    capsys: pytest.CaptureFixture[str], db: Path, hostile: int, command: list[str]
) -> None:
    argv = [*command, "--db", str(db)] + ([str(hostile)] if "show" in command else [])
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert control_characters(out) == []
    assert control_characters(err) == []
    assert ("\\u001b[2J" if "--json" in command else "\\x1b[2J") in out  # visible, not acted on
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
    elif command == ["jobs", "show"]:
        lines = out.splitlines()
        assert lines[0] == f"job {hostile}: evil\\nname\\u202e"
        assert "  queue      q\\x1b[2J" in lines
        assert lines[-3:-1] == [
            "  error      boom \\x1b[2J\\r",
            "             RuntimeError: x\\x1b[2J",
        ]
        assert lines[-1].endswith("  attempt 1  log \\x1b[2J\\x1b]0;title\\x07 \\x9b31m")
    else:
        shown = json.loads(out)
        assert (shown["queue"], shown["name"]) == (f"q{CLEAR}", "evil\nname\u202e")
        assert shown["error"] == f"boom {CLEAR}\r\nRuntimeError: x{CLEAR}"
        assert shown["logs"][0]["message"] == f"log {CLEAR}\x1b]0;title\x07 \x9b31m"


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
    if database == "directory":  # refused by App() itself, before any runtime starts
        assert "is a directory, not a database file" in line
        assert "actor 'store' crashed" not in debug.stderr
    else:  # a file that is not a database: the Store's start-up says so
        assert "actor 'store' crashed" in debug.stderr  # the start-up's log, kept for --debug
    assert debug.stderr.splitlines()[-1] == line.removesuffix(
        " (run with --debug for the traceback)"
    )


# === issue 12, point 7: a CLI that never guesses ===============================================


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"rota {rota.__version__}\n"
    pyproject = tomllib.loads((SRC.parent / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == rota.__version__


NEW_COMMANDS = [
    ["info", "--json"],
    ["health"],
    ["jobs", "show", "1", "--json"],
    ["jobs", "list", "--json"],
    ["queue", "pause", "q"],
    ["queue", "resume", "q"],
    ["queue", "retry-failed", "q"],
    ["queue", "clean", "q", "--state", "failed"],
    ["queue", "purge", "q"],
]


@pytest.mark.parametrize("command", NEW_COMMANDS, ids=lambda c: " ".join(c))
def test_no_command_creates_a_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str]
) -> None:
    typo = tmp_path / "jbos.db"
    code, out, err = run(capsys, *command, "--db", str(typo))
    assert (code, out) == (2, "")
    assert err.startswith(f"rota: no database at {typo} ") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


# --- info --json ------------------------------------------------------------------------------


def test_info_json_holds_every_field_of_the_text_view(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    ids = corrupt_jobs(db)
    add_owners(db)
    with _engine(db) as engine:
        engine.set_paused("q", True)
        now = engine.now_ms()
        engine.register_owner(
            Owner(id="here", host=cli.socket.gethostname(), pid=os.getpid(),
                  started_at_ms=now + 10, heartbeat_at_ms=now - 2500, queues=["q", "r"])
        )  # fmt: skip
    code, out, err = run(capsys, "info", "--json", "--db", str(db))
    assert code == 0, err
    info = json.loads(out)
    assert info["database"] == str(db)
    assert info["queues"] == [
        {
            "name": "q",
            "paused": True,
            "counts": {"waiting": 4, "delayed": 0, "active": 0, "completed": 0,
                       "failed": 0, "cancelled": 0},
        }
    ]  # fmt: skip
    assert info["unknown_states"] == {
        "total": 2,
        "jobs": [
            {"id": ids[1], "queue": "q", "state": "bogus"},
            {"id": ids[5], "queue": "q", "state": "done"},
        ],
    }
    owners = {owner["id"]: owner for owner in info["owners"]}
    assert list(owners) == ["good", "bad-pid", "bad-queues", "bad-pools", "here"]
    good, here = owners["good"], owners["here"]
    assert good["host"] == "elsewhere" and good["pid"] == 100
    assert good["alive"] is None  # another host: its pid cannot be checked from here
    assert good["queues"] == ["q"]
    assert good["pools"] == {"q": {"concurrency": 2, "running": 1}}
    assert (good["corrupt"], good["ignored"]) == ([], False)
    assert isinstance(good["heartbeat_at_ms"], int) and isinstance(good["started_at_ms"], int)
    assert 0 <= good["heartbeat_age_s"] < 5
    assert (here["alive"], here["queues"], here["pools"]) == (True, ["q", "r"], None)
    assert 2.5 <= here["heartbeat_age_s"] < 10
    assert (owners["bad-pid"]["pid"], owners["bad-pid"]["corrupt"]) == (None, ["pid"])
    assert owners["bad-pid"]["ignored"] is True
    assert (owners["bad-queues"]["queues"], owners["bad-queues"]["ignored"]) == (None, True)
    assert (owners["bad-pools"]["corrupt"], owners["bad-pools"]["ignored"]) == (["pools"], False)


def test_info_json_escapes_what_a_terminal_could_act_on(
    capsys: pytest.CaptureFixture[str], db: Path, hostile: int
) -> None:
    code, out, err = run(capsys, "info", "--json", "--db", str(db))
    assert code == 0, err
    assert control_characters(out) == []
    info = json.loads(out)
    assert info["queues"][0]["name"] == f"q{CLEAR}"  # the same text, once decoded
    assert info["owners"][0]["id"] == f"w{CLEAR}"


# --- jobs show: readable by people; --json for programs ----------------------------------------

#: 2026-12-07T21:30:00Z in ms since the epoch
T0 = 1_796_679_000_000


@pytest.fixture
def finished_job(db: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """A job enqueued at T0, claimed at T0+1 s (a progress report and a log line), and
    completed at T0+2 s; the command runs at T0+3 min."""
    clock = [T0]
    with SqliteEngine(db, clock=lambda: clock[0]) as engine:
        [job_id] = engine.enqueue(
            [lifecycle.new_job("task", b'{"x": 1}', JobOptions(queue="q", max_attempts=5), T0)]
        )
        clock[0] = T0 + 1_000
        [job] = engine.claim("q", "w1", 1, 60_000)
        engine.set_progress(job_id, job.token or 0, b'{"value": 50.0, "message": "half"}')
        engine.add_log(job_id, job.token or 0, "resizing")
        clock[0] = T0 + 2_000
        engine.complete(job_id, job.token or 0, b'"done"')
    monkeypatch.setattr("rota.storage.sqlite._wall_clock_ms", lambda: T0 + 180_000)
    return job_id


def test_jobs_show_prints_dates_with_ages_states_in_words_and_decoded_json(
    capsys: pytest.CaptureFixture[str], db: Path, finished_job: int
) -> None:
    code, out, err = run(capsys, "jobs", "show", "--db", str(db), str(finished_job))
    assert code == 0, err
    assert out.splitlines() == [
        f"job {finished_job}: task",
        "  state      completed",
        "  queue      q",
        "  attempts   1/5 (stalls 0/1)",
        "  priority   0",
        "  created    2026-12-07T21:30:00Z (3 min ago)",
        "  run at     2026-12-07T21:30:00Z (3 min ago)",
        "  finished   2026-12-07T21:30:02Z (2 min ago)",
        "  backoff    exponential (base 1.0, factor 2.0, jitter 0.0, max_s 300.0)",
        "  payload    {",
        '               "x": 1',
        "             }",
        '  result     "done"',
        "  progress   {",
        '               "value": 50.0,',
        '               "message": "half"',
        "             }",
        "  logs       2026-12-07T21:30:01Z  attempt 1  resizing",
    ]


def test_jobs_show_of_an_active_delayed_or_failed_job_says_what_it_waits_for(
    capsys: pytest.CaptureFixture[str], db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [T0]
    with SqliteEngine(db, clock=lambda: clock[0]) as engine:
        new = lifecycle.new_job("task", b"{}", JobOptions(queue="q", timeout_s=30), T0)
        later = lifecycle.new_job("task", b"{}", JobOptions(queue="q", delay_s=600, key="k"), T0)
        active, delayed, failed = engine.enqueue([new, later, new])
        [_, third] = engine.claim("q", "w1", 2, 60_000)
        error = "Traceback\nValueError: bad"
        engine.fail(Failure(third.id, third.token or 0, error, FailureKind.UNRECOVERABLE))
        engine.cancel(active)
    monkeypatch.setattr("rota.storage.sqlite._wall_clock_ms", lambda: T0 + 5_000)

    def show(job_id: int) -> list[str]:
        code, out, err = run(capsys, "jobs", "show", "--db", str(db), str(job_id))
        assert code == 0, err
        return out.splitlines()

    lines = show(active)
    assert (
        "  state      active, cancel requested (running: attempt 1; its worker stops it)" in lines
    )
    assert "  owner      w1 (lease until 2026-12-07T21:31:00Z, in 55 s)" in lines
    assert "  timeout    30 s" in lines
    lines = show(delayed)
    assert "  state      delayed (runs at its run-at time)" in lines
    assert "  run at     2026-12-07T21:40:00Z (in 9 min)" in lines
    assert "  key        k" in lines
    lines = show(failed)
    assert (
        lines[1] == "  state      failed (in the dead-letter set: `rota jobs retry` runs it again)"
    )
    assert lines[-2:] == ["  error      Traceback", "             ValueError: bad"]


def test_jobs_show_marks_a_corrupt_row(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    [job_id] = enqueue(db)
    raw(db, "UPDATE rota_jobs SET state = 'bogus', backoff = '{garbage' WHERE id = ?", job_id)
    raw(db, "UPDATE rota_jobs SET payload = x'00ff' WHERE id = ?", job_id)
    code, out, err = run(capsys, "jobs", "show", "--db", str(db), str(job_id))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1] == "  corrupt    state, payload, backoff unreadable (shown as stored)"
    assert "  state      bogus (not a state rota knows)" in lines
    assert "  backoff    {garbage" in lines
    assert "  payload    \\x00\ufffd" in lines
    assert control_characters(out) == []


def test_jobs_show_json_prints_the_record_and_its_logs_as_one_document(
    capsys: pytest.CaptureFixture[str], db: Path, finished_job: int
) -> None:
    code, out, err = run(capsys, "jobs", "show", "--json", "--db", str(db), str(finished_job))
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["id"], shown["state"], shown["attempt"]) == (finished_job, "completed", 1)
    assert (shown["created_at_ms"], shown["finished_at_ms"]) == (T0, T0 + 2_000)
    assert json.loads(shown["payload"]) == {"x": 1}
    assert shown["logs"] == [{"at_ms": T0 + 1_000, "attempt": 1, "message": "resizing"}]


def test_jobs_list_json(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    ids = corrupt_jobs(db)
    code, out, err = run(capsys, "jobs", "list", "--json", "--db", str(db))
    assert code == 0, err
    listed = json.loads(out)
    assert [job["id"] for job in listed] == ids
    assert listed[0] == {
        "id": ids[0], "name": "task", "queue": "q", "state": "waiting", "attempt": 0,
        "max_attempts": 3, "priority": 0, "error": None, "corrupt": [],
    }  # fmt: skip
    assert (listed[4]["priority"], listed[4]["corrupt"]) == (None, ["priority"])


# --- queue pause|resume|retry-failed|clean|purge ---------------------------------------------


def test_queue_pause_and_resume(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    enqueue(db, queue="images")
    code, out, err = run(capsys, "queue", "pause", "--db", str(db), "images")
    assert (code, err) == (0, "")
    assert out == "queue images: paused (no worker starts its jobs; running ones finish)\n"
    with _engine(db) as engine:
        assert engine.paused_queues() == {"images"}
        assert engine.claim("images", "w", 1, 1000) == []
    code, out, _ = run(capsys, "queue", "resume", "images", "--db", str(db))
    assert (code, out) == (0, "queue images: resumed\n")
    with _engine(db) as engine:
        assert engine.paused_queues() == set()


def finish(db: Path, queue: str, count: int, how: str) -> list[int]:
    ids = enqueue(db, count, queue=queue, max_attempts=1)
    with _engine(db) as engine:
        for job in engine.claim(queue, "w", count, 60_000):
            if how == "complete":
                engine.complete(job.id, job.token or 0, None)
            else:
                engine.fail(Failure(job.id, job.token or 0, "boom"))
    return ids


def test_queue_retry_failed(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    failed = finish(db, "q", 3, "fail")
    [cancelled] = enqueue(db, queue="q")
    with _engine(db) as engine:
        engine.cancel(cancelled)
    finish(db, "other", 2, "fail")
    code, out, err = run(capsys, "queue", "retry-failed", "q", "--db", str(db))
    assert (code, err) == (0, "")
    assert out == "queue q: 4 failed and cancelled jobs retried (waiting again, attempts reset)\n"
    with _engine(db) as engine:
        assert {engine.get(i).state for i in [*failed, cancelled]} == {JobState.WAITING}
        assert engine.count("other")[JobState.FAILED] == 2


def test_queue_retry_failed_retries_more_than_one_batch(
    capsys: pytest.CaptureFixture[str], db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli, "RETRY_BATCH", 2)
    finish(db, "q", 5, "fail")
    code, out, _ = run(capsys, "queue", "retry-failed", "q", "--db", str(db))
    assert (code, out.split(":")[1]) == (
        0,
        " 5 failed and cancelled jobs retried (waiting again, attempts reset)\n",
    )


def test_queue_clean(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    finish(db, "q", 4, "complete")
    failed = finish(db, "q", 3, "fail")
    code, out, err = run(capsys, "queue", "clean", "q", "--db", str(db))
    assert (code, err) == (0, "")
    assert out == "queue q: 4 completed jobs deleted\n"
    code, out, _ = run(
        capsys, "queue", "clean", "q", "--db", str(db), "--state", "failed", "--keep-last", "1"
    )
    assert out == "queue q: 2 failed jobs deleted (beyond the newest 1)\n"
    code, out, _ = run(
        capsys, "queue", "clean", "q", "--db", str(db), "--state", "failed", "--older-than", "3600"
    )
    assert out == "queue q: 0 failed jobs deleted (finished more than 3600 s ago)\n"
    with _engine(db) as engine:
        assert [job.id for job in engine.list_jobs(queue="q")] == failed[-1:]


@pytest.mark.parametrize(
    ("option", "value"), [("--older-than", "-1"), ("--keep-last", "-2"), ("--state", "waiting")]
)
def test_queue_clean_refuses_bad_options(
    capsys: pytest.CaptureFixture[str], db: Path, option: str, value: str
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["queue", "clean", "q", "--db", str(db), option, value])
    assert exit_.value.code == 2
    assert f"argument {option}" in capsys.readouterr().err


def test_queue_purge(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    done = finish(db, "q", 1, "complete")
    enqueue(db, 2, queue="q")
    enqueue(db, 1, queue="q", delay_s=60)
    code, out, err = run(capsys, "queue", "purge", "--db", str(db), "q")
    assert (code, err) == (0, "")
    assert out == "queue q: 3 waiting and delayed jobs deleted\n"
    with _engine(db) as engine:
        assert [job.id for job in engine.list_jobs(queue="q")] == done


def test_queue_drain_was_renamed_purge_and_deletes_nothing(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    waiting = enqueue(db, 2, queue="q")
    code, out, err = run(capsys, "queue", "drain", "--db", str(db), "q")
    assert (code, out) == (2, "")
    assert err == (
        "rota: `rota queue drain` was renamed `rota queue purge` (it deletes the queue's "
        "waiting and delayed jobs); nothing was deleted\n"
    )
    with _engine(db) as engine:
        assert [job.id for job in engine.list_jobs(queue="q")] == waiting
    with pytest.raises(SystemExit):
        main(["queue", "--help"])
    shown = capsys.readouterr().out
    assert "purge" in shown and "drain" not in shown


@pytest.mark.parametrize("action", ["pause", "resume", "retry-failed", "clean", "purge"])
def test_queue_commands_refuse_a_queue_the_database_does_not_know(
    capsys: pytest.CaptureFixture[str], db: Path, action: str
) -> None:
    enqueue(db, queue="images")
    code, out, err = run(capsys, "queue", action, "imgaes", "--db", str(db))
    assert (code, out) == (2, "")
    assert err == (
        f"rota: queue 'imgaes' is unknown on {db} (no job, worker or pause names it), "
        "did you mean 'images'?\n"
    )
    with _engine(db) as engine:
        assert engine.paused_queues() == set()


def test_queue_commands_know_the_queues_of_the_app(
    capsys: pytest.CaptureFixture[str], app_module: str, tmp_path: Path
) -> None:
    """With ``module:app``, a queue of the app may be paused before any job exists."""
    (tmp_path / f"{app_module}_jobs.py").write_text(
        "import msgspec, rota\n"
        f"app = rota.App({str(tmp_path / 'jobs.db')!r})\n"
        "class A(msgspec.Struct):\n    x: int = 0\n"
        "@app.job(queue='mail')\nasync def send(args: A) -> None:\n    pass\n"
    )
    _engine(tmp_path / "jobs.db").close()
    code, out, err = run(capsys, "queue", "pause", f"{app_module}_jobs:app", "mail")
    assert (code, err) == (0, "")
    assert out.startswith("queue mail: paused")
    sys.modules.pop(f"{app_module}_jobs", None)


def test_queue_needs_a_queue(capsys: pytest.CaptureFixture[str], db: Path) -> None:
    code, _, err = run(capsys, "queue", "purge", "--db", str(db))
    assert (code, err) == (2, "rota: queue purge: a queue name is required\n")


# --- health -----------------------------------------------------------------------------------


def add_owner(db: Path, owner_id: str, *, age_s: float = 0.0, local: bool = True,
              pid: int | None = None, queues: tuple[str, ...] = ("q",)) -> None:  # fmt: skip
    with _engine(db) as engine:
        now = engine.now_ms()
        engine.register_owner(
            Owner(
                id=owner_id,
                host=cli.socket.gethostname() if local else "elsewhere",
                pid=os.getppid() if pid is None else pid,  # a process that runs
                started_at_ms=now,
                heartbeat_at_ms=now - round(age_s * 1000),
                queues=list(queues),
            )
        )


def test_health_ok_with_a_live_worker_for_every_queue(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    enqueue(db, queue="q")
    add_owner(db, "me")
    code, out, err = run(capsys, "health", "--db", str(db))
    assert (code, err) == (0, "")
    assert out == "ok: 1 live worker; queues q served; database writable\n"


def test_health_without_any_worker_is_unhealthy(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    code, out, _ = run(capsys, "health", "--db", str(db))
    assert (code, out) == (1, "no live worker on this database\n")


def test_health_names_each_queue_without_a_live_worker(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    enqueue(db, queue="images")
    enqueue(db, queue="mail", delay_s=60)
    finish(db, "old", 1, "complete")  # only finished jobs: no worker needed
    add_owner(db, "me", queues=("images",))
    add_owner(db, "stale", age_s=40, local=False, queues=("mail",))
    code, out, _ = run(capsys, "health", "--db", str(db))
    assert code == 1
    assert out == (
        "queue 'mail': no live worker serves it "
        "(stale: heartbeat 40.0 s ago, more than 15 s; host elsewhere)\n"
    )
    code, out, _ = run(capsys, "health", "--db", str(db), "--max-heartbeat-age", "60")
    assert (code, out) == (0, "ok: 2 live workers; queues images, mail served; database writable\n")
    code, out, _ = run(capsys, "health", "--db", str(db), "--queue", "images", "--queue", "pdf")
    assert (code, out) == (1, "queue 'pdf': no live worker serves it\n")


def test_health_takes_a_dead_local_pid_for_a_dead_worker(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    add_owner(db, "dead", pid=int(gone.stdout))  # its heartbeat is fresh, its pid gone
    code, out, _ = run(capsys, "health", "--db", str(db), "--queue", "q")
    assert code == 1
    assert out == f"queue 'q': no live worker serves it (dead: pid {int(gone.stdout)} gone)\n"


def test_health_uses_the_heartbeat_interval_of_the_environment(
    capsys: pytest.CaptureFixture[str], db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_owner(db, "slow", age_s=20, local=False)
    monkeypatch.setenv("ROTA_HEARTBEAT_INTERVAL_S", "10")
    code, out, _ = run(capsys, "health", "--db", str(db))
    assert (code, out) == (0, "ok: 1 live worker; queues q served; database writable\n")


def test_health_is_unhealthy_when_the_database_refuses_writes(
    capsys: pytest.CaptureFixture[str], db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_owner(db, "me")
    monkeypatch.setattr(cli, "HEALTH_BUSY_TIMEOUT_S", 0.2)
    blocker = sqlite3.connect(db, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        code, out, _ = run(capsys, "health", "--db", str(db))
    finally:
        blocker.close()
    assert code == 1
    [line] = out.splitlines()
    assert line.startswith(f"database {db}: not writable: database {db} is locked"), line


def test_health_is_unhealthy_when_the_disk_is_full(
    capsys: pytest.CaptureFixture[str], db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_owner(db, "me")
    real = os.statvfs

    def full(path: Any) -> Any:
        stats = real(path)
        return os.statvfs_result((*stats[:4], 0, *stats[5:]))  # f_bavail = 0

    monkeypatch.setattr(os, "statvfs", full)
    code, out, _ = run(capsys, "health", "--db", str(db))
    assert code == 1
    assert out.startswith(f"database {db}: not writable: the disk holding {db} is full")


def test_health_refuses_a_bad_max_heartbeat_age(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["health", "--max-heartbeat-age", "0"])
    assert exit_.value.code == 2
    assert "argument --max-heartbeat-age" in capsys.readouterr().err


# --- ROTA_* variables that are not options: a warning, not a refusal ---------------------------


def test_an_unknown_rota_variable_is_a_warning(
    capsys: pytest.CaptureFixture[str], db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROTA_DATABASE", str(db))
    monkeypatch.setenv("ROTA_ENV", "prod")
    monkeypatch.setenv("ROTA_CONCURENCY", "3")
    code, out, err = run(capsys, "info")
    assert code == 0
    assert out.startswith(f"database: {db}\n")
    assert err == (
        "rota: warning: ROTA_CONCURENCY is not a rota option (ignored), "
        "did you mean ROTA_CONCURRENCY?\n"
        "rota: warning: ROTA_ENV is not a rota option (ignored)\n"
    )
    monkeypatch.setenv("ROTA_CONCURRENCY", "many")
    code, _, err = run(capsys, "info")
    assert code == 2 and err.endswith("rota: ROTA_CONCURRENCY='many' is not a valid value\n")


# --- a closed pipe --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["jobs", "list"], ["jobs", "list", "--json"], ["info"]])
def test_piping_into_head_exits_quietly(tmp_path: Path, command: list[str]) -> None:
    db = tmp_path / "jobs.db"
    with _engine(db) as engine:
        now = engine.now_ms()
        engine.enqueue([lifecycle.new_job("task", b"{}", JobOptions(queue=f"q{i % 3000}"), now)
                        for i in range(6000)])  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTA_")}
    env["PYTHONPATH"] = str(SRC)
    rota_cmd = " ".join([sys.executable, "-m", "rota", *command, "--db", str(db)])
    result = subprocess.run(
        ["bash", "-c", f"{rota_cmd} | head -1; exit ${{PIPESTATUS[0]}}"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 141), result.stderr
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 1


def test_dash_q_means_quiet_wherever_it_exists_never_queue(
    capsys: pytest.CaptureFixture[str], db: Path
) -> None:
    """`rota worker -q` is --quiet: no command takes `-q` for --queue."""
    with pytest.raises(SystemExit) as exited:  # argparse: a usage error
        main(["health", "--db", str(db), "-q", "images"])
    assert exited.value.code == 2
    assert "-q" in capsys.readouterr().err

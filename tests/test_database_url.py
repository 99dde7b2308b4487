"""Databases from a URL: the forms ``DatabaseUrl.parse`` accepts and refuses, ``open_engine``,
and every place a database is given (``App``, ``Config``, ``ROTA_DATABASE``, a TOML file,
``App.run``, the CLI's ``--db``) going through them. Process mode: tests/runtime."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import anyio
import msgspec
import pytest

import rota
from rota.cli import main
from rota.config import Config
from rota.errors import ConfigError, StorageError
from rota.storage import DatabaseUrl, open_engine, redact

SECRET = "s3cr3t-pw"


class Ping(msgspec.Struct):
    n: int


# -- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("jobs.db", "jobs.db"),  # a plain path, as always
        ("./x/jobs.db", "./x/jobs.db"),
        ("/abs/jobs.db", "/abs/jobs.db"),
        ("jobs:v2.db", "jobs:v2.db"),  # a colon in a file name is not a scheme
        ("~/jobs.db", "~/jobs.db"),  # no expansion, as a plain path never had
        ("sqlite:///relative.db", "relative.db"),  # three slashes: relative
        ("sqlite:///x/relative.db", "x/relative.db"),
        ("sqlite:////abs/path.db", "/abs/path.db"),  # four: absolute
        ("SQLite:////abs/path.db", "/abs/path.db"),  # a scheme is case-insensitive
        (":memory:", ":memory:"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),  # SQLAlchemy's spelling
    ],
)
def test_accepted_forms(text: str, path: str) -> None:
    url = DatabaseUrl.parse(text)
    assert (url.scheme, url.path) == ("sqlite", path)
    assert url.memory is (path == ":memory:")


def test_sqlite_prefix_before_an_absolute_path_is_the_four_slash_form(tmp_path: Path) -> None:
    """``"sqlite:///" + an absolute path`` (what code builds) is the absolute file."""
    assert DatabaseUrl.parse(f"sqlite:///{tmp_path}/jobs.db").path == f"{tmp_path}/jobs.db"


FORMS = "sqlite:///relative.db, sqlite:////absolute/path.db"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the database is empty"),
        ("mysql://user@host/jobs", "unknown database URL scheme 'mysql'"),
        ("http://example.com/jobs.db", "unknown database URL scheme 'http'"),
        ("sqlite+pysqlite:///jobs.db", "unknown database URL scheme 'sqlite+pysqlite'"),
        ("sqlite3:///jobs.db", "unknown database URL scheme 'sqlite3'"),
        ("sqlite:/x.db", "'sqlite:/x.db' is not a SQLite URL"),
        ("sqlite:x.db", "'sqlite:x.db' is not a SQLite URL"),
        ("sqlite://", "'sqlite://' names no file"),
        ("sqlite:///", "'sqlite:///' names no file"),
        ("sqlite://jobs.db", "'sqlite://jobs.db' has a host part ('jobs.db')"),
        ("sqlite://host/jobs.db", "'sqlite://host/jobs.db' has a host part ('host')"),
        ("sqlite:///jobs.db?synchronous=NORMAL", "takes no query options"),
        ("sqlite:///jobs.db#x", "takes no query options"),
    ],
)
def test_refused_forms_say_what_is_wrong_and_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="database") as caught:
        DatabaseUrl.parse(text)
    assert message in str(caught.value)
    if text:  # every refusal of a URL lists the forms rota takes
        assert FORMS in str(caught.value)


def test_a_query_option_points_at_the_option_that_does_it() -> None:
    with pytest.raises(ConfigError) as caught:
        DatabaseUrl.parse("sqlite:///jobs.db?synchronous=NORMAL")
    assert "the synchronous option" in str(caught.value)
    assert "a plain path" in str(caught.value)  # for a file whose name holds '?'
    assert DatabaseUrl.parse("jobs?.db").path == "jobs?.db"


@pytest.mark.parametrize(
    "text",
    [
        f"postgresql://user:{SECRET}@db.example.com:5432/jobs",
        f"postgres://user:{SECRET}@db.example.com/jobs",
        f"postgresql+psycopg://user:{SECRET}@db.example.com/jobs",
        f"POSTGRESQL://user:{SECRET}@db/jobs",
        f"postgresql://db/jobs?user=u&password={SECRET}",
    ],
)
def test_postgresql_is_not_available_yet_and_its_password_is_never_shown(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        DatabaseUrl.parse(text)
    message = str(caught.value)
    assert "PostgreSQL" in message and "no PostgreSQL engine yet" in message
    assert "db" in message  # names the database that was given...
    assert SECRET not in message  # ...without its password
    assert "***" in message


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"postgresql://user:{SECRET}@host/db", "postgresql://user:***@host/db"),
        (f"postgresql://user:{SECRET}@host:5432/db", "postgresql://user:***@host:5432/db"),
        ("postgresql://user:a@b/c@host/db", "postgresql://user:***@host/db"),  # unencoded @ /
        (f"mysql://user:{SECRET}@host/db", "mysql://user:***@host/db"),
        (f"postgresql://host/db?password={SECRET}&x=1", "postgresql://host/db?password=***&x=1"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),  # no password: as is
        ("jobs.db", "jobs.db"),
        ("a:b@c.db", "a:b@c.db"),  # a plain path is not a URL
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_unknown_scheme_error_hides_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        DatabaseUrl.parse(f"mysql://user:{SECRET}@host/jobs")
    assert SECRET not in str(caught.value)
    assert "mysql://user:***@host/jobs" in str(caught.value)


def test_same_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    jobs = DatabaseUrl.parse("jobs.db")
    assert jobs.same_database(DatabaseUrl.parse("sqlite:///jobs.db"))
    assert jobs.same_database(DatabaseUrl.parse(f"sqlite:///{tmp_path}/jobs.db"))
    assert jobs.same_database(DatabaseUrl.parse(str(tmp_path / "x" / ".." / "jobs.db")))
    assert not jobs.same_database(DatabaseUrl.parse("other.db"))
    memory = DatabaseUrl.parse(":memory:")
    assert not memory.same_database(DatabaseUrl.parse(":memory:"))  # two private databases
    assert not memory.same_database(jobs)


def test_absolute_and_shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    url = DatabaseUrl.parse("sqlite:///jobs.db")
    assert url.absolute().path == os.path.realpath(tmp_path / "jobs.db")
    assert DatabaseUrl.parse(str(url.absolute())) == url.absolute()  # it round-trips
    assert url.shared(str(tmp_path / "private")) == url  # a file is shared as it is
    memory = DatabaseUrl.parse(":memory:").shared(str(tmp_path / "private"))
    assert not memory.memory and memory.path == str(tmp_path / "private" / "memory.db")


# -- open_engine ----------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["plain", "three", "four"])
def test_open_engine_opens_the_named_file(
    form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = {
        "plain": "sub/jobs.db",
        "three": "sqlite:///sub/jobs.db",
        "four": f"sqlite:///{tmp_path}/sub/jobs.db",
    }[form]
    (tmp_path / "sub").mkdir()
    engine = open_engine(text, clock=lambda: 1_000)
    try:
        engine.migrate()
        assert engine.now_ms() == 1_000  # the clock was passed on
    finally:
        engine.close()
    assert (tmp_path / "sub" / "jobs.db").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]  # nothing else was created


def test_open_engine_passes_synchronous(tmp_path: Path) -> None:
    for mode, pragma in (("NORMAL", 1), ("FULL", 2)):
        engine = open_engine(str(tmp_path / "jobs.db"), synchronous=mode)  # type: ignore[arg-type]
        try:
            assert engine._conn.execute("PRAGMA synchronous").fetchone() == (pragma,)  # type: ignore[attr-defined]
        finally:
            engine.close()


def test_open_engine_without_create_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no database at"):
        open_engine(f"sqlite:///{tmp_path}/missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(StorageError, match="private, empty database"):
        open_engine("sqlite://:memory:", create=False)


def test_open_engine_refuses_what_parse_refuses() -> None:
    with pytest.raises(ConfigError, match="no PostgreSQL engine yet") as caught:
        open_engine(f"postgresql://u:{SECRET}@h/db")
    assert SECRET not in str(caught.value)
    with pytest.raises(ConfigError, match="unknown database URL scheme 'mysql'"):
        open_engine("mysql://h/db")


# -- where a database is given ----------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda text: rota.App(text),
        lambda text: rota.App(database=text),
        lambda text: Config(database=text),
        lambda text: Config.from_options(database=text),
        lambda text: Config.from_env({"ROTA_DATABASE": text}),
    ],
    ids=["App", "App(database=)", "Config", "Config.from_options", "ROTA_DATABASE"],
)
def test_a_bad_database_fails_at_construction(make: object) -> None:
    with pytest.raises(ConfigError, match="unknown database URL scheme 'mysql'"):
        make("mysql://h/db")  # type: ignore[operator]
    with pytest.raises(ConfigError) as caught:
        make(f"postgresql://u:{SECRET}@h/db")  # type: ignore[operator]
    assert "no PostgreSQL engine yet" in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    "make",
    [lambda text: rota.App(text), lambda text: Config(database=text)],
    ids=["App", "Config"],
)
def test_a_directory_given_as_the_database_fails_at_construction(
    make: object, tmp_path: Path
) -> None:
    for text in (str(tmp_path), f"sqlite:///{tmp_path}"):
        with pytest.raises(ConfigError, match="is a directory, not a database file"):
            make(text)  # type: ignore[operator]


def test_a_bad_database_in_a_toml_file_fails_when_read(tmp_path: Path) -> None:
    toml = tmp_path / "rota.toml"
    toml.write_text('database = "sqlite://jobs.db"\n')
    with pytest.raises(ConfigError, match="has a host part"):
        Config.from_toml(toml)


@pytest.mark.anyio
@pytest.mark.parametrize("form", ["three", "four"])
async def test_an_app_on_a_sqlite_url_runs_a_job_end_to_end(
    form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    text = "sqlite:///jobs.db" if form == "three" else f"sqlite:///{tmp_path}/jobs.db"
    app = rota.App(text, scheduler_interval_s=0.05, shutdown_grace_s=0.5)

    @app.job(name="double")
    async def double(args: Ping) -> int:
        return args.n * 2

    try:
        assert app.database_path == ("jobs.db" if form == "three" else f"{tmp_path}/jobs.db")
        handle = await double.enqueue(Ping(21))  # before the runtime: a producer's connection
        async with app.run():
            assert await handle.result(timeout=10) == 42
            later = await double.enqueue(Ping(1))  # inside: through the Store
            assert await later.result(timeout=10) == 2
    finally:
        app.close()
    names = sorted(name for name in os.listdir(tmp_path) if not name.startswith("jobs.db-"))
    assert names == ["jobs.db"]  # and its WAL files: nothing else was created
    engine = open_engine(str(tmp_path / "jobs.db"), create=False)
    try:
        assert engine.get(handle.id).state is rota.JobState.COMPLETED
    finally:
        engine.close()


@pytest.mark.anyio
@pytest.mark.parametrize("text", [":memory:", "sqlite://:memory:", "sqlite:///:memory:"])
async def test_a_memory_app_is_one_database_for_all_its_connections(text: str) -> None:
    app = rota.App(text, scheduler_interval_s=0.05, shutdown_grace_s=0.5)

    @app.job(name="echo")
    def echo(args: Ping) -> int:
        return args.n

    ids: list[int] = []
    thread = threading.Thread(target=lambda: ids.append(echo.enqueue_sync(Ping(7)).id))
    thread.start()  # another thread: another connection
    thread.join()
    handle = await echo.enqueue(Ping(8))  # this thread's connection
    assert await app.queue().counts() == {
        **dict.fromkeys(rota.JobState, 0),
        rota.JobState.WAITING: 2,
    }
    private = anyio.Path(app.database_path)
    assert await private.is_file() and private.name == "memory.db"
    try:
        async with app.run():  # the runtime's connections see them too
            assert await app.handle(ids[0]).result(timeout=10) == 7
            assert await handle.result(timeout=10) == 8
    finally:
        app.close()
    assert not await private.parent.exists()  # removed by close()


@pytest.mark.anyio
async def test_run_takes_the_same_database_in_another_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = rota.App("jobs.db", shutdown_grace_s=0.5)  # e.g. ROTA_DATABASE=sqlite:///jobs.db

    @app.job(name="noop")
    def noop(args: Ping) -> None:
        return None

    try:
        async with app.run(database="sqlite:///jobs.db"):
            pass
        async with app.run(database=f"sqlite:///{tmp_path}/jobs.db"):
            pass
        with pytest.raises(ConfigError, match="a runtime works on its app's database"):
            async with app.run(database="sqlite:///other.db"):
                pass
    finally:
        app.close()


# -- the command line -------------------------------------------------------------------------


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A rota database with one waiting job (queue ``q``)."""
    path = tmp_path / "jobs.db"
    app = rota.App(str(path))

    @app.job(name="task", queue="q")
    def task(args: Ping) -> None:
        return None

    task.enqueue_sync(Ping(1))
    app.close()
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("form", ["plain", "three", "four"])
def test_cli_db_takes_a_url(
    form: str, database: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(database.parent)
    text = {"plain": "jobs.db", "three": "sqlite:///jobs.db", "four": f"sqlite:///{database}"}[form]
    code, out, err = run(capsys, "info", "--db", text)
    assert code == 0, err
    assert f"database: {text}" in out
    code, out, err = run(capsys, "jobs", "list", "--db", text, "--json")
    assert code == 0, err
    assert [job["queue"] for job in msgspec.json.decode(out)] == ["q"]
    code, out, err = run(capsys, "queue", "pause", "--db", text, "q")
    assert (code, out) == (0, "queue q: paused (no worker starts its jobs; running ones finish)\n")


def test_cli_reads_a_url_from_rota_database(
    database: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROTA_DATABASE", f"sqlite:///{database}")
    code, out, err = run(capsys, "info")
    assert code == 0, err
    assert f"database: sqlite:///{database}" in out


@pytest.mark.parametrize("command", [["info"], ["health"], ["jobs", "list"], ["queue", "purge"]])
def test_cli_refuses_a_postgresql_url_without_showing_its_password(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql://rota:{SECRET}@db.example.com/jobs"
    argv = [*command, "--db", url] + (["q"] if command[0] == "queue" else [])
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith("rota: ") and "no PostgreSQL engine yet" in err
    assert "postgresql://rota:***@db.example.com/jobs" in err
    assert SECRET not in out + err


def test_cli_refuses_an_unknown_scheme(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "info", "--db", "mysql://h/jobs")
    assert code == 2
    assert "unknown database URL scheme 'mysql'" in err and FORMS in err


def test_cli_does_not_create_a_database_named_by_a_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "info", "--db", f"sqlite:///{tmp_path}/missing.db")
    assert code == 2
    assert f"no database at {tmp_path}/missing.db" in err
    assert os.listdir(tmp_path) == []

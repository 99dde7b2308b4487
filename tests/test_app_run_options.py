"""Options given to ``App.run`` (and so to ``rota worker``) take effect or are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from rota import App, ConfigError
from rota.storage.sqlite import SqliteEngine


class Ping(msgspec.Struct):
    n: int


def make_app(tmp_path: Path) -> App:
    app = App(str(tmp_path / "jobs.db"))

    @app.job(queue="q")
    async def ping(args: Ping) -> int:
        return args.n

    return app


@pytest.mark.trio
async def test_run_uses_the_synchronous_mode_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(tmp_path)
    modes: list[Any] = []
    engine = app.engine

    def recording_engine(**kwargs: Any) -> SqliteEngine:
        modes.append(kwargs.get("synchronous"))
        return engine(**kwargs)

    monkeypatch.setattr(app, "engine", recording_engine)
    async with app.run(synchronous="NORMAL"):
        pass
    app.close()
    assert modes
    assert set(modes) == {"NORMAL"}  # the Store's engine and the commit watcher's


@pytest.mark.trio
async def test_run_refuses_a_database_other_than_its_apps(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    with pytest.raises(ConfigError, match="a runtime works on its app's database"):
        async with app.run(database=str(tmp_path / "other.db")):
            pass
    async with app.run(database=str(tmp_path / "jobs.db")):  # the same file is fine
        pass
    app.close()

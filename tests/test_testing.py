"""``rota.testing``: ``isolated`` runs an app's own jobs on a private database, with a
controlled clock, and leaves the app as it was."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

import rota
from rota.testing import Clock, drain, isolated


class Ping(msgspec.Struct):
    n: int


@pytest.mark.anyio
async def test_isolated_runs_an_apps_own_jobs_on_a_private_database(tmp_path: Path) -> None:
    database = tmp_path / "jobs.db"
    app = rota.App(str(database))  # as a user's jobs.py declares it
    attempts: list[int] = []

    @app.job(name="flaky", max_attempts=3, backoff=rota.fixed(600))
    async def flaky(args: Ping, ctx: rota.Context) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")
        return args.n

    clock = Clock()
    with isolated(app, clock=clock) as same:
        assert same is app
        handle = await flaky.enqueue(Ping(7))
        result = await drain(app, clock=clock)  # the 10-minute backoff is skipped
        assert (result.completed, result.skipped_s) == (1, 600)
        assert await handle.result(timeout=5) == 7
    assert attempts == [1, 2]
    assert not database.exists()  # the app's own database was never opened
    assert app.database_path == str(database) and app.clock is not clock
    with isolated(app):  # a fresh database each time
        assert await app.queue("default").counts() == dict.fromkeys(rota.JobState, 0)
    app.close()


@pytest.mark.anyio
async def test_isolated_refuses_a_running_app() -> None:
    app = rota.App(":memory:")

    @app.job(name="noop")
    async def noop(args: Ping) -> None:
        return None

    async with app.run():
        with pytest.raises(RuntimeError, match="runtime stopped"), isolated(app):
            pass
    app.close()

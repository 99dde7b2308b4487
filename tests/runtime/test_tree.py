"""The supervision tree as declared in ``rota.runtime`` (docs/architecture.md draws it):
children in start order, strategies, restart intensities, restart types and stop grace
periods. Built, not run: the declaration is what is pinned here; the end-to-end tests
check what it does."""

from __future__ import annotations

from pathlib import Path

import pytest

import rota
from rota.actors.kernel import Actor, ActorRef
from rota.runtime import Runtime, queue_supervisor
from rota.supervisors import ChildSpec, Restart, Strategy, Supervisor

PERMANENT = Restart.PERMANENT


def declared(sup: Supervisor) -> list[tuple[str, Restart, float]]:
    """A supervisor's children as declared: name, restart type, stop grace."""
    specs: tuple[ChildSpec, ...] = sup._specs
    return [(spec.name, spec.restart, spec.grace_s) for spec in specs]


def intensity(sup: Supervisor) -> tuple[Strategy, int, float]:
    stats = sup.statistics()
    return stats.strategy, stats.max_restarts, stats.period_s


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    app = rota.App(
        str(tmp_path / "jobs.db"),
        import_name="jobs:app",  # never imported: no child process starts here
        shutdown_grace_s=2.0,
        kill_grace_s=1.5,
        queue_config={"cpu": {"mode": "process"}},
    )

    @app.job(queue="io")
    async def fetch(n: int) -> None:
        pass

    @app.job(queue="cpu")
    def crunch(n: int) -> None:
        pass

    return Runtime(
        config=app.config,
        queues=["io", "cpu"],
        engine_factory=app.engine,
        runners=lambda queue: app._execution.queue_runners(queue, app.config, "trio"),
    )


def test_the_root_runs_the_store_the_scheduler_and_one_supervisor_per_queue(
    runtime: Runtime,
) -> None:
    assert intensity(runtime.root) == (Strategy.ONE_FOR_ONE, 3, 60.0)
    assert declared(runtime.root) == [
        ("store", PERMANENT, 30.0),
        ("scheduler", PERMANENT, 10.0),
        ("queue-sup[io]", PERMANENT, float("inf")),
        ("queue-sup[cpu]", PERMANENT, float("inf")),
    ]


def test_a_queue_supervisor_starts_its_pool_last_and_stops_it_first(runtime: Runtime) -> None:
    io, cpu = runtime.queue_sups
    for sup in (io, cpu):
        assert intensity(sup) == (Strategy.REST_FOR_ONE, 5, 30.0)
    assert declared(io) == [
        ("queue[io]", PERMANENT, 5.0),
        ("renewer[io]", PERMANENT, 5.0),
        ("threads[io]", PERMANENT, 5.0),
        ("pool[io]", PERMANENT, 2.0 + 5.0),  # shutdown_grace_s + 5
    ]
    assert declared(cpu) == [
        ("queue[cpu]", PERMANENT, 5.0),
        ("renewer[cpu]", PERMANENT, 5.0),
        ("threads[cpu]", PERMANENT, 5.0),
        ("processes[cpu]", PERMANENT, 1.5 + 5.0),  # kill_grace_s + 5
        ("pool[cpu]", PERMANENT, 2.0 + 5.0),
    ]


def test_queue_supervisor_is_the_whole_queue_subtree_in_one_declaration(
    runtime: Runtime,
) -> None:
    sup = queue_supervisor(
        "io",
        queue=runtime.queue_refs["io"],
        renewer=runtime.renewers["io"],
        runners=runtime.runners["io"],
        pool=runtime.pools["io"],
        shutdown_grace_s=2.0,
    )
    assert sup.name == "queue-sup[io]"
    assert intensity(sup) == intensity(runtime.queue_sups[0])
    assert declared(sup) == declared(runtime.queue_sups[0])
    refs: list[ActorRef[Actor]] = [runtime.queue_refs["io"], runtime.pools["io"]]
    assert [spec.run for spec in sup._specs if spec.name in ("queue[io]", "pool[io]")] == [
        ref.run for ref in refs
    ]

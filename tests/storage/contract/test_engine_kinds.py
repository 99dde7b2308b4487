"""The contract tests' own machinery: each kind's engine is an ``Engine``, and a kind that
cannot open several engines on one database refuses to fake it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rota.storage.engine import Engine


def test_the_engine_is_an_engine(engine: Engine) -> None:
    assert isinstance(engine, Engine)


def test_a_second_engine_on_one_database_needs_the_several_connections_mark(
    engine: Engine, engine_factory: Callable[..., Engine]
) -> None:
    # unmarked, the test runs on every kind, one-connection kinds included (an in-memory
    # database: a second engine would open another, empty database and pass for the first)
    with pytest.raises(RuntimeError, match="mark the test several_connections"):
        engine_factory()


@pytest.mark.several_connections
def test_engines_of_one_test_share_its_database(
    engine: Engine, engine_factory: Callable[..., Engine]
) -> None:
    engine.set_paused("q", True)
    assert engine_factory().paused_queues() == {"q"}

"""Job options out of range are a ``ConfigError`` naming the option, at ``@app.job`` and at
enqueue, before anything is stored: never an ``OverflowError`` or a ``ValueError`` later
(when the job row is built, stored, or run)."""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from rota.app import App, JobDefinition
from rota.domain.backoff import MAX_DELAY_S
from rota.domain.job import (
    INT64_MAX,
    INT64_MIN,
    MAX_COUNT,
    MAX_DURATION_S,
    MAX_RUN_AT_MS,
    JobOptions,
    JobState,
)
from rota.domain.outcome import Retry
from rota.errors import ConfigError
from rota.storage import ops


class Ping(msgspec.Struct):
    n: int


@pytest.fixture
def app() -> Iterator[App]:
    app = App(":memory:")
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def ping(app: App) -> JobDefinition[Ping, int]:
    @app.job(queue="q")
    def ping(args: Ping) -> int:
        return args.n

    return ping


FAR_FUTURE = datetime.datetime(10_000 - 1, 12, 31, tzinfo=datetime.UTC)

OUT_OF_RANGE: list[tuple[str, Any]] = [
    ("delay", math.inf),
    ("delay", 1e300),
    ("delay", 2**63),
    ("delay", math.nan),
    ("delay", -1.0),
    ("delay", MAX_DURATION_S * 1.01),
    ("timeout", math.inf),
    ("timeout", 1e300),
    ("timeout", 2**63),
    ("timeout", math.nan),
    ("timeout", 0),
    ("timeout", 1e-9),
    ("run_at", 2**63),
    ("run_at", 10**30),
    ("run_at", -1),
    ("run_at", MAX_RUN_AT_MS + 1),
    ("run_at", math.inf),
    ("run_at", datetime.datetime(1, 1, 1, tzinfo=datetime.UTC)),
    ("run_at", datetime.datetime(1, 1, 1)),  # naive: local time, may not be representable
    ("priority", 2**63),
    ("priority", -(2**63) - 1),
    ("priority", 10**30),
    ("max_attempts", 2**64),
    ("max_attempts", 0),
    ("max_attempts", MAX_COUNT + 1),
    ("max_stalls", 2**64),
    ("max_stalls", -1),
]


@pytest.mark.parametrize(("option", "value"), OUT_OF_RANGE)
def test_enqueue_refuses_an_option_out_of_range_naming_it(
    app: App, ping: JobDefinition[Ping, int], option: str, value: Any
) -> None:
    with pytest.raises(ConfigError, match=f"'{option}'"):
        ping.enqueue_sync(Ping(1), **{option: value})
    with pytest.raises(ConfigError, match=f"'{option}'"):
        ping.enqueue_many_sync([Ping(1), Ping(2)], **{option: value})
    assert app._storage.run_sync(ops.Count("q")) == dict.fromkeys(JobState, 0)


@pytest.mark.parametrize(
    ("option", "value"),
    [(option, value) for option, value in OUT_OF_RANGE if option not in ("delay", "run_at")],
)
def test_job_registration_refuses_an_option_out_of_range_naming_it(
    app: App, option: str, value: Any
) -> None:
    def handler(args: Ping) -> None:
        return None

    with pytest.raises(ConfigError, match=f"job .*handler.*'{option}'"):
        app.job(**{option: value})(handler)
    assert app.registry.jobs == {}


@pytest.mark.parametrize(
    "options",
    [
        {"delay": MAX_DURATION_S},
        {"delay": 0},
        {"run_at": MAX_RUN_AT_MS},
        {"run_at": 0},
        {"run_at": FAR_FUTURE},
        {"priority": INT64_MAX},
        {"priority": INT64_MIN},
        {"max_attempts": MAX_COUNT, "max_stalls": MAX_COUNT},
        {"max_stalls": 0},
        {"timeout": MAX_DURATION_S},
        {"timeout": 0.001},
    ],
)
def test_options_at_their_bounds_are_stored(
    app: App, ping: JobDefinition[Ping, int], options: dict[str, Any]
) -> None:
    handle = ping.enqueue_sync(Ping(1), **options)
    job = app._storage.run_sync(ops.Get(handle.id))
    assert job.priority == options.get("priority", 0)
    assert job.max_attempts == options.get("max_attempts", 3)
    if "timeout" in options:
        assert job.timeout_ms == round(options["timeout"] * 1000)


def test_job_options_built_directly_are_checked_too() -> None:
    for field, value in [
        ("delay_s", math.inf),
        ("timeout_s", math.nan),
        ("run_at_ms", 2**63),
        ("priority", 2**63),
        ("max_attempts", 2**64),
        ("max_stalls", 2**64),
    ]:
        with pytest.raises(ValueError, match=field):
            JobOptions(**{field: value})


@pytest.mark.parametrize("delay_s", [math.inf, -math.inf, math.nan, 1e300, MAX_DELAY_S * 2, -1])
def test_retry_refuses_a_delay_out_of_range(delay_s: float) -> None:
    with pytest.raises(ValueError, match="Retry delay_s must be between 0 and 31536000"):
        Retry(delay_s=delay_s)
    assert Retry(delay_s=MAX_DELAY_S).delay_s == MAX_DELAY_S


@pytest.mark.trio
@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"older_than_s": math.inf}, "older_than_s"),
        ({"older_than_s": math.nan}, "older_than_s"),
        ({"older_than_s": -1.0}, "older_than_s"),
        ({"keep_last": -1}, "keep_last"),
        ({"keep_last": 2**64}, "keep_last"),
    ],
)
async def test_clean_refuses_options_out_of_range(
    app: App, options: dict[str, Any], name: str
) -> None:
    with pytest.raises(ConfigError, match=f"'{name}'"):
        await app.queue("q").clean(**options)


@pytest.mark.parametrize("option", ["key", "job_id", "queue"])
def test_text_options_that_utf8_cannot_store_are_refused(
    app: App, ping: JobDefinition[Ping, int], option: str
) -> None:
    with pytest.raises(ConfigError, match=f"'{option}'.*lone surrogates"):
        ping.enqueue_sync(Ping(1), **{option: "a\ud800"})
    assert app._storage.run_sync(ops.Count()) == dict.fromkeys(JobState, 0)


@pytest.mark.parametrize("option", ["name", "queue"])
def test_job_registration_refuses_text_utf8_cannot_store(app: App, option: str) -> None:
    def handler(args: Ping) -> None:
        return None

    with pytest.raises(ConfigError, match=f"'{option}'.*lone surrogates"):
        app.job(**{option: "\udfff"})(handler)

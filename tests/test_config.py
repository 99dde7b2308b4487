"""Configuration: validated once, unknown options named with a suggestion."""

from __future__ import annotations

import logging
import math
import typing
from pathlib import Path
from typing import Literal

import msgspec
import pytest

from rota.app import App
from rota.config import BOUNDS, Config, QueueConfig
from rota.errors import ConfigError


def test_defaults_and_overrides() -> None:
    config = Config.from_options(concurrency=4, lease_ttl_s=12.5)
    assert (config.concurrency, config.lease_ttl_s, config.synchronous) == (4, 12.5, "FULL")
    assert config.replace(concurrency=7).concurrency == 7
    assert config.concurrency == 4  # frozen: replace made a copy


def test_unknown_option_suggests_the_closest() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown option 'concurency' .* did you mean 'concurrency'"
    ):
        Config.from_options(concurency=3)
    with pytest.raises(ConfigError, match="did you mean 'lease_ttl_s'"):
        Config().replace(lease_ttl=3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"lease_ttl_s": -1.0}, "lease_ttl_s"),
        ({"synchronous": "OFF"}, "synchronous"),
        ({"concurrency": "many"}, "concurrency"),
        ({"shutdown_grace_s": -1}, "shutdown_grace_s"),
        ({"queue_config": {"images": {"concurrency": 0}}}, "images"),
        ({"queue_config": {"images": {"concurency": 2}}}, "did you mean 'concurrency'"),
        ({"queue_config": {"images": {"mode": "thread"}}}, "images"),
        ({"queue_config": {"images": {"processes": 0}}}, r"images.*processes"),
        ({"processes": 0}, "processes"),
        ({"max_jobs_per_child": 0}, "max_jobs_per_child"),
        ({"kill_grace_s": -1}, "kill_grace_s"),
        ({"child_max_restarts": -1}, "child_max_restarts"),
        ({"child_restart_period_s": 0}, "child_restart_period_s"),
        ({"child_start_timeout_s": 0}, "child_start_timeout_s"),
    ],
)
def test_invalid_values_name_the_option(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.from_options(**options)


def test_per_queue_settings_fall_back_to_app_defaults() -> None:
    config = Config.from_options(
        concurrency=8,
        retain_completed=100,
        queue_config={"images": QueueConfig(concurrency=2), "mail": {"retain_completed": 5}},
    )
    images, mail, other = (config.for_queue(q) for q in ("images", "mail", "other"))
    assert (images.concurrency, images.prefetch, images.retain_completed) == (2, "auto", 100)
    assert (mail.concurrency, mail.retain_completed) == (8, 5)
    assert (other.concurrency, other.prefetch) == (8, "auto")


def test_process_settings_per_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    config = Config.from_options(
        concurrency=10,
        max_jobs_per_child=50,
        queue_config={
            "cpu": {"mode": "process"},
            "small": {"concurrency": 2, "mode": "process", "max_jobs_per_child": 3},
            "fixed": {"processes": 7},
        },
    )
    cpu, small, fixed, other = (config.for_queue(q) for q in ("cpu", "small", "fixed", "x"))
    # processes: the queue's concurrency, at most the CPUs, unless set
    assert (cpu.mode, cpu.processes, cpu.max_jobs_per_child) == ("process", 4, 50)
    assert (small.mode, small.processes, small.max_jobs_per_child) == ("process", 2, 3)
    assert (fixed.mode, fixed.processes) == (None, 7)
    assert (other.mode, other.processes) == (None, 4)
    assert Config.from_options(processes=3).for_queue("q").processes == 3


def test_environment_variables() -> None:
    env = {"ROTA_CONCURRENCY": "20", "ROTA_QUEUES": "a, b", "ROTA_DATABASE": "x.db", "HOME": "/"}
    config = Config.from_env(env)
    assert (config.concurrency, config.queues, config.database) == (20, ["a", "b"], "x.db")
    with pytest.raises(ConfigError, match="ROTA_LEASE_TTL_S"):
        Config.from_env({"ROTA_LEASE_TTL_S": "{"})  # a bad value of a known option: an error


def test_unknown_environment_variables_warn_and_are_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A ``ROTA_*`` variable that names no option (a user's own ``ROTA_ENV=prod``, or a
    typo) is not a reason to refuse to start: it is reported, with the closest option."""
    env = {"ROTA_CONCURENCY": "2", "ROTA_ENV": "prod", "ROTA_QUEUES": "a"}
    with caplog.at_level(logging.WARNING, logger="rota.config"):
        config = Config.from_env(env)
    assert (config.concurrency, config.queues) == (10, ["a"])
    assert caplog.messages == [
        "ROTA_CONCURENCY is not a rota option (ignored), did you mean ROTA_CONCURRENCY?",
        "ROTA_ENV is not a rota option (ignored)",
    ]
    told: list[str] = []
    Config.from_env({"ROTA_PREFECH": "1"}, warn=told.append)
    assert told == ["ROTA_PREFECH is not a rota option (ignored), did you mean ROTA_PREFETCH?"]


def test_prefetch_is_auto_unless_a_number_is_set(tmp_path: Path) -> None:
    assert Config().prefetch == "auto"
    assert Config.from_options().prefetch == "auto"
    assert Config.from_options(prefetch=0).prefetch == 0  # a number: fixed, as set
    config = Config.from_options(
        prefetch=5, queue_config={"a": {"prefetch": "auto"}, "b": QueueConfig(prefetch=0)}
    )
    assert [config.for_queue(q).prefetch for q in ("a", "b", "c")] == ["auto", 0, 5]
    assert Config.from_options(queue_config={"a": {}}).for_queue("a").prefetch == "auto"
    assert Config.from_env({"ROTA_PREFETCH": "auto"}).prefetch == "auto"
    assert Config.from_env({"ROTA_PREFETCH": "7"}, prefetch="auto").prefetch == 7
    path = tmp_path / "rota.toml"
    path.write_text('prefetch = "auto"\n[queue_config.images]\nprefetch = 4\n')
    from_file = Config.from_toml(path)
    assert (from_file.prefetch, from_file.for_queue("images").prefetch) == ("auto", 4)
    for bad in ("fast", "Auto", ""):
        with pytest.raises(ConfigError, match=r"option 'prefetch' must be 'auto' or a number"):
            Config.from_options(prefetch=bad)
    with pytest.raises(ConfigError, match=r"option 'queue_config\['a'\].prefetch' must be"):
        Config.from_options(queue_config={"a": {"prefetch": "fast"}})
    with pytest.raises(ConfigError, match=r"option 'prefetch' must be"):
        QueueConfig(prefetch="fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ROTA_PREFETCH"):
        Config.from_env({"ROTA_PREFETCH": "fast"})
    with pytest.raises(ConfigError, match="'prefetch' must be between 0 and 10000, got -1"):
        Config.from_options(prefetch=-1)


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "rota.toml"
    path.write_text('[rota]\nconcurrency = 3\nqueues = ["x"]\n')
    config = Config.from_toml(path)
    assert (config.concurrency, config.queues) == (3, ["x"])
    path.write_text("concurrency = [")
    with pytest.raises(ConfigError, match="cannot read config file"):
        Config.from_toml(path)
    path.write_text("concurency = 3")
    with pytest.raises(ConfigError, match="did you mean"):
        Config.from_toml(path)


# -- bounds: every number is finite and in a documented range -------------------------------


def numbers(struct: type[msgspec.Struct], *kinds: type) -> list[str]:
    """The fields of ``struct`` whose type is one of ``kinds`` (or one of them or None, or
    a word such as ``"auto"``: ``prefetch``)."""
    found = []
    for field in msgspec.structs.fields(struct):
        args = {a for a in typing.get_args(field.type) if typing.get_origin(a) is not Literal}
        if field.type in kinds or (args & set(kinds) and args <= {*kinds, type(None)}):
            found.append(field.name)
    return found


NUMERIC_FIELDS = numbers(Config, int, float)
FLOAT_FIELDS = numbers(Config, float)
QUEUE_NUMERIC_FIELDS = numbers(QueueConfig, int, float)
QUEUE_FLOAT_FIELDS = numbers(QueueConfig, float)


def test_every_numeric_option_has_bounds() -> None:
    assert set(NUMERIC_FIELDS) | set(QUEUE_NUMERIC_FIELDS) <= set(BOUNDS)
    assert "lease_ttl_s" in FLOAT_FIELDS and "concurrency" not in FLOAT_FIELDS
    for name, bound in BOUNDS.items():
        low, high = bound.low, bound.high
        assert math.isfinite(low) and math.isfinite(high) and low <= high, name
        # the bounds themselves are accepted, where the option is a Config option
        if name in NUMERIC_FIELDS:
            for value in (low, high):
                assert getattr(Config.from_options(**{name: value}), name) == value


@pytest.mark.parametrize("name", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e300, -1.0, 1e-300 * -1])
def test_every_float_option_refuses_nan_inf_and_out_of_range(name: str, value: float) -> None:
    if value == 0.0 and BOUNDS[name].low == 0.0:
        return  # -0.0 is 0: allowed where 0 is
    with pytest.raises(ConfigError, match=f"'{name}'"):
        Config.from_options(**{name: value})
    with pytest.raises(ConfigError, match=name):
        Config(**{name: value})  # built directly, the same checks


@pytest.mark.parametrize("name", [n for n in NUMERIC_FIELDS if n not in FLOAT_FIELDS])
@pytest.mark.parametrize("value", [2**63, 2**64, 10**30, -(2**63) - 1, -1])
def test_every_int_option_refuses_out_of_range(name: str, value: int) -> None:
    with pytest.raises(ConfigError, match=f"'{name}'"):
        Config.from_options(**{name: value})


@pytest.mark.parametrize("name", QUEUE_NUMERIC_FIELDS)
@pytest.mark.parametrize("value", [math.nan, math.inf, 1e300, 2**64, -1])
def test_every_queue_config_number_is_checked_too(name: str, value: float) -> None:
    if name not in QUEUE_FLOAT_FIELDS and isinstance(value, float):
        return  # a float for an int option: a type error, tested elsewhere
    with pytest.raises(ConfigError, match=rf"images.*{name}"):
        Config.from_options(queue_config={"images": {name: value}})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lease_ttl_s": 1e-9}, "'lease_ttl_s' must be between 0.1 and 604800"),
        ({"lease_ttl_s": math.inf}, "'lease_ttl_s' must be between 0.1 and 604800"),
        ({"shutdown_grace_s": math.nan}, "'shutdown_grace_s' must be .*got nan"),
        ({"retain_completed_s": -1.0}, "'retain_completed_s'"),
        ({"retain_failed_s": -5}, "'retain_failed_s'"),
        ({"poll_interval_s": 0}, "'poll_interval_s'"),
        ({"concurrency": 2**63}, "'concurrency' must be between 1 and 10000"),
    ],
)
def test_out_of_range_messages_state_the_bounds(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.from_options(**options)


def test_toml_inf_and_environment_nan_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "rota.toml"
    path.write_text("lease_ttl_s = inf\n")
    with pytest.raises(ConfigError, match="lease_ttl_s"):
        Config.from_toml(path)
    path.write_text("heartbeat_interval_s = nan\n")
    with pytest.raises(ConfigError, match="heartbeat_interval_s"):
        Config.from_toml(path)
    with pytest.raises(ConfigError, match=r"RETAIN_EVENTS_S|retain_events_s"):
        Config.from_env({"ROTA_RETAIN_EVENTS_S": "1e400"})


def test_app_refuses_out_of_range_options_naming_them() -> None:
    for options in ({"lease_ttl_s": math.inf}, {"shutdown_grace_s": math.nan}):
        with pytest.raises(ConfigError, match=next(iter(options))):
            App(":memory:", **options)  # type: ignore[arg-type]

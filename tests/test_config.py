"""Configuration: validated once, unknown options named with a suggestion."""

from __future__ import annotations

from pathlib import Path

import pytest

from rota.config import Config, QueueConfig
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
    assert (images.concurrency, images.prefetch, images.retain_completed) == (2, 0, 100)
    assert (mail.concurrency, mail.retain_completed) == (8, 5)
    assert (other.concurrency, other.prefetch) == (8, 0)


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
    with pytest.raises(ConfigError, match="did you mean 'concurrency'"):
        Config.from_env({"ROTA_CONCURENCY": "2"})
    with pytest.raises(ConfigError, match="ROTA_LEASE_TTL_S"):
        Config.from_env({"ROTA_LEASE_TTL_S": "{"})


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

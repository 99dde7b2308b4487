"""Configuration: frozen Structs built from keyword arguments, validated once.

::

    config = Config.from_options(database="jobs.db", concurrency=20, lease_ttl_s=60)
    config = Config.from_options(concurency=20)
    # ConfigError: unknown option 'concurency' for rota.App, did you mean 'concurrency'?

Every option, its unit and its default is listed in ``Config``'s and ``QueueConfig``'s
docstrings (and in README.md). The CLI reads the same options from ``ROTA_*`` environment
variables and from a TOML file (``Config.from_env``, ``Config.from_toml``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from rota.errors import ConfigError

__all__ = ["Config", "QueueConfig"]


class QueueConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-queue settings; every field defaults to the app-wide value (``None``).

    * ``concurrency``: jobs of this queue that run at once in one runtime.
    * ``prefetch``: jobs claimed ahead of free slots.
    * ``retain_completed_s`` / ``retain_completed`` / ``retain_failed_s`` /
      ``retain_failed``: retention of finished jobs (see ``Config``).
    * ``mode`` (None or ``"process"``): ``"process"`` runs every job of the queue that
      was not registered with a mode of its own in the queue's child processes.
    * ``processes`` / ``max_jobs_per_child``: the queue's process pool (see ``Config``).
    """

    concurrency: int | None = None
    prefetch: int | None = None
    mode: Literal["process"] | None = None
    processes: int | None = None
    max_jobs_per_child: int | None = None
    retain_completed_s: float | None = None
    retain_completed: int | None = None
    retain_failed_s: float | None = None
    retain_failed: int | None = None


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every option of an app and its runtime. Units are in the names; defaults below.

    * ``database`` (path or ``":memory:"``, default ``"rota.db"``): the SQLite file.
    * ``synchronous`` (``"FULL"``): ``"NORMAL"`` skips the fsync per commit; a power cut
      may then lose the last acknowledged jobs (a crash of the process does not).
    * ``queues`` (list of names, default: every queue with a registered job): the queues a
      runtime works on.
    * ``concurrency`` (10): jobs that run at once, per queue, per runtime.
    * ``prefetch`` (0): jobs claimed ahead of free slots, so a worker that finishes a job
      finds the next one in memory. At shutdown they are handed back uncounted; but if the
      worker process *dies*, each counts a stall like the jobs that were running. For
      throughput set it near ``concurrency``: the Store claims the next batch while the
      workers run this one (the benchmark drain: ~50,000 jobs/s with 100, ~33,000 with 0).
    * ``queue_config`` ({}): per-queue overrides, ``{"images": QueueConfig(concurrency=2)}``.
    * ``lease_ttl_s`` (30.0): how long a lease lasts without renewal; renewed every
      ttl/3. A worker that dies is noticed after at most this long (at once on the same
      host, at the next start).
    * ``poll_interval_s`` (0.002): how often the Store's thread checks (without I/O)
      whether another connection committed: the wait, at most, before a job enqueued or a
      cancel asked for by another process is noticed (a noticed cancel is checked with
      one read, at most every 20 ms per queue). An idle runtime costs about 2% of a core
      at 0.002 (1% at 0.005).
    * ``scheduler_interval_s`` (0.25): how often expired leases are rescued and due
      delayed jobs promoted. A pool does not wait for it: it claims a delayed job (or a
      retry) at its time itself; the sweep is the fallback (a clock that jumps).
    * ``heartbeat_interval_s`` (5.0): how often a runtime records that it is alive.
    * ``shutdown_grace_s`` (10.0): on shutdown, how long running jobs may finish before
      they are cancelled and released (to run again).
    * ``retain_completed_s`` (86400.0) / ``retain_completed`` (10000): completed jobs are
      deleted when older than this, or beyond this many per queue (None: no limit).
    * ``retain_failed_s`` (604800.0) / ``retain_failed`` (None): the same for failed and
      cancelled jobs (the dead-letter set).
    * ``retain_events_s`` (3600.0): events older than this are deleted.
    * ``retention_interval_s`` (60.0): how often retention runs.

    Process mode (jobs with ``mode="process"``, or of a queue configured so):

    * ``processes`` (None: the queue's ``concurrency``, at most the number of CPUs): child
      processes per queue that runs process-mode jobs. Each runs one job at a time.
    * ``max_jobs_per_child`` (None: no limit): a child is replaced after this many jobs
      (bounds what a leaky handler can hold on to).
    * ``kill_grace_s`` (5.0): a child whose job timed out or was cancelled gets SIGTERM,
      then this long to exit, then SIGKILL.
    * ``child_start_timeout_s`` (60.0): how long a new child may take to import the app.
    * ``child_max_restarts`` (10) in ``child_restart_period_s`` (60.0): children that die
      unexpectedly are restarted; more crashes than this within the period and the
      queue's pool gives up (a crash loop stops the runtime with an error).
    """

    database: str = "rota.db"
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    queues: list[str] | None = None
    concurrency: int = 10
    prefetch: int = 0
    queue_config: dict[str, QueueConfig] = {}
    lease_ttl_s: float = 30.0
    poll_interval_s: float = 0.002
    scheduler_interval_s: float = 0.25
    heartbeat_interval_s: float = 5.0
    shutdown_grace_s: float = 10.0
    retain_completed_s: float | None = 86_400.0
    retain_completed: int | None = 10_000
    retain_failed_s: float | None = 604_800.0
    retain_failed: int | None = None
    retain_events_s: float = 3_600.0
    retention_interval_s: float = 60.0
    processes: int | None = None
    max_jobs_per_child: int | None = None
    kill_grace_s: float = 5.0
    child_start_timeout_s: float = 60.0
    child_max_restarts: int = 10
    child_restart_period_s: float = 60.0

    def __post_init__(self) -> None:
        _positive("concurrency", self.concurrency)
        _positive("lease_ttl_s", self.lease_ttl_s)
        _positive("poll_interval_s", self.poll_interval_s)
        _positive("scheduler_interval_s", self.scheduler_interval_s)
        _positive("heartbeat_interval_s", self.heartbeat_interval_s)
        _positive("retention_interval_s", self.retention_interval_s)
        _positive("retain_events_s", self.retain_events_s)
        _positive("child_start_timeout_s", self.child_start_timeout_s)
        _positive("child_restart_period_s", self.child_restart_period_s)
        for name in ("processes", "max_jobs_per_child"):
            _positive_or_none(name, getattr(self, name))
        if self.kill_grace_s < 0:
            raise ConfigError(f"option 'kill_grace_s' must be >= 0, got {self.kill_grace_s}")
        if self.child_max_restarts < 0:
            raise ConfigError(
                f"option 'child_max_restarts' must be >= 0, got {self.child_max_restarts}"
            )
        for name in ("prefetch", "retain_completed", "retain_failed"):  # counts: >= 0
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"option {name!r} must be >= 0, got {value!r}")
        if self.shutdown_grace_s < 0:
            raise ConfigError(
                f"option 'shutdown_grace_s' must be >= 0, got {self.shutdown_grace_s}"
            )
        for queue, qc in self.queue_config.items():
            if qc.concurrency is not None and qc.concurrency < 1:
                raise ConfigError(f"queue {queue!r}: concurrency must be >= 1")
            for name in ("processes", "max_jobs_per_child"):
                _positive_or_none(f"queue_config[{queue!r}].{name}", getattr(qc, name))

    # -- building ---------------------------------------------------------------------

    @classmethod
    def from_options(cls, where: str = "rota.App", /, **options: Any) -> Config:
        """Validate keyword options once: unknown names and wrong types raise
        ``ConfigError`` naming the option."""
        known = cls.__struct_fields__
        for name in options:
            if name not in known:
                raise ConfigError.unknown_option(name, known, where)
        if isinstance(options.get("queue_config"), Mapping):
            options["queue_config"] = {
                q: _queue_config(q, qc) for q, qc in options["queue_config"].items()
            }
        try:
            return msgspec.convert(options, cls, from_attributes=True, str_keys=True)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"invalid option for {where}: {exc}") from None

    def replace(self, *, where: str = "Config", **options: Any) -> Config:
        """A copy with some options changed (validated like ``from_options``)."""
        merged = {name: getattr(self, name) for name in self.__struct_fields__}
        merged.update(options)
        for name in options:
            if name not in self.__struct_fields__:
                raise ConfigError.unknown_option(name, self.__struct_fields__, where)
        return Config.from_options(where, **merged)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **defaults: Any) -> Config:
        """Options from ``ROTA_<OPTION>`` variables (e.g. ``ROTA_CONCURRENCY=20``) over
        ``defaults``; an unknown ``ROTA_*`` variable is an error, not silently ignored."""
        environ = os.environ if environ is None else environ
        options = dict(defaults)
        fields = {name.upper(): name for name in cls.__struct_fields__}
        for key, raw in environ.items():
            if not key.startswith("ROTA_"):
                continue
            name = key.removeprefix("ROTA_")
            if name not in fields:
                raise ConfigError.unknown_option(name.lower(), cls.__struct_fields__, "ROTA_*")
            options[fields[name]] = _from_text(fields[name], raw)
        return cls.from_options("the environment", **options)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], **overrides: Any) -> Config:
        """Options from a TOML file (top-level keys, or a ``[rota]`` table)."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from None
        table = data.get("rota", data)
        return cls.from_options(str(path), **{**table, **overrides})

    # -- derived ----------------------------------------------------------------------

    def for_queue(self, queue: str) -> ResolvedQueue:
        """The effective settings of one queue."""
        qc = self.queue_config.get(queue, QueueConfig())
        concurrency = qc.concurrency if qc.concurrency is not None else self.concurrency
        processes = _pick(qc.processes, self.processes)
        return ResolvedQueue(
            name=queue,
            concurrency=concurrency,
            prefetch=qc.prefetch if qc.prefetch is not None else self.prefetch,
            mode=qc.mode,
            processes=processes or max(1, min(concurrency, os.cpu_count() or 1)),
            max_jobs_per_child=_pick(qc.max_jobs_per_child, self.max_jobs_per_child),
            retain_completed_s=_pick(qc.retain_completed_s, self.retain_completed_s),
            retain_completed=_pick(qc.retain_completed, self.retain_completed),
            retain_failed_s=_pick(qc.retain_failed_s, self.retain_failed_s),
            retain_failed=_pick(qc.retain_failed, self.retain_failed),
        )


class ResolvedQueue(msgspec.Struct, frozen=True, kw_only=True):
    """A queue's effective settings (its ``QueueConfig`` over the app's defaults)."""

    name: str
    concurrency: int
    prefetch: int
    mode: Literal["process"] | None
    processes: int
    max_jobs_per_child: int | None
    retain_completed_s: float | None
    retain_completed: int | None
    retain_failed_s: float | None
    retain_failed: int | None


def _pick(specific: Any, default: Any) -> Any:
    return default if specific is None else specific


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"option {name!r} must be > 0, got {value!r}")


def _positive_or_none(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"option {name!r} must be >= 1 or None, got {value!r}")


def _queue_config(queue: str, value: Any) -> QueueConfig:
    if isinstance(value, QueueConfig):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"queue_config[{queue!r}] must be a QueueConfig or a mapping")
    for name in value:
        if name not in QueueConfig.__struct_fields__:
            raise ConfigError.unknown_option(
                name, QueueConfig.__struct_fields__, f"queue_config[{queue!r}]"
            )
    try:
        return msgspec.convert(dict(value), QueueConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid queue_config[{queue!r}]: {exc}") from None


def _from_text(name: str, raw: str) -> Any:
    """An environment variable's text as the option's type (lists comma-separated)."""
    if name == "queues":
        return [q.strip() for q in raw.split(",") if q.strip()]
    if name in ("database", "synchronous"):
        return raw
    if raw.lower() in ("none", ""):
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ConfigError(f"ROTA_{name.upper()}={raw!r} is not a valid value") from None

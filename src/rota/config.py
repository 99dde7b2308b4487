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

import difflib
import logging
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple

import msgspec

from rota.errors import ConfigError, ConfigTypeError
from rota.storage.url import DatabaseUrl

__all__ = [
    "BACKENDS",
    "BOUNDS",
    "LIVE_HEARTBEATS",
    "Backend",
    "Bound",
    "Config",
    "Prefetch",
    "QueueConfig",
]

log = logging.getLogger("rota.config")

#: The event loops rota runs on (AnyIO's backend names).
Backend = Literal["trio", "asyncio"]
BACKENDS: Final[tuple[Backend, ...]] = ("trio", "asyncio")

#: ``prefetch``: a number of jobs (fixed), or ``"auto"`` (adapted to the queue's depth).
Prefetch = int | Literal["auto"]


class Bound(NamedTuple):
    """The range an option must lie in, both ends included."""

    low: float
    high: float
    unit: str = ""


_DAY: Final = 86_400.0
#: Intervals: at least a millisecond, at most a day.
_INTERVAL: Final = Bound(0.001, _DAY, "s")
#: Retention: none (0) to ten years.
_RETAIN: Final = Bound(0.0, 3650 * _DAY, "s")
#: Counts: comfortably inside a signed 64-bit integer.
_COUNT: Final = 1_000_000_000

#: A runtime whose last heartbeat is older than this many heartbeat intervals
#: (``heartbeat_interval_s``) is not live: ``rota health``, the warning of an enqueue to a
#: queue no live worker serves.
LIVE_HEARTBEATS: Final = 3

#: Every number of ``Config`` and ``QueueConfig`` (same name, same meaning) must lie in its
#: range; floats must also be finite (never NaN or infinite). Stated in the docstring of
#: ``Config`` and in README.md.
BOUNDS: Final[dict[str, Bound]] = {
    "concurrency": Bound(1, 10_000),
    "prefetch": Bound(0, 10_000),
    "lease_ttl_s": Bound(0.1, 7 * _DAY, "s"),
    "poll_interval_s": _INTERVAL,
    "scheduler_interval_s": _INTERVAL,
    "heartbeat_interval_s": _INTERVAL,
    "shutdown_grace_s": Bound(0.0, _DAY, "s"),
    "retain_completed_s": _RETAIN,
    "retain_completed": Bound(0, _COUNT),
    "retain_failed_s": _RETAIN,
    "retain_failed": Bound(0, _COUNT),
    "retain_events_s": Bound(0.001, _RETAIN.high, "s"),
    "retention_interval_s": _INTERVAL,
    "processes": Bound(1, 1024),
    "max_jobs_per_child": Bound(1, _COUNT),
    "kill_grace_s": Bound(0.0, _DAY, "s"),
    "child_start_timeout_s": Bound(1.0, _DAY, "s"),
    "child_max_restarts": Bound(0, _COUNT),
    "child_restart_period_s": _INTERVAL,
}


class QueueConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-queue settings; every field defaults to the app-wide value (``None``), and has
    its range (see ``Config``).

    * ``concurrency``: jobs of this queue that run at once in one runtime.
    * ``prefetch``: jobs claimed ahead of free slots, or ``"auto"``.
    * ``retain_completed_s`` / ``retain_completed`` / ``retain_failed_s`` /
      ``retain_failed``: retention of finished jobs (see ``Config``).
    * ``mode`` (None or ``"process"``): ``"process"`` runs every job of the queue that
      was not registered with a mode of its own in the queue's child processes.
    * ``processes`` / ``max_jobs_per_child``: the queue's process pool (see ``Config``).
    """

    concurrency: int | None = None
    prefetch: Prefetch | None = None
    mode: Literal["process"] | None = None
    processes: int | None = None
    max_jobs_per_child: int | None = None
    retain_completed_s: float | None = None
    retain_completed: int | None = None
    retain_failed_s: float | None = None
    retain_failed: int | None = None

    def __post_init__(self) -> None:
        _check_numbers(self, "")
        _check_prefetch(self.prefetch, "")


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every option of an app and its runtime. Units are in the names; defaults and ranges
    below. Every number must lie in its range, both ends included (``BOUNDS``), and a float
    must be finite: NaN, an infinity or a value out of range is a ``ConfigError`` naming the
    option, so a Config that ``App()`` accepts never stops ``app.run()``.

    * ``database`` (default ``"rota.db"``): the SQLite file, as a path or a URL
      (``sqlite:///relative.db``, ``sqlite:////absolute.db``), or ``":memory:"``: see
      ``rota.storage.DatabaseUrl.parse`` for the forms; a bad one is a ``ConfigError`` here.
    * ``backend`` (None, ``"trio"`` or ``"asyncio"``): the event loop async handlers run
      on. ``rota worker`` runs this loop (None: trio). An embedded ``app.run()`` runs on
      its caller's loop, which it cannot switch: None uses whichever loop that is, and a
      backend set to the other one is a ``ConfigError`` at ``app.run()`` naming both.
    * ``synchronous`` (``"FULL"``): ``"NORMAL"`` skips the fsync per commit; a power cut
      may then lose the last acknowledged jobs (a crash of the process does not).
    * ``queues`` (list of names, default: every queue with a registered job): the queues a
      runtime works on.
    * ``concurrency`` (10; 1 to 10,000): jobs that run at once, per queue, per runtime.
    * ``prefetch`` (``"auto"``, or a number of jobs from 0 to 10,000): jobs claimed ahead
      of free slots, so a worker that finishes a job finds the next one in memory and the
      Store claims the next batch while the workers run this one. ``"auto"`` claims ahead
      only while the queue is deep (claims come back full): doubling from
      ``concurrency`` up to 256 jobs and to what the runtime starts within 50 ms at the
      rate its jobs end (a tenth of ``lease_ttl_s`` if shorter); none as soon as a claim
      comes up short, so runtimes sharing a shallow queue share it, and none for jobs
      too slow to start within that time. A number is fixed (0: claim only free slots).
      At shutdown jobs claimed ahead are handed back uncounted; but if the worker process
      *dies*, each counts a stall like the jobs that were running. ``concurrency`` stays
      the number of jobs that run at once.
    * ``queue_config`` ({}): per-queue overrides, ``{"images": QueueConfig(concurrency=2)}``.
    * ``lease_ttl_s`` (30.0; 0.1 s to 7 days, 604800 s): how long a lease lasts without
      renewal; renewed every ttl/3. A worker that dies is noticed after at most this long
      (at once on the same host, at the next start).
    * ``poll_interval_s`` (0.05; like every interval, 0.001 s to a day): how often the
      runtime's change feed checks (without I/O) whether another connection committed,
      for the commits that ring no doorbell: rota on this host rings the runtimes serving
      a queue when it commits work for it (an enqueue, a retry, a resume, a cancel), so
      those are noticed at once; the poll finds the rest (a hand edit, an older rota, a
      producer in another network namespace, such as another container) within this
      long. A noticed cancel is checked with one read, at most every 20 ms per queue.
      An idle runtime costs ~1% of a core at 0.05 (measured 0.7-1.2%; ~3% at 0.002).
    * ``scheduler_interval_s`` (0.25; 0.001 s to a day): how often expired leases are
      rescued and due delayed jobs promoted. A pool does not wait for it: it claims a
      delayed job (or a retry) at its time itself; the sweep is the fallback (a clock
      that jumps).
    * ``heartbeat_interval_s`` (5.0; 0.001 s to a day): how often a runtime records that
      it is alive.
    * ``shutdown_grace_s`` (10.0; 0 to a day): on shutdown, how long running jobs may finish
      before they are cancelled and released (to run again).
    * ``retain_completed_s`` (86400.0; 0 to ten years, 315360000 s) / ``retain_completed``
      (10000; 0 to 10**9): completed jobs are deleted when older than this, or beyond this
      many per queue (None: no limit).
    * ``retain_failed_s`` (604800.0; 0 to ten years) / ``retain_failed`` (None; 0 to
      10**9): the same for failed and cancelled jobs (the dead-letter set).
    * ``retain_events_s`` (3600.0; 0.001 s to ten years): events older than this are
      deleted.
    * ``retention_interval_s`` (60.0; 0.001 s to a day): how often retention runs.

    Process mode (jobs with ``mode="process"``, or of a queue configured so):

    * ``processes`` (None: the queue's ``concurrency``, at most the number of CPUs; 1 to
      1024): child processes per queue that runs process-mode jobs. Each runs one job at
      a time.
    * ``max_jobs_per_child`` (None: no limit; 1 to 10**9): a child is replaced after this
      many jobs (bounds what a leaky handler can hold on to).
    * ``kill_grace_s`` (5.0; 0 to a day): a child whose job timed out or was cancelled gets
      SIGTERM, then this long to exit, then SIGKILL.
    * ``child_start_timeout_s`` (60.0; 1 s to a day): how long a new child may take to
      import the app.
    * ``child_max_restarts`` (10; 0 to 10**9) in ``child_restart_period_s`` (60.0; 0.001 s
      to a day): children that die unexpectedly are restarted; more crashes than this
      within the period and the queue's pool gives up (a crash loop stops the runtime
      with an error).
    """

    database: str = "rota.db"
    backend: Backend | None = None
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    queues: list[str] | None = None
    concurrency: int = 10
    prefetch: Prefetch = "auto"
    queue_config: dict[str, QueueConfig] = {}
    lease_ttl_s: float = 30.0
    poll_interval_s: float = 0.05
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
        _check_numbers(self, "")
        url = DatabaseUrl.parse(self.database)  # ConfigError now, not when a runtime opens it
        if not url.memory and os.path.isdir(url.path):
            raise ConfigError(
                f"database {url.path!r} is a directory, not a database file: name a file in "
                f"it (e.g. {os.path.join(url.path, 'jobs.db')!r})"
            )
        _check_prefetch(self.prefetch, "")
        if self.backend is not None and self.backend not in BACKENDS:  # Config(...) itself
            raise ConfigError(_bad_backend(self.backend))
        if not isinstance(self.queue_config, Mapping):  # Config(...) itself: a dict of them
            raise ConfigTypeError(
                f"option 'queue_config' must be a mapping of queue names to QueueConfig, "
                f"got {self.queue_config!r}"
            )
        if not all(isinstance(qc, QueueConfig) for qc in self.queue_config.values()):
            converted = {q: _queue_config(q, qc) for q, qc in self.queue_config.items()}
            msgspec.structs.force_setattr(self, "queue_config", converted)
        for queue, qc in self.queue_config.items():
            _check_numbers(qc, f"queue_config[{queue!r}].")

    # -- building ---------------------------------------------------------------------

    @classmethod
    def from_options(cls, where: str = "rota.App", /, **options: Any) -> Config:
        """Validate keyword options once: unknown names and wrong types raise
        ``ConfigError`` naming the option."""
        known = cls.__struct_fields__
        for name in options:
            if name not in known:
                raise ConfigError.unknown_option(name, known, where)
        backend = options.get("backend")
        if backend is not None and backend not in BACKENDS:
            raise ConfigError(f"invalid option for {where}: {_bad_backend(backend)}")
        _check_prefetch(options.get("prefetch"), "")
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
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        warn: Callable[[str], object] | None = None,
        **defaults: Any,
    ) -> Config:
        """Options from ``ROTA_<OPTION>`` variables (e.g. ``ROTA_CONCURRENCY=20``) over
        ``defaults``. A bad value of an option is a ``ConfigError``; a ``ROTA_*`` variable
        that names no option (a typo, or a variable of the user's own such as
        ``ROTA_ENV``) is ignored and reported, with the closest option's variable, through
        ``warn`` (default: a warning on the ``rota.config`` logger)."""
        environ = os.environ if environ is None else environ
        report = log.warning if warn is None else warn
        options = dict(defaults)
        fields = {name.upper(): name for name in cls.__struct_fields__}
        for key, raw in sorted(environ.items()):
            if not key.startswith("ROTA_"):
                continue
            name = key.removeprefix("ROTA_")
            if name not in fields:
                close = difflib.get_close_matches(name, sorted(fields), n=1)
                hint = f", did you mean ROTA_{close[0]}?" if close else ""
                report(f"{key} is not a rota option (ignored){hint}")
                continue
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
    prefetch: Prefetch
    mode: Literal["process"] | None
    processes: int
    max_jobs_per_child: int | None
    retain_completed_s: float | None
    retain_completed: int | None
    retain_failed_s: float | None
    retain_failed: int | None


def _pick(specific: Any, default: Any) -> Any:
    return default if specific is None else specific


def _check_numbers(struct: msgspec.Struct, prefix: str) -> None:
    """Every number of a Config or QueueConfig in its ``BOUNDS`` (floats finite too)."""
    for name in struct.__struct_fields__:
        value = getattr(struct, name)
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        low, high, unit = BOUNDS[name]
        if not (math.isfinite(value) and low <= value <= high):
            between = f"between {_number(low)} and {_number(high)}{' ' if unit else ''}{unit}"
            raise ConfigError(f"option '{prefix}{name}' must be {between}, got {value!r}")


def _check_prefetch(value: object, prefix: str) -> None:
    """A word for ``prefetch`` other than ``"auto"`` (numbers: ``_check_numbers``)."""
    if isinstance(value, str) and value != "auto":
        high = _number(BOUNDS["prefetch"].high)
        raise ConfigError(
            f"option '{prefix}prefetch' must be 'auto' or a number of jobs (0 to {high}), "
            f"got {value!r}"
        )


def _number(value: float) -> str:
    """A bound as people write it: ``604800``, ``0.001``."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


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
    _check_prefetch(value.get("prefetch"), f"queue_config[{queue!r}].")
    try:
        return msgspec.convert(dict(value), QueueConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid queue_config[{queue!r}]: {exc}") from None


def _bad_backend(value: object) -> str:
    return f"option 'backend' must be 'trio' or 'asyncio', got {value!r}"


def _from_text(name: str, raw: str) -> Any:
    """An environment variable's text as the option's type (lists comma-separated)."""
    if name == "queues":
        return [q.strip() for q in raw.split(",") if q.strip()]
    if name in ("database", "synchronous", "backend"):
        return raw
    if name == "prefetch" and raw.strip() == "auto":
        return "auto"
    if raw.lower() in ("none", ""):
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ConfigError(f"ROTA_{name.upper()}={raw!r} is not a valid value") from None

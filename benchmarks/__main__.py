"""The benchmark suite: rota against the raw-SQLite limit and huey, in one run, on one disk.

::

    python -m benchmarks                     # everything, 3 runs, FULL and NORMAL (~10 min)
    python -m benchmarks --quick             # small sizes, 1 run: a smoke test (< 1 min)
    python -m benchmarks --only drain,latency --sync FULL --runs 5
    python -m benchmarks --json /tmp/bench.json
    python -m benchmarks --only modes --sync FULL   # the execution modes alone

Groups (``--only``): enqueue, enqueue_many, drain, drain_defaults (rota only: its default
options against the tuned ones, in ``app.run()`` and in a ``rota worker`` process),
latency, claims, memory, modes (rota only, durable runs only: async, thread and process
handlers). Every figure
is the median of ``--runs`` runs with min-max; within a run the systems take turns
(raw, rota, huey) so that a noisy moment of the shared machine hits them alike. The table
at the end (Markdown) compares rota with the raw loop and with huey measured in the same
run, and says whether each target of DESIGN.md section 9 is met; the JSON has every run's
value. See benchmarks/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import math
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import claims, latency, memory, modes, peer_huey, raw, rota_bench
from ._util import ROOT, SCRATCH, SYNC_MODES, Sample, scratch_dir
from .backlog import Backlogs

GROUPS = (
    "enqueue",
    "enqueue_many",
    "drain",
    "drain_defaults",
    "latency",
    "claims",
    "memory",
    "modes",
)
SYSTEMS = ("raw", "rota", "huey")


# -- sizes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    enqueue_one: int  # jobs, one call per job, 1 producer
    enqueue_ten: int  # jobs, one call per job, 10 producers
    enqueue_many: int  # jobs, 1,000 per call
    drains: tuple[int, ...]  # jobs pre-enqueued then drained
    latency: int  # samples per run (rota)
    latency_huey: int  # samples per run (huey polls: ~50 ms each)
    claims_small: int  # backlog
    backlog: int  # the large backlog (claims and memory)
    claim_jobs: int  # jobs claimed+completed per claims measurement
    memory_settle_s: float  # a worker runs this long before its RSS is read
    modes_noop: tuple[int, int, int]  # no-op jobs per mode: async, thread, process
    modes_cpu: int  # CPU-bound jobs per mode


FULL_SIZES = Sizes(
    5_000,
    10_000,
    50_000,
    (20_000, 100_000),
    200,
    100,
    10_000,
    1_000_000,
    5_000,
    2.0,
    (50_000, 10_000, 10_000),
    100,
)
QUICK_SIZES = Sizes(
    500,
    1_000,
    5_000,
    (2_000, 10_000),
    50,
    20,
    10_000,
    100_000,
    2_000,
    0.5,
    (5_000, 1_000, 1_000),
    20,
)


def short(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


# -- figures (the rows of the table) -------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    key: str
    title: str
    unit: str  # "jobs/s", "ms", "MB", "x"
    raw: str | None = None  # the raw sample compared with (a figure key), if any
    huey: str | None = None  # the huey sample compared with, if any
    target: str = ""
    met: Callable[[float, float | None], bool] | None = None  # (rota, raw) -> met?
    lower_is_better: bool = False


def _at_least(x: float) -> Callable[[float, float | None], bool]:
    return lambda rota, _raw: rota >= x


def _at_most(x: float) -> Callable[[float, float | None], bool]:
    return lambda rota, _raw: rota <= x


def _drain_met(rota: float, raw: float | None) -> bool:
    return rota >= 50_000 and raw is not None and rota / raw >= 0.25


def figures(sizes: Sizes) -> list[Figure]:
    one, ten, many = short(sizes.enqueue_one), short(sizes.enqueue_ten), short(sizes.enqueue_many)
    rows = [
        Figure(
            "enqueue1_app",
            f"enqueue, 1 producer: await job.enqueue in app.run() ({one})",
            "jobs/s",
            "enqueue1",
            "enqueue1",
            ">= 30,000/s",
            _at_least(30_000),
        ),
        Figure(
            "enqueue1_sync",
            f"enqueue, 1 producer: job.enqueue_sync, no runtime ({one})",
            "jobs/s",
            "enqueue1",
            "enqueue1",
            ">= 30,000/s",
            _at_least(30_000),
        ),
        Figure(
            "enqueue10_app",
            f"enqueue, 10 producers: 10 tasks in app.run() ({ten})",
            "jobs/s",
            "enqueue10",
            "enqueue10",
            ">= 80,000/s",
            _at_least(80_000),
        ),
        Figure(
            "enqueue10_sync",
            f"enqueue, 10 producers: 10 threads enqueue_sync ({ten})",
            "jobs/s",
            "enqueue10",
            "enqueue10",
            ">= 80,000/s",
            _at_least(80_000),
        ),
        Figure(
            "enqueue_many",
            f"enqueue_many, 1,000 per call, no runtime ({many})",
            "jobs/s",
            "enqueue_many",
            None,
            ">= 250,000/s",
            _at_least(250_000),
        ),
        Figure(
            "enqueue_many_app",
            f"enqueue_many, 1,000 per call, in app.run() ({many})",
            "jobs/s",
            "enqueue_many",
            None,
            ">= 250,000/s",
            _at_least(250_000),
        ),
    ]
    for n in sizes.drains:
        key = f"drain_{short(n)}"
        rows.append(
            Figure(
                key,
                f"drain {n:,} no-op jobs, steady (concurrency 100, prefetch 100)",
                "jobs/s",
                key,
                key,
                ">= 50,000/s and >= 25% raw",
                _drain_met,
            )
        )
    n = sizes.drains[0]
    key = f"drain_{short(n)}"
    rows.append(
        Figure(
            f"{key}_engine",
            f"drain {n:,}: SqliteEngine alone, no actors",
            "jobs/s",
            key,
            None,
            "(where the time goes)",
        )
    )
    rows += defaults_figures(sizes)
    for where, title, p50 in (("same", "same process", 0.5), ("other", "other process", 3.0)):
        for q in ("p50", "p95", "p99"):
            key = f"latency_{where}_{q}"
            target, met = {
                "p50": (f"<= {p50} ms", _at_most(p50)),
                "p99": ("<= 5 ms", _at_most(5.0)),
            }.get(q, ("", None))
            rows.append(
                Figure(
                    key,
                    f"latency enqueue -> start, {title}, {q}",
                    "ms",
                    None,
                    key,
                    target,
                    met,
                    lower_is_better=True,
                )
            )
    small, large = short(sizes.claims_small), short(sizes.backlog)
    rows += [
        Figure(
            f"claims_{small}",
            f"claim+complete, {small} waiting",
            "jobs/s",
            f"claims_{small}",
            f"claims_{small}",
        ),
        Figure(
            f"claims_{large}",
            f"claim+complete, {large} waiting",
            "jobs/s",
            f"claims_{large}",
            f"claims_{large}",
        ),
        Figure(
            "claims_ratio",
            f"claims {large} / {small} waiting (same run)",
            "x",
            "claims_ratio",
            "claims_ratio",
            ">= 0.80",
            _at_least(0.8),
        ),
        Figure(
            f"rss_{large}",
            f"RSS of a worker process, {large} waiting",
            "MB",
            f"rss_{large}",
            f"rss_{large}",
            "<= 80 MB",
            _at_most(80.0),
            lower_is_better=True,
        ),
    ]
    return rows + mode_figures(sizes)


def defaults_figures(sizes: Sizes) -> list[Figure]:
    """rota's default options against the tuned ones (concurrency 100, prefetch 100), the
    same jobs drained one after the other in each run; the ratio is taken per run."""
    n = sizes.drains[0]
    rows = []
    for where, how in (("app", "app.run()"), ("worker", "a rota worker process")):
        key = f"drain_{short(n)}_{where}"
        rows += [
            Figure(f"{key}_defaults", f"drain {n:,}, {how}, rota's defaults", "jobs/s"),
            Figure(
                f"{key}_tuned",
                f"drain {n:,}, {how}, concurrency 100, prefetch 100 (same run)",
                "jobs/s",
            ),
            Figure(
                f"{key}_ratio",
                f"drain {n:,}, {how}: defaults / tuned (same run)",
                "x",
                target=">= 0.80",
                met=_at_least(0.8),
            ),
        ]
    return rows


def mode_figures(sizes: Sizes) -> list[Figure]:
    """The execution modes (rota only): jobs/s per mode, and ratios taken per run."""
    noop = dict(zip(modes.MODES, sizes.modes_noop, strict=True))
    rows = [
        Figure(
            f"modes_noop_{mode}",
            f"modes: no-op, {mode} ({short(noop[mode])} jobs; concurrency 100, prefetch 100"
            + (", 2 processes)" if mode == "process" else ")"),
            "jobs/s",
        )
        for mode in modes.MODES
    ]
    rows += [
        Figure("modes_noop_thread_async", "modes: no-op, thread / async (same run)", "x"),
        Figure("modes_noop_process_async", "modes: no-op, process / async (same run)", "x"),
    ]
    ms = round(modes.CPU_JOB_S * 1000)
    # raw: the same jobs without rota, one after another in one process (the bound of
    # async and thread modes) and split between 2 plain processes (process mode's).
    rows += [
        Figure(
            f"modes_spin_{mode}",
            f"modes: CPU-bound {ms} ms, {mode} ({sizes.modes_cpu} jobs; concurrency 2, prefetch 2"
            + (", 2 processes; raw: 2 processes)" if mode == "process" else "; raw: 1 process)"),
            "jobs/s",
            "modes_spin_raw2" if mode == "process" else "modes_spin_raw1",
        )
        for mode in modes.MODES
    ]
    rows += [
        Figure(
            "modes_spin_process_thread",
            "modes: CPU-bound, process / thread (same run; raw: 2 processes / 1)",
            "x",
            "modes_spin_raw_ratio",
        ),
        Figure("modes_spin_process_async", "modes: CPU-bound, process / async (same run)", "x"),
    ]
    return rows


# -- cases (what runs) ---------------------------------------------------------------------


@dataclass
class Case:
    group: str
    system: str
    label: str
    run: Callable[[str], dict[str, Any]]  # sync -> {figure key: value, "extra": {...}}
    syncs: tuple[str, ...] = SYNC_MODES  # the synchronous modes it runs in


def _in_tmp(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with scratch_dir() as d:
        return fn(d / "bench.db", *args, **kwargs)


def cases(sizes: Sizes, backlogs: Backlogs) -> list[Case]:
    s = sizes
    out = [
        Case(
            "enqueue",
            "raw",
            "enqueue, 1 producer",
            lambda y: {"enqueue1": _in_tmp(raw.enqueue_one, y, s.enqueue_one)},
        ),
        Case(
            "enqueue",
            "rota",
            "enqueue, 1 producer, app.run()",
            lambda y: {"enqueue1_app": _in_tmp(rota_bench.enqueue_in_runtime, y, s.enqueue_one, 1)},
        ),
        Case(
            "enqueue",
            "rota",
            "enqueue, 1 producer, enqueue_sync",
            lambda y: {
                "enqueue1_sync": _in_tmp(rota_bench.enqueue_sync_threads, y, s.enqueue_one, 1)
            },
        ),
        Case(
            "enqueue",
            "huey",
            "enqueue, 1 producer",
            lambda y: {"enqueue1": _in_tmp(peer_huey.enqueue_one, y, s.enqueue_one)},
        ),
        Case(
            "enqueue",
            "raw",
            "enqueue, 10 producers",
            lambda y: {"enqueue10": _in_tmp(raw.enqueue_one, y, s.enqueue_ten, 10)},
        ),
        Case(
            "enqueue",
            "rota",
            "enqueue, 10 tasks, app.run()",
            lambda y: {
                "enqueue10_app": _in_tmp(rota_bench.enqueue_in_runtime, y, s.enqueue_ten, 10)
            },
        ),
        Case(
            "enqueue",
            "rota",
            "enqueue, 10 threads, enqueue_sync",
            lambda y: {
                "enqueue10_sync": _in_tmp(rota_bench.enqueue_sync_threads, y, s.enqueue_ten, 10)
            },
        ),
        Case(
            "enqueue",
            "huey",
            "enqueue, 10 threads",
            lambda y: {"enqueue10": _in_tmp(peer_huey.enqueue_one, y, s.enqueue_ten, 10)},
        ),
        Case(
            "enqueue_many",
            "raw",
            "enqueue_many",
            lambda y: {"enqueue_many": _in_tmp(raw.enqueue_many, y, s.enqueue_many)},
        ),
        Case(
            "enqueue_many",
            "rota",
            "enqueue_many, no runtime",
            lambda y: {
                "enqueue_many": _in_tmp(
                    rota_bench.enqueue_many, y, s.enqueue_many, in_runtime=False
                )
            },
        ),
        Case(
            "enqueue_many",
            "rota",
            "enqueue_many, app.run()",
            lambda y: {
                "enqueue_many_app": _in_tmp(
                    rota_bench.enqueue_many, y, s.enqueue_many, in_runtime=True
                )
            },
        ),
    ]
    for i, n in enumerate(s.drains):
        key = f"drain_{short(n)}"
        out.append(
            Case(
                "drain",
                "raw",
                f"drain {short(n)}",
                lambda y, n=n, key=key: {key: _in_tmp(raw.drain, y, n)},
            )
        )
        out.append(
            Case(
                "drain", "rota", f"drain {short(n)}", lambda y, n=n, key=key: _rota_drain(key, y, n)
            )
        )
        if i == 0:
            out.append(
                Case(
                    "drain",
                    "rota",
                    f"drain {short(n)}, engine alone",
                    lambda y, n=n, key=key: {
                        f"{key}_engine": _in_tmp(rota_bench.drain_engine, y, n)
                    },
                )
            )
        out.append(
            Case(
                "drain",
                "huey",
                f"drain {short(n)}",
                lambda y, n=n, key=key: {key: _in_tmp(peer_huey.drain, y, n)},
            )
        )
    n = s.drains[0]
    for where, worker in (("app", False), ("worker", True)):
        out.append(
            Case(
                "drain_defaults",
                "rota",
                f"drain {short(n)}, defaults vs tuned, {'rota worker' if worker else 'app.run()'}",
                lambda y, where=where, worker=worker: _defaults_vs_tuned(
                    f"drain_{short(n)}_{where}", y, n, worker
                ),
            )
        )
    out += [
        Case(
            "latency",
            "rota",
            "latency, same process",
            lambda y: _prefixed("latency_same", _in_tmp(latency.same_process, y, s.latency)),
        ),
        Case(
            "latency",
            "rota",
            "latency, other process",
            lambda y: _prefixed("latency_other", _in_tmp(latency.other_process, y, s.latency)),
        ),
        Case(
            "latency",
            "huey",
            "latency, same process (threads)",
            lambda y: _prefixed(
                "latency_same", _in_tmp(peer_huey.latency, y, s.latency_huey, same_process=True)
            ),
        ),
        Case(
            "latency",
            "huey",
            "latency, other process",
            lambda y: _prefixed(
                "latency_other", _in_tmp(peer_huey.latency, y, s.latency_huey, same_process=False)
            ),
        ),
    ]
    small, large = short(s.claims_small), short(s.backlog)

    def claim_pair(small_fn: Callable[[], float], large_fn: Callable[[], float]) -> dict[str, Any]:
        a, b = small_fn(), large_fn()
        return {f"claims_{small}": a, f"claims_{large}": b, "claims_ratio": b / a}

    def raw_small(y: str) -> float:
        with scratch_dir() as d:
            raw.bulk_insert(d / "raw.db", s.claims_small)
            return raw.claims(d / "raw.db", y, s.claim_jobs)

    def huey_small(y: str) -> float:
        with scratch_dir() as d:
            peer_huey.bulk_enqueue(d / "huey.db", s.claims_small)
            return peer_huey.claims(d / "huey.db", y, s.claim_jobs)

    out += [
        Case(
            "claims",
            "raw",
            f"claims {small} vs {large}",
            lambda y: claim_pair(
                lambda: raw_small(y), lambda: raw.claims(backlogs.raw(), y, s.claim_jobs)
            ),
        ),
        Case(
            "claims",
            "rota",
            f"claims {small} vs {large}",
            lambda y: claim_pair(
                lambda: _in_tmp(claims.rota_small, y, s.claims_small, s.claim_jobs),
                lambda: claims.rota(backlogs.rota(), y, s.claim_jobs),
            ),
        ),
        Case(
            "claims",
            "huey",
            f"claims {small} vs {large}",
            lambda y: claim_pair(
                lambda: huey_small(y), lambda: peer_huey.claims(backlogs.huey(), y, s.claim_jobs)
            ),
        ),
        Case(
            "memory",
            "raw",
            f"RSS, {large} waiting",
            lambda y: _rss(large, memory.raw(backlogs.raw(), y, s.memory_settle_s)),
        ),
        Case(
            "memory",
            "rota",
            f"RSS, {large} waiting",
            lambda y: _rss(large, memory.rota(backlogs.rota(), y, s.memory_settle_s)),
        ),
        Case(
            "memory",
            "huey",
            f"RSS, {large} waiting",
            lambda y: _rss(large, memory.huey(backlogs.huey(), y, s.memory_settle_s)),
        ),
        # Durable runs only: what the modes cost does not hang on the fsync.
        Case(
            "modes",
            "rota",
            "modes, no-op: async, thread, process",
            lambda y: modes.noop(y, dict(zip(modes.MODES, s.modes_noop, strict=True))),
            syncs=("FULL",),
        ),
        Case(
            "modes",
            "raw",
            "modes, CPU-bound: 1 process, 2 processes",
            lambda y: modes.raw_cpu(y, s.modes_cpu),
            syncs=("FULL",),
        ),
        Case(
            "modes",
            "rota",
            "modes, CPU-bound: async, thread, process",
            lambda y: modes.cpu(y, s.modes_cpu),
            syncs=("FULL",),
        ),
    ]
    return out


def _rota_drain(key: str, sync: str, n: int) -> dict[str, Any]:
    result = _in_tmp(rota_bench.drain, sync, n)
    extra = {k: result[k] for k in ("startup_s", "jobs_per_transaction")}
    return {key: result["rate"], "extra": extra}


def _defaults_vs_tuned(key: str, sync: str, n: int, worker: bool) -> dict[str, Any]:
    with scratch_dir() as d:
        result = rota_bench.drain_defaults_vs_tuned(d, sync, n, worker=worker)
    return {
        f"{key}_defaults": result["defaults"],
        f"{key}_tuned": result["tuned"],
        f"{key}_ratio": result["ratio"],
        "extra": {"jobs_per_transaction": result["jobs_per_transaction"]},
    }


def _prefixed(prefix: str, values: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in values.items()}


def _rss(large: str, result: dict[str, float]) -> dict[str, Any]:
    return {
        f"rss_{large}": result["rss"],
        "extra": {"rss_first_progress": result["rss_first_progress"], "started": result["started"]},
    }


# -- progress ----------------------------------------------------------------------------


class Progress:
    """One line per case run; a rich progress bar on a terminal when rich is installed."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.began = time.monotonic()
        self._rich: Any = None
        if sys.stdout.isatty():
            with contextlib.suppress(ImportError):
                from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

                self._rich = Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(),
                )
                self._task = self._rich.add_task("benchmarks", total=total)

    def __enter__(self) -> Progress:
        if self._rich is not None:
            self._rich.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)

    def starting(self, text: str) -> None:
        if self._rich is not None:
            self._rich.update(self._task, description=text)

    def finished(self, text: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.began
        line = f"[{self.done:>3}/{self.total} {elapsed:6.0f}s] {text}"
        if self._rich is not None:
            self._rich.console.print(line, highlight=False)
            self._rich.update(self._task, completed=self.done)
        else:
            print(line, flush=True)

    def note(self, text: str) -> None:
        if self._rich is not None:
            self._rich.console.print(text, highlight=False)
        else:
            print(text, flush=True)


# -- formatting ----------------------------------------------------------------------------


def fmt(value: float, unit: str) -> str:
    if value is None or math.isnan(value):
        return "—"
    if unit == "jobs/s":
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    if unit == "MB":
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(sample: Sample | None, unit: str, runs: int) -> str:
    if sample is None or not sample.values:
        return "—"
    if len(sample.values) == 1:
        return fmt(sample.median, unit)
    return f"{fmt(sample.median, unit)} [{fmt(sample.low, unit)}-{fmt(sample.high, unit)}]"


def ratio(a: Sample | None, b: Sample | None) -> float | None:
    if a is None or b is None or not a.values or not b.values or not b.median:
        return None
    return a.median / b.median


def build_rows(
    figs: list[Figure], samples: dict[tuple[str, str, str], Sample], sync: str
) -> list[dict[str, Any]]:
    rows = []
    for fig in figs:
        rota = samples.get((fig.key, "rota", sync))
        raw_s = samples.get((fig.raw, "raw", sync)) if fig.raw else None
        huey_s = samples.get((fig.huey, "huey", sync)) if fig.huey else None
        if rota is None and raw_s is None and huey_s is None:
            continue
        met = None
        if fig.met is not None and rota is not None and rota.values:
            met = fig.met(rota.median, raw_s.median if raw_s and raw_s.values else None)
        rows.append(
            {
                "figure": fig.key,
                "title": fig.title,
                "unit": fig.unit,
                "sync": sync,
                "rota": rota,
                "raw": raw_s,
                "huey": huey_s,
                "rota_raw": ratio(rota, raw_s),
                "rota_huey": ratio(rota, huey_s),
                "target": fig.target,
                "met": met,
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], runs: int) -> str:
    head = "| figure | unit | rota | raw | huey | rota/raw | rota/huey | target | met? |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        unit = r["unit"]
        met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
        values = " | ".join(cell(r[system], unit, runs) for system in ("rota", "raw", "huey"))
        lines.append(
            f"| {r['title']} | {unit} | {values} | {_x(r['rota_raw'])} | {_x(r['rota_huey'])} "
            f"| {r['target']} | {met} |"
        )
    return "\n".join(lines)


def _x(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


# -- the machine -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(Exception):
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 1e9, 1)
    if shutil.which("systemd-detect-virt"):
        with contextlib.suppress(Exception):
            info["virtualization"] = subprocess.run(
                ["systemd-detect-virt"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
    with contextlib.suppress(OSError):
        best = ("", "")
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, fstype = line.split()[:3]
            if str(ROOT).startswith(mount) and len(mount) > len(best[0]):
                best = (mount, f"{device} ({fstype}) on {mount}")
        info["disk"] = best[1]
    for package in ("rota", "huey", "msgspec", "trio", "anyio"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            info[package] = importlib.metadata.version(package)
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        info["commit"] = commit + ("+dirty src" if dirty else "")
    return info


# -- running ---------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, 1 run: a smoke test (< 1 min)"
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per figure (default 3; --quick: 1)"
    )
    parser.add_argument("--only", default="", help=f"comma-separated groups: {', '.join(GROUPS)}")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma-separated: raw,rota,huey"
    )
    parser.add_argument("--sync", default="both", choices=("FULL", "NORMAL", "both"))
    parser.add_argument(
        "--json",
        default=str(ROOT / "benchmarks" / "results" / "latest.json"),
        help="where to write the results (default benchmarks/results/latest.json)",
    )
    args = parser.parse_args(argv)
    args.groups = [g for g in (args.only.split(",") if args.only else GROUPS) if g]
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {unknown}; known: {', '.join(GROUPS)}")
    args.system_list = [x for x in args.systems.split(",") if x]
    if bad := [x for x in args.system_list if x not in SYSTEMS]:
        parser.error(f"unknown system(s) {bad}; known: {', '.join(SYSTEMS)}")
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
        parser.error("--runs must be >= 1")
    args.modes = list(SYNC_MODES) if args.sync == "both" else [args.sync]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    figs = figures(sizes)
    systems = list(args.system_list)
    notes: list[str] = []
    if "huey" in systems and not peer_huey.available():
        systems.remove("huey")
        notes.append("huey is not installed (pip install -e '.[bench]'): its column is empty")
    backlogs = Backlogs(sizes.backlog)
    selected = [c for c in cases(sizes, backlogs) if c.group in args.groups and c.system in systems]
    samples: dict[tuple[str, str, str], Sample] = {}
    errors: list[dict[str, str]] = []
    units: dict[str, str] = {}
    for f in figs:
        for key in (f.key, f.raw, f.huey):
            if key:
                units.setdefault(key, f.unit)
    total = sum(args.runs for c in selected for sync in args.modes if sync in c.syncs)
    if "modes" in args.groups and "FULL" not in args.modes and "rota" in systems:
        notes.append("the modes group runs in synchronous=FULL runs only (--sync FULL)")
    began = time.monotonic()
    started_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with Progress(total) as progress:
        for note in notes:
            progress.note(note)
        try:
            for sync in args.modes:
                for group in args.groups:
                    group_cases = [c for c in selected if c.group == group and sync in c.syncs]
                    for run in range(args.runs):
                        for case in group_cases:
                            _run_case(case, sync, run, args.runs, samples, units, errors, progress)
        finally:
            backlogs.close()
            with contextlib.suppress(OSError):
                SCRATCH.rmdir()
    elapsed = time.monotonic() - began
    info = machine()
    tables = {}
    print()
    print(
        f"rota benchmarks: {args.runs} run(s) per figure, median [min-max]; "
        f"{info.get('cores')} cores, {info.get('cpu', '?')}, {info.get('disk', '?')}; "
        f"took {elapsed:.0f} s"
    )
    for sync in args.modes:
        rows = build_rows(figs, samples, sync)
        tables[sync] = rows
        if not rows:  # nothing ran in this mode (e.g. --only modes: FULL runs only)
            continue
        print(
            f"\nsynchronous={sync}"
            + (
                " (durable: an fsync per commit)"
                if sync == "FULL"
                else " (a power cut may lose the last commits)"
            )
        )
        print()
        print(markdown(rows, args.runs))
    if backlogs.build_seconds:
        print(f"\n(large backlogs built once in {backlogs.build_seconds} s, not measured)")
    for error in errors:
        print(f"\nFAILED: {error['case']}: {error['error']}", file=sys.stderr)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "started_at": started_at,
                "elapsed_s": round(elapsed, 1),
                "machine": info,
                "runs": args.runs,
                "quick": args.quick,
                "sizes": sizes.__dict__,
                "modes": args.modes,
                "groups": args.groups,
                "systems": systems,
                "notes": notes,
                "backlog_build_s": backlogs.build_seconds,
                "samples": [s.as_json() for s in samples.values()],
                "table": {
                    sync: [
                        {
                            **{k: v for k, v in r.items() if k not in ("rota", "raw", "huey")},
                            **{
                                k: (r[k].as_json() if r[k] is not None else None)
                                for k in ("rota", "raw", "huey")
                            },
                        }
                        for r in rows
                    ]
                    for sync, rows in tables.items()
                },
                "errors": errors,
            },
            indent=1,
            default=str,
        )
    )
    print(f"\nresults: {out}")
    return 1 if errors else 0


def _run_case(
    case: Case,
    sync: str,
    run: int,
    runs: int,
    samples: dict[tuple[str, str, str], Sample],
    units: dict[str, str],
    errors: list[dict[str, str]],
    progress: Progress,
) -> None:
    label = f"{sync:<6} {case.system:<4} {case.label}"
    progress.starting(label)
    start = time.perf_counter()
    try:
        result = dict(case.run(sync))
    except Exception as exc:
        errors.append(
            {
                "case": f"{label} run {run + 1}",
                "error": "".join(traceback.format_exception(exc))[-4000:],
            }
        )
        progress.finished(f"{label:<58} run {run + 1}/{runs}  FAILED: {exc!r:.200}")
        return
    took = time.perf_counter() - start
    extra = result.pop("extra", {})
    shown = []
    for key, value in result.items():
        sample = samples.setdefault(
            (key, case.system, sync), Sample(key, case.system, sync, units.get(key, ""))
        )
        sample.values.append(float(value))
        for name, x in extra.items():
            sample.extra.setdefault(name, []).append(x)
        shown.append(f"{key}={fmt(value, units.get(key, ''))}")
    progress.finished(f"{label:<58} run {run + 1}/{runs}  {'  '.join(shown)}  ({took:.1f} s)")


if __name__ == "__main__":
    sys.exit(main())

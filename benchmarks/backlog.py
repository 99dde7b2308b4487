"""The large backlogs (1M waiting jobs) the claims and memory figures need, built once per
benchmark run and shared by every case and both ``synchronous`` modes.

Building is setup, not a figure: rota's database is filled through rota's own validation
(``JobDefinition.new_job``) and ``engine.enqueue`` in batches of 10,000 (so it holds what a
real 1M backlog holds: rows, index entries and one ``enqueued`` event per job); the raw and
huey databases with ``executemany``. A case that takes jobs off a backlog is followed by a
top-up, so each case starts with exactly ``size`` waiting jobs.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from rota.domain.job import JobState
from rota.storage.sqlite import SqliteEngine

from . import peer_huey, raw
from ._rota import QUEUE, make_app, pre_enqueue
from ._util import SCRATCH


class Backlogs:
    """Lazily built databases with ``size`` waiting jobs each, removed by ``close()``."""

    def __init__(self, size: int) -> None:
        self.size = size
        SCRATCH.mkdir(parents=True, exist_ok=True)
        self._dir = Path(tempfile.mkdtemp(prefix="backlog-", dir=SCRATCH))
        self._built: dict[str, Path] = {}
        self._next_rota_index = 0
        self.build_seconds: dict[str, float] = {}

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def _timed(self, name: str, build: object) -> None:
        start = time.perf_counter()
        build()  # type: ignore[operator]
        self.build_seconds[name] = round(time.perf_counter() - start, 2)

    # -- rota --

    def rota(self) -> Path:
        db = self._built.get("rota")
        if db is None:
            db = self._dir / "rota.db"
            self._timed("rota", lambda: self._rota_add(db, self.size))
            self._built["rota"] = db
        else:
            self._rota_top_up(db)
        return db

    def _rota_add(self, db: Path, n: int) -> None:
        app, noop, _, _ = make_app(db, "NORMAL", 0)
        try:
            pre_enqueue(app, noop, n, start=self._next_rota_index)
        finally:
            app.close()
        self._next_rota_index += n

    def _rota_top_up(self, db: Path) -> None:
        have = rota_waiting(db)
        if have < self.size:
            self._rota_add(db, self.size - have)

    # -- raw --

    def raw(self) -> Path:
        db = self._built.get("raw")
        if db is None:
            db = self._dir / "raw.db"
            self._timed("raw", lambda: raw.bulk_insert(db, self.size))
            self._built["raw"] = db
        else:
            raw.top_up(db, self.size)
        return db

    # -- huey --

    def huey(self) -> Path:
        db = self._built.get("huey")
        if db is None:
            db = self._dir / "huey.db"
            self._timed("huey", lambda: peer_huey.bulk_enqueue(db, self.size))
            self._built["huey"] = db
        else:
            peer_huey.top_up(db, self.size)
        return db


def rota_waiting(db: Path) -> int:
    engine = SqliteEngine(db, synchronous="NORMAL")
    try:
        engine.migrate()
        return engine.count(QUEUE).get(JobState.WAITING, 0)
    finally:
        engine.close()

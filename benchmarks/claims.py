"""Claim throughput with a small (10k) and a large (1M) backlog of waiting jobs.

Nothing on rota's hot path may scale with the backlog (DESIGN.md section 5): the claim
reads the partial ready index in claim order and takes exactly the rows it needs. Each
case times ``jobs`` (default 5,000) jobs of claim+complete steps, 100 per transaction (the
drain's fused step), on a database holding the backlog:

* rota: ``SqliteEngine.settle_and_claim`` (the Store's hot call, without the actors);
* raw: the raw loop of ``raw.py`` on its minimal table;
* huey: huey's own ``storage.dequeue()`` (one job per transaction; it has no batch claim).

The 10k databases are made fresh per run; the 1M ones come from ``backlog.Backlogs``
(built once, topped up after each case). The figure that matters is the ratio
large / small per system.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from rota.domain.job import JobState
from rota.storage.engine import ClaimRequest, Completion
from rota.storage.sqlite import SqliteEngine

from ._rota import QUEUE, make_app, pre_enqueue
from ._util import Item, check_synchronous, rate


def rota_small(db: Path, sync: str, backlog: int, jobs: int) -> float:
    app, noop, _, _ = make_app(db, sync, 0)
    try:
        pre_enqueue(app, noop, backlog)
    finally:
        app.close()
    return rota(db, sync, jobs)


def rota(db: Path, sync: str, jobs: int) -> float:
    engine = SqliteEngine(db, synchronous=sync)  # type: ignore[arg-type]
    try:
        engine.migrate()
        conn = getattr(engine, "_conn", None)
        if conn is not None:
            check_synchronous(conn, sync, "rota engine")
        before = engine.count(QUEUE).get(JobState.COMPLETED, 0)
        decode = msgspec.json.Decoder(Item).decode
        done: list[Completion] = []
        ran = 0
        start = time.perf_counter()
        while True:
            want = min(100, jobs - ran)
            claim = ClaimRequest(QUEUE, "claims", want, 30_000) if want else None
            settled = engine.settle_and_claim(done, [], claim)
            if not settled.claimed:
                break
            for job in settled.claimed:
                decode(job.payload)
            ran += len(settled.claimed)
            done = [Completion(j.id, j.token or 0, None) for j in settled.claimed]
        elapsed = time.perf_counter() - start
        after = engine.count(QUEUE).get(JobState.COMPLETED, 0)
    finally:
        engine.close()
    assert ran == after - before == jobs, (ran, after - before, jobs)
    return rate(jobs, elapsed)

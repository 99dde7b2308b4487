"""The app a ``rota worker`` process runs for the memory figure and the worker drain::

    RBENCH_DB=path RBENCH_SYNC=FULL python -m rota worker benchmarks._worker_app:app

Its ``bench.noop`` handler does nothing but count, and prints ``{"started": n}`` every
5,000 starts so the parent knows the worker has been claiming for a while (the drain's
tuned options). With ``RBENCH_DRAIN=n`` (and ``RBENCH_CONFIG``, a key of
``rota_bench.DRAIN_CONFIGS``) it is the drain's app instead (``_rota.make_app``: starts
counted per job, completions timed at their commit): once ``n`` completions are committed
it checks that each job started exactly once and prints ``{"drained": n, "first_start":
t, "last_commit": t, "jobs_per_transaction": x}`` (``time.perf_counter``). (The variables
are not ``ROTA_*``: rota refuses unknown ``ROTA_*`` variables.)
"""

from __future__ import annotations

import json
import os
import threading

import rota

from ._rota import BENCH_OPTIONS, QUEUE, make_app
from ._util import Item
from .rota_bench import DRAIN_CONFIGS, DRAIN_OPTIONS

_db = os.environ.get("RBENCH_DB", "bench.db")
_sync = os.environ.get("RBENCH_SYNC", "FULL")
_drain = int(os.environ.get("RBENCH_DRAIN", "0"))

if _drain:
    app, _, _, _starts = make_app(_db, _sync, _drain, **DRAIN_CONFIGS[os.environ["RBENCH_CONFIG"]])

    def _report() -> None:
        tracker = app.tracker
        tracker.expect(_drain)
        tracker.reached.wait()
        _starts.check_exactly_once()
        batches = tracker.transactions
        print(
            json.dumps(
                {
                    "drained": tracker.completed,
                    "first_start": _starts.first,
                    "last_commit": tracker.last_commit,
                    "jobs_per_transaction": _drain / max(batches, 1),
                }
            ),
            flush=True,
        )

    threading.Thread(target=_report, name="rbench-report", daemon=True).start()
else:
    app = rota.App(_db, synchronous=_sync, **BENCH_OPTIONS, **DRAIN_OPTIONS)
    _started = [0]

    @app.job(name="bench.noop", queue=QUEUE)
    async def noop(args: Item) -> None:
        _started[0] += 1
        if _started[0] % 5000 == 0:
            print(json.dumps({"started": _started[0]}), flush=True)

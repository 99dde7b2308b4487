"""The app a ``rota worker`` process runs for the memory figure::

    RBENCH_DB=path RBENCH_SYNC=FULL python -m rota worker benchmarks._worker_app:app

Its ``bench.noop`` handler does nothing but count, and prints ``{"started": n}`` every
5,000 starts so the parent knows the worker has been claiming for a while. (The variables
are not ``ROTA_*``: rota refuses unknown ``ROTA_*`` variables.)
"""

from __future__ import annotations

import json
import os

import rota

from ._rota import BENCH_OPTIONS, QUEUE
from ._util import Item
from .rota_bench import DRAIN_OPTIONS

app = rota.App(
    os.environ.get("RBENCH_DB", "bench.db"),
    synchronous=os.environ.get("RBENCH_SYNC", "FULL"),
    **BENCH_OPTIONS,
    **DRAIN_OPTIONS,
)
_started = [0]


@app.job(name="bench.noop", queue=QUEUE)
async def noop(args: Item) -> None:
    _started[0] += 1
    if _started[0] % 5000 == 0:
        print(json.dumps({"started": _started[0]}), flush=True)

"""The app an idle ``rota worker`` runs for the idle-CPU figure (``benchmarks.idle``)::

    RBENCH_DB=path RBENCH_SYNC=FULL python -m rota worker benchmarks._idle_app:app

rota's defaults, one queue, one job nobody enqueues. (The variables are not ``ROTA_*``:
rota refuses unknown ``ROTA_*`` variables.)
"""

from __future__ import annotations

import os

import rota

app = rota.App(
    os.environ.get("RBENCH_DB", "idle.db"), synchronous=os.environ.get("RBENCH_SYNC", "FULL")
)


@app.job(name="bench.idle", queue="idle")
async def idle(n: int) -> None:
    """Never enqueued: the worker only waits."""

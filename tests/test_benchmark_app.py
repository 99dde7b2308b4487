"""The benchmarks' App subclass stays a drop-in App: the runtime calls ``App.engine`` with
its keyword arguments, and an override that lacks one breaks every benchmark of rota
(found when the change feed added ``own_doorbell``)."""

from __future__ import annotations

import inspect

from benchmarks._rota import BenchApp

from rota.app import App


def test_bench_app_engine_takes_every_argument_app_engine_takes() -> None:
    ours = inspect.signature(BenchApp.engine).parameters
    theirs = inspect.signature(App.engine).parameters
    assert set(theirs) <= set(ours), f"BenchApp.engine lacks {set(theirs) - set(ours)}"

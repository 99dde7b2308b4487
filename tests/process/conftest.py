"""Real-process tests: ``rota worker`` processes killed, stopped, restarted.

The scripted job (``tests/support/scripted.py``) is importable as ``scripted`` and the
helpers of this folder as ``proc_harness``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
for _path in (_HERE.parent / "support", _HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from proc_harness import Harness  # noqa: E402


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """A database, a producer on it, and the worker processes a test starts (all killed
    and reaped at the end, whatever happened)."""
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()

"""Shared test configuration.

Async tests run on trio by default (``@pytest.mark.trio``); tests that must hold on both
backends use ``@pytest.mark.anyio`` and get the ``anyio_backend`` fixture below, which runs
them once on trio and once on asyncio.
"""

from __future__ import annotations

import pytest


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)

"""How an attempt ends (``rota.execution.attempt``): the same ``JobDone`` in every mode, and
nothing a handler raises makes building it fail."""

from __future__ import annotations

import math

import pytest

from rota.domain.backoff import MAX_DELAY_S
from rota.domain.outcome import Retry
from rota.execution import attempt


@pytest.mark.parametrize(
    ("delay_s", "delay_ms"),
    [
        (math.inf, round(MAX_DELAY_S * 1000)),
        (1e300, round(MAX_DELAY_S * 1000)),
        (math.nan, None),
        (-1.0, 0),
        (2.5, 2500),
        (None, None),
    ],
)
def test_a_retry_delay_out_of_range_is_made_safe_not_an_overflow(
    delay_s: float | None, delay_ms: int | None
) -> None:
    exc = Retry(1.0)
    exc.delay_s = delay_s  # set after construction (Retry itself refuses such values)
    done = attempt.failed(7, exc)
    assert (done.status, done.delay_ms) == ("retry", delay_ms)

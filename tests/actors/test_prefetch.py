"""The adaptive prefetch rule (``prefetch="auto"``), as a pure function of the claims a pool
made, the attempts that ended and the time (given, never read from a clock)."""

from __future__ import annotations

import pytest

from rota.actors.prefetch import AUTO_PREFETCH_MAX, AdaptivePrefetch


def deep(
    rule: AdaptivePrefetch, claims: int, *, jobs_per_s: float, start: float = 0.0
) -> list[int]:
    """``claims`` full claims, one every 0.25 s (exact in binary: rates come out exact),
    with ``jobs_per_s`` attempts ending meanwhile; the prefetch after each."""
    sizes = []
    for i in range(claims):
        now = start + i * 0.25
        asked = rule.concurrency + rule.prefetch
        sizes.append(rule.on_claim(asked, asked, ended=round(now * jobs_per_s), now=now))
    return sizes


def test_it_starts_at_zero_and_needs_a_measured_rate_before_it_claims_ahead() -> None:
    rule = AdaptivePrefetch(10, horizon_s=0.05)
    assert (rule.prefetch, rule.rate, rule.limit()) == (0, 0.0, 0)
    # The first full claim says the queue is deep, but nothing has ended yet: a job that
    # never ends (one that kills its worker) is not given company in the buffer.
    assert rule.on_claim(10, 10, ended=0, now=1.0) == 0
    assert rule.on_claim(10, 10, ended=0, now=2.0) == 0  # nothing ended: rate 0
    assert rule.rate == 0.0


def test_it_grows_by_doubling_from_concurrency_while_claims_come_back_full() -> None:
    rule = AdaptivePrefetch(10, horizon_s=0.05)
    # 20,000 jobs/s: the horizon allows 1,000, more than the cap
    assert deep(rule, 8, jobs_per_s=20_000) == [0, 10, 20, 40, 80, 160, 256, 256]
    assert rule.rate == pytest.approx(20_000)
    assert AUTO_PREFETCH_MAX == 256


def test_it_holds_no_more_than_starts_within_the_horizon_at_the_measured_rate() -> None:
    rule = AdaptivePrefetch(10, horizon_s=0.05)
    # 1,000 jobs/s (10 slots, 10 ms jobs): 50 jobs start within 50 ms
    assert deep(rule, 6, jobs_per_s=1_000) == [0, 10, 20, 40, 50, 50]
    # slow jobs (10 slots, 1 s each: 10 jobs/s): none is claimed ahead
    slow = AdaptivePrefetch(10, horizon_s=0.05)
    assert deep(slow, 6, jobs_per_s=10) == [0] * 6


def test_a_rate_that_falls_lowers_the_limit_even_while_the_queue_stays_deep() -> None:
    rule = AdaptivePrefetch(10, horizon_s=0.05)
    assert deep(rule, 8, jobs_per_s=20_000)[-1] == 256
    ended, now = 7 * 0.25 * 20_000, 7 * 0.25
    # the jobs got slow: 10 end per second from now on
    assert rule.on_claim(266, 266, ended=round(ended) + 10, now=now + 1) == 256
    assert rule.rate == pytest.approx((20_000 + 10) / 2)  # each measure weighs half
    for k in range(2, 40):
        asked = rule.concurrency + rule.prefetch
        rule.on_claim(asked, asked, ended=round(ended) + 10 * k, now=now + k)
    assert rule.rate == pytest.approx(10, rel=0.01)
    assert rule.prefetch == 0  # 10 jobs/s: none starts within 50 ms of another


def test_a_claim_that_comes_up_short_drops_it_to_zero_and_forgets_the_rate() -> None:
    rule = AdaptivePrefetch(10, horizon_s=0.05)
    deep(rule, 6, jobs_per_s=20_000)
    assert rule.prefetch == 160
    assert rule.on_claim(170, 169, ended=5_000, now=1.0) == 0  # shallow: share the queue
    assert (rule.prefetch, rule.rate, rule.limit()) == (0, 0.0, 0)
    # deep again: measured afresh (the rate of a while ago says nothing about these jobs)
    assert rule.on_claim(10, 10, ended=5_000, now=2.0) == 0
    assert rule.on_claim(10, 10, ended=5_010, now=2.001) == 10


def test_the_bounds() -> None:
    # never above the cap, however fast and however long the queue stays deep
    fast = AdaptivePrefetch(1, horizon_s=10.0, most=40)
    assert max(deep(fast, 50, jobs_per_s=1e9)) == 40
    assert deep(AdaptivePrefetch(1, horizon_s=1.0), 12, jobs_per_s=1e6)[-1] == AUTO_PREFETCH_MAX
    # a large concurrency starts at the cap, not above it
    assert deep(AdaptivePrefetch(1_000, horizon_s=1.0), 3, jobs_per_s=1e6) == [0, 256, 256]
    # a zero horizon (or cap) never claims ahead
    assert deep(AdaptivePrefetch(10, horizon_s=0.0), 5, jobs_per_s=1e6) == [0] * 5
    assert deep(AdaptivePrefetch(10, horizon_s=1.0, most=0), 5, jobs_per_s=1e6) == [0] * 5
    # two claims at one instant measure nothing (no division by zero)
    rule = AdaptivePrefetch(10, horizon_s=0.05)
    assert rule.on_claim(10, 10, ended=0, now=1.0) == 0
    assert rule.on_claim(10, 10, ended=10, now=1.0) == 0
    assert rule.on_claim(10, 10, ended=20, now=1.01) == 10  # 20 ended in 10 ms


@pytest.mark.parametrize(
    ("concurrency", "horizon_s", "most", "problem"),
    [
        (0, 0.05, 256, "concurrency"),
        (10, -1.0, 256, "horizon_s"),
        (10, float("nan"), 256, "horizon_s"),
        (10, 0.05, -1, "most"),
    ],
)
def test_bad_settings_are_refused(
    concurrency: int, horizon_s: float, most: int, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        AdaptivePrefetch(concurrency, horizon_s=horizon_s, most=most)


def test_a_claim_cannot_get_more_than_it_asked_for() -> None:
    with pytest.raises(ValueError, match="got 11 of 10"):
        AdaptivePrefetch(10, horizon_s=0.05).on_claim(10, 11, ended=0, now=0.0)

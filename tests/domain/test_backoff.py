from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rota.domain import backoff as b


def test_fixed_exponential_linear_sequences() -> None:
    assert [b.fixed(5).delay_s(n) for n in (1, 2, 3)] == [5, 5, 5]
    assert [b.exponential(1.0, max_s=None).delay_s(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert [b.exponential(2.0, factor=3, max_s=None).delay_s(n) for n in (1, 2, 3)] == [2, 6, 18]
    assert [b.linear(10).delay_s(n) for n in (1, 2, 3)] == [10, 20, 30]


def test_max_caps_growth_and_huge_attempts_do_not_overflow() -> None:
    policy = b.exponential(1.0, max_s=60.0)
    assert policy.delay_s(7) == 60.0
    assert policy.delay_s(10_000) == 60.0
    assert b.linear(10, max_s=25).delay_s(3) == 25


def test_jitter_spreads_within_bounds_and_respects_max() -> None:
    policy = b.fixed(10.0, jitter=0.2)
    assert policy.delay_s(1, u=0.0) == pytest.approx(8.0)
    assert policy.delay_s(1, u=0.5) == pytest.approx(10.0)
    assert policy.delay_s(1, u=0.999999) == pytest.approx(12.0, rel=1e-5)
    capped = b.exponential(1.0, max_s=10.0, jitter=0.5)
    assert capped.delay_s(20, u=0.99) == 10.0


@given(
    base=st.floats(0, 1e4),
    factor=st.floats(1, 10),
    max_s=st.none() | st.floats(0, 1e6),
    jitter=st.floats(0, 1),
    attempt=st.integers(1, 10_000),
    u=st.floats(0, 1, exclude_max=True),
)
def test_exponential_delay_is_never_negative_nor_above_max(
    base: float, factor: float, max_s: float | None, jitter: float, attempt: int, u: float
) -> None:
    delay = b.exponential(base, factor=factor, max_s=max_s, jitter=jitter).delay_s(attempt, u)
    assert 0 <= delay <= b.MAX_DELAY_S
    if max_s is not None:
        assert delay <= max_s


def test_custom_uses_function_and_stores_fallback() -> None:
    policy = b.custom(lambda attempt: attempt * 1.5, fallback=b.fixed(7))
    assert policy.delay_s(2) == 3.0
    assert b.decode_backoff(b.encode_backoff(policy)) == b.fixed(7)
    with pytest.raises(ValueError, match="custom backoff returned"):
        b.custom(lambda attempt: -1.0).delay_s(1)
    with pytest.raises(TypeError, match="callable"):
        b.Custom(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "policy", [b.fixed(3), b.exponential(0.5, factor=3, max_s=9, jitter=0.1), b.linear(2)]
)
def test_stored_policies_round_trip(policy: b.StoredBackoff) -> None:
    assert b.decode_backoff(b.encode_backoff(policy)) == policy
    assert b.decode_backoff(None) == b.DEFAULT_BACKOFF


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: b.fixed(-1), "delay"),
        (lambda: b.fixed(1, jitter=1.5), "jitter"),
        (lambda: b.exponential(1, factor=0.5), "factor"),
        (lambda: b.exponential(-1), "base"),
        (lambda: b.linear(1, max_s=-3), "max_s"),
        (lambda: b.fixed(float("nan")), "delay"),
    ],
)
def test_invalid_policies_name_the_field(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]


def test_attempt_must_be_positive() -> None:
    with pytest.raises(ValueError, match="attempt"):
        b.fixed(1).delay_s(0)

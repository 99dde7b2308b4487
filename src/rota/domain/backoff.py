"""Backoff policies: how long a failed attempt waits before the next one.

Three built-in policies are plain frozen Structs, so they are stored with each job and any
runtime (even one in another process that never imported the job's module) computes the
same delays, for example when it rescues a stalled lease::

    fixed(5.0)                          5 s, 5 s, 5 s, ...
    exponential(1.0, max_s=60.0)        1 s, 2 s, 4 s, ... capped at 60 s
    linear(10.0)                        10 s, 20 s, 30 s, ...

``jitter`` spreads retries of jobs that failed together (a thundering herd): with
``jitter=0.2`` a 10 s delay becomes a uniform draw from 8-12 s, never above ``max_s``.

``custom(fn)`` wraps ``fn(attempt) -> seconds``. A callable cannot be stored, so the job row
keeps ``fallback`` (exponential by default), used where the callable is not at hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final, TypeAlias

import msgspec

from rota.errors import ConfigError, ConfigTypeError

__all__ = [
    "Backoff",
    "Custom",
    "DEFAULT_BACKOFF",
    "Exponential",
    "Fixed",
    "Linear",
    "MAX_DELAY_S",
    "StoredBackoff",
    "custom",
    "decode_backoff",
    "encode_backoff",
    "exponential",
    "fixed",
    "linear",
]


#: No policy waits longer than this (one year), so every delay is finite and storable in ms.
MAX_DELAY_S: Final = 365 * 24 * 3600.0


def _check(name: str, value: float, *, low: float = 0.0, high: float | None = None) -> None:
    if not value >= low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise ConfigError(f"backoff {name} must be {bound}, got {value!r}")


class _Policy(msgspec.Struct, frozen=True, tag_field="kind"):
    jitter: float = 0.0
    max_s: float | None = None

    def __post_init__(self) -> None:
        _check("jitter", self.jitter, high=1.0)
        if self.max_s is not None:
            _check("max_s", self.max_s)

    def base_delay_s(self, attempt: int) -> float:
        """The policy's delay after failed attempt ``attempt`` (1-based), uncapped."""
        raise NotImplementedError

    def delay_s(self, attempt: int, u: float = 0.5) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        ``u`` is a uniform draw from [0, 1) that applies the jitter; 0.5 means none.
        """
        if attempt < 1:
            raise ConfigError(f"attempt must be >= 1, got {attempt}")
        cap = MAX_DELAY_S if self.max_s is None else min(self.max_s, MAX_DELAY_S)
        delay = min(self.base_delay_s(attempt), cap)
        if self.jitter:
            delay = min(delay * (1.0 + self.jitter * (2.0 * u - 1.0)), cap)
        return max(delay, 0.0)


class Fixed(_Policy, frozen=True, tag="fixed"):
    """The same delay after every attempt."""

    delay: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check("delay", self.delay)

    def base_delay_s(self, attempt: int) -> float:
        """``delay``, whatever the attempt (before the cap and the jitter)."""
        return self.delay


class Exponential(_Policy, frozen=True, tag="exponential"):
    """``base * factor ** (attempt - 1)``, capped at ``max_s``."""

    base: float = 1.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check("base", self.base)
        _check("factor", self.factor, low=1.0)

    def base_delay_s(self, attempt: int) -> float:
        """``base * factor ** (attempt - 1)`` (before the cap and the jitter)."""
        if self.base == 0.0:
            return 0.0
        try:
            return float(self.base * self.factor ** (attempt - 1))
        except OverflowError:
            return MAX_DELAY_S


class Linear(_Policy, frozen=True, tag="linear"):
    """``step * attempt``, capped at ``max_s``."""

    step: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check("step", self.step)

    def base_delay_s(self, attempt: int) -> float:
        """``step * attempt`` (before the cap and the jitter)."""
        return self.step * attempt


StoredBackoff: TypeAlias = Fixed | Exponential | Linear


class Custom:
    """A user function ``fn(attempt) -> seconds``; ``fallback`` is what gets stored."""

    __slots__ = ("fallback", "fn")

    def __init__(self, fn: Callable[[int], float], fallback: StoredBackoff | None = None) -> None:
        if not callable(fn):
            raise ConfigTypeError(f"custom backoff needs a callable, got {fn!r}")
        self.fn = fn
        self.fallback: StoredBackoff = fallback if fallback is not None else DEFAULT_BACKOFF

    def delay_s(self, attempt: int, u: float = 0.5) -> float:
        """``fn(attempt)``, checked: a number of seconds, >= 0 and finite (``ValueError``
        or ``TypeError`` otherwise), at most ``MAX_DELAY_S``."""
        value = self.fn(attempt)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(
                f"custom backoff returned {value!r} for attempt {attempt}, not a number"
            )
        delay = float(value)
        if not 0.0 <= delay < math.inf:
            raise ValueError(
                f"custom backoff returned {value!r} for attempt {attempt}: a delay must be "
                "a finite number of seconds >= 0"
            )
        return min(delay, MAX_DELAY_S)

    def __repr__(self) -> str:
        return f"Custom({self.fn!r}, fallback={self.fallback!r})"


Backoff: TypeAlias = StoredBackoff | Custom

#: Used when a job does not say: 1 s, 2 s, 4 s ... up to 5 minutes, no jitter.
DEFAULT_BACKOFF: Final[StoredBackoff] = Exponential(base=1.0, factor=2.0, max_s=300.0)


def fixed(delay_s: float, *, jitter: float = 0.0) -> Fixed:
    """Wait ``delay_s`` seconds before every retry."""
    return Fixed(delay=delay_s, jitter=jitter)


def exponential(
    base_s: float = 1.0, *, factor: float = 2.0, max_s: float | None = 300.0, jitter: float = 0.0
) -> Exponential:
    """Wait ``base_s * factor ** (attempt - 1)`` seconds, at most ``max_s``."""
    return Exponential(base=base_s, factor=factor, max_s=max_s, jitter=jitter)


def linear(step_s: float, *, max_s: float | None = None, jitter: float = 0.0) -> Linear:
    """Wait ``step_s * attempt`` seconds, at most ``max_s``."""
    return Linear(step=step_s, max_s=max_s, jitter=jitter)


def custom(fn: Callable[[int], float], *, fallback: StoredBackoff | None = None) -> Custom:
    """Wait ``fn(attempt)`` seconds; ``fallback`` applies where ``fn`` is not available."""
    return Custom(fn, fallback)


_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[StoredBackoff] = msgspec.json.Decoder(StoredBackoff)


def encode_backoff(policy: Backoff) -> bytes:
    """The stored form of a policy (a custom one stores its fallback)."""
    return _encoder.encode(policy.fallback if isinstance(policy, Custom) else policy)


def decode_backoff(data: bytes | str | None) -> StoredBackoff:
    """Inverse of :func:`encode_backoff`; ``None`` gives the default policy."""
    if data is None:
        return DEFAULT_BACKOFF
    return _decoder.decode(data)

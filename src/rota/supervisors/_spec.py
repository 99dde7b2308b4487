"""What a supervisor is told about its children: strategy, restart types, specs, backoff.

A *child* is anything with an async ``run`` that follows AnyIO's started-handshake::

    async def run(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED):
        ...                     # get ready (open resources, rebuild state)
        task_status.started()   # now the supervisor starts the next child
        ...                     # work; return = normal exit, raise = crash

and, optionally, a ``stop`` callable that *asks* it to stop (it should then return soon).
An actor (``ActorRef.run`` / ``ActorRef.request_stop``) and a nested supervisor
(``Supervisor.child_spec()``) are children; so is any coroutine function of that shape.

The vocabulary is Erlang/OTP's:

* **Strategy** (what else is restarted when one child has to be): ``one_for_one`` only
  that child; ``one_for_all`` every child (the others are stopped in reverse order first);
  ``rest_for_one`` that child and the children after it in the list.
* **Restart type** (whether an exited child is restarted at all): ``permanent`` always,
  also after a normal return; ``transient`` only after a crash (an exception);
  ``temporary`` never, not even when a sibling's restart stops it.
* **Backoff** (optional): a delay before a restart that grows while a child keeps failing
  and falls back once it has stayed up for a while.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from rota.errors import ConfigError

__all__ = ["ChildSpec", "Restart", "RestartBackoff", "Strategy"]


class Strategy(enum.StrEnum):
    """Which children a supervisor restarts when one of them has to be restarted."""

    ONE_FOR_ONE = "one_for_one"
    """Only the child that exited."""
    ONE_FOR_ALL = "one_for_all"
    """Every child: the others are stopped (reverse order), then all start again (in order)."""
    REST_FOR_ONE = "rest_for_one"
    """The child that exited and every child after it in the list (they depend on it)."""


class Restart(enum.StrEnum):
    """Whether a child that exited is restarted."""

    PERMANENT = "permanent"
    """Always: after a crash and after a normal return (a service should never end)."""
    TRANSIENT = "transient"
    """Only after a crash; a normal return means the work is done and the child is dropped."""
    TEMPORARY = "temporary"
    """Never; dropped when it exits or when a sibling's restart stops it."""


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to run, restart and stop one child.

    ``run`` is called as ``run(task_status=...)`` and must call ``task_status.started()``
    once ready; a ``run`` that returns or raises before that is a *failed start*.

    ``stop`` is the graceful "ask": a plain or async callable taking no argument that tells
    the child to finish (e.g. ``ActorRef.request_stop``). The supervisor then waits up to
    ``grace_s`` for ``run`` to return and cancels it after that. A child without ``stop``
    is cancelled at once: for it, cancellation *is* the ask (its ``finally`` blocks and
    shielded cleanups still run).

    A frozen dataclass rather than a msgspec Struct: it holds callables, which are not data.
    """

    name: str
    run: Callable[..., Awaitable[Any]]
    restart: Restart = Restart.PERMANENT
    stop: Callable[[], Awaitable[Any] | None] | None = None
    grace_s: float = 5.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"child name must be a non-empty string, got {self.name!r}")
        if not callable(self.run):
            raise ConfigError(f"child {self.name!r}: run must be callable, got {self.run!r}")
        if self.stop is not None and not callable(self.stop):
            raise ConfigError(f"child {self.name!r}: stop must be callable, got {self.stop!r}")
        try:
            restart = Restart(self.restart)
        except ValueError:
            known = ", ".join(r.value for r in Restart)
            raise ConfigError(
                f"child {self.name!r}: unknown restart type {self.restart!r} (known: {known})"
            ) from None
        # accept the plain string ("transient") too, but store the enum member
        object.__setattr__(self, "restart", restart)
        if not self.grace_s >= 0:  # also rejects NaN
            raise ConfigError(f"child {self.name!r}: grace_s must be >= 0, got {self.grace_s!r}")


class RestartBackoff(msgspec.Struct, frozen=True, kw_only=True):
    """A growing delay before restarting a child that keeps failing.

    The n-th consecutive restart of a child waits ``min(initial_s * factor ** (n - 1),
    max_s)``. The count starts again from 1 once a child has stayed up for
    ``reset_after_s`` (a quiet period) before exiting. A failed start has been up for 0 s.

    Intensity still applies: the delay only spaces restarts out, so a flapping child makes
    fewer restarts per window and a supervisor with backoff gives up later, or never.
    """

    initial_s: float = 0.1
    factor: float = 2.0
    max_s: float = 30.0
    reset_after_s: float = 60.0

    def __post_init__(self) -> None:
        for field, value, low in (
            ("initial_s", self.initial_s, 0.0),
            ("factor", self.factor, 1.0),
            ("max_s", self.max_s, 0.0),
            ("reset_after_s", self.reset_after_s, 0.0),
        ):
            if not (value >= low and math.isfinite(value)):
                raise ConfigError(
                    f"RestartBackoff.{field} must be finite and >= {low:g}, got {value!r}"
                )
        if self.max_s < self.initial_s:
            raise ConfigError(
                f"RestartBackoff.max_s ({self.max_s:g}) must be >= initial_s ({self.initial_s:g})"
            )

    def delay_s(self, consecutive: int) -> float:
        """Seconds to wait before the ``consecutive``-th restart in a row (1-based)."""
        if consecutive < 1:
            raise ValueError(f"consecutive must be >= 1, got {consecutive}")
        try:
            # float(): an int factor would make an exact (and slow) big integer power
            delay = self.initial_s * float(self.factor) ** (consecutive - 1)
        except OverflowError:  # a long streak: far past the cap
            return self.max_s
        return min(delay, self.max_s)

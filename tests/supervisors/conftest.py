"""Scripted children for the supervisor tests (the ``world`` fixture).

A ``Probe`` is a child whose every start follows the next step of its plan (then ``"run"``):

* ``"run"``                   start, then run until asked to stop, cancelled or triggered
* ``("crash", after_s)``      start, then raise ``Boom`` after ``after_s`` seconds
* ``("return", after_s)``     start, then return normally after ``after_s`` seconds
* ``("fail_start", after_s)`` raise ``Boom`` after ``after_s`` seconds, *before* signalling
  started

Tests can also trigger a running probe: ``probe.crash()`` / ``probe.finish()``. Everything a
probe does goes into its ``World``'s records as ``(what, child, time)``, with ``what`` one
of ``start`` (run called), ``up`` (started signalled), ``ask`` (stop callable called),
``crash``, ``return``, ``cancelled``, ``fail_start``. Under trio's MockClock the times are
exact.

They live in this conftest because pytest runs with ``--import-mode=importlib``: test
modules cannot import a helper module next to them. Plans are plain tuples so that they can
appear in ``parametrize`` without importing anything.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

import anyio
import anyio.abc
import pytest

from rota.supervisors import ChildSpec, Restart


class Boom(Exception):
    """What a probe raises when it crashes."""


#: a plan step: "run", or (kind, after_s) with kind "crash" | "return" | "fail_start"
Step = str | tuple[str, float]
KINDS = ("run", "crash", "return", "fail_start")


def parse_step(step: Step) -> tuple[str, float]:
    kind, after_s = (step, math.inf) if isinstance(step, str) else step
    assert kind in KINDS, f"unknown plan step {step!r}"
    return kind, after_s


class World:
    """The shared, timed record of what every probe did."""

    def __init__(self) -> None:
        self.records: list[tuple[str, str, float]] = []

    def record(self, what: str, child: str) -> None:
        self.records.append((what, child, anyio.current_time()))

    def log(self, *whats: str) -> list[tuple[str, str]]:
        """``(what, child)`` in order, only the kinds given (all when none given)."""
        return [(w, c) for w, c, _ in self.records if not whats or w in whats]

    def timed(self, *whats: str) -> list[tuple[str, str, float]]:
        return [r for r in self.records if not whats or r[0] in whats]

    def clear(self) -> None:
        self.records.clear()

    async def settle(self) -> None:
        """Wait until every task is blocked: the supervisor has handled everything pending.

        Takes priority over MockClock's autojump, so no time passes.
        """
        await anyio.wait_all_tasks_blocked()

    def probe(
        self,
        name: str,
        plan: Iterable[Step] = (),
        *,
        restart: Restart = Restart.PERMANENT,
        cooperative: bool = True,
        with_stop: bool = True,
        grace_s: float = 5.0,
        start_delay_s: float = 0.0,
    ) -> Probe:
        return Probe(
            self,
            name,
            plan,
            restart=restart,
            cooperative=cooperative,
            with_stop=with_stop,
            grace_s=grace_s,
            start_delay_s=start_delay_s,
        )


class Probe:
    def __init__(
        self,
        world: World,
        name: str,
        plan: Iterable[Step],
        *,
        restart: Restart,
        cooperative: bool,
        with_stop: bool,
        grace_s: float,
        start_delay_s: float,
    ) -> None:
        self.world = world
        self.name = name
        self.plan = deque(parse_step(step) for step in plan)
        self.restart = restart
        self.cooperative = cooperative
        self.with_stop = with_stop
        self.grace_s = grace_s
        self.start_delay_s = start_delay_s
        self.starts = 0
        self.errors: list[Boom] = []
        self._trigger: anyio.Event | None = None
        self._outcome = "return"

    @property
    def spec(self) -> ChildSpec:
        return ChildSpec(
            self.name,
            self.run,
            restart=self.restart,
            stop=self.ask if self.with_stop else None,
            grace_s=self.grace_s,
        )

    def _boom(self, what: str) -> Boom:
        error = Boom(f"{self.name} {what} (start {self.starts})")
        self.errors.append(error)
        return error

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        world, name = self.world, self.name
        self.starts += 1
        kind, after_s = self.plan.popleft() if self.plan else ("run", math.inf)
        world.record("start", name)
        try:
            if self.start_delay_s:
                await anyio.sleep(self.start_delay_s)
            if kind == "fail_start":
                await anyio.sleep(after_s)
                world.record("fail_start", name)
                raise self._boom("failed to start")
            trigger = self._trigger = anyio.Event()
            self._outcome = "return"
            task_status.started()
            world.record("up", name)
            with anyio.move_on_after(after_s):
                await trigger.wait()
            outcome = self._outcome if trigger.is_set() else kind
        except anyio.get_cancelled_exc_class():
            world.record("cancelled", name)
            raise
        finally:
            self._trigger = None
        if outcome == "crash":
            world.record("crash", name)
            raise self._boom("crashed")
        world.record("return", name)

    def ask(self) -> None:
        """The stop callable: a cooperative probe returns at once, a stubborn one ignores it."""
        self.world.record("ask", self.name)
        if self.cooperative:
            self._fire("return")

    def crash(self) -> None:
        self._fire("crash")

    def finish(self) -> None:
        self._fire("return")

    def _fire(self, outcome: str) -> None:
        trigger = self._trigger
        if trigger is not None and not trigger.is_set():
            self._outcome = outcome
            trigger.set()


@pytest.fixture
def world() -> World:
    return World()

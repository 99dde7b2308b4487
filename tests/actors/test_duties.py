"""The Scheduler runs a list of duties, each on its own timer: a new duty is a new class.

A duty that raises a transient error (``StorageError``, ``ActorNotRunning``,
``CallTimeout``) is logged and runs again on its next tick, without stopping the others;
any other error crashes the Scheduler (its supervisor restarts it). ``RunDuty(name)`` runs
one now.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from rota.actors.duties import Duty, DutyContext
from rota.actors.kernel import ActorRef
from rota.actors.scheduler import RunDuty, Scheduler, Sweep
from rota.actors.store import Store, StoreClient
from rota.domain.event import Owner
from rota.errors import ActorNotRunning, CallTimeout, ConfigError, StorageError

pytestmark = pytest.mark.anyio

OWNER = Owner(id="w1", host="test-host", pid=1, started_at_ms=0, heartbeat_at_ms=0, queues=["q"])
#: The Store is never started: these duties do not touch the database.
STORE = StoreClient(ActorRef("store", lambda: Store(lambda: None)), timeout_s=1)  # type: ignore[arg-type, return-value]


class Counting(Duty):
    """Notes the loop time of each run; raises ``errors`` in turn first, if given."""

    name = "counting"

    def __init__(
        self,
        interval_s: float,
        *,
        name: str | None = None,
        errors: Sequence[BaseException] = (),
        log: list[str] | None = None,
    ) -> None:
        super().__init__(interval_s, name=name)
        self.runs: list[float] = []
        self.errors = list(errors)
        self.log = log if log is not None else []

    async def start(self, ctx: DutyContext) -> None:
        self.log.append(f"start {self.name}")

    async def stop(self, ctx: DutyContext) -> None:
        self.log.append(f"stop {self.name}")

    async def run(self, ctx: DutyContext) -> int:
        self.runs.append(anyio.current_time())
        self.log.append(f"run {self.name}")
        if self.errors:
            raise self.errors.pop(0)
        return len(self.runs)


@asynccontextmanager
async def running(duties: Sequence[Duty], clock: Any = None) -> AsyncIterator[ActorRef[Scheduler]]:
    """A Scheduler running ``duties``; stopped at the end (it must still be running)."""
    ref = ActorRef(
        "scheduler",
        lambda: Scheduler(
            store=STORE, owner=OWNER, wake=lambda _: None, duties=duties, clock=clock
        ),
    )
    async with anyio.create_task_group() as tg:
        await tg.start(ref.run)
        yield ref
        assert ref.running, "the scheduler stopped on its own"
        ref.request_stop()


async def until(check: Any, timeout_s: float = 10.0) -> None:
    """Poll ``check`` (the duties' runs have no event to wait on)."""
    with anyio.fail_after(timeout_s):
        while True:
            if check():
                return
            await anyio.sleep(0.005)


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def test_each_duty_runs_on_its_own_interval(anyio_backend: str) -> None:
    fast, slow = Counting(0.02, name="fast"), Counting(0.15, name="slow")
    async with running([fast, slow]):
        started = anyio.current_time()
        await until(lambda: len(slow.runs) >= 2)
    assert slow.runs[0] - started >= 0.15 - 0.005  # the first run waits one interval too
    assert min(gaps(slow.runs)) >= 0.15 - 0.005
    assert min(gaps(fast.runs)) >= 0.02 - 0.005
    assert len(fast.runs) > 2 * len(slow.runs)  # not held back by the slow one


class Calendar(Counting):
    """A duty with its own calendar (as cron will be): says when it is next due."""

    name = "calendar"

    def __init__(self, delays: list[float]) -> None:
        super().__init__(3600)
        self.delays = delays
        self.asked: list[int] = []

    def due_in_s(self, now_ms: int) -> float:
        self.asked.append(now_ms)
        return self.delays.pop(0) if self.delays else math.inf


async def test_a_duty_may_say_when_it_is_next_due(anyio_backend: str) -> None:
    duty = Calendar([0.0, 0.2, -5.0])  # a past time: due at once
    async with running([duty], clock=lambda: 1_234):
        started = anyio.current_time()
        await until(lambda: len(duty.runs) >= 3)
        await anyio.sleep(0.1)  # then never again (inf), however long we wait
    assert len(duty.runs) == 3
    assert duty.runs[0] - started < 5  # not after its interval (an hour)
    assert duty.runs[1] - duty.runs[0] >= 0.2 - 0.005
    assert duty.runs[2] - duty.runs[1] < 5
    assert duty.asked == [1_234] * 4  # asked before each run, with the runtime's clock


@pytest.mark.parametrize(
    "error",
    [StorageError("disk full"), ActorNotRunning("store stopped"), CallTimeout("store late")],
    ids=["storage", "not-running", "timeout"],
)
async def test_a_transient_failure_is_logged_retried_and_stops_no_other_duty(
    anyio_backend: str, error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Counting(0.02, name="flaky", errors=[error, error])
    steady = Counting(0.02, name="steady")
    with caplog.at_level(logging.WARNING, logger="rota.scheduler"):
        async with running([flaky, steady]):
            await until(lambda: len(flaky.runs) >= 4 and len(steady.runs) >= 4)
    messages = [r.getMessage() for r in caplog.records if r.name == "rota.scheduler"]
    assert messages == [  # once while it lasts (throttled), and when it is over
        f"scheduler: flaky skipped: {error!r}",
        messages[1],
    ]
    assert messages[1].startswith("scheduler: flaky works again (after ")


async def test_any_other_error_crashes_the_scheduler(anyio_backend: str) -> None:
    broken = Counting(0.01, name="broken", errors=[RuntimeError("a bug")])
    ref = ActorRef(
        "scheduler",
        lambda: Scheduler(store=STORE, owner=OWNER, wake=lambda _: None, duties=[broken]),
    )
    with pytest.raises(RuntimeError, match="a bug"), anyio.fail_after(5):
        await ref.run()  # returns only by crashing
    assert ref.statistics().crashes == 1


async def test_duties_start_in_order_before_any_runs_and_stop_in_reverse(
    anyio_backend: str,
) -> None:
    log: list[str] = []
    one, two = Counting(0.01, name="one", log=log), Counting(0.01, name="two", log=log)
    async with running([one, two]):
        assert log == ["start one", "start two"]
        await until(lambda: one.runs and two.runs)
    assert log[-2:] == ["stop two", "stop one"]


async def test_run_duty_runs_one_now_by_name(anyio_backend: str) -> None:
    duty = Counting(3600, name="cleanup")
    async with running([duty]) as ref:
        assert await ref.call(RunDuty("cleanup")) == 1  # its result
        assert await ref.call(RunDuty("cleanup")) == 2
        with pytest.raises(ValueError, match="no duty named 'clean'; it has: cleanup"):
            await ref.call(RunDuty("clean"))
        with pytest.raises(ValueError, match="no sweep duty"):
            await ref.call(Sweep())  # no PromoteAndRescue among its duties


async def test_a_transient_failure_of_a_duty_run_now_goes_to_the_caller_only(
    anyio_backend: str,
) -> None:
    duty = Counting(3600, name="cleanup", errors=[StorageError("disk full")])
    async with running([duty]) as ref:
        with pytest.raises(StorageError, match="disk full"):
            await ref.call(RunDuty("cleanup"))
        assert ref.running  # the Scheduler goes on
        assert await ref.call(RunDuty("cleanup")) == 2


@pytest.mark.parametrize("interval_s", [0, -1.0, math.nan, math.inf, True, "5"])
def test_a_duty_needs_a_positive_finite_interval(interval_s: Any) -> None:
    with pytest.raises(ConfigError, match="duty 'counting': interval_s must be a positive"):
        Counting(interval_s)


def test_duty_names_are_unique_in_a_scheduler() -> None:
    with pytest.raises(ConfigError, match="two duties named 'x'"):
        Scheduler(
            store=STORE,
            owner=OWNER,
            wake=lambda _: None,
            duties=[Counting(1, name="x"), Counting(2, name="x")],
        )


def test_a_duty_without_run_cannot_be_made() -> None:
    class Nothing(Duty):
        name = "nothing"

    with pytest.raises(ConfigError, match=r"duty 'nothing' \(Nothing\) defines no run\(\)"):
        Nothing(1)

"""The supervisor: starts children in order, restarts them per strategy, stops them in reverse.

Its lifecycle (start, supervise, stop), how it stops one child, why each child runs under
its own shielded cancel scope, how it classifies exits and what it logs: docs/internals.md,
"Supervisors".
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NoReturn

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec

from rota.errors import ConfigError, SupervisorGaveUp

from ._intensity import Intensity
from ._spec import ChildSpec, Restart, RestartBackoff, Strategy

__all__ = ["Supervisor", "SupervisorStatistics"]

_LOGGER = logging.getLogger("rota.supervisors")


class SupervisorStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one supervisor.

    ``restarts`` and ``total_restarts`` count over the supervisor's whole life (every
    ``run``); ``restarts_in_window`` and ``gave_up`` describe the current or last run.
    """

    name: str
    strategy: Strategy
    running: bool
    """``run`` is active (starting, supervising or stopping)."""
    children: tuple[str, ...]
    """Children that are up (started-handshake done), in list order."""
    pending: tuple[str, ...]
    """Children waiting for their (delayed) restart, in list order."""
    restarts: dict[str, int]
    """Per child: how many times it was started again (as the failed child or a sibling)."""
    total_restarts: int
    """Restarts as intensity counts them: one per exit handled (one_for_all counts 1)."""
    restarts_in_window: int
    """Restarts less than ``period_s`` old: giving up comes at ``max_restarts + 1``."""
    max_restarts: int
    period_s: float
    gave_up: bool
    """The current or last run gave up (exceeded the intensity)."""


class _Kind(Enum):
    NORMAL = "normal"
    CRASHED = "crashed"
    CANCELLED = "cancelled"  # by the supervisor: never a crash


@dataclass(frozen=True, slots=True)
class _Exit:
    kind: _Kind
    error: BaseException | None = None

    @property
    def reason(self) -> str:
        return repr(self.error) if self.kind is _Kind.CRASHED else self.kind.value


@dataclass(eq=False, slots=True)
class _Run:
    """One start of one child: its task, scope and fate. Identity is what matters: an exit
    report whose run is no longer the child's current run is stale and ignored."""

    child: _Child
    scope: anyio.CancelScope
    settled: anyio.Event = field(default_factory=anyio.Event)  # started, or finished first
    done: anyio.Event = field(default_factory=anyio.Event)
    entered: bool = False  # the task has begun running the child's code
    started: bool = False
    started_at: float = 0.0
    stopping: bool = False  # the supervisor is stopping it: its exit is not a crash
    exit: _Exit | None = None


@dataclass(eq=False, slots=True)
class _Child:
    spec: ChildSpec
    index: int
    run: _Run | None = None  # starting or up
    due: float | None = None  # waiting to be restarted at this time
    why: str = ""  # what the pending restart is for (logged with child_restarted)
    streak: int = 0  # consecutive restarts, for the backoff


class _Handshake(anyio.abc.TaskStatus[object]):
    """The ``task_status`` a child gets: records the start on its run."""

    __slots__ = ("_run",)

    def __init__(self, run: _Run) -> None:
        self._run = run

    def started(self, value: object = None) -> None:
        run = self._run
        if run.started or run.done.is_set():
            raise RuntimeError(f"child {run.child.spec.name!r} called task_status.started() twice")
        run.started = True
        run.started_at = anyio.current_time()
        run.settled.set()


def _fatal_part(exc: BaseException) -> BaseException | None:
    """The part of a child's exception that is not the supervisor's to absorb.

    Exceptions are crashes and cancellations are exits; anything else (KeyboardInterrupt,
    SystemExit, GeneratorExit, in a group or not) must propagate. A group is split by the
    types of its leaves, never classified as a whole.
    """
    absorbed = (Exception, anyio.get_cancelled_exc_class())
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(absorbed)[1]
    return None if isinstance(exc, absorbed) else exc


class _Escalate(Exception):
    """Internal: leave the supervising loop, shut down, then raise ``error``."""

    def __init__(self, error: BaseException, cause: BaseException | None, *, chain: bool) -> None:
        super().__init__(error)
        self.error = error
        self.cause = cause
        self.chain = chain


class Supervisor:
    """Runs children, restarts them per ``strategy`` and gives up past the intensity.

    ``max_restarts`` restarts within any ``period_s`` seconds are allowed; one more and the
    supervisor stops every child (reverse order) and raises ``SupervisorGaveUp``. A
    ``Supervisor`` can be run again after ``run`` returned (that is how a parent restarts
    it); each run starts with an empty intensity window, like a fresh OTP supervisor.

    Exits are handled one at a time by the task running ``run``, so strategies never
    interleave. A backoff delay does not block that loop: while one child waits for its
    restart, the exits of the others are handled.
    """

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec],
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        period_s: float = 5.0,
        restart_backoff: RestartBackoff | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"supervisor name must be a non-empty string, got {name!r}")
        try:
            self._strategy = Strategy(strategy)
        except ValueError:
            known = ", ".join(s.value for s in Strategy)
            raise ConfigError(
                f"supervisor {name!r}: unknown strategy {strategy!r} (known: {known})"
            ) from None
        if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
            raise ConfigError(
                f"supervisor {name!r}: max_restarts must be an int >= 0, got {max_restarts!r}"
            )
        if not (period_s > 0 and math.isfinite(period_s)):
            raise ConfigError(
                f"supervisor {name!r}: period_s must be finite and > 0, got {period_s!r}"
            )
        seen: set[str] = set()
        for spec in children:
            if not isinstance(spec, ChildSpec):
                raise ConfigError(f"supervisor {name!r}: not a ChildSpec: {spec!r}")
            if spec.name in seen:
                raise ConfigError(f"supervisor {name!r}: two children are named {spec.name!r}")
            seen.add(spec.name)
        self.name = name
        self._specs = tuple(children)
        self._max_restarts = max_restarts
        self._period_s = float(period_s)
        self._backoff = restart_backoff
        self._log = logger if logger is not None else _LOGGER
        self._restart_counts = dict.fromkeys(seen, 0)
        self._total_restarts = 0
        # per-run state, reset by run()
        self._active = False
        self._stop_pending = False  # request_stop() came before run() began
        self._gave_up = False
        self._children: list[_Child] = []
        self._intensity = Intensity(max_restarts, self._period_s)
        self._exits: deque[_Run] = deque()
        self._wakeup: anyio.Event | None = None  # Events need a running event loop
        self._main_scope: anyio.CancelScope | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._finished: anyio.Event | None = None

    def __repr__(self) -> str:
        return f"<Supervisor {self.name!r} {self._strategy.value} children={len(self._specs)}>"

    @property
    def strategy(self) -> Strategy:
        """How a child's exit affects its siblings (``one_for_one``...)."""
        return self._strategy

    @property
    def running(self) -> bool:
        """Whether ``run`` is active (starting, supervising or stopping)."""
        return self._active

    # -- public control --------------------------------------------------------------------

    def child_spec(
        self, *, restart: Restart = Restart.PERMANENT, grace_s: float = math.inf
    ) -> ChildSpec:
        """This supervisor as a child of another one (supervision trees).

        The ask is ``request_stop``; the default grace is unbounded (like OTP's
        ``infinity`` for supervisors) because this supervisor bounds its own shutdown by its
        children's grace periods.
        """
        return ChildSpec(
            name=self.name, run=self.run, restart=restart, stop=self.request_stop, grace_s=grace_s
        )

    def request_stop(self) -> None:
        """Ask the supervisor to stop its children (reverse order) and return from ``run``.

        Called while ``run`` is not active, the request is kept for the next ``run``, which
        then returns at once without starting anything: ``tg.start_soon(sup.run)`` followed
        by a stop before the task began must not leave the supervisor running forever.
        Safe to call from a child of this supervisor (``stop()`` from a child would wait for
        its own shutdown).
        """
        if self._active and self._main_scope is not None:
            self._main_scope.cancel()
        else:
            self._stop_pending = True

    async def stop(self) -> None:
        """``request_stop()``, then wait until ``run`` has stopped every child and ended.

        Returns at once when ``run`` is not active (see ``request_stop``).
        """
        finished = self._finished if self._active else None
        self.request_stop()
        if finished is not None:
            await finished.wait()

    def statistics(self) -> SupervisorStatistics:
        """A snapshot: its children, the restarts of each, and whether it gave up."""
        return SupervisorStatistics(
            name=self.name,
            strategy=self._strategy,
            running=self._active,
            children=tuple(
                c.spec.name for c in self._children if c.run is not None and c.run.started
            ),
            pending=tuple(c.spec.name for c in self._children if c.due is not None),
            restarts=dict(self._restart_counts),
            total_restarts=self._total_restarts,
            restarts_in_window=(
                self._intensity.in_window(anyio.current_time()) if self._active else 0
            ),
            max_restarts=self._max_restarts,
            period_s=self._period_s,
            gave_up=self._gave_up,
        )

    # -- run -------------------------------------------------------------------------------

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the children, signal ``task_status.started()``, supervise until stopped.

        Returns after ``stop()``/``request_stop()``. Raises ``SupervisorGaveUp`` when the
        intensity is exceeded, the exception of a child that failed its initial start, or
        the cancellation when cancelled from outside; always after stopping every child.
        If stopped while still starting, returns without signalling ``started`` (so a
        caller's ``tg.start(sup.run)`` raises AnyIO's "exited without calling started").
        """
        if self._active:
            raise RuntimeError(f"supervisor {self.name!r} is already running")
        self._active = True
        self._gave_up = False
        self._children = [_Child(spec, i) for i, spec in enumerate(self._specs)]
        self._intensity.clear()
        self._exits.clear()
        self._wakeup = anyio.Event()
        self._main_scope = main_scope = anyio.CancelScope()
        if self._stop_pending:
            self._stop_pending = False
            main_scope.cancel()
        self._finished = finished = anyio.Event()
        escalate: _Escalate | None = None
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                try:
                    with main_scope:  # stop() cancels this scope; it swallows that cancellation
                        try:
                            await self._start_all()
                            task_status.started()
                            await self._supervise()
                        except _Escalate as exc:
                            # not raised here: an exception in the task group's host would be
                            # wrapped in an ExceptionGroup; the caller gets it unwrapped below
                            escalate = exc
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._shutdown()
        finally:
            self._active = False
            self._tg = None
            self._main_scope = None
            finished.set()
        if escalate is not None:
            if escalate.chain:
                raise escalate.error from escalate.cause
            raise escalate.error

    # -- starting --------------------------------------------------------------------------

    async def _start_all(self) -> None:
        for child in self._children:
            run = await self._start(child)
            if not run.started:
                assert run.exit is not None
                error = run.exit.error
                assert error is not None
                if not isinstance(error, Exception):
                    # a stray (native asyncio) cancellation: raised as it is, our caller
                    # would take it for its own cancellation
                    failed = RuntimeError(f"child {child.spec.name!r} was cancelled while starting")
                    failed.__cause__ = error
                    error = failed
                error.add_note(
                    f"while starting child {child.spec.name!r} of supervisor {self.name!r}"
                )
                raise _Escalate(error, None, chain=False)
            self._emit(logging.INFO, "child_started", child, "started")

    async def _start(self, child: _Child) -> _Run:
        """Spawn the child and wait for its started-handshake (or its early end).

        If this wait is cancelled (stop), the run stays the child's current run and the
        shutdown stops it like any other.
        """
        assert self._tg is not None
        # being stopped already (a stop that came before run began): spawn nothing
        await anyio.lowlevel.checkpoint_if_cancelled()
        run = _Run(child, anyio.CancelScope(shield=True))
        child.run = run
        self._tg.start_soon(self._child_task, run, name=f"{self.name}/{child.spec.name}")
        await run.settled.wait()
        if not run.started and child.run is run:
            child.run = None
        return run

    async def _child_task(self, run: _Run) -> None:
        """Run one start of a child; classify its exit; report it to the supervising loop.

        Never raises for the child's exceptions: a crash is data for the strategy, not an
        error of the task group. Only what ``_fatal_part`` finds (KeyboardInterrupt,
        SystemExit...) propagates, which tears the supervisor down after the orderly
        shutdown.
        """
        spec = run.child.spec
        try:
            run.entered = True
            try:
                with run.scope:
                    if not run.scope.cancel_called:  # stopped before its task began: skip it
                        await spec.run(task_status=_Handshake(run))
            except Exception as exc:  # an ExceptionGroup of Exceptions is an Exception too
                run.exit = _Exit(_Kind.CRASHED, exc)
            except BaseException as exc:
                run.exit = _Exit(_Kind.CRASHED, exc)
                if _fatal_part(exc) is not None:
                    self._emit_exit(run)
                    raise
                # else a cancellation that did not come from the child's own scope (which is
                # shielded, so not from the supervisor's caller either: e.g. asyncio's native
                # Task.cancel() on the child's task): the child ended abnormally, a crash
            else:
                if run.scope.cancelled_caught or (run.scope.cancel_called and not run.started):
                    run.exit = _Exit(_Kind.CANCELLED)
                elif run.started:
                    run.exit = _Exit(_Kind.NORMAL)
                else:
                    error = RuntimeError(
                        f"child {spec.name!r} returned without calling task_status.started()"
                    )
                    run.exit = _Exit(_Kind.CRASHED, error)
            self._emit_exit(run)
        finally:
            run.done.set()
            run.settled.set()
        if run.started:
            # a run that never started is handled by whoever awaited its start
            self._exits.append(run)
            if self._wakeup is not None:
                self._wakeup.set()

    # -- supervising -----------------------------------------------------------------------

    async def _supervise(self) -> NoReturn:
        while True:
            # every exit that has happened first, then the restarts they call for, in list
            # order (so children failing together restart in a deterministic order)
            while self._exits:
                await self._on_exit(self._exits.popleft())
            await self._start_due()
            if self._exits:
                continue
            due = [c.due for c in self._children if c.due is not None]
            deadline = min(due, default=math.inf)
            if deadline <= anyio.current_time():
                continue
            # an Event + deque rather than a stream: waking up at a deadline by cancelling
            # a wait on an Event can never lose an exit report
            self._wakeup = anyio.Event()
            with anyio.CancelScope(deadline=deadline):
                await self._wakeup.wait()

    async def _start_due(self) -> None:
        """Restart every child whose restart is due, in list order."""
        while True:
            now = anyio.current_time()
            child = next((c for c in self._children if c.due is not None and c.due <= now), None)
            if child is None:
                return
            child.due = None
            self._restart_counts[child.spec.name] += 1
            run = await self._start(child)
            if run.started:
                self._emit(logging.INFO, "child_restarted", child, child.why)
            else:
                assert run.exit is not None
                # a failed start during a restart is one more restart (against intensity)
                await self._restart(child, run.exit, uptime=0.0)

    async def _on_exit(self, run: _Run) -> None:
        child = run.child
        if run is not child.run or run.stopping:
            return  # stale: the supervisor stopped this run itself, so it is not a crash
        child.run = None
        exit = run.exit
        assert exit is not None
        restart = child.spec.restart
        if restart is Restart.PERMANENT or (
            restart is Restart.TRANSIENT and exit.kind is _Kind.CRASHED
        ):
            await self._restart(child, exit, uptime=anyio.current_time() - run.started_at)
        # else: dropped; its siblings carry on

    def _affected(self, child: _Child) -> list[_Child]:
        """The children restarted along with ``child`` (itself included), in list order."""
        if self._strategy is Strategy.ONE_FOR_ONE:
            return [child]
        first = 0 if self._strategy is Strategy.ONE_FOR_ALL else child.index
        return [
            c
            for c in self._children[first:]
            if c is child or c.run is not None or c.due is not None
        ]

    async def _restart(self, child: _Child, exit: _Exit, *, uptime: float) -> None:
        """Apply the strategy to ``child``'s exit: intensity, stop siblings, schedule starts."""
        if not self._intensity.try_record(anyio.current_time()):
            self._gave_up = True
            self._emit(logging.ERROR, "supervisor_gave_up", child, exit.reason)
            error = SupervisorGaveUp(self.name, self._max_restarts, self._period_s)
            raise _Escalate(error, exit.error, chain=True)
        self._total_restarts += 1
        delay = self._backoff_delay(child, uptime)
        affected = self._affected(child)
        for sibling in reversed(affected):
            if sibling is not child and sibling.run is not None:
                await self._stop(sibling.run)
        due = anyio.current_time() + delay
        for c in affected:
            if c is not child and c.spec.restart is Restart.TEMPORARY:
                c.due = None  # temporary: never restarted, even when a sibling's restart stopped it
            else:
                c.due = due if c.due is None else max(c.due, due)
                c.why = exit.reason if c is child else f"{child.spec.name!r} exited: {exit.reason}"

    def _backoff_delay(self, child: _Child, uptime: float) -> float:
        backoff = self._backoff
        if backoff is None:
            return 0.0
        if uptime >= backoff.reset_after_s:
            child.streak = 0
        child.streak += 1
        return backoff.delay_s(child.streak)

    # -- stopping --------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        """Stop every child, reverse list order, one after another (caller shields)."""
        for child in reversed(self._children):
            child.due = None
            if child.run is not None:
                await self._stop(child.run)

    async def _stop(self, run: _Run) -> None:
        """Ask, wait up to grace, cancel, wait: shielded, so it always completes."""
        run.stopping = True
        child = run.child
        spec = child.spec
        with anyio.CancelScope(shield=True):
            if not run.done.is_set():
                # a child whose task has not begun cannot hear an ask (a nested supervisor
                # would ignore it and then run forever): cancel it before it begins
                if spec.stop is not None and run.entered:
                    with anyio.move_on_after(spec.grace_s):
                        await self._ask(child)
                        await run.done.wait()
                    if not run.done.is_set():
                        self._emit(
                            logging.WARNING,
                            "child_stop_timeout",
                            child,
                            f"still running {spec.grace_s:g} s after the ask: cancelling",
                        )
                run.scope.cancel()
                await run.done.wait()
        if child.run is run:
            child.run = None

    async def _ask(self, child: _Child) -> None:
        stop = child.spec.stop
        assert stop is not None
        try:
            result = stop()
            if result is not None:
                await result
        except Exception as exc:
            # the ask failed; cancellation will do
            self._emit(logging.WARNING, "child_stop_failed", child, repr(exc), exc_info=exc)

    # -- logging ---------------------------------------------------------------------------

    def _emit_exit(self, run: _Run) -> None:
        exit = run.exit
        assert exit is not None
        if exit.kind is _Kind.CRASHED and not run.stopping:
            self._emit(logging.WARNING, "child_exited", run.child, exit.reason, exc_info=exit.error)
        else:
            self._emit(logging.INFO, "child_exited", run.child, exit.reason)

    def _emit(
        self,
        level: int,
        event: str,
        child: _Child,
        reason: str,
        *,
        exc_info: BaseException | None = None,
    ) -> None:
        log = self._log
        if not log.isEnabledFor(level):
            return
        extra: dict[str, Any] = {
            "event": event,
            "supervisor": self.name,
            "child": child.spec.name,
            "reason": reason,
        }
        log.log(
            level,
            "supervisor %r: %s %r: %s",
            self.name,
            event,
            child.spec.name,
            reason,
            extra=extra,
            exc_info=exc_info,
        )

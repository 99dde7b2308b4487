"""WorkerPool[q]: runs the jobs of one queue.

Place in the tree: ``QueueSup[q]`` (rest_for_one) → Queue[q], LockRenewer[q], WorkerPool[q].
It is stopped first, so its leases are still renewed while its running jobs finish.

The hot path spawns no task per job and makes one Store call per batch: ``concurrency``
long-lived workers fed from a local deque, one feeder that settles finished jobs and
claims the next ones in one transaction (``settle_and_claim``), a cancel scope per job.
``prefetch="auto"`` (the default) adapts how many it claims ahead to the queue's depth
(``prefetch.AdaptivePrefetch``); a number is fixed.
How the workers are woken, when delayed jobs start, and what is logged:
docs/internals.md, "The WorkerPool".

Messages:

    JobsAvailable()             cast   there may be jobs to claim (coalesced)
    CancelJobs(leases, reason)  cast   stop those attempts (matched by job id *and* token):
                                       "lost" (do not settle) or "cancel" (settle as
                                       CANCELLED)
    CurrentLeases() → list[LeaseRef]   every lease held, running or buffered
    SetPaused(paused)           cast   stop / resume claiming (settlements go on)
    PoolStats() → WorkerPoolStatistics
"""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Literal

import anyio
import anyio.lowlevel
import msgspec

from rota.actors._backend import is_cancellation
from rota.actors._instruments import Instruments
from rota.actors._joblog import job_log, log_started, report_attempt
from rota.actors._throttle import Throttled
from rota.actors.kernel import Actor
from rota.actors.prefetch import AUTO_PREFETCH_HORIZON_S, AdaptivePrefetch
from rota.actors.store import StoreClient
from rota.domain.instrument import AttemptOutcome
from rota.domain.job import Job, JobState
from rota.domain.outcome import FailureKind
from rota.errors import ActorNotRunning, CallTimeout, StorageError
from rota.storage import ops
from rota.storage.engine import ClaimRequest, Completion, Failure, LeaseRef, Settled

__all__ = [
    "CancelJobs",
    "CurrentLeases",
    "Executor",
    "JobRun",
    "JobsAvailable",
    "PoolStats",
    "SetPaused",
    "WorkerPool",
    "WorkerPoolStatistics",
]

log = logging.getLogger("rota.worker")

#: How long the feeder waits before asking again after a Store error (it retries).
STORE_RETRY_S: Final = 0.5
#: A worker yields to the scheduler at least once per this many jobs it takes.
CHECKPOINT_EVERY: Final = 32
#: At shutdown, how long after cancelling the jobs that outlived the grace period a job
#: still running is logged as one that ignores cancellation.
STUCK_WARNING_S: Final = 1.0
#: The longest the feeder backs off when the engine's clock does not reach a delayed job's
#: time as the monotonic clock said it would (a test's frozen ``Clock``; a clock set back).
DUE_BACKOFF_MAX_S: Final = 1.0


class JobsAvailable(msgspec.Struct, frozen=True):
    """There may be jobs to claim (coalesced: one wake-up for many)."""


class CancelJobs(msgspec.Struct, frozen=True):
    """Stop the attempts holding these leases. A lease names one attempt: after a pause
    longer than the ttl the same job may have been claimed again (a new token), and a
    notice about the old lease must not stop the new attempt."""

    leases: list[LeaseRef]
    reason: Literal["lost", "cancel"]


class CurrentLeases(msgspec.Struct, frozen=True):
    """Every lease the pool holds, running or buffered (``list[LeaseRef]``)."""


class SetPaused(msgspec.Struct, frozen=True):
    """Stop or resume claiming (settlements go on)."""

    paused: bool


class PoolStats(msgspec.Struct, frozen=True):
    """The pool's ``WorkerPoolStatistics``."""


class WorkerPoolStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one pool: its slots, what it holds, and what its jobs became."""

    queue: str
    concurrency: int
    prefetch: int
    """Jobs the next claim asks for beyond the free slots (adapted, if ``"auto"``)."""
    running: int
    buffered: int
    paused: bool
    stopping: bool
    """Stopping: it claims no more and lets its running jobs finish (the shutdown)."""
    claimed: int
    completed: int
    failed: int
    """Attempts that ended in a failure (retried or not)."""
    cancelled: int
    lost: int
    """Jobs stopped because their lease was lost (not settled by this pool)."""
    store_calls: int


class JobRun:
    """A job this pool holds: buffered, then running."""

    __slots__ = ("cancel_reason", "ended_at", "job", "logs", "scope", "started_at")

    def __init__(self, job: Job) -> None:
        self.job = job
        self.scope: anyio.CancelScope | None = None
        self.cancel_reason: str | None = None
        self.started_at = 0.0
        self.ended_at = 0.0
        """Set when the attempt's outcome is logged (failures; completions at INFO)."""
        self.logs: list[str] = []

    def duration_s(self) -> float | None:
        """How long the attempt ran (None: it never started)."""
        return self.ended_at - self.started_at if self.started_at else None

    @property
    def token(self) -> int:
        """The fencing token of the job's lease."""
        assert self.job.token is not None
        return self.job.token

    def cancel(self, reason: str) -> None:
        """Stop the attempt; the first reason is kept, but ``"lost"`` wins over any (a job
        whose lease was lost is not settled)."""
        if self.cancel_reason is None or reason == "lost":
            self.cancel_reason = reason
        if self.scope is not None:
            self.scope.cancel()


#: Runs one job (decode, call the handler under its timeout, encode the result) and says
#: how it ended. Must not swallow cancellation.
Executor = Callable[[JobRun], Awaitable[Completion | Failure]]


class _Signal:
    """Wakes the feeder: set any number of times, consumed by one wait. Setting a signal
    already set costs one attribute test (it happens once per job)."""

    __slots__ = ("_event", "_is_set")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._is_set = False

    def set(self) -> None:
        if not self._is_set:
            self._is_set = True
            self._event.set()

    async def wait(self, timeout_s: float = math.inf) -> None:
        if not self._is_set:
            with anyio.move_on_after(timeout_s):
                await self._event.wait()
        if self._is_set:
            self._event = anyio.Event()
            self._is_set = False


class WorkerPool(Actor):
    """Runs one queue's jobs on ``concurrency`` worker tasks."""

    def __init__(
        self,
        *,
        queue: str,
        owner: str,
        store: StoreClient,
        execute: Executor,
        concurrency: int,
        prefetch: int | Literal["auto"],
        lease_ttl_ms: int,
        shutdown_grace_s: float = 10.0,
        instruments: Instruments | None = None,
    ) -> None:
        self.instruments = instruments if instruments is not None and instruments.attempts else None
        """Those installed that watch attempts (``attempt_ended``), if any."""
        self.queue = queue
        self.owner = owner
        self.store = store
        self.execute = execute
        self.concurrency = concurrency
        self.adaptive: AdaptivePrefetch | None = None
        """Sizes ``prefetch`` after each claim when it is ``"auto"``; None: fixed."""
        if prefetch == "auto":
            horizon_s = min(AUTO_PREFETCH_HORIZON_S, lease_ttl_ms / 10_000)
            self.adaptive = AdaptivePrefetch(concurrency, horizon_s=horizon_s)
            prefetch = 0
        self.prefetch = prefetch
        """Jobs claimed beyond the free slots."""
        self.lease_ttl_ms = lease_ttl_ms
        self.paused = False
        self.shutdown_grace_s = shutdown_grace_s
        self.held: dict[int, JobRun] = {}
        self.running = 0
        self.completions: list[Completion] = []
        self.failures: list[Failure] = []
        self.completed_runs: list[JobRun] = []
        """The runs of ``completions``, while INFO lines are logged or an instrument
        watches attempts (``log_completed``)."""
        self.failed_runs: list[JobRun] = []
        """The runs of ``failures``, in the same order."""
        self.log_completed = self._report_completed()
        """Whether completions are reported (logged, or instrumented): read again after
        each batch is stored."""
        self.log_started = job_log.isEnabledFor(logging.DEBUG)
        """Whether starts are logged (DEBUG): read with ``log_completed``."""
        self.stopping = False
        self.maybe_work = True
        self.wake = _Signal()
        self.idle = _Signal()
        self.store_lock = anyio.Lock()
        """Held by the feeder's Store call, and by on_stop's last settlements."""
        self.grace_scope: anyio.CancelScope | None = None
        self.aborted = False
        self.counts = dict.fromkeys(
            ("claimed", "completed", "failed", "cancelled", "lost", "store_calls"), 0
        )
        self.ready: deque[JobRun] = deque()
        """Claimed jobs not yet taken by a worker."""
        self.parked: list[anyio.Event] = []
        """One event per parked (idle) worker, set to wake it."""
        self.waking = 0
        """Workers woken and not yet running: while one is on its way, no other is woken."""
        self.direct = 0
        """Slots promised to in-flight direct claims (``direct_claim``)."""
        self.started = False
        """Set by on_start: before it, no direct claim (no worker would run the jobs)."""
        self.throttled = Throttled(log)
        self.due_at: float | None = None
        """When (monotonic) the queue's next delayed job is due, as the last claim that came
        up short said: the feeder claims then (the claim promotes it), not at the
        Scheduler's next sweep. None: no delayed job, or claims did not come up short."""
        self.due_ms: int | None = None
        """That job's due time, on the engine's clock."""
        self.timed_for_ms: int | None = None
        """The due time (engine clock) the feeder's next claim was timed for, if it was."""
        self.due_backoff_s = 0.0
        """The least wait for a due time, doubled each time a claim timed for one finds the
        engine's clock short of it (see ``DUE_BACKOFF_MAX_S``); 0 while clocks agree."""

    # -- actor ------------------------------------------------------------------------

    async def on_start(self) -> None:
        """Start the worker tasks and the feeder."""
        self.started = True
        for i in range(self.concurrency):
            self.tasks.start_soon(self._worker, name=f"rota-worker-{self.queue}-{i}")
        self.tasks.start_soon(self._feeder, name=f"rota-feeder-{self.queue}")

    async def on_stop(self) -> None:
        """Stop claiming; give running jobs ``shutdown_grace_s``; cancel the rest; hand in
        every settlement. Leases still held (buffered or cancelled jobs) stay in the
        database for the runtime to release."""
        self.stopping = True
        for event in self.parked:  # parked workers see stopping and return
            event.set()
        self.parked.clear()
        self.wake.set()
        grace_s = 0.0 if self.aborted else self.shutdown_grace_s
        with anyio.move_on_after(grace_s) as self.grace_scope:
            while self.running:
                await self.idle.wait()
        interrupted = []
        for run in list(self.held.values()):
            if run.started_at and run.cancel_reason is None:  # unstarted: handed back below
                run.cancel("shutdown")
                interrupted.append(run)
        warn_at = time.monotonic() + STUCK_WARNING_S
        while self.running:
            await self.idle.wait(0.05)
            if warn_at and time.monotonic() >= warn_at:
                warn_at = 0.0
                self._warn_stuck([run for run in interrupted if run.scope is not None])
        async with self.store_lock:  # after the feeder's call in flight, if any
            await self._flush()
            await self._hand_back_unstarted()
            await self._release(interrupted)

    def _warn_stuck(self, runs: list[JobRun]) -> None:
        """Say which jobs the shutdown still waits for, and why that can be."""
        for run in runs:
            log.warning(
                "queue %s: job %d has not stopped %.1f s after it was cancelled at the end "
                "of the shutdown grace period: its handler ignores cancellation, and the "
                "shutdown waits for it (a blocking call on the event loop; a wait for a thread "
                "that cannot be abandoned, e.g. anyio.to_thread.run_sync without "
                "abandon_on_cancel=True: a plain def handler, in thread mode, is not waited "
                "for; in process mode, a child that ignores SIGTERM, killed after kill_grace_s)",
                self.queue,
                run.job.id,
                STUCK_WARNING_S,
                extra={"job_id": run.job.id, "queue": self.queue, "attempt": run.job.attempt},
            )

    async def _release(self, runs: list[JobRun]) -> None:
        """Jobs this stop interrupted run again at once (a pool restarted by its
        supervisor must not leave them to expire). Uncounted after a clean stop, as at the
        runtime's shutdown; after a crash of this pool, counted as stalls: whatever
        crashed it may be one of them, and a job must not crash pools forever."""
        held = [run for run in runs if self.held.get(run.job.id) is run]
        if not held:
            return
        as_stall = self.crashed is not None
        if as_stall:
            log.error(
                "queue %s: the worker pool crashed (%r); its %d running jobs count a stall",
                self.queue,
                self.crashed,
                len(held),
            )

        await self._give_back(
            held, lambda leases: ops.Release(leases, as_stall=as_stall), "release interrupted jobs"
        )

    async def _give_back(
        self,
        runs: list[JobRun],
        give_back: Callable[[list[LeaseRef]], ops.Op[list[int]]],
        what: str,
    ) -> None:
        """Return the jobs' leases through the Store (``unclaim`` or ``release``) and stop
        holding them. If the Store fails, they are not renewed any more: their leases
        expire and the jobs are rescued."""
        with anyio.CancelScope(shield=True):
            try:
                await self.store.run(give_back([LeaseRef(run.job.id, run.token) for run in runs]))
            except (StorageError, ActorNotRunning, CallTimeout) as exc:
                log.warning("queue %s: could not %s: %r", self.queue, what, exc)
        for run in runs:
            if self.held.get(run.job.id) is run:
                del self.held[run.job.id]

    def abort(self) -> None:
        """Cut the shutdown grace period short: cancel running jobs now (they are released
        and run again). Safe to call at any time; only matters while stopping."""
        self.aborted = True
        if self.grace_scope is not None:
            self.grace_scope.cancel()

    async def _hand_back_unstarted(self) -> None:
        """Jobs claimed ahead and never started go back as if never claimed: their attempt
        is not counted (the rest of the owner's leases are released by the runtime)."""
        runs = [run for run in self.held.values() if not run.started_at and not run.cancel_reason]
        if not runs:
            return
        for run in runs:
            run.cancel("handed back")  # a worker that takes it from the buffer skips it
        await self._give_back(runs, ops.Unclaim, "hand back unstarted jobs")
        self.wake.set()  # slots freed: settlements waiting to ride with a claim may go

    async def handle(self, message: Any) -> Any:
        """Wake-ups, pause and resume, statistics, cancels (see the module docstring)."""
        match message:
            case JobsAvailable():
                self.maybe_work = True
                self.wake.set()
            case CancelJobs(leases, reason):
                for lease in leases:
                    run = self.held.get(lease.job_id)
                    if run is not None and run.job.token == lease.token:
                        run.cancel(reason)
            case CurrentLeases():
                return self.current_leases()
            case SetPaused(paused):
                # Claims honour the stored flag (so a resume from any process works); here
                # only what this pool already holds must not start while paused.
                self.paused = paused
                self.maybe_work = True
                self.wake.set()
                if paused:
                    await self._hand_back_unstarted()
            case PoolStats():
                return self.statistics()
            case _:
                return TypeError(f"WorkerPool does not handle {message!r}")
        return None

    def current_leases(self) -> list[LeaseRef]:
        """Every lease held: running and buffered jobs."""
        return [LeaseRef(run.job.id, run.token) for run in self.held.values()]

    def statistics(self) -> WorkerPoolStatistics:
        """A snapshot of the pool's counters."""
        return WorkerPoolStatistics(
            queue=self.queue,
            concurrency=self.concurrency,
            prefetch=self.prefetch,
            running=self.running,
            buffered=len(self.held) - self.running,
            paused=self.paused,
            stopping=self.stopping,
            **self.counts,
        )

    # -- feeding ----------------------------------------------------------------------

    def _free(self) -> int:
        return self.concurrency + self.prefetch - len(self.held) - self.direct

    # -- direct claims (an in-process enqueue claims for an idle pool) ----------------

    def direct_claim(self, n: int) -> ClaimRequest | None:
        """A claim for up to ``n`` jobs that an in-process enqueue may make in its own
        transaction, if this pool is idle: running, not paused, nothing buffered, and its
        last claim found the queue empty (else its feeder claims anyway). The slots stay
        promised until ``direct_claimed`` or ``direct_failed``."""
        if self.stopping or self.paused or self.maybe_work or self.ready or not self.started:
            return None
        free = min(n, self._free())
        if free <= 0:
            return None
        self.direct += free
        return ClaimRequest(self.queue, self.owner, free, self.lease_ttl_ms)

    def direct_claimed(self, claim: ClaimRequest, jobs: Sequence[Job]) -> None:
        """Take the jobs a direct claim got: they run as if the feeder had claimed them."""
        self.direct -= claim.n
        self.counts["claimed"] += len(jobs)
        self._take(jobs)
        if self.stopping:  # stopping meanwhile: never started, handed back by on_stop (or,
            self.wake.set()  # if it is past that, released with the owner's leases)

    def direct_failed(self, claim: ClaimRequest) -> None:
        """The direct claim's outcome is unknown (an error): free its slots, look again."""
        self.direct -= claim.n
        self.maybe_work = True
        self.wake.set()

    def _take(self, jobs: Sequence[Job]) -> None:
        held, ready = self.held, self.ready
        for job in jobs:
            old = held.get(job.id)
            if old is not None:
                # Claimed again while an earlier attempt of it is still here (a pause
                # longer than the ttl: its lease expired and it was rescued): that
                # attempt's lease is gone, so it must not be settled.
                old.cancel("lost")
            run = JobRun(job)
            held[job.id] = run
            ready.append(run)
        if ready:
            self._wake_worker()

    async def _feeder(self) -> None:
        # With prefetch, claim in batches of at least three quarters of the window while
        # the buffer still feeds the workers: the Store claims the next batch while the
        # loop runs this one, and bigger batches share one commit (half the window
        # drained 48,600 jobs/s in the benchmark, three quarters 51,500). Without prefetch
        # (or once the buffer is dry), claim any free slot: workers never wait for it.
        while not self.stopping:
            window = self.concurrency + self.prefetch  # "auto": adapted after each claim
            batch_min = max(1, window * 3 // 4) if self.prefetch else 1
            if self.failures:
                # A failure may put its job back in the queue at once (a retry without
                # delay): claim in the same transaction, the failures are applied first.
                self.maybe_work = True
            if self.due_at is not None and time.monotonic() >= self.due_at:
                self._due_now()
            want = self._free()
            buffered = len(self.held) - self.running
            claim = None
            if want > 0 and self.maybe_work and (want >= batch_min or buffered == 0):
                claim = ClaimRequest(self.queue, self.owner, want, self.lease_ttl_ms)
            settle = len(self.completions) + len(self.failures)
            if claim is None and (
                not settle or (self.maybe_work and buffered and settle < batch_min)
            ):
                # nothing to do, or settlements that can ride with the next claim
                await self.wake.wait(self._until_due())
                continue
            # Under the lock: on_stop takes it before its last settlements and hand-backs,
            # so a claim in flight when the pool starts stopping is handed back too.
            async with self.store_lock:
                if self.stopping:
                    break  # on_stop settles what is left
                completions, failures = self.completions, self.failures
                completed_runs, failed_runs = self.completed_runs, self.failed_runs
                self.completions, self.failures = [], []
                self.completed_runs, self.failed_runs = [], []
                try:
                    # Shielded: once sent, the Store commits it whatever happens here, and
                    # the jobs it claims must reach this pool (a crash of the pool hands
                    # them back, uncounted, in on_stop) rather than stay leased by nobody.
                    with anyio.CancelScope(shield=True):
                        op = ops.SettleAndClaim(completions, failures, claim)
                        settled = await self.store.run(op)
                except (StorageError, ActorNotRunning, CallTimeout) as exc:
                    # The Store restarts under its supervisor, or waits out a full disk;
                    # keep what is unsettled.
                    self.throttled.warning(
                        "store", "queue %s: store call failed (%r); retrying", self.queue, exc
                    )
                    self.completions[:0] = completions
                    self.failures[:0] = failures
                    self.completed_runs[:0] = completed_runs
                    self.failed_runs[:0] = failed_runs
                    settled = None
                if settled is not None:
                    self.throttled.clear("store", f"queue {self.queue}: store calls work again")
                    self._settled(completed_runs, failed_runs, settled)
                    if failures and claim is None:
                        # A failure that ended while this call waited for the lock rode
                        # along without a claim: its retry may be due now.
                        self.maybe_work = True
                    if claim is not None:
                        if len(settled.claimed) < claim.n:
                            self.maybe_work = False  # empty until someone says otherwise
                            self._next_due(settled)
                        elif self.due_at is not None or self.timed_for_ms is not None:
                            self._clear_due()  # full: it claims again as slots free up
                        self.counts["claimed"] += len(settled.claimed)
                        if self.adaptive is not None:
                            self._adapt(claim.n, len(settled.claimed))
                        self._take(settled.claimed)
            if settled is None:
                await anyio.sleep(STORE_RETRY_S)

    def _adapt(self, asked: int, got: int) -> None:
        """Size the next claim ("auto"): deeper while claims come back full."""
        assert self.adaptive is not None
        counts = self.counts
        ended = counts["completed"] + counts["failed"] + counts["cancelled"] + counts["lost"]
        self.prefetch = self.adaptive.on_claim(asked, got, ended=ended, now=time.monotonic())

    # -- delayed jobs: claimed when due, not at the Scheduler's next sweep ----------------

    def _until_due(self) -> float:
        """How long the feeder may wait for a wake-up before the next due time."""
        due_at = self.due_at
        return math.inf if due_at is None else max(due_at - time.monotonic(), 0.0)

    def _due_now(self) -> None:
        """The next delayed job's time has come: claim (the claim promotes it)."""
        self.timed_for_ms, self.due_ms, self.due_at = self.due_ms, None, None
        self.maybe_work = True

    def _clear_due(self) -> None:
        self.due_at = self.due_ms = self.timed_for_ms = None
        self.due_backoff_s = 0.0

    def _next_due(self, settled: Settled) -> None:
        """A claim came up short: wait for the queue's next delayed job, if it has one.

        The due time is on the engine's clock (the wall clock, or a test's); the wait is in
        monotonic time, from the claim's own reading of that clock. If a claim timed for a
        due time finds the engine's clock still short of it, the clocks disagree (a frozen
        test ``Clock``, a wall clock set back): the wait then backs off, doubling up to
        ``DUE_BACKOFF_MAX_S``, rather than claiming in a loop; the Scheduler's sweep and
        every wake-up still apply."""
        timed_for, self.timed_for_ms = self.timed_for_ms, None
        due, now = settled.next_due_ms, settled.now_ms
        if due is None or now is None:
            self.due_at = self.due_ms = None
            return
        if timed_for is not None:
            if now < timed_for:
                self.due_backoff_s = min(max(2 * self.due_backoff_s, 0.001), DUE_BACKOFF_MAX_S)
            else:
                self.due_backoff_s = 0.0
        self.due_ms = due
        self.due_at = time.monotonic() + max((due - now) / 1000, self.due_backoff_s)

    def _settled(
        self, completed_runs: list[JobRun], failed_runs: list[JobRun], settled: Settled
    ) -> None:
        """A batch was stored: log what it settled (failures as the engine decided them,
        completions it confirmed), and read again whether completions are logged."""
        self.counts["store_calls"] += 1
        lost = settled.lost
        if lost:
            log.warning(
                "queue %s: %d settlements refused, leases lost: %s", self.queue, len(lost), lost
            )
        if failed_runs:
            self._log_failures(failed_runs, settled)
        if completed_runs:
            refused = set(lost)
            for run in completed_runs:
                if run.job.id not in refused:
                    self._log_attempt(run, "completed", logging.INFO)
        self.log_completed = self._report_completed()
        self.log_started = job_log.isEnabledFor(logging.DEBUG)

    def _log_failures(self, runs: list[JobRun], settled: Settled) -> None:
        """One line per failed attempt stored: a WARNING saying whether it runs again (and
        when) or failed for good, as the engine decided; an INFO line for a cancel."""
        outcomes = {failed.job_id: failed for failed in settled.failed}
        now_ms = settled.now_ms
        for run in runs:
            failed = outcomes.get(run.job.id)
            if failed is None:
                continue  # its lease was lost: refused, reported above
            if failed.state is JobState.CANCELLED:
                self._log_attempt(run, "cancelled", logging.INFO, failed.error)
            elif failed.state in (JobState.WAITING, JobState.DELAYED):
                retry_in_s = 0.0 if now_ms is None else (failed.run_at_ms - now_ms) / 1000
                self._log_attempt(run, "retrying", logging.WARNING, failed.error, retry_in_s)
            else:
                self._log_attempt(run, "failed", logging.WARNING, failed.error)

    def _report_completed(self) -> bool:
        return self.instruments is not None or job_log.isEnabledFor(logging.INFO)

    def _log_attempt(
        self,
        run: JobRun,
        outcome: AttemptOutcome,
        level: int,
        error: str | None = None,
        retry_in_s: float | None = None,
    ) -> None:
        """Report an ended attempt: its log line, and to the instruments."""
        report_attempt(
            level,
            run.job,
            outcome,
            instruments=self.instruments,
            duration_s=run.duration_s(),
            error=error,
            retry_in_s=retry_in_s,
        )

    async def _flush(self) -> None:
        """Hand in what is left to settle (shutdown). If the Store cannot take them (a
        full disk), the jobs stay leased: released with the owner, or rescued later."""
        if self.completions or self.failures:
            completions, failures = self.completions, self.failures
            self.completions, self.failures = [], []
            completed_runs, failed_runs = self.completed_runs, self.failed_runs
            self.completed_runs, self.failed_runs = [], []
            with anyio.CancelScope(shield=True):
                try:
                    settled = await self.store.run(ops.SettleAndClaim(completions, failures, None))
                except (StorageError, ActorNotRunning, CallTimeout) as exc:
                    log.warning(
                        "queue %s: %d outcomes could not be stored at shutdown (%r); their "
                        "jobs run again",
                        self.queue,
                        len(completions) + len(failures),
                        exc,
                    )
                    return
            self._settled(completed_runs, failed_runs, settled)

    # -- running ----------------------------------------------------------------------

    def _wake_worker(self) -> None:
        """Wake one parked worker, unless one is already on its way."""
        if self.parked and not self.waking:
            self.waking += 1
            self.parked.pop().set()

    async def _park(self) -> None:
        event = anyio.Event()
        self.parked.append(event)
        try:
            await event.wait()
        finally:
            if event.is_set():
                if not self.stopping:
                    self.waking -= 1
            else:  # cancelled while parked (the pool stops)
                self.parked.remove(event)

    async def _worker(self) -> None:
        # One cancel scope serves every job this worker runs until one of them is
        # cancelled (timeout, cancel request, lost lease, shutdown): opening and closing a
        # scope per job cost about a third of the event loop's time in the drain profile.
        # A job's scope is only reachable (``run.scope``) while that job runs, so a
        # cancellation meant for one job never reaches another.
        ready = self.ready
        taken = 0
        while not self.stopping:
            with anyio.CancelScope() as scope:
                while not self.stopping:
                    if not ready:
                        await self._park()
                        taken = 0
                        continue
                    run = ready.popleft()
                    if ready:
                        self._wake_worker()  # the next job may not wait for this one
                    await self._run(run, scope)
                    if scope.cancel_called:
                        break  # spent: the next job gets a fresh scope
                    # Yield every CHECKPOINT_EVERY jobs run back to back, so a run of
                    # handlers that never await stays fair to the rest of the loop.
                    taken += 1
                    if taken >= CHECKPOINT_EVERY:
                        taken = 0
                        await anyio.lowlevel.checkpoint()
        # Draining: what is still in ``ready`` stays held, handed back by on_stop.

    async def _run(self, run: JobRun, scope: anyio.CancelScope) -> None:
        job = run.job
        outcome: Completion | Failure | None = None
        self.running += 1
        try:
            if run.cancel_reason is None:
                run.started_at = time.monotonic()
                run.scope = scope
                if self.log_started:
                    log_started(job)
                try:
                    outcome = await self.execute(run)
                except anyio.get_cancelled_exc_class():
                    if not scope.cancel_called:
                        raise  # not this job's cancellation: the pool itself is stopping
                    # This job's: handled below by its reason. The worker leaves the scope
                    # without another checkpoint, so nothing else sees it cancelled.
                except BaseException as exc:  # nothing a job does may stop the pool
                    if not scope.cancel_called and is_cancellation(exc):
                        raise
                    outcome = _broken_attempt(run, exc)
                finally:
                    run.scope = None
            reason = run.cancel_reason
            if reason == "lost":
                outcome = None
                self.counts["lost"] += 1
                run.ended_at = time.monotonic()
                self._log_attempt(run, "lost", logging.WARNING)
            elif reason == "cancel":
                outcome = Failure(job.id, run.token, "cancelled on request", FailureKind.CANCELLED)
            elif reason == "shutdown":
                outcome = None  # released (not counted against it) by the runtime
        finally:
            self.running -= 1
            if (outcome is not None or run.cancel_reason in ("lost", "cancel")) and (
                self.held.get(job.id) is run
            ):
                del self.held[job.id]
            if self.stopping:
                self.idle.set()
        if outcome is None:
            return
        if isinstance(outcome, Completion):
            self.completions.append(outcome)
            self.counts["completed"] += 1
            if self.log_completed:
                run.ended_at = time.monotonic()
                self.completed_runs.append(run)
        else:
            self.failures.append(outcome)
            run.ended_at = time.monotonic()
            self.failed_runs.append(run)
            kind = outcome.kind
            self.counts["cancelled" if kind is FailureKind.CANCELLED else "failed"] += 1
        self.wake.set()


def _broken_attempt(run: JobRun, exc: BaseException) -> Failure:
    """The executor itself raised (it turns what a handler raises into outcomes, so this is
    a fault of rota's or of the environment): the attempt fails, counted, and the pool goes
    on with the next job."""
    log.error(
        "job %d: attempt %d ended with an internal error: %r",
        run.job.id,
        run.job.attempt,
        exc,
        exc_info=exc,
        extra={"job_id": run.job.id, "queue": run.job.queue, "attempt": run.job.attempt},
    )
    text = "".join(traceback.format_exception(exc))[-8000:]
    return Failure(
        run.job.id, run.token, f"internal error running the job: {text}", FailureKind.ERROR
    )

"""Scheduler: the runtime's clockwork.

Place in the tree: second child of the Runtime supervisor, after the Store and before the
queues; stopped after every queue (it then releases what the runtime still holds).

On start it registers the runtime as a lease owner, and releases at once the leases of
owners on the same host whose process is gone (a restart after ``kill -9`` re-runs their
jobs in about a second rather than a lease ttl). Then, on its own timers:

* every ``scheduler_interval_s``: promote due delayed jobs, rescue expired leases (each a
  stall: it counts as an attempt and follows the job's backoff; past ``max_stalls`` the
  job fails as poison; one WARNING per job on the ``rota.job`` logger says which);
  queues that gained ready jobs are woken;
* every ``heartbeat_interval_s``: record that the owner is alive, with what its
  ``describe`` callback reports of its execution pools (for ``rota info``; also recorded
  at registration); a ``describe`` that raises, or reports what JSON cannot hold, is
  logged and the heartbeat goes without pools (the last ones reported stay);
* every ``retention_interval_s``: delete finished jobs past their queue's retention, and
  old events; fail for good the jobs whose row holds a state rota does not know.

On stop it releases every lease the runtime still holds (jobs interrupted by the shutdown,
or claimed and not started) so they run again at once, without counting against them, and
removes the owner.

Messages: ``Sweep()`` → ``SweepResult`` runs one promote+rescue pass now (tests, CLI).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import anyio
import msgspec

from rota.actors._instruments import Instruments
from rota.actors._joblog import report_attempt
from rota.actors._throttle import Throttled
from rota.actors.kernel import Actor
from rota.actors.store import StoreClient
from rota.domain.event import Owner, possible_pid
from rota.domain.instrument import AttemptOutcome
from rota.domain.job import Job, JobState
from rota.errors import ActorNotRunning, CallTimeout, StorageError
from rota.storage import ops
from rota.storage.engine import LeaseRef, Rescued

__all__ = [
    "LIVE_OWNERS",
    "RetentionPolicy",
    "Scheduler",
    "SchedulerSettings",
    "Sweep",
    "SweepResult",
    "owner_alive",
    "pid_alive",
    "process_started_ms",
]

log = logging.getLogger("rota.scheduler")

_TRANSIENT = (ActorNotRunning, CallTimeout, StorageError)
#: A forward step of the wall clock, beyond what the monotonic clock measured between two
#: sweeps, that counts as a jump (NTP stepping the clock, a VM resumed, a laptop woken).
CLOCK_JUMP_MS: Final = 1_000


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


_JSON: Final = msgspec.json.Encoder()


class Sweep(msgspec.Struct, frozen=True):
    pass


class SweepResult(msgspec.Struct, frozen=True):
    promoted: int
    requeued: list[int]
    failed: list[int]
    cancelled: list[int]


class RetentionPolicy(msgspec.Struct, frozen=True, kw_only=True):
    queue: str
    completed_s: float | None
    completed: int | None
    failed_s: float | None
    failed: int | None


class SchedulerSettings(msgspec.Struct, frozen=True, kw_only=True):
    scheduler_interval_s: float
    heartbeat_interval_s: float
    retention_interval_s: float
    retain_events_s: float
    retention: list[RetentionPolicy]


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (a zombie does not count).
    Never raises: an impossible pid (0, negative, beyond ``pid_t``: from a corrupt row)
    names no process."""
    if not possible_pid(pid):
        return False  # os.kill would signal a process group, or raise OverflowError
    try:
        os.kill(pid, 0)
    except PermissionError:
        pass  # exists, owned by someone else
    except (OSError, OverflowError):
        return False  # ProcessLookupError: no such process
    stat = _proc_stat(pid)
    return stat is None or stat[0] != "Z"


#: The owner ids of the runtimes running in this process now. Liveness is a runtime's,
#: not a pid's: two runtimes of one process (two Apps, a test running a worker next to
#: its app) must not take each other for dead.
LIVE_OWNERS: Final[set[str]] = set()


def owner_alive(owner: Owner, me: Owner) -> bool:
    """Whether a same-host owner (a runtime) still runs.

    With our pid: only if it is one of this process's running runtimes (``LIVE_OWNERS``);
    otherwise it is an earlier process that had our pid (in a container every restart is
    pid 1 again). With another pid: not when that pid is gone or a zombie, or when the
    process now holding the pid started after the owner registered (the pid was reused).
    Where ``/proc`` is missing, only the first checks run. An impossible pid (a corrupt
    row) is not alive.
    """
    if owner.pid == me.pid:
        return owner.id in LIVE_OWNERS
    if not pid_alive(owner.pid):
        return False
    started_ms = process_started_ms(owner.pid)
    return started_ms is None or started_ms <= owner.started_at_ms + _START_SLACK_MS


#: /proc gives process start times to the clock tick, and boot time to the second.
_START_SLACK_MS: Final = 2_000


def _proc_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat (state first), or None where unavailable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    return data[data.rfind(")") + 2 :].split()


def process_started_ms(pid: int) -> int | None:
    """When a process started, in ms since the epoch (Linux), else None."""
    fields = _proc_stat(pid)
    if fields is None or len(fields) < 20:
        return None
    try:
        with open("/proc/stat", "rb") as f:
            boot_s = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        ticks = int(fields[19])  # field 22 of the whole line: starttime, in clock ticks
        return round((boot_s + ticks / os.sysconf("SC_CLK_TCK")) * 1000)
    except (OSError, StopIteration, ValueError):
        return None


class Scheduler(Actor):
    def __init__(
        self,
        *,
        store: StoreClient,
        owner: Owner,
        settings: SchedulerSettings,
        wake: Callable[[Sequence[str] | None], None],
        describe: Callable[[], dict[str, Any]] | None = None,
        held: Callable[[], list[LeaseRef]] | None = None,
        clock: Callable[[], int] | None = None,
        lease_ttl_s: float = 30.0,
        instruments: Instruments | None = None,
    ) -> None:
        self.instruments = instruments
        self.store = store
        self.owner = owner
        self.settings = settings
        self.wake = wake
        self.describe = describe
        self.held = held
        self.clock = clock if clock is not None else _wall_clock_ms
        self.lease_ttl_s = lease_ttl_s
        self.sweeps = self.promoted = self.rescued = 0
        self.released_dead: list[int] = []
        self.clock_jumps = 0
        self.throttled = Throttled(log)
        self._last_sweep: tuple[int, float] | None = None
        """(wall ms, monotonic s) at the last sweep: a forward jump of the wall clock."""
        self._rescue_from = 0.0
        """Monotonic time before which expired leases are not rescued (after a jump)."""

    async def on_start(self) -> None:
        self._last_sweep = (self.clock(), time.monotonic())  # a jump from now on is seen
        pools = self._pools()
        owner = self.owner if pools is None else msgspec.structs.replace(self.owner, pools=pools)
        await self.store.run(ops.RegisterOwner(owner))
        await self._release_dead_owners()
        s = self.settings
        self.tasks.start_soon(self._every, s.scheduler_interval_s, self.sweep)
        self.tasks.start_soon(self._every, s.heartbeat_interval_s, self._heartbeat)
        self.tasks.start_soon(self._every, s.retention_interval_s, self.apply_retention)

    async def on_stop(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                released = await self.store.run(ops.ReleaseOwner(self.owner.id, as_stall=False))
                await self.store.run(ops.RemoveOwner(self.owner.id))
            except _TRANSIENT as exc:
                log.warning("could not release leases of %s at stop: %r", self.owner.id, exc)
                return
        if released:
            log.info("released %d leases at shutdown; they run again", len(released))

    async def handle(self, message: Any) -> Any:
        if isinstance(message, Sweep):
            return await self.sweep()
        return TypeError(f"Scheduler does not handle {message!r}")

    # -- duties -------------------------------------------------------------------------

    async def _release_dead_owners(self) -> None:
        """Release the leases of same-host owners whose process is gone. ``list_owners``
        leaves out (and reports) rows it cannot read; one owner whose release fails is
        logged and left to its leases' expiry: nothing an owner row holds stops a start."""
        for other in await self.store.run(ops.ListOwners()):
            if other.id == self.owner.id or other.host != self.owner.host:
                continue
            if owner_alive(other, self.owner):
                continue
            try:
                released = await self.store.run(ops.ReleaseOwner(other.id, as_stall=True))
                await self.store.run(ops.RemoveOwner(other.id))
            except Exception as exc:  # its leases still expire after lease_ttl_s
                log.warning("owner %r is gone, but releasing its leases failed: %r", other.id, exc)
                continue
            self.released_dead.extend(released)
            log.warning(
                "owner %s (pid %d) is gone: released %d leases at once",
                other.id,
                other.pid,
                len(released),
            )
        if self.released_dead:
            self.wake(None)

    async def sweep(self) -> SweepResult:
        """Promote due delayed jobs and rescue expired leases, once. The leases this
        runtime holds are never rescued (they are renewed, however late they look); after
        a forward jump of the wall clock larger than ``CLOCK_JUMP_MS`` no lease is
        rescued for one lease ttl, so that live runtimes on this host, whose leases all
        look expired at once, renew them first."""
        self.sweeps += 1
        promoted = await self.store.run(ops.PromoteDue())
        if self._clock_jumped():
            rescued = Rescued(requeued=[], failed=[], cancelled=[])
        else:
            spare = [] if self.held is None else self.held()
            rescued = await self.store.run(ops.RescueExpired(list(spare)))
        self.promoted += promoted
        self.rescued += len(rescued.requeued) + len(rescued.failed) + len(rescued.cancelled)
        if rescued.stalled:
            self._log_stalls(rescued.stalled)
        if promoted or rescued.requeued:
            self.wake(None)
        return SweepResult(promoted, rescued.requeued, rescued.failed, rescued.cancelled)

    def _log_stalls(self, jobs: list[Job]) -> None:
        """One line per job taken back as a stall, as the engine left it: runs again (and
        when), failed for good (out of attempts, or poison), or cancelled (asked to)."""
        now_ms = self.clock()
        for job in jobs:
            retry_in_s = None
            outcome: AttemptOutcome
            if job.state is JobState.CANCELLED:
                outcome, level = "cancelled", logging.INFO
            elif job.state is JobState.FAILED:
                outcome, level = "failed", logging.WARNING
            else:
                outcome, level = "retrying", logging.WARNING
                retry_in_s = (job.run_at_ms - now_ms) / 1000
            report_attempt(
                level,
                job,
                outcome,
                instruments=self.instruments,
                error=job.error,
                retry_in_s=retry_in_s,
            )

    def _clock_jumped(self) -> bool:
        """Note the wall clock against the monotonic one; True while rescues wait after a
        forward jump."""
        wall, mono = self.clock(), time.monotonic()
        last, self._last_sweep = self._last_sweep, (wall, mono)
        if last is not None:
            jump_ms = (wall - last[0]) - (mono - last[1]) * 1000
            if jump_ms > CLOCK_JUMP_MS:
                self.clock_jumps += 1
                self._rescue_from = mono + self.lease_ttl_s
                log.warning(
                    "the wall clock jumped %.1f s forward: expired leases are not rescued "
                    "for one lease ttl (%.0f s), so live workers renew theirs first",
                    jump_ms / 1000,
                    self.lease_ttl_s,
                )
        return mono < self._rescue_from

    async def _heartbeat(self) -> None:
        await self.store.run(ops.Heartbeat(self.owner.id, self._pools()))

    def _pools(self) -> dict[str, Any] | None:
        """What ``describe`` reports now, or None: no callback, or it failed (logged: a
        broken report must not stop the heartbeat, nor crash the Scheduler)."""
        if self.describe is None:
            return None
        try:
            pools = self.describe()
            _JSON.encode(pools)  # what the engine cannot store fails here, not there
        except Exception as exc:
            log.warning("describing the pools failed (heartbeat without them): %r", exc)
            return None
        if not isinstance(pools, dict):
            log.warning(
                "describe() returned %s, not a dict: heartbeat without pools", type(pools).__name__
            )
            return None
        return pools

    async def apply_retention(self) -> int:
        """Delete finished jobs past their retention, and old events; returns jobs deleted.
        Also fails for good the jobs in a state rota does not know (corrupt rows)."""
        await self.store.run(ops.QuarantineCorrupt())
        deleted = 0
        for policy in self.settings.retention:
            for states, age_s, count in (
                ({JobState.COMPLETED}, policy.completed_s, policy.completed),
                ({JobState.FAILED, JobState.CANCELLED}, policy.failed_s, policy.failed),
            ):
                if age_s is None and count is None:
                    continue
                deleted += await self.store.run(
                    ops.Prune(
                        queue=policy.queue,
                        states=frozenset(states),
                        older_than_ms=None if age_s is None else round(age_s * 1000),
                        keep_last=count,
                    )
                )
        await self.store.run(ops.PruneEvents(round(self.settings.retain_events_s * 1000)))
        return deleted

    async def _every(self, interval_s: float, duty: Callable[[], Any]) -> None:
        name = getattr(duty, "__name__", str(duty))
        while True:
            await anyio.sleep(interval_s)
            try:
                await duty()
            except _TRANSIENT as exc:
                self.throttled.warning(name, "scheduler: %s skipped: %r", name, exc)
            else:
                self.throttled.clear(name, f"scheduler: {name} works again")

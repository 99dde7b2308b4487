"""Whether a runtime that registered as a lease owner still runs (same host only).

The Scheduler's duties ask it before releasing at once the leases of an owner whose
process is gone; ``rota health`` and ``rota info`` ask it too.
"""

from __future__ import annotations

import os
from typing import Final

from rota.domain.event import Owner, possible_pid

__all__ = ["LIVE_OWNERS", "owner_alive", "pid_alive", "process_started_ms"]


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

"""Generic supervision, Erlang/OTP style: it knows children, never jobs.

::

    sup = Supervisor(
        "queue:images",
        [
            ChildSpec("queue", queue_ref.run, stop=queue_ref.request_stop),
            ChildSpec("workers", pool_ref.run, stop=pool_ref.request_stop, grace_s=30),
            ChildSpec("renewer", renewer_ref.run, stop=renewer_ref.request_stop),
        ],
        strategy=Strategy.REST_FOR_ONE,     # a later child depends on the earlier ones
        max_restarts=5,
        period_s=30,                        # a 6th restart within 30 s: give up, escalate
        restart_backoff=RestartBackoff(initial_s=0.1, max_s=5),
    )
    async with anyio.create_task_group() as tg:
        await tg.start(sup.run)             # every child has signalled task_status.started()
        ...
        await sup.stop()                    # children stopped in reverse order, with grace

    root = Supervisor("runtime", [store, scheduler, sup.child_spec()])   # nesting

The semantics (start and stop order, strategies, intensity and escalation, failed starts,
logging) are in docs/internals.md, "Supervisors".
"""

from ._spec import ChildSpec, Restart, RestartBackoff, Strategy
from ._supervisor import Supervisor, SupervisorStatistics

__all__ = [
    "ChildSpec",
    "Restart",
    "RestartBackoff",
    "Strategy",
    "Supervisor",
    "SupervisorStatistics",
]

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

Semantics in one place:

* children start in list order, each after the previous one's started-handshake, and stop
  in reverse list order, one after another: ask (``ChildSpec.stop``), wait ``grace_s``
  (shielded), then cancel;
* strategies ``one_for_one`` / ``one_for_all`` / ``rest_for_one`` and restart types
  ``permanent`` / ``transient`` / ``temporary`` as in OTP (see ``_spec``);
* intensity: ``max_restarts`` restarts within a sliding ``period_s`` are allowed; the next
  one makes the supervisor stop its children and raise ``rota.errors.SupervisorGaveUp``
  (``__cause__``: the exit that broke the limit), which a parent supervisor handles as a
  crash of that child (escalation);
* a failed initial start stops the started children and raises the child's exception
  itself (not wrapped; a note names the child); during a restart it counts as a restart;
* logging through ``logging.getLogger("rota.supervisors")`` with
  ``extra={"event", "supervisor", "child", "reason"}``.

Imports only the standard library, AnyIO, msgspec and ``rota.errors``; runs on trio and
asyncio alike.
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

"""The scripted test job: its payload picks what it does (DESIGN.md section 8).

Used in-process (import ``app`` / ``scripted``) and by worker processes
(``rota worker scripted:app`` with this folder on PYTHONPATH). The database comes from
``ROTA_DATABASE`` (default ``:memory:``), its lease ttl from ``SCRIPTED_LEASE_TTL_S``.

Actions: ``ok`` (return ``result``), ``raise`` (RuntimeError), ``hang`` (sleep forever),
``sleep`` (``seconds``, then ok), ``block`` (block the event loop ``seconds``), ``exit``
(``os._exit(3)``: the process dies mid-job), ``sys.exit`` (``sys.exit(3)``: a job that
tries to end its worker), ``retry`` (raise Retry(``seconds``)),
``unrecoverable``, ``progress`` (report ``steps`` steps, logging each), ``asyncio`` (code
that needs an asyncio loop: ``asyncio.get_running_loop()``, ``await asyncio.sleep``; it
returns ``"<result> on <loop class>"``, and fails under trio), ``linger`` (the first start
of the job only: ``seconds`` reporting progress every 50 ms, then ok).

The same actions but ``asyncio``, ``hang``, ``block`` and the exits run in thread mode as
the job ``scripted.thread`` (a plain ``def``). ``SCRIPTED_BACKEND`` sets the app's
``backend`` (``App(backend=...)``).

If ``log`` names a file, every attempt appends ``job_id attempt pid`` to it when it
starts (one ``write`` call, so concurrent processes do not interleave lines).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import anyio
import msgspec

import rota
from rota.app import App, Context, SyncContext


class Script(msgspec.Struct, frozen=True):
    action: str = "ok"
    seconds: float = 0.0
    result: str = "done"
    log: str | None = None
    steps: int = 0
    exit_on_attempt: int = 0
    """With ``exit``: die only on this attempt (0: on every attempt)."""


app = App(
    os.environ.get("ROTA_DATABASE", ":memory:"),
    lease_ttl_s=float(os.environ.get("SCRIPTED_LEASE_TTL_S", "30")),
    backend=os.environ.get("SCRIPTED_BACKEND"),
)

#: ``linger``: how often progress is reported (a report per beat).
LINGER_BEAT_S = 0.05


def record_start(args: Script, ctx: Context | SyncContext) -> None:
    if args.log:
        line = f"{ctx.job_id} {ctx.attempt} {os.getpid()}\n".encode()
        fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)


@app.job(name="scripted", queue="scripted", max_attempts=3, backoff=rota.fixed(0.05))
async def scripted(args: Script, ctx: Context) -> str:
    record_start(args, ctx)
    match args.action:
        case "ok":
            return args.result
        case "raise":
            raise RuntimeError(f"scripted failure on attempt {ctx.attempt}")
        case "hang":
            await anyio.sleep_forever()
        case "sleep":
            await anyio.sleep(args.seconds)
            return args.result
        case "block":
            time.sleep(args.seconds)  # noqa: ASYNC251 - blocks the event loop on purpose
            return args.result
        case "exit":
            if args.exit_on_attempt in (0, ctx.attempt):
                os._exit(3)
            return args.result
        case "sys.exit":
            sys.exit(3)
        case "retry":
            raise rota.Retry(delay_s=args.seconds, reason="scripted retry")
        case "unrecoverable":
            raise rota.Unrecoverable("scripted: cannot succeed")
        case "progress":
            for step in range(1, args.steps + 1):
                ctx.log(f"step {step}")
                await ctx.progress(step / args.steps * 100, step=step, total=args.steps)
            return args.result
        case "asyncio":
            loop = asyncio.get_running_loop()  # RuntimeError: no running event loop (trio)
            await asyncio.sleep(args.seconds)
            return f"{args.result} on {type(loop).__name__}"
        case "linger":
            beats = 0 if started_before(args, ctx) else round(args.seconds / LINGER_BEAT_S)
            for beat in range(beats):
                await anyio.sleep(LINGER_BEAT_S)
                await ctx.progress(beat + 1, total=beats, step=beat + 1)
            return args.result
    raise ValueError(f"unknown scripted action {args.action!r}")


@app.job(name="scripted.thread", queue="scripted", max_attempts=3, backoff=rota.fixed(0.05))
def scripted_thread(args: Script, ctx: SyncContext) -> str:
    """``scripted`` as a plain ``def``: thread mode (process mode, on such a queue)."""
    record_start(args, ctx)
    match args.action:
        case "ok":
            return args.result
        case "raise":
            raise RuntimeError(f"scripted failure on attempt {ctx.attempt}")
        case "sleep":
            time.sleep(args.seconds)
            return args.result
        case "retry":
            raise rota.Retry(delay_s=args.seconds, reason="scripted retry")
        case "unrecoverable":
            raise rota.Unrecoverable("scripted: cannot succeed")
        case "progress":
            for step in range(1, args.steps + 1):
                ctx.log(f"step {step}")
                ctx.progress(step / args.steps * 100, step=step, total=args.steps)
            return args.result
        case "linger":
            beats = 0 if started_before(args, ctx) else round(args.seconds / LINGER_BEAT_S)
            for beat in range(beats):
                time.sleep(LINGER_BEAT_S)
                ctx.progress(beat + 1, total=beats, step=beat + 1)
            return args.result
    raise ValueError(f"unknown scripted action {args.action!r}")


def started_before(args: Script, ctx: Context | SyncContext) -> bool:
    """Whether the log shows an earlier start of this job (this one is already in it)."""
    if not args.log:
        return False
    with open(args.log) as log:
        return sum(line.split()[0] == str(ctx.job_id) for line in log) > 1

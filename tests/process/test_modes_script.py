"""Process mode from the outside: a script run as ``python script.py`` (its app lives in
``__main__``, which children cannot import by name), and ``rota worker`` with a
process-mode queue, stopped by a SIGTERM sent to its whole process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from proc_harness import REPO

from rota.domain.job import JobState
from rota.storage.sqlite import SqliteEngine

SCRIPT = textwrap.dedent(
    """
    import os

    import anyio
    import msgspec

    import rota

    app = rota.App({db!r})


    class Square(msgspec.Struct):
        n: int


    @app.job(mode="process")
    def square(args: Square, ctx: rota.SyncContext) -> list[int]:
        ctx.log("squaring in the child")
        return [args.n * args.n, os.getpid()]


    async def main() -> None:
        async with app.run():
            handle = await square.enqueue(Square(7))
            value, pid = await handle.result(timeout=30)
            logs = await handle.logs()
        print("RESULT", value, pid, os.getpid(), logs[0].message, flush=True)


    if __name__ == "__main__":
        anyio.run(main, backend="trio")
    """
)


def _env(*path: Path) -> dict[str, str]:
    """A subprocess's environment: this checkout's rota (not the one installed), and
    ``path`` first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTA_")}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, path), str(REPO / "src")])
    return env


def test_a_script_run_as_main_runs_its_process_jobs_in_children(tmp_path: Path) -> None:
    script = tmp_path / "square_script.py"
    script.write_text(SCRIPT.format(db=str(tmp_path / "jobs.db")))
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [line] = [row for row in done.stdout.splitlines() if row.startswith("RESULT")]
    _, value, child_pid, parent_pid, *message = line.split()
    assert value == "49"
    assert child_pid != parent_pid  # it ran in a child, which re-ran the script's module
    assert " ".join(message) == "squaring in the child"


WORKER_APP = textwrap.dedent(
    """
    import time

    import msgspec

    import rota

    app = rota.App({db!r}, shutdown_grace_s=20.0, queue_config={{"cpu": {{"mode": "process"}}}})


    class Spin(msgspec.Struct):
        seconds: float


    @app.job(queue="cpu")
    def spin(args: Spin) -> str:
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            pass
        return "spun"
    """
)


def test_a_group_sigterm_lets_process_jobs_finish_during_the_grace_period(
    tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.db"
    (tmp_path / "spin_app.py").write_text(WORKER_APP.format(db=str(db)))
    env = _env(tmp_path)
    worker = subprocess.Popen(
        [sys.executable, "-m", "rota", "worker", "spin_app:app"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, signalled as a whole below
    )
    try:
        sys.path.insert(0, str(tmp_path))
        try:
            import spin_app  # the same app, to enqueue
        finally:
            sys.path.remove(str(tmp_path))
        handle = spin_app.spin.enqueue_sync(spin_app.Spin(1.5))
        engine = SqliteEngine(str(db))
        try:
            deadline = time.monotonic() + 30
            while engine.get(handle.id).state is not JobState.ACTIVE:
                assert time.monotonic() < deadline, "the job never started"
                assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
                time.sleep(0.05)
            time.sleep(0.3)  # inside the handler now (it was claimed and sent to a child)
            os.killpg(worker.pid, signal.SIGTERM)  # the whole group: SIGTERM for all
            out, err = worker.communicate(timeout=40)
            job = engine.get(handle.id)
        finally:
            engine.close()
        spin_app.app.close()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, err
    # The child was not in the signalled group: the job finished within the grace period.
    assert (job.state, job.attempt, job.result) == (JobState.COMPLETED, 1, b'"spun"'), err
    assert "stopped" in out

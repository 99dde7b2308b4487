"""README.md's examples run as written.

A code block preceded by an HTML comment marker is part of a test (the markers do not show
when the README is rendered):

* ``<!-- test: file NAME -->``: the block is written to ``NAME`` in a fresh directory;
* ``<!-- test: run -->``: the (Python) block is run there as a script; it must exit 0;
* ``<!-- test: background -->``: the (shell) block's command is started there and left
  running (a worker); it is sent SIGINT when the section's blocks have run, and must
  then exit 0.

The blocks of one ``##`` section form one test, run in order in one directory. A leading
``rota`` or ``uvicorn`` in a shell command runs this environment's (``python -m ...``).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = re.compile(r"<!-- test: (file (?P<name>\S+)|run|background) -->\s*\n```[^\n]*\n")
RUN_TIMEOUT_S = 60.0


class Step:
    def __init__(self, kind: str, name: str | None, code: str, line: int) -> None:
        self.kind = kind
        self.name = name
        self.code = code
        self.line = line


def sections() -> dict[str, list[Step]]:
    """The marked blocks of README.md, by section."""
    text = README.read_text()
    found: dict[str, list[Step]] = {}
    for match in MARKER.finditer(text):
        start = match.end()
        end = text.index("\n```", start)
        heading = re.findall(r"(?m)^## (.+)$", text[: match.start()])
        section = heading[-1] if heading else "(top)"
        kind = match.group(1).split()[0]
        line = text.count("\n", 0, match.start()) + 1
        found.setdefault(section, []).append(
            Step(kind, match.group("name"), text[start : end + 1], line)
        )
    return found


SECTIONS = sections()


def test_the_readme_has_runnable_examples() -> None:
    assert "Quickstart" in SECTIONS, "the Quickstart must be tested"
    assert any(s.kind == "run" for steps in SECTIONS.values() for s in steps)


def _env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROTA_")}
    paths = [str(workdir), str(ROOT / "src"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _command(code: str) -> list[str]:
    lines = [line for line in code.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == 1, f"a background block holds one command, got {lines}"
    words = shlex.split(lines[0], comments=True)
    if words[0] in ("rota", "uvicorn"):  # this environment's, whatever is on PATH
        words = [sys.executable, "-m", words[0], *words[1:]]
    return words


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_a_readme_section_runs_as_written(section: str, tmp_path: Path) -> None:
    env = _env(tmp_path)
    background: list[tuple[Step, subprocess.Popen[bytes]]] = []
    try:
        for step in SECTIONS[section]:
            where = f"README.md line {step.line} ({section})"
            if step.kind == "file":
                assert step.name is not None
                (tmp_path / step.name).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / step.name).write_text(step.code)
            elif step.kind == "run":
                done = subprocess.run(
                    [sys.executable, "-c", step.code],
                    cwd=tmp_path,
                    env=env,
                    capture_output=True,
                    timeout=RUN_TIMEOUT_S,
                    check=False,
                )
                assert done.returncode == 0, (
                    f"{where} exited {done.returncode}\n--- stdout\n"
                    f"{done.stdout.decode(errors='replace')}\n--- stderr\n"
                    f"{done.stderr.decode(errors='replace')}"
                )
            else:
                proc = subprocess.Popen(
                    _command(step.code),
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
                background.append((step, proc))
                time.sleep(0.2)
                assert proc.poll() is None, f"{where} exited at once: {proc.communicate()[0]!r}"
    finally:
        for step, proc in background:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                out, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            assert proc.returncode == 0, (
                f"README.md line {step.line} ({section}) exited {proc.returncode}:\n"
                f"{out.decode(errors='replace')}"
            )

"""`rota demo`, the README's main command: a real worker over sample jobs."""

from __future__ import annotations

from pathlib import Path

import pytest

from rota.demo import main, run_demo


@pytest.mark.trio
async def test_demo_runs_every_job_to_an_end_with_retries_and_dead_letters(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    summary = await run_demo(str(tmp_path / "demo.db"), jobs=400, out=lines.append)
    assert summary.completed + summary.failed == 400
    assert summary.retries > 0  # flaky first attempts were retried
    assert summary.failed > 0  # declined charges and bad addresses end in the dead letters
    assert any("card declined" in reason for reason in summary.failures)
    assert any("no such mailbox" in reason for reason in summary.failures)
    assert 0 < summary.store_transactions <= summary.store_operations
    assert any(line.startswith("done: 400 jobs") for line in lines)


def test_demo_command_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--jobs", "200", "--db", str(tmp_path / "d.db")]) == 0
    out = capsys.readouterr().out
    assert "completed" in out
    assert "transactions" in out

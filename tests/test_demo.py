"""`rota demo`, the README's main command: everything completes despite the crashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from rota.demo import main, run_demo


@pytest.mark.trio
async def test_demo_completes_every_job_through_crashes_and_rescues(tmp_path: Path) -> None:
    lines: list[str] = []
    summary = await run_demo(tmp_path / "demo.db", jobs=300, workers=2, out=lines.append)
    assert summary.counts["completed"] == 300
    assert summary.worker_crashes == 2
    assert sum(summary.restarts.values()) == 2  # each crashed worker restarted once
    assert summary.rescued > 0  # the crashed workers' leases expired and were rescued
    assert summary.failed_attempts > 0  # flaky jobs failed once and were retried
    assert 0 < summary.transactions <= summary.store_operations
    assert any(line.startswith("done: 300 jobs") for line in lines)


def test_demo_command_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--jobs", "200", "--workers", "2", "--db", str(tmp_path / "d.db")]) == 0
    out = capsys.readouterr().out
    assert "completed 200" in out
    assert "group commit:" in out

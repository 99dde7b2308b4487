"""Bad configuration is refused up front with a clear error; the package's surface is pinned."""

from __future__ import annotations

import ast
import math
import sys
from pathlib import Path

import anyio
import anyio.abc
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rota.supervisors
from rota.errors import ConfigError
from rota.supervisors import ChildSpec, Restart, RestartBackoff, Strategy, Supervisor


async def child(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    task_status.started()


def test_public_names() -> None:
    assert rota.supervisors.__all__ == [
        "ChildSpec",
        "Restart",
        "RestartBackoff",
        "Strategy",
        "Supervisor",
        "SupervisorStatistics",
    ]
    assert [s.value for s in Strategy] == ["one_for_one", "one_for_all", "rest_for_one"]
    assert [r.value for r in Restart] == ["permanent", "transient", "temporary"]


def test_imports_only_stdlib_anyio_msgspec_and_rota_errors() -> None:
    """Stricter than tests/test_layers.py: an allow-list, not a deny-list."""
    allowed = {"anyio", "msgspec"} | set(sys.stdlib_module_names)
    root = Path(rota.supervisors.__file__).parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                ok = name.split(".")[0] in allowed or name == "rota.errors"
                if not ok or name.split(".")[0] in {"trio", "asyncio"}:
                    bad.append(f"{path.name}: {name}")
    assert bad == []


def test_child_spec_validation() -> None:
    spec = ChildSpec("a", child, restart="transient")  # type: ignore[arg-type]
    assert spec.restart is Restart.TRANSIENT
    with pytest.raises(ConfigError, match="non-empty"):
        ChildSpec("", child)
    with pytest.raises(ConfigError, match="unknown restart type 'forever'"):
        ChildSpec("a", child, restart="forever")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="grace_s"):
        ChildSpec("a", child, grace_s=-1)
    with pytest.raises(ConfigError, match="grace_s"):
        ChildSpec("a", child, grace_s=math.nan)
    with pytest.raises(ConfigError, match="run must be callable"):
        ChildSpec("a", None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="stop must be callable"):
        ChildSpec("a", child, stop=1)  # type: ignore[arg-type]
    assert ChildSpec("a", child, grace_s=math.inf).grace_s == math.inf


def test_supervisor_validation() -> None:
    a = ChildSpec("a", child)
    with pytest.raises(ConfigError, match="two children are named 'a'"):
        Supervisor("s", [a, ChildSpec("a", child)])
    with pytest.raises(ConfigError, match="max_restarts"):
        Supervisor("s", [a], max_restarts=-1)
    with pytest.raises(ConfigError, match="max_restarts"):
        Supervisor("s", [a], max_restarts=True)
    with pytest.raises(ConfigError, match="period_s"):
        Supervisor("s", [a], period_s=0)
    with pytest.raises(ConfigError, match="unknown strategy"):
        Supervisor("s", [a], strategy="one_for_some")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not a ChildSpec"):
        Supervisor("s", [child])  # type: ignore[list-item]
    assert Supervisor("s", [a], strategy="rest_for_one").strategy is Strategy.REST_FOR_ONE  # type: ignore[arg-type]


def test_child_spec_of_a_supervisor() -> None:
    sup = Supervisor("inner", [])
    spec = sup.child_spec(restart=Restart.TRANSIENT)
    assert (spec.name, spec.restart, spec.grace_s) == ("inner", Restart.TRANSIENT, math.inf)
    assert spec.run == sup.run and spec.stop == sup.request_stop


def test_backoff_delays() -> None:
    backoff = RestartBackoff(initial_s=0.5, factor=3, max_s=10)
    assert [backoff.delay_s(n) for n in range(1, 6)] == [0.5, 1.5, 4.5, 10, 10]
    assert RestartBackoff(initial_s=2, factor=1, max_s=5).delay_s(100) == 2
    assert RestartBackoff(initial_s=0, max_s=0).delay_s(7) == 0
    # no overflow, however long the streak or tiny the start
    assert RestartBackoff(initial_s=1e-320, factor=10, max_s=1).delay_s(400) == 1
    assert RestartBackoff(initial_s=1, factor=2, max_s=60).delay_s(10**9) == 60
    with pytest.raises(ValueError, match="consecutive"):
        backoff.delay_s(0)


@given(
    initial_s=st.floats(0, 100),
    factor=st.floats(1, 1000),
    extra_s=st.floats(0, 1e6),
    n=st.integers(1, 10**9),
)
def test_backoff_delay_is_finite_monotonic_and_capped(
    initial_s: float, factor: float, extra_s: float, n: int
) -> None:
    backoff = RestartBackoff(initial_s=initial_s, factor=factor, max_s=initial_s + extra_s)
    delay = backoff.delay_s(n)
    assert initial_s <= delay <= backoff.max_s or (initial_s == 0 and delay == 0)
    assert backoff.delay_s(n + 1) >= delay


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"initial_s": -1}, "initial_s"),
        ({"factor": 0.5}, "factor"),
        ({"max_s": math.inf}, "max_s"),
        ({"initial_s": 5, "max_s": 1}, "max_s"),
        ({"reset_after_s": math.nan}, "reset_after_s"),
    ],
)
def test_backoff_validation(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RestartBackoff(**kwargs)

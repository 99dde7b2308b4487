"""A job's input may be any type msgspec validates, end to end: enqueued as an instance (or a
dict of its fields, for the types that have fields), stored as JSON, decoded by the worker
and handed to the handler as that type, in every mode (async on the loop, a plain def on a
handler thread, either in a child process).

The handlers live in ``tests/support/payload_app.py``; each returns the type it received
and the value's repr.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import payload_app
import pytest
from payload_app import Pair, Point, Size

from rota.app import App

pytestmark = pytest.mark.anyio

#: (kind, what is enqueued, what the handler receives: its type and repr)
CASES: list[tuple[str, Any, str]] = [
    ("dataclass", Point(1, 2.5, ["a"]), "Point:Point(x=1, y=2.5, tags=['a'])"),
    ("dataclass", {"x": 2, "tags": ["b"]}, "Point:Point(x=2, y=0.0, tags=['b'])"),
    ("attrs", Size(3, 4), "Size:Size(w=3, h=4)"),
    ("attrs", {"w": 5}, "Size:Size(w=5, h=1)"),
    ("typeddict", {"to": "a@b", "subject": "hi"}, "dict:{'to': 'a@b', 'subject': 'hi'}"),
    ("namedtuple", Pair(6, "x"), "Pair:Pair(left=6, right='x')"),
    ("namedtuple", {"left": 7}, "Pair:Pair(left=7, right='')"),
    ("int", 8, "int:8"),
    ("float", 9, "float:9.0"),  # an int where a float is expected arrives as a float
    ("bool", True, "bool:True"),
    ("str", "hé", "str:'hé'"),
    ("list", [1, 2, 3], "list:[1, 2, 3]"),
    ("dict", {"a": 1.5}, "dict:{'a': 1.5}"),
]


@pytest.fixture
def new_app(make_app: Callable[..., App], tmp_path: Path) -> Callable[..., App]:
    def build(**options: Any) -> App:
        app = make_app(str(tmp_path / "jobs.db"), import_name="payload_app:app", **options)
        app.include(payload_app.registry)
        return app

    return build


@pytest.mark.parametrize(
    "options",
    [{}, {"queue_config": {payload_app.QUEUE: {"mode": "process"}}, "processes": 1}],
    ids=["async-and-thread", "process"],
)
async def test_every_kind_of_payload_reaches_its_handler_as_its_type(
    new_app: Callable[..., App], options: dict[str, Any]
) -> None:
    app = new_app(**options)
    handles = [
        await app.definition(f"{variant}.{kind}").enqueue(payload)
        for kind, payload, _ in CASES
        for variant in ("sync", "async")
    ]
    async with app.run() as runtime:
        with anyio.fail_after(30):
            results = [await handle.result() for handle in handles]
        pool = runtime.runners[payload_app.QUEUE].processes
        in_children = 0 if pool is None else pool.counts["jobs"]
    assert in_children == (len(handles) if options else 0)
    expected = [described for _, _, described in CASES for _ in ("sync", "async")]
    assert results == expected


async def test_enqueue_many_takes_instances_and_dicts_together(
    new_app: Callable[..., App],
) -> None:
    app = new_app()
    job = app.definition("async.dataclass")
    handles = await job.enqueue_many([Point(1), {"x": 2}, Point(3, 1.5)])
    async with app.run():
        with anyio.fail_after(10):
            results = [await handle.result() for handle in handles]
    assert results == [
        "Point:Point(x=1, y=0.0, tags=[])",
        "Point:Point(x=2, y=0.0, tags=[])",
        "Point:Point(x=3, y=1.5, tags=[])",
    ]

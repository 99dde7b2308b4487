"""Jobs whose payloads are the types users already have: a dataclass, an attrs class, a
``TypedDict``, a ``NamedTuple`` and plain ``int``, ``float``, ``bool``, ``str``,
``list[int]`` and ``dict[str, float]`` (``tests/runtime/test_payload_types.py``).

Each kind has a plain ``def`` handler (``sync.<kind>``: thread mode) and an ``async def``
one (``async.<kind>``), both returning ``describe(args)``: the type the handler received
and its repr, so a test sees what arrived. They live here so that process-mode children
can import them (``payload_app:app``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, TypedDict

import attrs

import rota

QUEUE = "payloads"

registry = rota.Registry()


@dataclasses.dataclass
class Point:
    x: int
    y: float = 0.0
    tags: list[str] = dataclasses.field(default_factory=list)


@attrs.define
class Size:
    w: int
    h: int = 1


class Mail(TypedDict):
    to: str
    subject: str


class Pair(NamedTuple):
    left: int
    right: str = ""


def describe(args: Any) -> str:
    return f"{type(args).__name__}:{args!r}"


@registry.job(name="sync.dataclass", queue=QUEUE)
def sync_dataclass(args: Point) -> str:
    return describe(args)


@registry.job(name="sync.attrs", queue=QUEUE)
def sync_attrs(args: Size) -> str:
    return describe(args)


@registry.job(name="sync.typeddict", queue=QUEUE)
def sync_typeddict(args: Mail) -> str:
    return describe(args)


@registry.job(name="sync.namedtuple", queue=QUEUE)
def sync_namedtuple(args: Pair, ctx: rota.SyncContext) -> str:
    return describe(args)


@registry.job(name="sync.int", queue=QUEUE)
def sync_int(args: int) -> str:
    return describe(args)


@registry.job(name="sync.float", queue=QUEUE)
def sync_float(args: float) -> str:
    return describe(args)


@registry.job(name="sync.bool", queue=QUEUE)
def sync_bool(args: bool) -> str:
    return describe(args)


@registry.job(name="sync.str", queue=QUEUE)
def sync_str(args: str) -> str:
    return describe(args)


@registry.job(name="sync.list", queue=QUEUE)
def sync_list(args: list[int]) -> str:
    return describe(args)


@registry.job(name="sync.dict", queue=QUEUE)
def sync_dict(args: dict[str, float]) -> str:
    return describe(args)


@registry.job(name="async.dataclass", queue=QUEUE)
async def async_dataclass(args: Point, ctx: rota.Context) -> str:
    return describe(args)


@registry.job(name="async.attrs", queue=QUEUE)
async def async_attrs(args: Size) -> str:
    return describe(args)


@registry.job(name="async.typeddict", queue=QUEUE)
async def async_typeddict(args: Mail) -> str:
    return describe(args)


@registry.job(name="async.namedtuple", queue=QUEUE)
async def async_namedtuple(args: Pair) -> str:
    return describe(args)


@registry.job(name="async.int", queue=QUEUE)
async def async_int(args: int) -> str:
    return describe(args)


@registry.job(name="async.float", queue=QUEUE)
async def async_float(args: float) -> str:
    return describe(args)


@registry.job(name="async.bool", queue=QUEUE)
async def async_bool(args: bool) -> str:
    return describe(args)


@registry.job(name="async.str", queue=QUEUE)
async def async_str(args: str) -> str:
    return describe(args)


@registry.job(name="async.list", queue=QUEUE)
async def async_list(args: list[int]) -> str:
    return describe(args)


@registry.job(name="async.dict", queue=QUEUE)
async def async_dict(args: dict[str, float], ctx: rota.Context) -> str:
    return describe(args)


app = rota.App(":memory:", import_name="payload_app:app")
app.include(registry)

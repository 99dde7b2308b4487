"""Payloads JSON cannot hold faithfully are a ``PayloadError`` naming the job and the field,
at enqueue, before anything is stored: a lone surrogate in a string, nesting deeper than
msgspec recurses, a value of a type msgspec cannot encode, and NaN or an infinity in a float
(msgspec would silently write those as ``null``). Struct and dict payloads alike."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from rota import _encoding
from rota.app import App, JobDefinition
from rota.domain.job import JobState
from rota.errors import PayloadError


class Inner(msgspec.Struct):
    x: float = 0.0
    s: str = ""


class Outer(msgspec.Struct):
    n: int
    inner: Inner = msgspec.field(default_factory=Inner)
    tags: list[str] = []
    scores: dict[str, float] = {}
    maybe: float | None = None
    anything: Any = None
    renamed: float = msgspec.field(default=0.0, name="Renamed")


@pytest.fixture
def app() -> Iterator[App]:
    app = App(":memory:")
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def job(app: App) -> JobDefinition[Outer, None]:
    @app.job(name="tests.outer", queue="q")
    def outer(args: Outer) -> None:
        return None

    return outer


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


BAD: list[tuple[str, Outer, str, str]] = [
    # (case, payload, field, words of the message)
    ("surrogate", Outer(1, inner=Inner(s="a\ud800b")), "inner.s", "surrogate"),
    ("surrogate in a list", Outer(1, tags=["ok", "\udfff"]), "tags[1]", "surrogate"),
    ("surrogate in a key", Outer(1, scores={"\ud800": 1.0}), "scores", "surrogate"),
    (
        "surrogate deep in Any",
        Outer(1, anything={"a": [{"b": "\ud800"}]}),
        "anything.a[0].b",
        "surrogate",
    ),
    ("nan", Outer(1, inner=Inner(x=math.nan)), "inner.x", "NaN"),
    ("inf where null is valid", Outer(1, maybe=math.inf), "maybe", "inf"),
    ("-inf in a dict", Outer(1, scores={"a": 1.0, "b": -math.inf}), "scores.b", "-inf"),
    ("nan in Any", Outer(1, anything=[1, 2.0, math.nan]), "anything[2]", "nan"),
    ("nan in a renamed field", Outer(1, renamed=math.nan), "Renamed", "nan"),
    ("unsupported type", Outer(1, anything={"k": object()}), "anything.k", "object"),
    ("too deep", Outer(1, anything=nested(5000)), "anything", "deep"),
]


@pytest.mark.parametrize(
    ("payload", "field", "words"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_unencodable_struct_payload_names_the_job_and_the_field(
    app: App, job: JobDefinition[Outer, None], payload: Outer, field: str, words: str
) -> None:
    with pytest.raises(PayloadError, match=words) as caught:
        job.enqueue_sync(payload)
    assert caught.value.field == field
    message = str(caught.value)
    assert "'tests.outer'" in message
    assert f"$.{field}" in message
    with pytest.raises(PayloadError):  # among good ones: none is stored
        job.enqueue_many_sync([Outer(1), payload, Outer(2)])
    assert app._direct(lambda engine: engine.count("q")) == dict.fromkeys(JobState, 0)


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"n": 1, "inner": {"x": math.nan}}, "inner.x", "NaN"),
        ({"n": 1, "inner": {"s": "\ud800"}}, "inner.s", "surrogate"),
        ({"n": 1, "maybe": -math.inf}, "maybe", "inf"),
        ({"n": 1, "scores": {"a": math.inf}}, "scores.a", "inf"),
        ({"n": 1, "anything": nested(5000)}, "anything", "deep"),
        ({"n": 1, "anything": [object()]}, "anything[0]", "object"),
    ],
)
def test_unencodable_dict_payload_names_the_job_and_the_field(
    job: JobDefinition[Outer, None], payload: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(PayloadError, match=words) as caught:
        job.enqueue_sync(payload)
    assert caught.value.field == field
    assert "'tests.outer'" in str(caught.value)


class Tree(msgspec.Struct):
    children: list[Tree] = []


def test_a_struct_nested_too_deeply_is_a_payload_error(app: App) -> None:
    @app.job(name="tests.tree", queue="q")
    def tree(args: Tree) -> None:
        return None

    deep = Tree()
    for _ in range(5000):
        deep = Tree([deep])
    with pytest.raises(PayloadError, match=r"tests\.tree.*deep") as caught:
        tree.enqueue_sync(deep)
    assert caught.value.field == "children"
    with pytest.raises(PayloadError, match=r"tests\.tree.*deep") as caught:
        tree.enqueue_sync(nested_dict(5000))  # the same as a dict
    assert caught.value.field == "children"


def nested_dict(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"children": []}
    for _ in range(depth):
        value = {"children": [value]}
    return value


def test_nulls_that_are_none_are_fine_and_stored_as_msgspec_writes_them(
    job: JobDefinition[Outer, None],
) -> None:
    payload = Outer(1, maybe=None, anything=[None, "null", 1.5], tags=["nullable"])
    assert job.encode(payload) == msgspec.json.encode(payload)
    assert job.encode({"n": 1, "anything": None}) == msgspec.json.encode(Outer(1))


def test_payloads_without_null_are_not_walked(
    job: JobDefinition[Outer, None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path (enqueue_many does ~170k jobs/s): NaN and infinities come out of
    msgspec as ``null``, so a payload whose JSON has no ``null`` is never walked."""

    def walked(*args: object, **kwargs: object) -> None:
        raise AssertionError("the payload was walked")

    monkeypatch.setattr(_encoding, "find_problem", walked)
    payload = Outer(1, inner=Inner(x=1.5, s="é"), scores={"a": 2.0}, maybe=2.0, anything=[3])
    assert job.encode(payload) == msgspec.json.encode(payload)
    assert job.encode(msgspec.to_builtins(payload)) == msgspec.json.encode(payload)


@pytest.mark.parametrize(
    "stored",
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"n": 1, "anything": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b"{not json",
        b"",
    ],
)
def test_a_stored_payload_that_does_not_decode_is_a_decode_error(
    job: JobDefinition[Outer, None], stored: bytes
) -> None:
    """What the worker catches (and fails the job for, unrecoverable), whatever is wrong:
    never a RecursionError."""
    with pytest.raises(
        msgspec.DecodeError, match=r"nested too deeply|malformed|truncated|Expected"
    ):
        job.decode(stored)


class Plain(msgspec.Struct):
    i: int
    x: float
    tags: list[str] = []


def test_types_without_none_or_any_are_never_walked_and_still_refuse_nan(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no ``null`` decodes, the decoding check refuses a NaN written as ``null``: no
    search for ``null`` at all (the benchmark's payload is such a type)."""

    @app.job(name="tests.plain", queue="q")
    def plain(args: Plain) -> None:
        return None

    assert not _encoding.may_hold_null(Plain)
    assert _encoding.may_hold_null(Outer)
    assert _encoding.may_hold_null(int | None) and _encoding.may_hold_null(list[Any])
    for bad, field in [(Plain(1, math.nan), "x"), (Plain(math.inf, 1.0), "i")]:  # type: ignore[arg-type]
        with pytest.raises(PayloadError, match=r"'tests.plain'.*NaN and infinities") as caught:
            plain.enqueue_sync(bad)
        assert caught.value.field == field

    def walked(*args: object, **kwargs: object) -> None:
        raise AssertionError("the payload was walked")

    monkeypatch.setattr(_encoding, "find_problem", walked)
    assert plain.encode(Plain(1, 2.5, ["null"])) == msgspec.json.encode(Plain(1, 2.5, ["null"]))

"""Payloads JSON cannot hold faithfully are a ``PayloadError`` naming the job and the field,
at enqueue, before anything is stored: a lone surrogate in a string, nesting deeper than
msgspec recurses, a value of a type msgspec cannot encode, and NaN or an infinity in a float
(msgspec would silently write those as ``null``). Struct and dict payloads alike."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any, NamedTuple, TypedDict

import attrs
import msgspec
import pytest

from rota import _encoding
from rota.app import App, JobDefinition
from rota.domain.job import JobState
from rota.errors import ConfigError, PayloadError
from rota.storage import ops


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
    assert app._storage.run_sync(ops.Count("q")) == dict.fromkeys(JobState, 0)


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


# -- payload types users already have: dataclasses, attrs, TypedDict, NamedTuple, plain ------


@dataclasses.dataclass
class Point:
    x: int
    y: float = 0.0
    tags: list[str] = dataclasses.field(default_factory=list)


@attrs.define
class Size:
    w: int
    h: float = 1.0
    label: str = ""


class Mail(TypedDict):
    to: str
    subject: str
    weight: float


class Pair(NamedTuple):
    left: int
    right: str = ""
    score: float = 0.0


@dataclasses.dataclass
class Segment:
    start: Pair
    end: Pair


class Tagged(msgspec.Struct, tag=True):
    a: int


class Other(msgspec.Struct, tag=True):
    b: int


class Row(msgspec.Struct, array_like=True, tag=True):
    """Written as a JSON array (its tag first): msgspec's errors say ``$[1]``."""

    a: int
    b: str = ""


class NotASchema:
    """A plain class: msgspec cannot validate (or build) it."""

    def __init__(self, n: int) -> None:
        self.n = n


def job_for(app: App, tp: Any) -> JobDefinition[Any, None]:
    def handler(args: Any) -> None:
        return None

    handler.__annotations__ = {"args": tp, "return": None}
    return app.job(name="tests.kind", queue="q")(handler)


#: (case, payload type, payload, the field named (None: the value itself), words)
KIND_ERRORS: list[tuple[str, Any, Any, str | None, str]] = [
    # dataclass
    ("dataclass: wrong field type", Point, Point("a"), "x", "Expected `int`, got `str`"),  # type: ignore[arg-type]
    ("dataclass: unknown key", Point, {"x": 1, "yy": 2.0}, "yy", "unknown field 'yy'.*'y'"),
    ("dataclass: missing key", Point, {"y": 1.0}, "x", "missing required field `x`"),
    ("dataclass: wrong key type", Point, {"x": "1"}, "x", "Expected `int`, got `str`"),
    ("dataclass: another class", Point, Size(1), None, "takes a Point.*got Size"),
    ("dataclass: a Struct", Point, Inner(), None, "takes a Point.*got Inner"),
    ("dataclass: a list", Point, [1, 2.0], None, "takes a Point.*got list"),
    ("dataclass: nan", Point, Point(1, math.nan), "y", "NaN"),
    ("dataclass: surrogate", Point, Point(1, tags=["\ud800"]), "tags[0]", "surrogate"),
    ("dataclass: nested tuple", Segment, Segment(Pair(1), Pair("x")), "end.left", "Expected `int`"),  # type: ignore[arg-type]
    # attrs
    ("attrs: wrong field type", Size, Size("a"), "w", "Expected `int`, got `str`"),  # type: ignore[arg-type]
    ("attrs: unknown key", Size, {"w": 1, "lable": "x"}, "lable", "unknown field.*'label'"),
    ("attrs: missing key", Size, {"h": 2.0}, "w", "missing required field `w`"),
    ("attrs: another class", Size, Point(1), None, "takes a Size.*got Point"),
    ("attrs: inf", Size, Size(1, math.inf), "h", "inf"),
    ("attrs: surrogate", Size, Size(1, label="\udfff"), "label", "surrogate"),
    # TypedDict
    (
        "typeddict: unknown key",
        Mail,
        {"to": "a", "subjet": "s", "weight": 1.0},
        "subjet",
        "'subject'",
    ),
    (
        "typeddict: wrong type",
        Mail,
        {"to": 1, "subject": "s", "weight": 1.0},
        "to",
        "Expected `str`",
    ),
    ("typeddict: missing key", Mail, {"to": "a", "weight": 1.0}, "subject", "missing required"),
    ("typeddict: not a dict", Mail, Point(1), None, "takes a Mail.*got Point"),
    ("typeddict: nan", Mail, {"to": "a", "subject": "s", "weight": math.nan}, "weight", "NaN"),
    # NamedTuple
    ("namedtuple: wrong field type", Pair, Pair("a"), "left", "Expected `int`, got `str`"),  # type: ignore[arg-type]
    ("namedtuple: unknown key", Pair, {"left": 1, "rigth": "x"}, "rigth", "'right'"),
    ("namedtuple: missing key", Pair, {"right": "x"}, "left", "missing required field `left`"),
    ("namedtuple: wrong key type", Pair, {"left": 1, "right": 2}, "right", "Expected `str`"),
    ("namedtuple: a plain tuple", Pair, (1, "x"), None, "takes a Pair.*got tuple"),
    ("namedtuple: surrogate", Pair, Pair(1, "\ud800"), "right", "surrogate"),
    ("namedtuple: nan", Pair, Pair(1, "", math.nan), "score", "NaN"),
    # an array_like Struct
    ("array_like: wrong field type", Row, Row("x"), "a", "Expected `int`, got `str`"),  # type: ignore[arg-type]
    ("array_like: missing key", Row, {"b": "x"}, "a", "missing required field `a`"),
    # plain types
    ("int: a str", int, "5", None, "Expected `int`, got `str`"),
    ("int: a bool", int, True, None, "Expected `int`, got `bool`"),
    ("int: a float", int, 1.5, None, "Expected `int`, got `float`"),
    ("float: nan", float, math.nan, None, "NaN"),
    ("str: surrogate", str, "a\ud800", None, "surrogate"),
    ("bool: an int", bool, 1, None, "Expected `bool`, got `int`"),
    ("list: wrong item", list[int], [1, "a"], "[1]", "Expected `int`, got `str`"),
    ("list: a dict", list[int], {"a": 1}, None, "Expected `array`, got `object`"),
    ("dict: wrong value", dict[str, int], {"a": "b"}, "a", "Expected `int`, got `str`"),
    ("dict: inf", dict[str, float], {"a": 1.0, "b": math.inf}, "b", "inf"),
    ("list of tuples", list[Pair], [Pair(1), Pair("x")], "[1].left", "Expected `int`"),  # type: ignore[arg-type]
    ("union", Tagged | Other, {"type": "Nope"}, "type", "Invalid value 'Nope'"),
]


@pytest.mark.parametrize(
    ("tp", "payload", "field", "words"),
    [case[1:] for case in KIND_ERRORS],
    ids=[case[0] for case in KIND_ERRORS],
)
def test_every_kind_of_payload_is_refused_naming_the_field(
    app: App, tp: Any, payload: Any, field: str | None, words: str
) -> None:
    job = job_for(app, tp)
    with pytest.raises(PayloadError, match=words) as caught:
        job.enqueue_sync(payload)
    assert caught.value.field == field
    message = str(caught.value)
    assert "'tests.kind'" in message
    if field is not None:
        assert field.rsplit(".", 1)[-1] in message
    assert app._storage.run_sync(ops.Count("q")) == dict.fromkeys(JobState, 0)


GOOD: list[tuple[str, Any, Any, Any]] = [
    # (case, payload type, payload, what the handler gets)
    ("dataclass", Point, Point(1, 2.5, ["a"]), Point(1, 2.5, ["a"])),
    ("dataclass dict", Point, {"x": 1}, Point(1)),
    ("attrs", Size, Size(2), Size(2)),
    ("attrs dict", Size, {"w": 2, "h": 3}, Size(2, 3.0)),
    (
        "typeddict",
        Mail,
        {"to": "a", "subject": "s", "weight": 1},
        {"to": "a", "subject": "s", "weight": 1.0},
    ),
    ("namedtuple", Pair, Pair(1, "x"), Pair(1, "x")),
    ("namedtuple dict", Pair, {"right": "x", "left": 1}, Pair(1, "x")),
    ("namedtuple dict, a default skipped", Pair, {"left": 1, "score": 2}, Pair(1, "", 2.0)),
    ("array_like struct dict", Row, {"b": "x", "a": 1}, Row(1, "x")),
    ("int", int, 5, 5),
    ("float from an int", float, 5, 5.0),
    ("list", list[int], [1, 2], [1, 2]),
    ("dict", dict[str, float], {"a": 1}, {"a": 1.0}),
    ("union", Tagged | Other, Other(1), Other(1)),
    ("union dict", Tagged | Other, {"type": "Tagged", "a": 1}, Tagged(1)),
    ("tagged struct dict", Tagged, {"type": "Tagged", "a": 1}, Tagged(1)),
    ("optional", int | None, None, None),
    ("any", Any, {"a": [1, None]}, {"a": [1, None]}),
    ("object (decoded as Any is)", object, [1, "a"], [1, "a"]),
]


@pytest.mark.parametrize(
    ("tp", "payload", "received"), [g[1:] for g in GOOD], ids=[g[0] for g in GOOD]
)
def test_every_kind_of_payload_is_stored_and_decoded_as_its_type(
    app: App, tp: Any, payload: Any, received: Any
) -> None:
    job = job_for(app, tp)
    decoded = job.decode(job.new_job(payload, 0).payload)
    assert decoded == received
    assert type(decoded) is type(received)


def test_a_handler_without_a_payload_annotation_is_told_what_to_annotate(app: App) -> None:
    def resize(args, ctx):  # type: ignore[no-untyped-def]
        return None

    with pytest.raises(ConfigError, match=r"resize.*annotate its first parameter 'args'"):
        app.job(resize)

    def nothing() -> None:
        return None

    with pytest.raises(ConfigError, match=r"nothing must take \(args\) or \(args, ctx\)"):
        app.job(nothing)
    assert app.registry.jobs == {}


@pytest.mark.parametrize(
    ("tp", "words"),
    [
        (NotASchema, "NotASchema.*not a type msgspec can validate"),
        (list[NotASchema], "NotASchema.*not a type msgspec can validate"),
        (Inner | Outer, "Inner | Outer|Type unions may not contain more than one"),
    ],
    ids=["plain class", "plain class in a list", "untagged union of Structs"],
)
def test_a_payload_type_msgspec_cannot_validate_is_a_config_error(
    app: App, tp: Any, words: str
) -> None:
    with pytest.raises(ConfigError, match=words):
        job_for(app, tp)
    assert app.registry.jobs == {}


def test_an_unresolvable_annotation_is_a_config_error_naming_it(app: App) -> None:
    def handler(args: Missing) -> None:  # type: ignore[name-defined]  # noqa: F821
        return None

    with pytest.raises(ConfigError, match=r"handler.*Missing"):
        app.job(handler)

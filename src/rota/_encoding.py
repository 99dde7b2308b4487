"""JSON encoding that refuses what JSON cannot hold faithfully, naming where it is.

msgspec's JSON encoder raises on a string with a lone surrogate (``"\\ud800"``), on a value
of a type it does not support and on nesting deeper than the interpreter's recursion limit,
without saying where; and it silently writes NaN and the infinities as ``null``. ``encode``
raises ``Unencodable`` for all of them, with the path of the offending value
(``.inner.x``, ``.tags[1]``).

It stays fast: the value is walked in Python only when encoding failed, or when the JSON
contains ``null`` (how NaN and infinities come out) and its type may hold a ``null`` that
would decode (``may_hold_null``; elsewhere the decoding check that follows refuses the
``null``). A payload of a type without ``None`` or ``Any`` in it costs nothing more; one
with them, a substring search.

Paths name fields as users wrote them, whatever the type that holds them: a Struct, a
dataclass, an attrs class, a ``TypedDict``, a ``NamedTuple`` (``.left``, where msgspec,
which writes it as an array, says ``[0]``: ``name_path``), a dict's key (``.a``, where
msgspec says ``[...]``).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from collections.abc import Iterator
from typing import Any, Final, NamedTuple

import msgspec
import msgspec.inspect as mi

__all__ = [
    "Shape",
    "Unencodable",
    "check_floats",
    "encode",
    "explain",
    "find_problem",
    "may_hold_null",
    "name_path",
    "shape",
    "too_deep",
    "type_name",
    "unsupported_types",
]

_JSON: Final = msgspec.json.Encoder()

#: A path in a message is cut after this many steps (a too-deep value has thousands).
_SHOWN_STEPS: Final = 6


class Unencodable(ValueError):
    """A value JSON cannot hold: ``problem`` says what, ``path`` where (``.inner.x``, ``[2]``;
    empty for the value itself)."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{problem} - at `{self.where}`")

    @property
    def where(self) -> str:
        """The path as msgspec writes it: ``$.inner.x``."""
        return f"${self.path}"

    @property
    def field(self) -> str | None:
        """The path without its leading dot (``inner.x``); None for the value itself."""
        return self.path.removeprefix(".") or None


def encode(value: Any, *, check_nulls: bool = True) -> bytes:
    """``value`` as JSON; ``Unencodable`` naming the path of the first value that JSON
    cannot hold (NaN and infinities included, unless ``check_nulls`` is false: see
    ``may_hold_null``)."""
    try:
        data = _JSON.encode(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise explain(value, exc) from None
    if check_nulls and data.find(b"null") >= 0:  # how NaN and infinities come out
        check_floats(value)
    return data


def check_floats(value: Any) -> None:
    """``Unencodable`` at the first NaN or infinite float inside ``value``."""
    found = find_problem(value, floats_only=True)
    if found is not None:
        raise found


def explain(value: Any, exc: BaseException) -> Unencodable:
    """Why msgspec could not encode ``value`` (it raised ``exc``), and where."""
    if isinstance(exc, Unencodable):
        return exc
    if isinstance(exc, RecursionError):
        return too_deep(value)
    return find_problem(value) or Unencodable("", str(exc))


def _type_infos(root: Any) -> Iterator[Any]:
    """Every ``msgspec.inspect`` type info inside ``root`` (itself first), depth first in
    the order the type spells them, each once (recursive types end)."""
    stack: list[Any] = [root]
    seen: set[int] = set()
    while stack:
        info = stack.pop()
        if id(info) in seen:
            continue
        seen.add(id(info))
        yield info
        if isinstance(info, mi.Metadata):
            inner = [info.type]
        elif isinstance(info, mi.UnionType):
            inner = list(info.types)
        elif isinstance(info, mi.CollectionType):
            inner = [info.item_type]
        elif isinstance(info, mi.TupleType):
            inner = list(info.item_types)
        elif isinstance(info, mi.DictType):
            inner = [info.key_type, info.value_type]
        elif isinstance(
            info, (mi.StructType, mi.TypedDictType, mi.NamedTupleType, mi.DataclassType)
        ):
            inner = [field.type for field in info.fields]
        else:
            inner = []
        stack.extend(reversed(inner))


def may_hold_null(tp: Any) -> bool:
    """Whether a value of type ``tp`` may hold a ``null`` that decodes: a None, or an
    ``Any``. Where it cannot, a NaN or an infinity (which msgspec writes as ``null``) fails
    the decoding check anyway, so encoders of such types need not look for them: the
    common payload of ints and strings costs nothing more."""
    try:
        root = msgspec.inspect.type_info(tp)
    except (TypeError, ValueError):
        return True
    return any(
        isinstance(info, (mi.NoneType, mi.AnyType, mi.CustomType)) for info in _type_infos(root)
    )


class Shape(NamedTuple):
    """How values of a payload type are given: what ``shape`` found."""

    cls: type | None
    """The class whose instances are taken as they are (a Struct, a dataclass, an attrs
    class, a NamedTuple); None for the others (a TypedDict, ``int``, ``list[int]``...),
    whose values are checked by decoding what they encode to."""
    fields: tuple[mi.Field, ...] | None
    """The fields, for the types that have them (a dict of them is taken too); None for
    the others."""
    names: frozenset[str]
    """The keys a dict of the fields may have: the fields' names as in JSON (and a tagged
    Struct's tag field)."""
    positional: bool
    """Whether it is written as a JSON array (a NamedTuple, an ``array_like`` Struct), so a
    dict of its fields is put in the fields' order first."""
    tag: tuple[str, Any] | None
    """A tagged Struct's tag field and value."""


def shape(tp: Any) -> Shape:
    """How values of ``tp`` are given (see ``Shape``)."""
    info = mi.type_info(tp)
    while isinstance(info, mi.Metadata):
        info = info.type
    if isinstance(info, (mi.StructType, mi.DataclassType, mi.NamedTupleType, mi.TypedDictType)):
        names = {field.encode_name for field in info.fields}
        tag = None
        if isinstance(info, mi.StructType) and info.tag_field is not None:
            tag = (info.tag_field, info.tag)
            names.add(info.tag_field)
        positional = isinstance(info, mi.NamedTupleType) or (
            isinstance(info, mi.StructType) and info.array_like
        )
        cls = None if isinstance(info, mi.TypedDictType) else info.cls
        return Shape(cls, info.fields, frozenset(names), positional, tag)
    return Shape(None, None, frozenset(), False, None)


def unsupported_types(tp: Any) -> list[type]:
    """The classes inside ``tp`` that msgspec cannot validate or build without hooks (plain
    classes: ``CustomType``, except ``object``, which decodes as ``Any`` does), in the
    order found."""
    return [
        info.cls
        for info in _type_infos(mi.type_info(tp))
        if isinstance(info, mi.CustomType) and info.cls is not object
    ]


def type_name(tp: Any) -> str:
    """An annotation as written: ``int``, ``list[int]``, ``Doubled``, ``None``."""
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__qualname__
    return repr(tp).replace("typing.", "")


def name_path(tp: Any, value: Any, path: str) -> str:
    """A path in a msgspec validation error of ``value`` (of type ``tp``) in the names a
    user knows: a NamedTuple's or an ``array_like`` Struct's field by name (``.left``,
    where msgspec says ``[0]``), a dict's value by its key (``.a``, where msgspec says
    ``[...]``: found by checking the dict's values one by one). Steps it cannot follow
    are kept as they are. Only for errors: it may decode parts of ``value`` again."""
    if "[" not in path:
        return path
    steps = _steps(path)
    named: list[str] = []
    for n, step in enumerate(steps):
        try:
            found = _follow(tp, value, step)
        except Exception:
            found = None
        if found is None:
            named.extend(steps[n:])
            break
        shown, tp, value = found
        named.append(shown)
    return "".join(named)


_MISSING: Final = object()


def _follow(tp: Any, value: Any, step: str) -> tuple[str, Any, Any] | None:
    """One step of ``name_path``: how to show it, and the type and value it leads to (None:
    it cannot tell)."""
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # only X | None can be followed
        members = [member for member in args if member is not type(None)]
        return _follow(members[0], value, step) if len(members) == 1 else None
    if step == "[...]":  # a dict's value: which one does not validate?
        if origin is not dict or not isinstance(value, dict):
            return None
        value_type = args[1] if args else Any
        decoder = msgspec.json.Decoder(value_type)
        for key, item in value.items():
            try:
                decoder.decode(_JSON.encode(item))
            except msgspec.ValidationError:
                return (f".{key}" if isinstance(key, str) else f"[{key!r}]"), value_type, item
        return None
    if step.startswith("["):
        index = int(step[1:-1])
        fields = _fields(tp)
        if fields is not None and isinstance(tp, type) and _positional(tp):
            if issubclass(tp, msgspec.Struct) and tp.__struct_config__.tag is not None:
                index -= 1  # a tagged array_like Struct starts with its tag
            attr, name = fields[index]
            return f".{name}", _hints(tp)[attr], _item(value, attr, name, index)
        if origin is tuple and args and args[-1] is not Ellipsis:
            item_type = args[index]
        else:
            item_type = args[0] if args else Any
        item = value[index] if isinstance(value, (list, tuple)) else _MISSING
        return step, item_type, item
    name = step[1:]
    if origin is dict:
        item = value.get(name, _MISSING) if isinstance(value, dict) else _MISSING
        return step, args[1] if args else Any, item
    for attr, encoded in _fields(tp) or ():
        if encoded == name:
            return step, _hints(tp)[attr], _item(value, attr, name, None)
    return None


def _fields(tp: Any) -> list[tuple[str, str]] | None:
    """A type's fields as (attribute, name in JSON); None for a type without fields."""
    if not isinstance(tp, type):
        return None
    if issubclass(tp, msgspec.Struct):
        return list(zip(tp.__struct_fields__, tp.__struct_encode_fields__, strict=True))
    if issubclass(tp, tuple) and hasattr(tp, "_fields"):  # a NamedTuple
        return [(name, name) for name in tp._fields]
    if dataclasses.is_dataclass(tp):
        return [(f.name, f.name) for f in dataclasses.fields(tp)]
    if hasattr(tp, "__attrs_attrs__"):
        return [(a.name, a.name) for a in tp.__attrs_attrs__]
    if typing.is_typeddict(tp):
        return [(name, name) for name in _hints(tp)]
    return None


def _positional(tp: type) -> bool:
    """Whether values of ``tp`` are written as JSON arrays (NamedTuples, array_like
    Structs)."""
    if issubclass(tp, msgspec.Struct):
        return bool(tp.__struct_config__.array_like)
    return issubclass(tp, tuple)


def _hints(tp: type) -> dict[str, Any]:
    return typing.get_type_hints(tp)


def _item(value: Any, attr: str, name: str, index: int | None) -> Any:
    """The field ``attr`` (``name`` in JSON, at ``index`` if positional) of ``value``: an
    instance, or a dict of its fields."""
    if isinstance(value, dict):
        return value.get(name, _MISSING)
    if isinstance(value, (list, tuple)) and index is not None and not hasattr(value, attr):
        return value[index] if index < len(value) else _MISSING
    return getattr(value, attr, _MISSING)


def too_deep(value: Any) -> Unencodable:
    """The error for ``value`` nested deeper than msgspec recurses: its path is the field
    that holds the deepest value (the message shows the start of the deepest path)."""
    deepest, depth = "", 0
    stack: list[tuple[str, Any, int]] = [("", value, 0)]
    while stack:
        path, item, level = stack.pop()
        if level > depth:
            deepest, depth = path, level
        stack.extend((p, v, level + 1) for p, v in _children(item, path) or ())
    steps = _steps(deepest)
    shown = "".join(steps[:_SHOWN_STEPS]) + ("..." if len(steps) > _SHOWN_STEPS else "")
    # The path names the field that holds the deep value: its first step.
    return Unencodable(
        "".join(steps[:1]),
        f"nested too deeply ({depth} levels, at `${shown}`; msgspec recurses at most about "
        f"{sys.getrecursionlimit()} levels, fewer from a deep call stack)",
    )


def find_problem(value: Any, *, floats_only: bool = False) -> Unencodable | None:
    """The first value inside ``value`` that JSON cannot hold (depth first, in order): a
    NaN or infinite float, and unless ``floats_only`` a string with a lone surrogate or a
    value msgspec cannot encode. None if there is none."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return Unencodable(
                    path, f"NaN and infinities are not JSON numbers: refused {item!r}"
                )
            continue
        if isinstance(item, str):
            if not floats_only and _lone_surrogate(item):
                return Unencodable(
                    path,
                    f"a string with a lone surrogate cannot be encoded as UTF-8: {_clip(item)!r}",
                )
            continue
        if item is None or isinstance(item, (int, bytes, bytearray)):
            continue
        if isinstance(item, dict) and not floats_only:
            for key in item:
                if isinstance(key, str) and _lone_surrogate(key):
                    return Unencodable(
                        path, f"a key with a lone surrogate cannot be encoded as UTF-8: {key!r}"
                    )
        children = _children(item, path)
        if children is None:
            if not floats_only:
                try:
                    _JSON.encode(item)
                except RecursionError:
                    return too_deep(item)
                except (TypeError, ValueError, OverflowError) as exc:
                    return Unencodable(path, str(exc))
            continue
        stack.extend(reversed(children))
    return None


def _children(item: Any, path: str) -> list[tuple[str, Any]] | None:
    """The values inside a container, with their paths; None for anything else."""
    if isinstance(item, msgspec.Struct):
        cls = type(item)
        return [
            (f"{path}.{name}", getattr(item, attr))
            for name, attr in zip(cls.__struct_encode_fields__, cls.__struct_fields__, strict=True)
        ]
    if isinstance(item, dict):
        return [
            (f"{path}.{key}" if isinstance(key, str) else f"{path}[{key!r}]", value)
            for key, value in item.items()
        ]
    if isinstance(item, tuple) and hasattr(item, "_fields"):  # a NamedTuple: by field name
        return [(f"{path}.{name}", value) for name, value in zip(item._fields, item, strict=True)]
    if isinstance(item, (list, tuple, set, frozenset)):
        return [(f"{path}[{i}]", value) for i, value in enumerate(item)]
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return [(f"{path}.{f.name}", getattr(item, f.name)) for f in dataclasses.fields(item)]
    attributes = getattr(type(item), "__attrs_attrs__", None)
    if attributes is not None:  # an attrs instance
        return [(f"{path}.{a.name}", getattr(item, a.name)) for a in attributes]
    return None


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _steps(path: str) -> list[str]:
    """``.a[0].b[...]`` -> ``[".a", "[0]", ".b", "[...]"]``."""
    steps: list[str] = []
    current = ""
    for char in path:
        if char in ".[" and current and not (current[0] == "[" and current[-1] != "]"):
            steps.append(current)
            current = ""
        current += char
    if current:
        steps.append(current)
    return steps


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."

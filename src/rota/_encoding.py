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
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any, Final

import msgspec
import msgspec.inspect as mi

__all__ = [
    "Unencodable",
    "check_floats",
    "encode",
    "explain",
    "find_problem",
    "may_hold_null",
    "too_deep",
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


def may_hold_null(tp: Any) -> bool:
    """Whether a value of type ``tp`` may hold a ``null`` that decodes: a None, or an
    ``Any``. Where it cannot, a NaN or an infinity (which msgspec writes as ``null``) fails
    the decoding check anyway, so encoders of such types need not look for them: the
    common payload of ints and strings costs nothing more."""
    try:
        stack: list[Any] = [msgspec.inspect.type_info(tp)]
    except (TypeError, ValueError):
        return True
    seen: set[int] = set()
    while stack:
        info = stack.pop()
        if id(info) in seen:
            continue
        seen.add(id(info))
        if isinstance(info, (mi.NoneType, mi.AnyType, mi.CustomType)):
            return True
        if isinstance(info, mi.Metadata):
            stack.append(info.type)
        elif isinstance(info, mi.UnionType):
            stack.extend(info.types)
        elif isinstance(info, mi.CollectionType):
            stack.append(info.item_type)
        elif isinstance(info, mi.TupleType):
            stack.extend(info.item_types)
        elif isinstance(info, mi.DictType):
            stack.extend((info.key_type, info.value_type))
        elif isinstance(
            info, (mi.StructType, mi.TypedDictType, mi.NamedTupleType, mi.DataclassType)
        ):
            stack.extend(field.type for field in info.fields)
    return False


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
    if isinstance(item, (list, tuple, set, frozenset)):
        return [(f"{path}[{i}]", value) for i, value in enumerate(item)]
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return [(f"{path}.{f.name}", getattr(item, f.name)) for f in dataclasses.fields(item)]
    return None


def _lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _steps(path: str) -> list[str]:
    """``.a[0].b`` -> ``[".a", "[0]", ".b"]``."""
    steps: list[str] = []
    current = ""
    for char in path:
        if char in ".[" and current:
            steps.append(current)
            current = ""
        current += char
    if current:
        steps.append(current)
    return steps


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."

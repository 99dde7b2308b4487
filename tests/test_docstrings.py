"""Every door of the public API says what it does: each class and function that ``rota``,
``rota.testing`` and ``rota.errors`` export, and each public method of those classes
(those rota defines, inherited ones included), has a docstring of its own."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

import rota
import rota.errors
import rota.testing

PUBLIC_MODULES: tuple[ModuleType, ...] = (rota, rota.testing, rota.errors)


def _own_doc(obj: Any) -> str | None:
    """The docstring an object has itself (``inspect.getdoc`` would borrow a parent's)."""
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return doc.strip() if isinstance(doc, str) and doc.strip() else None


def _methods(cls: type) -> Iterator[tuple[str, Any]]:
    """The public methods and properties of ``cls`` that rota defines (its own and its rota
    bases'), each once, as the class sees it."""
    seen: set[str] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("rota"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in seen:
                continue
            seen.add(name)
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if isinstance(value, property):
                value = value.fget
            if inspect.isfunction(value):
                yield name, value


def public_definitions() -> Iterator[tuple[str, Any]]:
    seen: set[int] = set()
    for module in PUBLIC_MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if id(obj) in seen or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            seen.add(id(obj))
            yield f"{module.__name__}.{name}", obj
            if inspect.isclass(obj):
                for method, function in _methods(obj):
                    yield f"{module.__name__}.{name}.{method}", function


def test_the_public_api_is_walked() -> None:
    names = dict(public_definitions())
    assert len(names) > 100
    for door in ("rota.App.run", "rota.JobHandle.result_sync", "rota.testing.drain"):
        assert door in names
    assert "rota.Context.log" in names  # inherited from a rota base class


@pytest.mark.parametrize(("name", "obj"), list(public_definitions()), ids=lambda v: str(v))
def test_every_public_door_has_a_docstring(name: str, obj: Any) -> None:
    assert _own_doc(obj) is not None, f"{name} has no docstring"

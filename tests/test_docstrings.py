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


def _all_modules() -> Iterator[ModuleType]:
    """Every module of the rota package (imported)."""
    import importlib
    import pkgutil

    yield rota
    for info in pkgutil.walk_packages(rota.__path__, prefix="rota."):
        if info.name == "rota.__main__":
            continue  # runs the command line when imported
        yield importlib.import_module(info.name)


def every_definition() -> Iterator[tuple[str, Any]]:
    """Each public class and function a rota module defines, and each public method a rota
    class defines itself, with the docstring it shows (``inspect.getdoc``: a method that
    implements one of a base class or protocol shows that one's contract)."""
    for module in _all_modules():
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            yield f"{module.__name__}.{name}", obj
            if inspect.isclass(obj):
                for method, value in vars(obj).items():
                    if method.startswith("_"):
                        continue
                    if isinstance(value, (staticmethod, classmethod, property)) or (
                        inspect.isfunction(value)
                    ):
                        yield f"{module.__name__}.{name}.{method}", getattr(obj, method, value)


def _shown_doc(obj: Any) -> str | None:
    """A class's own docstring (not one a library base lends it, msgspec's ``Struct``'s or
    ``Exception``'s); a function's or property's own, or that of the rota method of the
    same name it implements."""
    if inspect.isclass(obj):
        return _own_doc(obj)
    doc = inspect.getdoc(obj)
    if doc is None or _own_doc(obj if not isinstance(obj, property) else obj.fget):
        return doc
    return doc if getattr(obj, "__module__", "rota").startswith("rota") else None


def test_every_public_definition_has_a_docstring() -> None:
    """Not only the public API's doors: every public class, function and method of rota
    (an implementation of a documented protocol method shows that method's docstring)."""
    definitions = dict(every_definition())
    assert len(definitions) > 400
    missing = sorted(name for name, obj in definitions.items() if not _shown_doc(obj))
    assert missing == [], f"{len(missing)} public definitions have no docstring: {missing}"

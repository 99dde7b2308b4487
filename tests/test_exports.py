"""The public namespace is small, explicit and sorted; the errors form one tree."""

from __future__ import annotations

import typing
from typing import Any

import pytest

import rota
import rota.errors


def test_public_names_are_pinned() -> None:
    assert rota.__all__ == [
        "App",
        "AttemptEnded",
        "Config",
        "ConfigError",
        "Context",
        "CorruptRow",
        "Event",
        "EventKind",
        "EventStream",
        "Health",
        "Instrument",
        "Job",
        "JobDefinition",
        "JobFailed",
        "JobHandle",
        "JobNotFound",
        "JobOptions",
        "JobState",
        "JobStateError",
        "LeaseLost",
        "LogEntry",
        "PayloadError",
        "Progress",
        "QueueConfig",
        "QueueHandle",
        "Registry",
        "Retry",
        "RotaError",
        "Runtime",
        "StorageError",
        "SupervisorGaveUp",
        "SyncContext",
        "Unrecoverable",
        "custom",
        "exponential",
        "fixed",
        "linear",
    ]
    assert rota.__all__ == sorted(rota.__all__)
    for name in rota.__all__:
        assert getattr(rota, name) is not None


#: what a user receives from a public door (README), by the door's annotation
RECEIVED: list[tuple[object, str]] = [
    (rota.App.queue, "QueueHandle"),
    (rota.App.handle, "JobHandle"),
    (rota.App.events, "EventStream"),
    (rota.App.definition, "JobDefinition"),
    (rota.App.run, "Runtime"),
    (rota.Registry.add, "JobDefinition"),
    (rota.JobHandle.info, "Job"),
    (rota.JobHandle.status, "JobState"),
    (rota.JobHandle.progress, "Progress"),
    (rota.JobHandle.logs, "LogEntry"),
    (rota.QueueHandle.jobs, "Job"),
    (rota.EventStream.__anext__, "Event"),
    (rota.Runtime.health, "Health"),
]


@pytest.mark.parametrize(("door", "name"), RECEIVED, ids=[n for _, n in RECEIVED])
def test_what_users_receive_is_exported(door: Any, name: str) -> None:
    hints = typing.get_type_hints(door)
    annotations = " ".join(repr(hint) for hint in hints.values())
    assert name in annotations, f"{door.__qualname__} no longer takes or returns {name}"
    assert name in rota.__all__
    assert getattr(rota, name).__module__.startswith("rota.")


def test_a_queue_config_is_what_config_holds_per_queue() -> None:
    assert rota.Config(queue_config={"q": {"concurrency": 2}}).queue_config == {
        "q": rota.QueueConfig(concurrency=2)
    }


def test_actor_kernel_internals_are_not_exported() -> None:
    """Users never receive these: an App's calls turn a Store that stops or does not
    answer into a StorageError (tests/test_errors.py); they stay in rota.errors."""
    for name in ("ActorError", "ActorNotRunning", "CallTimeout", "MailboxFull"):
        assert name not in rota.__all__
        assert not hasattr(rota, name)
        assert issubclass(getattr(rota.errors, name), rota.RotaError)


def test_every_error_derives_from_rota_error_and_is_drawn_in_the_tree() -> None:
    doc = rota.errors.__doc__
    assert doc is not None
    for name in rota.errors.__all__:
        cls = getattr(rota.errors, name)
        assert issubclass(cls, rota.errors.RotaError)
        assert name in doc, f"{name} missing from the tree in rota.errors' docstring"


def test_control_flow_exceptions_are_not_errors() -> None:
    assert not issubclass(rota.Retry, rota.RotaError)
    assert not issubclass(rota.Unrecoverable, rota.RotaError)


def test_unknown_option_suggests_the_closest_name() -> None:
    err = rota.ConfigError.unknown_option("concurency", ["concurrency", "queue"], "Worker")
    assert str(err) == "unknown option 'concurency' for Worker, did you mean 'concurrency'?"
    err = rota.ConfigError.unknown_option("zzz", ["b", "a"], "Worker")
    assert str(err) == "unknown option 'zzz' for Worker (known: a, b)"

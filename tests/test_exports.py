"""The public namespace is small, explicit and sorted; the errors form one tree."""

from __future__ import annotations

import rota
import rota.errors


def test_public_names_are_pinned() -> None:
    assert rota.__all__ == [
        "ActorNotRunning",
        "App",
        "AttemptEnded",
        "CallTimeout",
        "Config",
        "ConfigError",
        "Context",
        "CorruptRow",
        "Event",
        "EventKind",
        "Instrument",
        "JobFailed",
        "JobHandle",
        "JobNotFound",
        "JobOptions",
        "JobState",
        "JobStateError",
        "LeaseLost",
        "MailboxFull",
        "PayloadError",
        "Progress",
        "Registry",
        "Retry",
        "RotaError",
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

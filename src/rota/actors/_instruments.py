"""The runtime's installed instruments (``rota.Instrument``), called where they attach.

Each hook keeps a list of the instruments that override it, so a hook nobody overrides
costs one truth test. An instrument that raises is logged and removed (as trio does)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from rota.domain.instrument import AttemptEnded, Instrument

__all__ = ["Instruments"]

log = logging.getLogger("rota.instrument")

_HOOKS = ("storage_batch_started", "storage_batch_ended", "attempt_ended")


class Instruments:
    """Dispatch to the instruments that override each hook."""

    def __init__(self, instruments: Sequence[Instrument] = ()) -> None:
        self._by_hook: dict[str, list[Instrument]] = {hook: [] for hook in _HOOKS}
        for instrument in instruments:
            if not isinstance(instrument, Instrument):
                raise TypeError(f"{instrument!r} is not a rota.Instrument")
            for hook in _HOOKS:
                if getattr(type(instrument), hook) is not getattr(Instrument, hook):
                    self._by_hook[hook].append(instrument)
        self.storage = self.attempts = False
        self._refresh()

    def _refresh(self) -> None:
        by_hook = self._by_hook
        #: whether any instrument watches storage batches / attempts
        self.storage = bool(by_hook["storage_batch_started"] or by_hook["storage_batch_ended"])
        self.attempts = bool(by_hook["attempt_ended"])

    def _failed(self, hook: str, instrument: Instrument, exc: Exception) -> None:
        log.error("instrument %r raised in %s and was removed: %r", instrument, hook, exc)
        for hooked in self._by_hook.values():
            if instrument in hooked:
                hooked.remove(instrument)
        self._refresh()

    def storage_batch_started(self, operations: int) -> None:
        """Tell the instruments that override it (``Instrument.storage_batch_started``)."""
        for instrument in list(self._by_hook["storage_batch_started"]):
            try:
                instrument.storage_batch_started(operations)
            except Exception as exc:
                self._failed("storage_batch_started", instrument, exc)

    def storage_batch_ended(
        self, operations: int, seconds: float, error: BaseException | None
    ) -> None:
        """Tell the instruments that override it (``Instrument.storage_batch_ended``)."""
        for instrument in list(self._by_hook["storage_batch_ended"]):
            try:
                instrument.storage_batch_ended(operations, seconds, error)
            except Exception as exc:
                self._failed("storage_batch_ended", instrument, exc)

    def attempt_ended(self, attempt: AttemptEnded) -> None:
        """Tell the instruments that override it (``Instrument.attempt_ended``)."""
        for instrument in list(self._by_hook["attempt_ended"]):
            try:
                instrument.attempt_ended(attempt)
            except Exception as exc:
                self._failed("attempt_ended", instrument, exc)

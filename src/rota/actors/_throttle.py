"""A warning that repeats while a fault lasts (a full disk, a lock) is logged once, then
at most every ``every_s`` with how many times it happened since; its end is logged too."""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["Throttled"]


class Throttled:
    """Rate-limited warnings of one logger, one stream per ``key``."""

    def __init__(self, logger: logging.Logger, every_s: float = 30.0) -> None:
        self.logger = logger
        self.every_s = every_s
        self._open: dict[str, tuple[float, float, int]] = {}
        """key -> (first seen, last logged, occurrences since last logged)."""

    def warning(
        self, key: str, message: str, *args: Any, extra: dict[str, Any] | None = None
    ) -> None:
        """Log a warning for ``key`` at most every ``every_s``; a line after a pause says how
        often it happened meanwhile (``(12 times in 30 s)``)."""
        now = time.monotonic()
        first, logged, since = self._open.get(key, (now, -float("inf"), 0))
        since += 1
        if now - logged >= self.every_s:
            suffix = f" ({since} times in {now - first:.0f} s)" if since > 1 else ""
            self.logger.warning(message + suffix, *args, extra=extra)
            logged, since = now, 0
        self._open[key] = (first, logged, since)

    def clear(self, key: str, message: str | None = None) -> None:
        """The fault is over: log ``message`` (with its duration) if it had been logged."""
        entry = self._open.pop(key, None)
        if entry is not None and message is not None:
            self.logger.warning("%s (after %.1f s)", message, time.monotonic() - entry[0])

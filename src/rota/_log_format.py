"""What ``rota worker`` writes to stderr: log records as text or as JSON lines.

rota's modules only log, on ``rota.*`` loggers that hold no handler but a ``NullHandler``:
an application that embeds rota prints nothing of rota's unless it configures logging. The
command line picks an output here:

* ``text``: ``2025-01-02 10:00:00,123 INFO rota.job: jobs.resize #42 (images) attempt 1/5
  completed in 0.012 s``; a traceback that goes with a record on the lines after it;
* ``json``: one object per line: ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``,
  ``message``, the record's structured fields (``extra``: ``job_id``, ``job``, ``queue``,
  ``attempt``, ``max_attempts``, ``duration_s``, ``outcome``, ``error``...) and
  ``traceback`` when one goes with it.

Both escape what a terminal could act on (control characters, bidi overrides) in text that
may come from stored jobs (names, errors, log lines): nothing stored can act on the
terminal, or forge a log line. A text record is one line (a line break in its message is
written ``\n``), followed by its traceback's lines if it has one.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any, Final

import msgspec

__all__ = ["FORMATS", "JsonFormatter", "RoutineSupervision", "TextFormatter", "formatter"]

#: The output formats of ``rota worker --log-format``.
FORMATS: Final = ("text", "json")

#: The attributes every ``LogRecord`` has: anything else on a record came from ``extra``.
_STANDARD: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)

_JSON: Final = msgspec.json.Encoder(enc_hook=repr)


def _escape_code(code: int) -> str:
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` with every character a terminal could act on escaped, visibly (``\\x1b``,
    ``\\u202e``...); line breaks kept (``keep_newlines``) or escaped as ``\\n``."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c.isprintable() or (c == "\n" and keep_newlines):
            out.append(c)
        elif c in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[c])
        else:
            out.append(_escape_code(ord(c)))
    return "".join(out)


def json_printable(text: str) -> str:
    """JSON text with the characters JSON leaves raw but a terminal could act on (DEL, C1
    controls, format characters: the encoder escapes C0 controls itself) written as
    ``\\uXXXX`` escapes: the same JSON, safe to print. Line breaks are kept: outside
    strings (which never hold a raw one) they are the formatting's."""

    def escape(c: str) -> str:
        if c == "\n" or c.isprintable():
            return c
        code = ord(c)
        if code < 0x10000:
            return f"\\u{code:04x}"
        code -= 0x10000  # a surrogate pair, as JSON spells characters beyond the BMP
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"

    if text.isprintable():
        return text
    return "".join(escape(c) for c in text)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message`` on one line, escaped, then the record's traceback
    (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The record as one escaped line, then its traceback if it has one."""
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        text = printable(self.formatMessage(record), keep_newlines=False)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            text += "\n" + printable(record.exc_text)
        if record.stack_info:
            text += "\n" + printable(self.formatStack(record.stack_info))
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (its fields, and ``traceback`` if it has one)."""
        data: dict[str, Any] = {
            "timestamp": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in data:
                data[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            data["traceback"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        try:
            encoded = _JSON.encode(data)
        except (TypeError, ValueError, OverflowError, RecursionError):
            # A lone surrogate, a key JSON cannot hold, something deeper than msgspec goes:
            # every value as text, escaped, rather than a line lost.
            encoded = _JSON.encode({str(k): _text(v) for k, v in data.items()})
        return json_printable(encoded.decode())


def _text(value: Any) -> str | int | float | bool | None:
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int) and -(2**63) <= value < 2**64:
        return value
    text = value if isinstance(value, str) else repr(value)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class RoutineSupervision(logging.Filter):
    """Leaves out the supervision tree's routine records: a child started, or stopped as
    asked (INFO ``child_started`` and ``child_exited``), a dozen lines at every start and
    stop that say nothing went wrong. A worker shows them at ``debug``; crashes,
    restarts and giving up always pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for the supervisors' routine INFO lines; True for everything else."""
        return not (
            record.levelno <= logging.INFO
            and record.name.startswith("rota.supervisors")
            and getattr(record, "event", None) in ("child_started", "child_exited")
        )


def formatter(name: str) -> logging.Formatter:
    """The formatter of an output format (``FORMATS``)."""
    if name == "json":
        return JsonFormatter()
    if name == "text":
        return TextFormatter()
    raise ValueError(f"unknown log format {name!r} ({' or '.join(FORMATS)})")

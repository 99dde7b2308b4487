"""The process pool's wire protocol: msgspec messages over a pair of pipes. Never pickle.

Each frame is a 4-byte big-endian length followed by one MessagePack-encoded message, a
tagged ``msgspec.Struct`` (the tag is the ``"t"`` field). A child reads frames on the fd
it was given for the purpose and writes on another; its own stdin and stdout are moved out
of the way first (stdin reads ``/dev/null``, stdout goes to stderr), so a handler that
prints or reads cannot corrupt the stream.

A conversation::

    parent → child   Hello(app, path, database, backend)
    child  → parent  Ready(pid)                 (or StartFailed(error), then it exits)
    parent → child   RunJob(...)                one at a time
    child  → parent  ProgressReport / LogLine   any number, in order
    child  → parent  JobDone(...)
    ...
    parent → child   Exit()                     (or the pipe closes): the child leaves
"""

from __future__ import annotations

import os
import struct
from typing import Final, Literal

import msgspec

from rota.domain.job import Job

__all__ = [
    "MAX_FRAME",
    "ChildMessage",
    "Exit",
    "FrameError",
    "HEADER_SIZE",
    "Hello",
    "JobDone",
    "LogLine",
    "ParentMessage",
    "ProgressReport",
    "Ready",
    "RunJob",
    "StartFailed",
    "decode_child",
    "decode_parent",
    "encode",
    "frame_length",
    "read_frame",
    "write_frame",
]

#: The largest frame either side accepts (a payload or result bigger than this is refused).
MAX_FRAME: Final = 256 * 1024 * 1024
_HEADER = struct.Struct(">I")


class FrameError(Exception):
    """The stream is broken: a truncated frame, an oversized one, or an unknown message."""


# -- parent → child ------------------------------------------------------------------------


class Hello(msgspec.Struct, frozen=True, tag="hello", tag_field="t"):
    """The first message: what the child must import and where."""

    app: str
    """``module:attribute`` or ``path:/file.py:attribute`` (a script run as ``__main__``)."""
    path: list[str]
    """The parent's ``sys.path``: the child imports what the parent could."""
    database: str
    """The parent app's database, as ``DatabaseUrl.parse`` takes it and independent of the
    working directory (a ``:memory:`` app's private file, so its children share it)."""
    backend: str
    """The async library async handlers run on in the child: ``trio`` or ``asyncio``."""


class RunJob(msgspec.Struct, frozen=True, tag="run", tag_field="t"):
    """Run this job (the child answers with ``JobDone``, after its progress and logs)."""

    job: Job
    """The job as claimed (its payload as stored): the handler's ``ctx.job``."""


class Exit(msgspec.Struct, frozen=True, tag="exit", tag_field="t"):
    """Finish: run the per-thread teardown hooks and exit 0."""


ParentMessage = Hello | RunJob | Exit


# -- child → parent ------------------------------------------------------------------------


class Ready(msgspec.Struct, frozen=True, tag="ready", tag_field="t"):
    """The child imported the app and waits for jobs."""

    pid: int


class StartFailed(msgspec.Struct, frozen=True, tag="start_failed", tag_field="t"):
    """The child could not load the app: ``error`` is its traceback."""

    error: str


class ProgressReport(msgspec.Struct, frozen=True, tag="progress", tag_field="t"):
    """A handler's ``ctx.progress``, to store before the job's outcome."""

    job_id: int
    progress: bytes
    """JSON of ``rota.domain.event.Progress``."""


class LogLine(msgspec.Struct, frozen=True, tag="log", tag_field="t"):
    """A handler's ``ctx.log`` line, to store and log before the job's outcome."""

    job_id: int
    message: str


class JobDone(msgspec.Struct, frozen=True, tag="done", tag_field="t"):
    """How an attempt ended, wherever it ran (a child, or a thread of the pool)."""

    job_id: int
    status: Literal["ok", "error", "retry", "unrecoverable"]
    result: bytes | None = None
    """The JSON-encoded return value (``ok``); None for a handler that returned None."""
    error: str | None = None
    delay_ms: int | None = None
    """``retry``: the delay the handler asked for (None: the job's backoff)."""


ChildMessage = Ready | StartFailed | ProgressReport | LogLine | JobDone

_ENCODER = msgspec.msgpack.Encoder()
_PARENT_DECODER = msgspec.msgpack.Decoder(ParentMessage)
_CHILD_DECODER = msgspec.msgpack.Decoder(ChildMessage)


def encode(message: ParentMessage | ChildMessage) -> bytes:
    """A whole frame (header and body)."""
    body = _ENCODER.encode(message)
    if len(body) > MAX_FRAME:
        raise FrameError(f"message of {len(body)} bytes exceeds the {MAX_FRAME}-byte limit")
    return _HEADER.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    """The body length a frame header announces; ``FrameError`` beyond ``MAX_FRAME``."""
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise FrameError(f"frame of {length} bytes exceeds the {MAX_FRAME}-byte limit")
    return int(length)


def decode_parent(body: bytes) -> ParentMessage:
    """A frame body from the parent (in the child); ``FrameError`` if it is not one."""
    try:
        message: ParentMessage = _PARENT_DECODER.decode(body)
        return message
    except msgspec.DecodeError as exc:
        raise FrameError(f"bad message from the parent: {exc}") from None


def decode_child(body: bytes) -> ChildMessage:
    """A frame body from a child (in the parent); ``FrameError`` if it is not one."""
    try:
        message: ChildMessage = _CHILD_DECODER.decode(body)
        return message
    except msgspec.DecodeError as exc:
        raise FrameError(f"bad message from a child process: {exc}") from None


HEADER_SIZE: Final = _HEADER.size


# -- blocking I/O (the child's side) ------------------------------------------------------


def _read_exactly(fd: int, n: int) -> bytes | None:
    """``n`` bytes; None if the stream ends before the first one; ``FrameError`` if it ends
    after some of them (a truncated frame)."""
    chunks = []
    wanted = n
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            if n == wanted:
                return None
            raise FrameError("the stream ended inside a frame")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> ParentMessage | None:
    """The next message from the parent; None at end of stream between frames (the parent
    is gone); ``FrameError`` if it ends inside one."""
    header = _read_exactly(fd, HEADER_SIZE)
    if header is None:
        return None
    body = _read_exactly(fd, frame_length(header))
    if body is None:
        raise FrameError("the stream ended inside a frame")
    return decode_parent(body)


def write_frame(fd: int, message: ChildMessage) -> None:
    """Write one whole frame to ``fd`` (blocking: the child's side)."""
    data = memoryview(encode(message))
    while data:
        written = os.write(fd, data)
        data = data[written:]

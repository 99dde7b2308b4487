"""The process pool's wire protocol (``rota.execution.wire``): length-prefixed MessagePack
frames of tagged Structs; every message round-trips, a broken stream raises FrameError,
and nothing in rota pickles."""

from __future__ import annotations

import ast
import os
import struct
import threading
import typing
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

import rota
from rota.domain.job import Job, JobState
from rota.execution import wire

SRC = Path(rota.__file__).resolve().parent

JOB = Job(
    id=7,
    name="tests.wire",
    queue="procs",
    state=JobState.ACTIVE,
    payload=b'{"n":1}',
    priority=0,
    run_at_ms=1_700_000_000_000,
    attempt=2,
    max_attempts=5,
    stalls=0,
    max_stalls=1,
    backoff=rota.fixed(1.0),
    timeout_ms=30_000,
    key="k",
    created_at_ms=1_700_000_000_000,
    owner="host:1:abc",
    token=42,
    lease_expires_at_ms=1_700_000_060_000,
)

PARENT_MESSAGES: list[wire.ParentMessage] = [
    wire.Hello(app="pkg.mod:app", path=["/a", "/b"], database="/tmp/x.db", backend="trio"),
    wire.RunJob(JOB),
    wire.Exit(),
]
CHILD_MESSAGES: list[wire.ChildMessage] = [
    wire.Ready(pid=1234),
    wire.StartFailed(error="Traceback ...\nModuleNotFoundError: No module named 'x'"),
    wire.ProgressReport(job_id=7, progress=b'{"value":50.0}'),
    wire.LogLine(job_id=7, message="héllo \x00 wörld"),
    wire.JobDone(job_id=7, status="ok", result=b'{"a":1}'),
    wire.JobDone(job_id=7, status="retry", error="RuntimeError: later", delay_ms=250),
    wire.JobDone(job_id=7, status="unrecoverable", error="bad"),
]


def _split(frame: bytes) -> bytes:
    """The body of a whole frame, checking its header."""
    assert len(frame) >= wire.HEADER_SIZE
    length = wire.frame_length(frame[: wire.HEADER_SIZE])
    body = frame[wire.HEADER_SIZE :]
    assert length == len(body)
    return body


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        for fd in (r, w):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.mark.parametrize("message", PARENT_MESSAGES, ids=lambda m: type(m).__name__)
def test_parent_messages_round_trip(message: wire.ParentMessage) -> None:
    assert wire.decode_parent(_split(wire.encode(message))) == message


@pytest.mark.parametrize("message", CHILD_MESSAGES, ids=lambda m: type(m).__name__)
def test_child_messages_round_trip(message: wire.ChildMessage) -> None:
    assert wire.decode_child(_split(wire.encode(message))) == message


def test_every_message_type_is_covered() -> None:
    # A new message type must be added to the lists above.
    assert {type(m) for m in PARENT_MESSAGES} == set(typing.get_args(wire.ParentMessage))
    assert {type(m) for m in CHILD_MESSAGES} == set(typing.get_args(wire.ChildMessage))


def test_frames_through_a_pipe_keep_their_order(pipe: tuple[int, int]) -> None:
    r, w = pipe
    # the parent's frames, read with the child's blocking reader
    os.write(w, b"".join(wire.encode(m) for m in PARENT_MESSAGES))
    assert [wire.read_frame(r) for _ in PARENT_MESSAGES] == PARENT_MESSAGES
    # the child's frames, written with its blocking writer
    for message in CHILD_MESSAGES:
        wire.write_frame(w, message)
    data = os.read(r, 1 << 20)
    decoded = []
    while data:
        length = wire.frame_length(data[: wire.HEADER_SIZE])
        decoded.append(wire.decode_child(data[wire.HEADER_SIZE : wire.HEADER_SIZE + length]))
        data = data[wire.HEADER_SIZE + length :]
    assert decoded == CHILD_MESSAGES
    # the end of the stream between frames: None (the parent is gone), not an error
    os.close(w)
    assert wire.read_frame(r) is None


def test_a_big_message_crosses_a_pipe_in_pieces(pipe: tuple[int, int]) -> None:
    r, w = pipe
    message = wire.RunJob(msgspec.structs.replace(JOB, payload=b"x" * (3 << 20)))
    frame = wire.encode(message)
    received = []

    reader = threading.Thread(target=lambda: received.append(wire.read_frame(r)))
    reader.start()
    view = memoryview(frame)
    while view:  # the pipe holds 64 KiB: the reader gets the body in several reads
        view = view[os.write(w, view) :]
    reader.join(10)
    assert received == [message]


@pytest.mark.parametrize("cut", [2, wire.HEADER_SIZE + 3], ids=["in-header", "in-body"])
def test_a_truncated_frame_raises(pipe: tuple[int, int], cut: int) -> None:
    r, w = pipe
    os.write(w, wire.encode(wire.Hello(app="m:app", path=[], database="d", backend="trio"))[:cut])
    os.close(w)
    with pytest.raises(wire.FrameError, match="ended inside a frame"):
        wire.read_frame(r)


def test_an_oversized_length_raises(pipe: tuple[int, int]) -> None:
    header = struct.pack(">I", wire.MAX_FRAME + 1)
    with pytest.raises(wire.FrameError, match="exceeds"):
        wire.frame_length(header)
    r, w = pipe
    os.write(w, header + b"\x81")  # the reader must refuse before allocating or reading
    with pytest.raises(wire.FrameError, match="exceeds"):
        wire.read_frame(r)
    assert wire.frame_length(struct.pack(">I", wire.MAX_FRAME)) == wire.MAX_FRAME


def test_an_oversized_message_is_refused_at_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "MAX_FRAME", 64)
    assert wire.decode_child(_split(wire.encode(wire.LogLine(1, "short"))))
    with pytest.raises(wire.FrameError, match="exceeds the 64-byte limit"):
        wire.encode(wire.LogLine(1, "x" * 100))


@pytest.mark.parametrize(
    "body",
    [
        msgspec.msgpack.encode({"t": "no-such-message"}),
        msgspec.msgpack.encode({"pid": 1}),  # no tag at all
        msgspec.msgpack.encode([1, 2, 3]),
        b"\xc1",  # never used in MessagePack
        b"",
    ],
    ids=["unknown-tag", "no-tag", "not-a-map", "invalid-msgpack", "empty"],
)
def test_an_unknown_or_malformed_message_raises(body: bytes) -> None:
    with pytest.raises(wire.FrameError, match="bad message from a child"):
        wire.decode_child(body)
    with pytest.raises(wire.FrameError, match="bad message from the parent"):
        wire.decode_parent(body)


def test_a_message_for_the_other_direction_is_refused() -> None:
    with pytest.raises(wire.FrameError):
        wire.decode_parent(_split(wire.encode(wire.Ready(1))))
    with pytest.raises(wire.FrameError):
        wire.decode_child(_split(wire.encode(wire.Exit())))
    with pytest.raises(wire.FrameError):  # a known tag with fields of the wrong type
        wire.decode_child(msgspec.msgpack.encode({"t": "ready", "pid": "not a pid"}))


@pytest.mark.parametrize(
    "message", [*PARENT_MESSAGES, *CHILD_MESSAGES], ids=lambda m: type(m).__name__
)
def test_the_body_is_a_messagepack_map_not_a_pickle(
    message: wire.ParentMessage | wire.ChildMessage,
) -> None:
    body = _split(wire.encode(message))
    # a fixmap with at least the tag: 0x81..0x8f (a pickle starts with 0x80, PROTO)
    assert 0x81 <= body[0] <= 0x8F
    decoded = msgspec.msgpack.decode(body)
    assert isinstance(decoded, dict)
    assert decoded["t"] == type(message).__struct_config__.tag


def test_no_rota_module_imports_pickle() -> None:
    forbidden = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "marshal", "shelve"}
    forbidden |= {"multiprocessing", "concurrent.futures.process"}  # they pickle
    offenders = []
    files = sorted(SRC.rglob("*.py"))
    assert SRC / "execution" / "wire.py" in files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
                names += [f"{node.module}.{alias.name}" for alias in node.names]
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "__import__"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                names = [str(node.args[0].value)]
            else:
                continue
            offenders += [
                f"{path.relative_to(SRC)}:{node.lineno}: {name}"
                for name in names
                if name in forbidden or name.split(".")[0] in forbidden
            ]
    assert offenders == []

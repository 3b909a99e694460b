"""The contract between the network layer and the controller: what a request's handler hands back.

Both sides import this module and nothing of each other: the controller answers with a `Reply` (frames
of meta and buffers; pool bytes as `FileRange`s that storage hands out), or, for a request
with a data part, a `Sink` that says where the bytes go while they arrive and what to do once they are
all there; a handler that has no room for a data part yet raises `Busy`, and the network holds the frame.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias

from rpmp.protocol import ProtocolError

DISCARD_CHUNK = 256 << 10
_scratch = memoryview(bytearray(DISCARD_CHUNK))


class Busy(Exception):
    """Raised by a handler's begin_data: no room for this frame's data yet; the connection waits for room,
    up to `wait` seconds from the frame's start (None: the network's own bound), then answers POOL_FULL."""

    def __init__(self, message: str, wait: float | None = None):
        super().__init__(message)
        self.wait = wait


@dataclass(frozen=True, slots=True)
class FileRange:
    """Bytes of the pool file: `view` maps them (and pins their block while the reply is sent), `offset` is
    where they are in the file open as `fd` (None when the pool is not a regular file).

    Storage hands these out; the network writes `view` (uvloop passes it to writev(2) without a copy in
    user space), or, when configured to, sends `offset`.. of `fd` with sendfile(2).
    """

    view: memoryview
    offset: int
    fd: int | None = None
    disk: bool = False  # a spill file's bytes: reading them may wait for the disk, so they are verified off the loop

    @property
    def nbytes(self) -> int:
        return self.view.nbytes


Part: TypeAlias = bytes | bytearray | memoryview | FileRange
"""One part of a reply's data part: bytes, a view of memory (pool memory included), or a range of the pool file."""


@dataclass
class Reply:
    """One response frame (or, with `frames`, a stream of them: all but the last carry MORE)."""

    meta: bytes = b""
    data: Sequence[Part] = ()
    frames: Sequence[tuple[bytes, Sequence[Part]]] | None = None


@dataclass
class Sink:
    """Where a request's data part goes while it arrives, and what to do once it is all there."""

    view: memoryview  # the destination (len == data_len), or a scratch chunk when discarding
    length: int
    on_chunk: Callable[[memoryview], None] | None = None  # sees each received chunk (hashing)
    on_done: Callable[[], Reply | Awaitable[Reply]] | None = None
    on_abort: Callable[[], None] | None = None  # the connection died before the data was complete
    error: ProtocolError | None = None  # discard the data, then answer with this error
    pos: int = 0
    discard: bool = field(default=False)

    @classmethod
    def discarding(cls, length: int, error: ProtocolError) -> Sink:
        return cls(_scratch, length, error=error, discard=True)

    def target(self) -> memoryview:
        if self.discard:
            return _scratch[: min(DISCARD_CHUNK, self.length - self.pos)]
        return self.view[self.pos:]

    def received(self, n: int) -> None:
        if not self.discard and self.on_chunk is not None:
            self.on_chunk(self.view[self.pos:self.pos + n])
        self.pos += n


class Handler(Protocol):
    """What the network layer calls for each well-framed request (the controller is one)."""

    def handle(self, op: int, flags: int, meta: memoryview) -> Reply | Awaitable[Reply]:
        """Answer a request that has no data part: a reply now, or one to wait for."""
        ...

    def takes_data(self, op: int) -> bool:
        """Whether `op` is a request with a data part (begin_data is called even when it is empty)."""
        ...

    def begin_data(self, op: int, flags: int, meta: memoryview, data_len: int) -> Sink:
        """Where the data part of a request goes, and what answers it once it is all there; raises `Busy`
        when there is no room for it yet."""
        ...


def nbytes(d: Part) -> int:
    """Bytes of one part of a reply's data (a bytes-like object, a memoryview or a FileRange)."""
    return d.nbytes if isinstance(d, (memoryview, FileRange)) else len(d)

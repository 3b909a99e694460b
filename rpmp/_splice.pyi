"""Type stub of rpmp/_splice.pyx: zero-copy sends of user memory to a TCP socket (vmsplice + splice)."""

from typing import Final

from _typeshed import ReadableBuffer
from typing_extensions import disjoint_base

PIPE_SIZE: Final[int]

@disjoint_base
class Pipe:
    """A pipe for zero-copy sends from one thread (one per connection). A failed send closes it."""

    def __init__(self) -> None: ...
    @property
    def capacity(self) -> int: ...
    def send(self, sock_fd: int, data: ReadableBuffer, timeout_ms: int) -> int: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...

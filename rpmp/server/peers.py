"""Node-to-node requests: heartbeats, forwarded registrations and deletes, pushes to replicas.

One cached connection per peer, one request at a time on it; a broken connection is dropped and the
next request opens a new one. Replica pushes send their payload as a view of pool memory.
"""

from __future__ import annotations

import asyncio

from rpmp._wire import decode_error, frame, unpack_header
from rpmp.protocol import FLAG_ERROR, FLAG_MORE, FLAG_RESPONSE, HEADER_SIZE, ErrorCode, ProtocolError

MAX_CONTROL_DATA = 16 << 20


class PeerPool:
    def __init__(self, timeout: float = 5.0):
        self.timeout = timeout
        self._conns: dict[tuple[str, int], tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._rid = 0

    async def request(self, host: str, port: int, op: int, meta: bytes, flags: int = 0,
                      data: memoryview | None = None) -> tuple[bytes, bytes]:
        """Send one request (with an optional data part) and return the (meta, data) of its response."""
        key = (host, port)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            try:
                return await asyncio.wait_for(self._exchange(key, op, meta, flags, data), self.timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                self._drop(key)
                raise

    async def _exchange(self, key: tuple[str, int], op: int, meta: bytes, flags: int,
                        data: memoryview | None) -> tuple[bytes, bytes]:
        conn = self._conns.get(key)
        if conn is None:
            conn = self._conns[key] = await asyncio.open_connection(*key)
        reader, writer = conn
        self._rid += 1
        rid = self._rid
        writer.write(frame(op, flags, rid, meta, 0 if data is None else data.nbytes))
        if data is not None:
            writer.write(data)
        await writer.drain()
        head = await reader.readexactly(HEADER_SIZE)
        try:
            rop, rflags, rrid, meta_len, data_len = unpack_header(head, MAX_CONTROL_DATA)
        except ProtocolError as e:
            self._drop(key)
            raise ProtocolError(e.code, f"bad response frame from {key[0]}:{key[1]}: {e.message}") from None
        if rrid != rid or rop != op or not rflags & FLAG_RESPONSE or rflags & FLAG_MORE:
            self._drop(key)
            raise ProtocolError(ErrorCode.BAD_FRAME, f"{key[0]}:{key[1]} answered request {rrid} op {rop:#04x} "
                                f"flags {rflags:#x}; expected one response to request {rid} op {op:#04x}")
        rmeta = await reader.readexactly(meta_len)
        rdata = await reader.readexactly(data_len)
        if rflags & FLAG_ERROR:
            code, message = decode_error(rmeta)
            raise ProtocolError(code, message)
        return rmeta, rdata

    def _drop(self, key: tuple[str, int]) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None:
            conn[1].close()

    async def close(self) -> None:
        for key in list(self._conns):
            self._drop(key)

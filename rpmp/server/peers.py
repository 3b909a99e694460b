"""Node-to-node requests: heartbeats, forwarded registrations and deletes, pushes to replicas.

One cached connection per peer, one request at a time on it; a broken connection is dropped and the
next request opens a new one. Replica pushes send their payload as a view of pool memory.
"""

from __future__ import annotations

import asyncio
import ssl

from rpmp._wire import decode_error, frame, unpack_header
from rpmp.auth import CLUSTER, ClientHandshake
from rpmp.protocol import FATAL_ERRORS, FLAG_ERROR, FLAG_MORE, FLAG_RESPONSE, HEADER_SIZE, ErrorCode, Op, ProtocolError

MAX_CONTROL_DATA = 16 << 20


class PeerPool:
    def __init__(self, timeout: float = 5.0):
        self.timeout = timeout
        self._conns: dict[tuple[str, int], tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._rid = 0
        self.tls: ssl.SSLContext | None = None  # rpmp.tls.peer_context when the node speaks TLS
        self.cluster_secret: bytes | None = None  # --cluster-secret-file: every new connection authenticates

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
            conn = self._conns[key] = await asyncio.open_connection(*key, ssl=self.tls)
            if self.cluster_secret is not None:
                try:
                    await self._authenticate(key, self.cluster_secret)
                except BaseException:
                    self._drop(key)
                    raise
        return await self._roundtrip(key, op, meta, flags, data)

    async def _authenticate(self, key: tuple[str, int], secret: bytes) -> None:
        """AUTH as @cluster on a new connection; ProtocolError AUTH_FAILED when either side's proof is wrong."""
        handshake = ClientHandshake(CLUSTER, secret)
        rmeta, _ = await self._roundtrip(key, Op.AUTH, handshake.auth_meta, 0, None)
        proof = handshake.proof_meta(rmeta)
        if proof is None:
            raise ProtocolError(ErrorCode.AUTH_FAILED, f"peer {key[0]}:{key[1]} could not prove it knows the cluster "
                                f"secret (another --cluster-secret-file?)")
        await self._roundtrip(key, Op.AUTH_PROOF, proof, 0, None)

    async def _roundtrip(self, key: tuple[str, int], op: int, meta: bytes, flags: int,
                         data: memoryview | None) -> tuple[bytes, bytes]:
        reader, writer = self._conns[key]
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
            if code in FATAL_ERRORS:  # the peer closed the connection
                self._drop(key)
            raise ProtocolError(code, message)
        return rmeta, rdata

    def _drop(self, key: tuple[str, int]) -> None:
        conn = self._conns.pop(key, None)
        if conn is not None:
            conn[1].close()

    async def close(self) -> None:
        for key in list(self._conns):
            self._drop(key)

"""Network layer: frames in and out of TCP connections, nothing about what they mean.

One `Connection` (an asyncio BufferedProtocol) per client. Headers and meta land in a small per-connection
staging buffer; a request's data part is received straight into its destination (pool memory for PUSH,
PUT and WRITE), chunk by chunk, with no Python byte strings in between. Replies are written as lists of
buffers; with uvloop, views of pool memory (FETCH's `FileRange`s, GET's values) go to writev(2) without a
copy in user space: the kernel's copy into the socket is the node's only one. With `sendfile` on, large
FETCH replies leave by sendfile(2) from the ranges' file instead (docs/ARCHITECTURE.md says when that pays).
With TLS (rpmp.tls) every byte passes the TLS layer: no sendfile, and replies are handed to it in TLS_SLICE pieces.

Bounds, so that one bad client can neither take the node down nor starve the others:
- memory: a connection's staging buffer starts at 64 KiB and grows (for a large meta part, up to header +
  MAX_META) only out of a node-wide budget (`staging_memory`); a connection that cannot get it waits,
  paused, until another gives some back. A connection whose replies pile up in the transport (a client
  that does not read) stops being read until they drain (back-pressure).
- time: a frame must arrive within `frame_timeout` seconds plus its data at 8 MiB/s at least, or the
  connection is dropped and whatever the frame reserved (pool room for a PUT, a block for a PUSH) goes back;
  a connection that sends nothing for `idle_timeout` seconds is closed.
- room: when the handler has no room yet for a frame's data (it raises `Busy`: the node's receive bound is
  taken by other senders), the connection stops reading and waits its turn, up to `room_wait` (longer
  than any frame holding room may live); then the frame is answered POOL_FULL (back-pressure first).
- fairness: one read callback handles at most FRAMES_PER_TURN frames, then yields the loop to the others.
- connections: at `max_connections`, a new client takes the place of the longest-idle one (idle at least
  EVICT_IDLE seconds) or, if none is, gets the one spare control slot (CONTROL_OPS only: `rpmp stat` answers at
  the limit) or is refused.
A frame whose framing is broken gets an error frame and the connection is closed; a well-framed bad
request gets an error frame and the connection stays open.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import socket
import ssl
import struct
import termios
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

from rpmp import _wire as wire
from rpmp.protocol import FLAG_MORE, FLAG_RESPONSE, HEADER_SIZE, MAX_META, ErrorCode, Op, ProtocolError
from rpmp.server.auth import IDENTITY, Authenticator, AuthFailure, Session
from rpmp.server.contract import Busy, FileRange, Handler, Part, Reply, Sink, nbytes
from rpmp.server.logs import FailureLog, peer_name, subject_fields, tag_from
from rpmp.tls import HANDSHAKE_TIMEOUT, is_client_hello

log = logging.getLogger("rpmp.network")
V = TypeVar("V")
log_failure = FailureLog(log)  # one line per error reply, naming app, shuffle and peer (rate-bounded)

INITIAL_STAGING = 64 << 10
SENDFILE_MIN = 64 << 10  # smaller replies are cheaper through the transport than through a sendfile round
# A TLS transport encrypts all it is given at once into one buffer, then sends it: a 16 MiB FETCH frame would
# cost two 16 MiB allocations (page faults, cache misses). Replies go to it this many bytes at a time instead, the
# next slice once it asks for more (resume_writing): node CPU per GB fetched about halves.
TLS_SLICE = 256 << 10
FRAMES_PER_TURN = 32  # frames one connection may have handled before the loop turns to the others
MIN_RATE = 8 << 20  # bytes/s a frame's data part must arrive at, at least, on top of frame_timeout
EVICT_IDLE = 5.0  # seconds without a byte before a connection may make room for a new one
# What a connection admitted in the control slot (one beyond max_connections) may ask: an operator's `rpmp stat`
# or `rpmp drain`, and a peer's heartbeat, still reach a node that clients keep at its connection limit.
CONTROL_OPS = frozenset({Op.HELLO, Op.PING, Op.STATS, Op.MEMBERS, Op.HEARTBEAT, Op.DRAIN, Op.AUTH, Op.AUTH_PROOF})


class Connection(asyncio.BufferedProtocol):
    """Frames of one client connection; requests are answered in order."""

    def __init__(self, server: NetworkServer):
        self.server = server
        self.handler = server.handler
        self.buf = bytearray(INITIAL_STAGING)
        self.view = memoryview(self.buf)
        self.start = self.end = 0
        self.sink: Sink | None = None
        self.sink_op = self.sink_rid = 0
        self.blocked = False  # an asynchronous request is being served; later ones wait
        self.write_paused = False
        self.yielded = False  # stopped after FRAMES_PER_TURN frames; the rest is handled on a later turn
        self.waiting_memory = False  # paused until the node's staging budget has room for this frame's meta
        self.waiting_room = False  # paused until the handler has room for this frame's data
        self.room_wait = server.room_wait  # how long the waiting frame may wait (the handler may say less or more)
        self.room_wait_began: float | None = None  # when the frame began to wait for room
        self.frame_began = 0.0
        self.closed = False
        self.control_only = False  # admitted above max_connections, in the control slot: CONTROL_OPS only
        # Set by connection_made, which the loop calls before any other callback; a connection joins
        # server.connections there too, so whatever reaches it finds its transport.
        self.transport: asyncio.Transport
        self.fd = -1  # the socket's, for asking the kernel what the client has not acknowledged
        self.peer = ""
        self.last_active = server.now
        self.frame_deadline: float | None = None  # a frame has begun and must be complete by then
        # Progress of replies, for dropping a client that takes none: bytes handed to the transport, bytes the
        # client had taken at the janitor's last look (a count that only grows, so a later reply cannot hide
        # that the client took nothing; -1: nothing was waiting), and when that count last grew.
        self.out_written = 0
        self.out_taken = -1
        self.out_progress = server.now
        self.tls_out: deque[memoryview] | None = None if server.tls is None else deque()  # replies not yet sliced
        self.tls_out_bytes = 0

    # ---- asyncio callbacks ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a server's connections are streams: the loop hands every one a (read-write) Transport
        self.transport = transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.fd = sock.fileno()
        peer = transport.get_extra_info("peername")
        self.peer = peer_name(peer)  # host:port, as log lines name a client
        self.session = Session(self.server.auth, str(peer[0]) if isinstance(peer, tuple) else self.peer)
        if self.server.at_limit() and not self.server.evict_idle():
            if self.server.control is None:  # the spare slot: an operator's `rpmp stat` still gets its answer
                self.control_only = True
                self.server.control = self
                self.server.connections.add(self)
                return
            self.server.count_error(ErrorCode.UNAVAILABLE)
            self._write([wire.error_frame(0, 0, ErrorCode.UNAVAILABLE,
                                          f"node has {self.server.max_connections} connections already")])
            transport.close()
            self.closed = True
            return
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.server.control is self:
            self.server.control = None
        self._release_staging()
        if self.tls_out:
            self.tls_out.clear()  # views of pool blocks: let them go
            self.tls_out_bytes = 0
        if self.sink is not None and self.sink.on_abort is not None:
            self.sink.on_abort()
        self.sink = None

    def pause_writing(self) -> None:
        self.write_paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.tls_out:
            self._feed_tls()
        self._resume()

    def send_stalled(self, now: float) -> bool:
        """Whether replies have waited in the transport for `send_timeout` seconds with none of them taken: a
        client that stops reading must not pin pool blocks (a reply's views) for ever.

        Taken means acknowledged by the client's kernel, which it does only as the client reads once its
        receive window is full. The transport's own buffer is not enough to tell: the socket's send buffer
        (megabytes) between them takes more only when a third of it is free, so a slow reader looks stalled
        to the transport for seconds at a time."""
        size = 0 if self.closed else self.transport.get_write_buffer_size() + self.tls_out_bytes
        if size == 0:  # nothing pinned: nothing to time
            self.out_taken = -1
            self.out_progress = now
            return False
        taken = self.out_written - size - _unacknowledged(self.fd)
        if taken > self.out_taken:
            self.out_progress = now
        self.out_taken = taken
        return now - self.out_progress >= self.server.send_timeout

    def _write(self, parts: list[bytes | bytearray | memoryview], size: int | None = None) -> None:
        """Every byte to the client goes through here, so that send_stalled can tell whether it takes any.
        `size`: the parts' bytes, when the caller counted them already."""
        n = sum(nbytes(p) for p in parts) if size is None else size
        self.out_written += n
        if self.tls_out is None:
            self.transport.writelines(parts)
            return
        self.tls_out.extend(memoryview(p).cast("B") for p in parts)
        self.tls_out_bytes += n
        self._feed_tls()

    def _feed_tls(self, everything: bool = False) -> None:
        """Hand queued reply bytes to the TLS transport TLS_SLICE at a time until it pauses us (or all of them:
        the connection closes next, and close() sends what the transport holds)."""
        out = self.tls_out
        assert out is not None
        while out and not self.closed and (everything or not self.write_paused):
            batch: list[memoryview] = []
            room = TLS_SLICE
            while out and room > 0:
                if out[0].nbytes <= room:
                    room -= out[0].nbytes
                    batch.append(out.popleft())
                else:
                    batch.append(out[0][:room])
                    out[0] = out[0][room:]
                    room = 0
            self.tls_out_bytes -= TLS_SLICE - room
            self.transport.writelines(batch)

    def _resume(self) -> None:
        """Read and handle frames again, unless something still holds this connection back."""
        if self.closed or self.blocked or self.write_paused or self.waiting_memory or self.waiting_room:
            return
        self.transport.resume_reading()
        self._process()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.sink is not None:
            return self.sink.target()
        if self.end == len(self.buf):
            self._make_room(len(self.buf) + 1)
        return self.view[self.end:]

    def buffer_updated(self, nbytes: int) -> None:
        self.last_active = self.server.now
        if self.sink is not None:
            self.sink.received(nbytes)
            if self.sink.pos == self.sink.length:
                self._complete_sink(self.sink)
        else:
            self.end += nbytes
        self._process()

    def eof_received(self) -> bool:
        return False

    # ---- frames ---------------------------------------------------------------------------------
    def _make_room(self, need: int) -> bool:
        """Room for `need` bytes from `start`: compact, or grow a new buffer (never past the frame bound), the
        growth taken from the node's staging budget; False (nothing changed) when the budget has no room."""
        used = self.end - self.start
        if need <= len(self.buf):
            self.buf[0:used] = self.buf[self.start:self.end]
        else:
            size = min(max(need, 2 * len(self.buf)), HEADER_SIZE + MAX_META)
            if not self.server.take_staging(size - len(self.buf)):
                return False
            buf = bytearray(size)
            buf[0:used] = self.buf[self.start:self.end]
            self.view.release()
            self.buf, self.view = buf, memoryview(buf)
        self.start, self.end = 0, used
        return True

    def _release_staging(self) -> None:
        """Give back staging beyond the initial buffer (the connection is idle between frames, or gone)."""
        extra = len(self.buf) - INITIAL_STAGING
        if extra > 0 and (self.start == self.end or self.closed):
            self.server.give_staging(extra)
            self.view.release()
            self.buf = bytearray(0 if self.closed else INITIAL_STAGING)
            self.view = memoryview(self.buf)
            self.start = self.end = 0

    def _process(self) -> None:
        turn = 0
        while not (self.blocked or self.closed or self.sink is not None or self.write_paused):
            avail = self.end - self.start
            if avail < HEADER_SIZE:
                break
            if turn == FRAMES_PER_TURN:  # let the other connections have the loop
                if not self.yielded:
                    self.yielded = True
                    self.transport.pause_reading()
                    asyncio.get_running_loop().call_soon(self._next_turn)
                return
            try:
                op, flags, rid, meta_len, data_len = wire.unpack_header(self.view, self.server.max_data, self.start)
            except ProtocolError as e:  # broken framing: answer, echoing what op and id the bytes hold
                op, rid = self.buf[self.start + 5], int.from_bytes(self.buf[self.start + 8:self.start + 16], "little")
                if is_client_hello(self.view[self.start:self.start + 2]):  # a TLS client's ClientHello
                    return self._fatal(op, rid, ErrorCode.BAD_FRAME, "this node speaks plaintext RPMP, not TLS")
                return self._fatal(op, rid, e.code, e.message)
            if flags & FLAG_RESPONSE:
                return self._fatal(op, rid, ErrorCode.BAD_FRAME, "a response frame was sent to a node")
            if self.control_only and op not in CONTROL_OPS:
                return self._fatal(op, rid, ErrorCode.UNAVAILABLE, f"node has {self.server.max_connections} "
                                   f"connections already (this one, in the spare control slot, may only ask "
                                   f"HELLO, PING, STATS, MEMBERS, HEARTBEAT, DRAIN)")
            if not self.session.admits(op) or (op in (Op.AUTH, Op.AUTH_PROOF) and data_len):
                return self._auth_failed(op, rid, self.session.refuse(op))
            if self.frame_deadline is None and (data_len or avail < HEADER_SIZE + meta_len):
                self.frame_began = time.monotonic()  # a frame that is not here whole: it has a deadline
                self.frame_deadline = self.frame_began + self.server.frame_timeout + data_len / MIN_RATE
            if avail < HEADER_SIZE + meta_len:
                if self.start + HEADER_SIZE + meta_len > len(self.buf) and not self._make_room(HEADER_SIZE + meta_len):
                    self.waiting_memory = True  # resumed by the node when another connection gives staging back
                    self.transport.pause_reading()
                    self.server.wait_staging(self)
                break
            turn += 1
            frame_at = self.start
            meta = self.view[self.start + HEADER_SIZE:self.start + HEADER_SIZE + meta_len]
            self.start += HEADER_SIZE + meta_len
            try:
                if data_len or self.handler.takes_data(op):
                    if not self._begin_data(op, flags, rid, meta, data_len):
                        self.start = frame_at  # keep the frame: it is tried again when there is room
                        self.waiting_room = True
                        self.transport.pause_reading()
                        self.server.wait_room(self)
                        break
                elif op == Op.AUTH or op == Op.AUTH_PROOF:
                    self.frame_deadline = None
                    self._authenticate(op, rid, meta)
                else:
                    self.frame_deadline = None
                    self._dispatch(op, rid, self._as_me(self.handler.handle), op, flags, meta)
            finally:
                meta.release()
        if self.start == self.end:
            self.start = self.end = 0
            if self.sink is None:
                self.frame_deadline = None
                if len(self.buf) != INITIAL_STAGING:
                    self._release_staging()
        elif self.frame_deadline is None and not self.closed:  # a frame has begun: it must not stall forever
            self.frame_deadline = time.monotonic() + self.server.frame_timeout

    def _next_turn(self) -> None:
        self.yielded = False
        self._resume()

    def room_available(self) -> None:
        self.waiting_room = False
        self._resume()

    def memory_available(self) -> None:
        """The node's staging budget has room again: try this connection's waiting frame."""
        self.waiting_memory = False
        self._resume()

    def _authenticate(self, op: int, rid: int, meta: memoryview) -> None:
        """AUTH or AUTH_PROOF: the session answers; a failed handshake closes the connection (after a delay for
        an address that keeps failing, during which this connection reads nothing and the others go on)."""
        try:
            reply = Reply(meta=self.session.answer(op, meta))
        except AuthFailure as e:
            return self._auth_failed(op, rid, e)
        except ProtocolError as e:
            return self._send_error(op, rid, e)
        self._send(op, rid, reply)

    def _auth_failed(self, op: int, rid: int, failure: AuthFailure) -> None:
        if failure.delay <= 0:
            return self._fatal(op, rid, ErrorCode.AUTH_FAILED, failure.message)
        self.blocked = True
        self.transport.pause_reading()
        asyncio.get_running_loop().call_later(failure.delay, self._fatal_later, op, rid, failure.message)

    def _fatal_later(self, op: int, rid: int, message: str) -> None:
        if not self.closed:
            self._fatal(op, rid, ErrorCode.AUTH_FAILED, message)

    def _as_me(self, call: Callable[..., V]) -> Callable[..., V]:
        """`call` with IDENTITY set to what this connection acts for (handlers read it before they return)."""
        return functools.partial(_run_as, self.session.identity, call)

    def _begin_data(self, op: int, flags: int, rid: int, meta: memoryview, data_len: int) -> bool:
        """Start receiving a frame's data part; False: no room yet, wait (the frame is left in staging)."""
        try:
            sink = self._as_me(self.handler.begin_data)(op, flags, meta, data_len)
        except Busy as e:
            waited = time.monotonic() - self.frame_began
            self.room_wait = self.server.room_wait if e.wait is None else e.wait
            if waited < self.room_wait:
                if self.room_wait_began is None:
                    self.room_wait_began = time.monotonic()
                return False
            full = ProtocolError(ErrorCode.POOL_FULL, f"{e} (waited {waited:.0f} s)")
            sink = Sink.discarding(data_len, tag_from(full, op, meta))
        except ProtocolError as e:
            sink = Sink.discarding(data_len, tag_from(e, op, meta))
        except Exception as e:  # a bug: answer, keep serving
            bug = tag_from(ProtocolError(ErrorCode.INTERNAL, f"{type(e).__name__}: {e}"), op, meta)
            log.exception("begin_data(op=%#x) failed", op, extra=subject_fields(bug, self.peer))
            sink = Sink.discarding(data_len, bug)
        if self.room_wait_began is not None:  # the time spent waiting for room does not count against the data
            if self.frame_deadline is not None:
                self.frame_deadline += time.monotonic() - self.room_wait_began
            self.room_wait_began = None
        take = min(data_len, self.end - self.start)
        if take:
            if not sink.discard:
                sink.view[0:take] = self.view[self.start:self.start + take]
            sink.received(take)
            self.start += take
        self.sink, self.sink_op, self.sink_rid = sink, op, rid
        if sink.pos == sink.length:
            self._complete_sink(sink)
        return True

    def _complete_sink(self, sink: Sink) -> None:
        """All of `sink`'s data (this connection's current sink) is here: answer the frame."""
        op, rid = self.sink_op, self.sink_rid
        self.sink = None
        self.frame_deadline = None
        if sink.error is not None:
            self._send_error(op, rid, sink.error)
            return
        assert sink.on_done is not None, "a handler's sink answers with its error or its on_done"
        self._dispatch(op, rid, self._as_me(sink.on_done))

    def _dispatch(self, op: int, rid: int, call: Callable[..., Reply | Awaitable[Reply]], *args: object) -> None:
        # args: (op, flags, meta) for a request without data; none for a data part's on_done
        try:
            reply = call(*args)
        except ProtocolError as e:
            self._send_error(op, rid, tag_from(e, op, cast(memoryview, args[2]) if args else None))
            return
        except Exception as e:
            bug = tag_from(ProtocolError(ErrorCode.INTERNAL, f"{type(e).__name__}: {e}"), op,
                           cast(memoryview, args[2]) if args else None)
            log.exception("request op=%#x failed", op, extra=subject_fields(bug, self.peer))
            self._send_error(op, rid, bug)
            return
        if isinstance(reply, Reply) and not self._wants_sendfile(reply):
            self._send(op, rid, reply)
        else:  # a coroutine or a sendfile reply: later requests of this connection wait, to keep replies in order
            self.blocked = True
            self.transport.pause_reading()
            # the request's meta (tens of bytes), kept so that a failure can name its app and shuffle
            meta_copy = bytes(cast(memoryview, args[2])) if args and not isinstance(reply, Reply) else None
            asyncio.ensure_future(self._await(op, rid, reply, meta_copy))

    async def _await(self, op: int, rid: int, pending: Awaitable[Reply] | Reply, meta: bytes | None = None) -> None:
        result: Reply | ProtocolError  # what the request came to: its reply or the error to answer with
        try:
            result = pending if isinstance(pending, Reply) else await pending
        except ProtocolError as e:
            result = tag_from(e, op, meta)
        except Exception as e:
            result = tag_from(ProtocolError(ErrorCode.INTERNAL, f"{type(e).__name__}: {e}"), op, meta)
            log.exception("request op=%#x failed", op, extra=subject_fields(result, self.peer))
        if self.closed:
            return
        if isinstance(result, ProtocolError):
            self._send_error(op, rid, result)
        elif self._wants_sendfile(result):
            await self._send_file(op, rid, result)
        else:
            self._send(op, rid, result)
        if not self.closed:  # sending may have dropped the connection
            self.blocked = False
            self._resume()

    def _send(self, op: int, rid: int, reply: Reply) -> None:
        if self.closed:
            return
        frames = reply.frames if reply.frames is not None else [(reply.meta, reply.data)]
        out: list[bytes | bytearray | memoryview] = []
        size = 0
        last = len(frames) - 1
        for i, (meta, data) in enumerate(frames):
            flags = FLAG_RESPONSE | (FLAG_MORE if i < last else 0)
            data_len = sum(nbytes(d) for d in data)
            header = wire.frame(op, flags, rid, meta, data_len)
            out.append(header)
            out.extend(d.view if isinstance(d, FileRange) else d for d in data)
            size += len(header) + data_len
        self._write(out, size)

    def _wants_sendfile(self, reply: Reply) -> bool:
        """With `sendfile` on, large replies of file bytes (pool or spill files) leave by sendfile(2); never
        through TLS (the bytes must pass the TLS layer: the transport's writes take them)."""
        if not self.server.sendfile or self.server.tls is not None or reply.frames is None:
            return False
        return sum(d.nbytes for _, data in reply.frames for d in data
                   if isinstance(d, FileRange) and d.fd is not None) >= SENDFILE_MIN

    async def _send_file(self, op: int, rid: int, reply: Reply) -> None:
        """Write a reply past the transport: headers with send, pool bytes with sendfile(2).

        Reading is paused meanwhile and earlier replies have left the transport, so nothing else writes to
        the socket. A duplicate of its descriptor is used: if the connection closes meanwhile, the number is
        not reused under us. A client that takes nothing for `send_timeout` seconds loses the connection.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.server.send_timeout
        while self.transport.get_write_buffer_size():  # earlier replies go first
            if self.closed or loop.time() > deadline:
                return self._abort("an earlier reply was not read")
            await asyncio.sleep(0.001)
        sock = self.transport.get_extra_info("socket")
        if self.closed or sock is None:
            return
        frames = reply.frames
        assert frames is not None, "only a reply of frames is sent with sendfile (_wants_sendfile)"
        fd = os.dup(sock.fileno())
        try:
            last = len(frames) - 1
            for i, (meta, data) in enumerate(frames):
                flags = FLAG_RESPONSE | (FLAG_MORE if i < last else 0)
                parts: list[Part] = [wire.frame(op, flags, rid, meta, sum(nbytes(d) for d in data)), *data]
                for part in parts:
                    if isinstance(part, FileRange) and part.fd is not None:
                        ok = await self._out(fd, part.nbytes, functools.partial(
                            _sendfile_from, fd, part.fd, part.offset, part.nbytes))
                        self.server.counters["sendfile_bytes"] += part.nbytes if ok else 0
                    else:
                        view = part.view if isinstance(part, FileRange) else memoryview(part).cast("B")
                        ok = await self._out(fd, view.nbytes, functools.partial(_write_from, fd, view))
                    if not ok:
                        return
            self.server.counters["sendfile_replies"] += 1
        finally:
            os.close(fd)

    async def _out(self, fd: int, length: int, write: Callable[[int], int]) -> bool:
        """Call `write(pos)` until `length` bytes are out, waiting for the socket when it is full."""
        loop = asyncio.get_running_loop()
        pos = 0
        while pos < length:
            if self.closed:
                return False
            try:
                n = write(pos)
            except BlockingIOError:
                n = -1
            except OSError as e:  # reset, broken pipe: the connection is gone
                self._abort(f"send failed: {e}")
                return False
            if n == 0:
                self._abort("sendfile made no progress (pool file shorter than its blocks?)")
                return False
            if n > 0:
                pos += n
                continue
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, _wake, ready)
            try:
                await asyncio.wait_for(ready, self.server.send_timeout)
            except asyncio.TimeoutError:
                self._abort(f"client took nothing for {self.server.send_timeout:g} s")
                return False
            finally:
                loop.remove_writer(fd)
        return True

    def _abort(self, why: str) -> None:
        log.warning("dropping connection from %s: %s", self.peer, why)
        self.server.counters["dropped_connections"] += 1
        self.closed = True
        self.server.connections.discard(self)
        self.transport.abort()

    def _send_error(self, op: int, rid: int, err: ProtocolError) -> None:
        if not self.closed:
            log_failure(self.peer, op, err, self.session.identity)
            self.server.count_error(err.code)
            self._write([wire.error_frame(op, rid, int(err.code), str(err.message))])

    def _fatal(self, op: int, rid: int, code: int, message: str) -> None:
        log.warning("closing connection from %s: %s", self.peer, message)
        self.server.count_error(code)
        self._write([wire.error_frame(op, rid, code, message)])
        if self.tls_out:
            self._feed_tls(everything=True)
        self.transport.close()
        self.closed = True
        self.server.connections.discard(self)


def _run_as(identity: str | None, call: Callable[..., V], *args: object) -> V:
    token = IDENTITY.set(identity)
    try:
        return call(*args)
    finally:
        IDENTITY.reset(token)


def _sendfile_from(out: int, src: int, offset: int, count: int, pos: int) -> int:
    """Send bytes pos..count of the `count` bytes at `offset` of file `src` to socket `out` (one sendfile)."""
    return os.sendfile(out, src, offset + pos, count - pos)


def _write_from(out: int, view: memoryview, pos: int) -> int:
    """Write bytes pos.. of `view` to socket `out` (one write)."""
    return os.write(out, view[pos:])


_OUTQ = struct.Struct("i")


def _unacknowledged(fd: int) -> int:
    """Bytes in the socket's send queue that the peer has not acknowledged (SIOCOUTQ, which Linux numbers as
    TIOCOUTQ); 0 when the socket cannot say."""
    if fd < 0:
        return 0
    try:
        return _OUTQ.unpack(fcntl.ioctl(fd, termios.TIOCOUTQ, bytes(_OUTQ.size)))[0]
    except OSError:
        return 0


def _wake(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)


class NetworkServer:
    """Listens on host:port and hands decoded frames to `handler` (the controller)."""

    def __init__(self, handler: Handler, max_data: int, max_connections: int, sendfile: bool = False,
                 send_timeout: float = 120.0, staging_memory: int = 64 << 20, frame_timeout: float = 30.0,
                 idle_timeout: float = 600.0, tls: ssl.SSLContext | None = None, auth: Authenticator | None = None):
        self.handler = handler
        self.auth = auth  # rpmp.server.auth: every connection authenticates (None: the node runs open)
        self.tls = tls  # rpmp.tls.server_context: the port speaks TLS (no sendfile then)
        self.max_data = max_data
        self.max_connections = max_connections
        self.send_timeout = send_timeout
        self.frame_timeout = frame_timeout
        # a frame waits for room longer than any frame holding room may live: stalled senders cannot make an
        # honest one fail, only wait
        self.room_wait = frame_timeout + max_data / MIN_RATE
        self.idle_timeout = idle_timeout
        self.staging_memory = staging_memory
        self.staging_used = 0  # staging taken beyond the connections' initial buffers
        self._staging_waiters: deque[Connection] = deque()
        self._room_waiters: deque[Connection] = deque()
        self._room_wake_scheduled = False
        self.connections: set[Connection] = set()
        self.control: Connection | None = None  # the one connection admitted above max_connections (CONTROL_OPS)
        self.server: asyncio.AbstractServer | None = None
        self._janitor: asyncio.Task[None] | None = None
        self.now = time.monotonic()  # a clock the janitor moves once a second: cheap for per-read stamps
        self.counters = {"sendfile_replies": 0, "sendfile_bytes": 0, "dropped_connections": 0,
                         "evicted_connections": 0, "timed_out_frames": 0, "idle_closed": 0, "staging_waits": 0,
                         "room_waits": 0}
        self.errors: dict[int, int] = {}  # error frames sent, by code (the metrics' rpmp_errors_total)
        self.sendfile = sendfile  # send FETCH ranges with sendfile(2) (those whose FileRange has a file)

    def count_error(self, code: int) -> None:
        self.errors[int(code)] = self.errors.get(int(code), 0) + 1

    # ---- the node-wide staging budget -----------------------------------------------------------
    def take_staging(self, n: int) -> bool:
        if self.staging_used + n > self.staging_memory:
            return False
        self.staging_used += n
        return True

    def give_staging(self, n: int) -> None:
        self.staging_used -= n
        while self._staging_waiters:  # the oldest waiter first: each gets its turn
            conn = self._staging_waiters.popleft()
            if conn.closed or not conn.waiting_memory:
                continue
            conn.memory_available()
            if conn.waiting_memory:  # still not enough: it keeps its place at the head
                self._staging_waiters.appendleft(self._staging_waiters.pop())
                return

    def wait_staging(self, conn: Connection) -> None:
        self.counters["staging_waits"] += 1
        self._staging_waiters.append(conn)

    # ---- waiting for room for a frame's data ----------------------------------------------------
    def wait_room(self, conn: Connection) -> None:
        self.counters["room_waits"] += 1
        self._room_waiters.append(conn)

    def room_freed(self) -> None:
        """The handler gave room back (called from anywhere: the wake-up runs on the loop's next turn)."""
        if self._room_waiters and not self._room_wake_scheduled:
            self._room_wake_scheduled = True
            asyncio.get_running_loop().call_soon(self._wake_room_waiters)

    def _wake_room_waiters(self) -> None:
        self._room_wake_scheduled = False
        while self._room_waiters:  # the oldest first; one that still finds no room keeps its place
            conn = self._room_waiters.popleft()
            if conn.closed or not conn.waiting_room:
                continue
            conn.room_available()
            if conn.waiting_room:
                self._room_waiters.appendleft(self._room_waiters.pop())
                return

    # ---- connection bounds ----------------------------------------------------------------------
    def at_limit(self) -> bool:
        """max_connections are open (the control slot's is not counted)."""
        return len(self.connections) - (self.control is not None) >= self.max_connections

    def evict_idle(self) -> bool:
        """Close the longest-idle connection (nothing in flight, silent for EVICT_IDLE s) to admit a new one."""
        now = time.monotonic()
        idle = [c for c in self.connections if c is not self.control and not c.blocked and c.sink is None
                and c.start == c.end and now - c.last_active >= EVICT_IDLE]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.last_active)
        self.counters["evicted_connections"] += 1
        log.info("closing idle connection from %s (%.0f s idle) to admit a new one", victim.peer,
                 now - victim.last_active)
        victim.closed = True
        self.connections.discard(victim)
        victim.transport.close()
        return True

    async def _watch(self) -> None:
        """Once a second (more often when send_timeout is shorter than 4 s, so that a stalled client is dropped
        within a quarter of it): drop connections whose frame is overdue or whose client takes none of its
        replies, close those idle for idle_timeout."""
        tick = min(1.0, self.send_timeout / 4)
        while True:
            await asyncio.sleep(tick)
            now = self.now = time.monotonic()
            for conn in list(self.connections):
                if conn.send_stalled(now):
                    conn._abort(f"client took nothing of its replies for {self.send_timeout:g} s")
                elif conn.waiting_room:
                    if now - conn.frame_began >= conn.room_wait:  # waited long enough: POOL_FULL
                        conn.room_available()
                elif conn.frame_deadline is not None and now > conn.frame_deadline and not conn.blocked:
                    self.counters["timed_out_frames"] += 1
                    conn._abort(f"a frame was not complete within {self.frame_timeout:g} s (+1 s per MiB of data)")
                elif conn.session.overdue(now, self.frame_timeout) and not conn.blocked:  # slots are for clients
                    conn._abort(f"did not authenticate within {self.frame_timeout:g} s (--frame-timeout)")
                elif conn.frame_deadline is None and not conn.blocked and now - conn.last_active > self.idle_timeout:
                    self.counters["idle_closed"] += 1
                    log.info("closing connection from %s: idle for %.0f s", conn.peer, now - conn.last_active)
                    conn.closed = True
                    self.connections.discard(conn)
                    conn.transport.close()

    async def start(self, sock: socket.socket) -> None:
        """Serve connections on a bound, listening socket."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: Connection(self), sock=sock, ssl=self.tls,
                                               ssl_handshake_timeout=min(HANDSHAKE_TIMEOUT, self.frame_timeout)
                                               if self.tls else None)
        self._janitor = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
        if self.server is not None:
            self.server.close()
            for conn in list(self.connections):
                conn.transport.close()
            await self.server.wait_closed()

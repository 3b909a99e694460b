"""The Python client of RPMP nodes.

    import pyarrow as pa
    import rpmp

    with rpmp.Client("127.0.0.1:7177") as c:
        c.put("k", b"value"); buf = c.get("k")                  # pyarrow.Buffer, no copy after the socket
        c.put_table("t", pa.table({"x": [1, 2]})); c.get_table("t")   # Arrow tables (IPC stream)
        addr = c.alloc(4096); c.write(addr, b"x"); c.read(addr, 1); c.free(addr)
        placement = c.register_shuffle("app-1", 0, num_partitions=8)
        c.push("app-1", 0, partition=3, map_index=0, attempt=17, seq=0, data=b"...", placement=placement,
               last=True)                                        # the attempt's final segment for partition 3
        for seg in c.fetch("app-1", 0, 3, attempts=[17], placement=placement): print(seg)

Leases: a node deletes an app nobody renewed for its --app-ttl. From its first register_shuffle of an app,
the client keeps that app's lease alive from a daemon thread (LEASE every third of the TTL the node answers)
until `release(app)`, `delete_app(app)` or `close()`.

Blocking sockets (sendmsg/recv_into), a small pool of connections per node (thread-safe), pipelined
pushes, and every error frame raised as an RpmpError subclass carrying the node's message. Data parts of
256 KiB or more leave without a copy (vmsplice + splice, rpmp._splice): the call returns only after the
node answered, i.e. took every byte, so the caller's buffer is free again when it returns. Replies are
received straight into pyarrow buffers: what `get` and `fetch` hand back is a view of the bytes that
came off the socket.

TLS (nodes started with --tls-cert): `Client(nodes, tls=True, ca="ca.pem")`, plus `cert=`/`key=` for nodes that
require client certificates (--tls-ca). Every byte then passes the TLS layer (no splice); a failed handshake is a
TlsError (a ConnectionError) whose message says what to do.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

import pyarrow as pa

from rpmp import auth as _auth
from rpmp import tls as _tls
from rpmp._wire import (
    decode_error,
    decode_fetch_resp,
    decode_hello_resp,
    decode_lease_resp,
    decode_members,
    decode_partition_info_resp,
    decode_register_resp,
    decode_u64,
    encode_alloc,
    encode_delete_app,
    encode_delete_shuffle,
    encode_drain,
    encode_fetch,
    encode_free,
    encode_hello,
    encode_key,
    encode_lease,
    encode_map_end,
    encode_partition_info,
    encode_push,
    encode_read,
    encode_register,
    encode_write,
    frame,
    iter_records,
    unpack_header,
    xxh3,
)

try:
    from rpmp._splice import Pipe

    HAVE_SPLICE = True
except ImportError:  # not Linux, or built without it: every send copies
    HAVE_SPLICE = False
from rpmp.protocol import (
    END_MAP_ALL,
    FATAL_ERRORS,
    FLAG_ERROR,
    FLAG_MORE,
    FLAG_RESPONSE,
    HEADER_SIZE,
    SEQ_INDEX,
    SEQ_LAST,
    VERSION,
    ErrorCode,
    Node,
    Op,
    ProtocolError,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

log = logging.getLogger("rpmp.client")

#: A node as the client's methods take it: a Node, a (host, port) pair or "host:port".
NodeAddr: TypeAlias = Node | tuple[str, int] | str

MAX_REPLY_DATA = 1 << 31
ZERO_COPY_MIN = 256 << 10  # data parts from this size on are spliced, not copied, into the socket


class RpmpError(ProtocolError):
    """An error frame from a node (or a broken reply); `code` is the ErrorCode."""


class NotFoundError(RpmpError):
    pass


class BadRequestError(RpmpError):
    pass


class ChecksumMismatchError(RpmpError):
    pass


class PoolFullError(RpmpError):
    pass


class ConflictError(RpmpError):
    pass


class UnavailableError(RpmpError):
    pass


class IncompleteError(RpmpError):
    pass


class CorruptError(RpmpError):
    """A node's stored copy failed its checksum (the node quarantined it), or a record read back did."""


class QuotaExceededError(RpmpError):
    """The app holds more than its quota on that node (both tiers); retrying helps only once it deleted data."""


class AuthFailedError(RpmpError):
    """Authentication failed: the node refused the tenant or proof, runs without authentication, or could not prove
    it knows the tenant's secret (the message names the node). Retrying the same node with the same secret fails
    again."""


class ForbiddenError(RpmpError):
    """The connection's identity may not make this request (a tenant sending what only nodes may send)."""


_ERRORS: dict[int, type[RpmpError]] = {ErrorCode.NOT_FOUND: NotFoundError, ErrorCode.BAD_REQUEST: BadRequestError,
           ErrorCode.CHECKSUM_MISMATCH: ChecksumMismatchError, ErrorCode.POOL_FULL: PoolFullError,
           ErrorCode.CONFLICT: ConflictError, ErrorCode.UNAVAILABLE: UnavailableError,
           ErrorCode.INCOMPLETE: IncompleteError, ErrorCode.CORRUPT: CorruptError,
           ErrorCode.QUOTA_EXCEEDED: QuotaExceededError, ErrorCode.AUTH_FAILED: AuthFailedError,
           ErrorCode.FORBIDDEN: ForbiddenError}


def _error(code: int, message: str) -> RpmpError:
    return _ERRORS.get(code, RpmpError)(code, message)


def _addr(node: NodeAddr) -> tuple[str, int]:
    if isinstance(node, Node):
        return node.host, node.port
    if isinstance(node, tuple):
        return node[0], int(node[1])
    host, _, port = str(node).strip().rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not a host:port: {node!r}")
    return host, int(port)


@dataclass(frozen=True)
class Placement:
    """A shuffle's placement: the nodes, and per partition its preference list (primary first)."""

    epoch: int
    nodes: tuple[Node, ...]
    prefs: tuple[tuple[int, ...], ...]

    def nodes_for(self, partition: int) -> list[Node]:
        return [self.nodes[i] for i in self.prefs[partition]]

    def primary(self, partition: int) -> Node:
        return self.nodes[self.prefs[partition][0]]


@dataclass(frozen=True, slots=True)
class Segment:
    """One record of a fetched partition; `data` is a zero-copy view of the received bytes.

    `seq` is the segment's index; `last` says the writer marked it as its final one (SEQ_LAST)."""

    map_index: int
    attempt: int
    seq: int
    data: memoryview
    last: bool = False


class _LeaseKeeper:
    """Renews the leases of a client's apps from one daemon thread: at once when an app is first held (the
    answer gives the node's TTL), then every third of that TTL; a failed renewal is retried after a second (or
    the interval, if shorter), the node named at registration first, then the client's nodes."""

    NO_TTL_RECHECK = 600.0  # seconds between LEASEs to a node whose apps never expire (TTL 0)
    RETRY = 1.0

    def __init__(self, client: Client):
        self.client = client
        self.apps: dict[str, tuple[NodeAddr | None, float]] = {}  # app -> (node to ask first, when next)
        self.cond = threading.Condition()
        self.closed = False
        self.thread: threading.Thread | None = None
        self.renewals = 0
        self.failures = 0
        self.ttl: float | None = None  # seconds, as the last answer said

    def hold(self, app: str, node: NodeAddr | None) -> None:
        with self.cond:
            if self.closed or app in self.apps:
                return
            self.apps[app] = (node, 0.0)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="rpmp-lease", daemon=True)
                self.thread.start()
            self.cond.notify()

    def release(self, app: str) -> None:
        with self.cond:
            self.apps.pop(app, None)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.apps.clear()
            self.cond.notify()
            thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.closed:
                    now = time.monotonic()
                    due = [(app, node) for app, (node, at) in self.apps.items() if at <= now]
                    if due:
                        break
                    wake = min((at for _, at in self.apps.values()), default=None)
                    self.cond.wait(None if wake is None else wake - now)
                if self.closed:
                    return
            for app, node in due:
                self._renew(app, node)

    def _renew(self, app: str, node: NodeAddr | None) -> None:
        targets = [node] if node is not None else []
        targets += [n for n in self.client.nodes if node is None or _addr(node) != n]
        problems = []
        for target in targets:
            try:
                ttl_ms = self.client.lease(app, node=target)
            except (OSError, RpmpError) as e:
                problems.append(f"{target}: {e}")
                continue
            self.renewals += 1
            self.ttl = ttl_ms / 1000
            wait = self.NO_TTL_RECHECK if ttl_ms == 0 else max(0.05, ttl_ms / 3000)
            break
        else:
            self.failures += 1
            log.warning("renewing the lease of app %r failed: %s", app, "; ".join(problems))
            wait = self.RETRY if not self.ttl else max(0.05, min(self.RETRY, self.ttl / 3))
        with self.cond:
            if app in self.apps:
                self.apps[app] = (node, time.monotonic() + wait)


class Connection:
    """One TCP connection to a node: framed requests out, framed responses in, in order."""

    def __init__(self, host: str, port: int, timeout: float, zero_copy: bool = True,
                 tls: ssl.SSLContext | None = None, server_hostname: str | None = None):
        self.host, self.port = host, port
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # TLS: a handshake first; then every byte goes through the TLS layer (no splice, no sendmsg)
        self.sock = sock if tls is None else _tls.wrap(sock, tls, server_hostname or host, f"{host}:{port}")
        self._hdr = bytearray(HEADER_SIZE)
        self._hdr_view = memoryview(self._hdr)
        self._rid = 0
        self._pipe: Pipe | None = None
        self.zero_copy = zero_copy and HAVE_SPLICE and tls is None
        self.broken = False  # a frame went out in part, or replies are left unread: never reuse
        self.reused = False  # taken from the idle pool: the node may have closed it meanwhile
        self.replied = False  # some reply bytes arrived on it

    def send(self, op: int, meta: bytes = b"", data: ReadableBuffer | None = None, flags: int = 0) -> int:
        self._rid += 1
        self.replied = False
        dlen = 0 if data is None else memoryview(data).nbytes
        head = frame(op, flags, self._rid, meta, dlen)
        if data is not None and dlen >= ZERO_COPY_MIN and self.zero_copy:
            self._send_spliced(head, data)
        elif data is not None and dlen:
            self._sendmsg([head, data])
        else:
            self.sock.sendall(head)
        return self._rid

    def _send_spliced(self, head: bytes, data: ReadableBuffer) -> None:
        """The header by send, the data part by reference (rpmp._splice): no copy on this side."""
        if self._pipe is None:
            self._pipe = Pipe()
        self.sock.sendall(head)
        timeout = self.sock.gettimeout()
        try:
            self._pipe.send(self.sock.fileno(), data, -1 if timeout is None else int(timeout * 1000))
        except OSError as e:
            self.broken = True
            raise ConnectionError(f"sending to {self.host}:{self.port} failed: {e}") from e

    def _sendmsg(self, bufs: list[ReadableBuffer]) -> None:
        views = [memoryview(b).cast("B") for b in bufs]
        if isinstance(self.sock, ssl.SSLSocket):  # TLS has no sendmsg: one record stream, buffer by buffer
            for v in views:
                self.sock.sendall(v)
            return
        while views:
            sent = self.sock.sendmsg(views)
            while views and sent >= views[0].nbytes:
                sent -= views[0].nbytes
                views.pop(0)
            if views and sent:
                views[0] = views[0][sent:]

    def _recv_into(self, view: memoryview) -> None:
        pos, n = 0, view.nbytes
        while pos < n:
            try:
                got = self.sock.recv_into(view[pos:], n - pos)
            except ssl.SSLError as e:  # e.g. TLS 1.3: a node refuses the client certificate after the handshake
                raise _tls.TlsError(_tls.describe(e, f"{self.host}:{self.port}")) from None
            if not got:
                first = self._rid == 1 and not self.replied
                if first and isinstance(self.sock, ssl.SSLSocket):
                    raise _tls.TlsError(f"{self.host}:{self.port}: TLS: the node closed the connection before "
                                        f"answering the first request (a node started with --tls-ca requires a "
                                        f"client certificate signed by that CA: cert=..., key=...; rpmp: "
                                        f"--tls-cert, --tls-key)")
                raise ConnectionError(f"node {self.host}:{self.port} closed the connection" + (
                    " before answering its first request (a node started with --tls-cert closes plaintext "
                    "connections: connect with tls=True)" if first else ""))
            pos += got
            self.replied = True

    @property
    def stale(self) -> bool:
        """A pooled connection that failed before any reply: the node closed it while it sat idle (it was
        restarted, or closed idle connections), so the request never reached a live handler."""
        return self.reused and not self.replied

    def recv(self, op: int, rid: int) -> tuple[int, bytes, pa.Buffer | None]:
        """One response frame: (flags, meta, data). Error frames raise."""
        self._recv_into(self._hdr_view)
        try:
            rop, flags, rrid, meta_len, data_len = unpack_header(self._hdr, MAX_REPLY_DATA)
        except ProtocolError as e:
            if _tls.looks_like_tls(self._hdr):
                raise _tls.TlsError(f"{self.host}:{self.port}: the node speaks TLS: connect with tls=True (rpmp "
                                    f"stat --tls)") from None
            raise RpmpError(e.code, f"bad response frame from {self.host}:{self.port}: {e.message}") from None
        if not flags & FLAG_RESPONSE:
            raise RpmpError(ErrorCode.BAD_FRAME, f"{self.host}:{self.port} sent a request frame, not a response")
        meta = bytearray(meta_len)
        if meta_len:
            self._recv_into(memoryview(meta))
        data = None
        if data_len:
            data = pa.allocate_buffer(data_len)
            self._recv_into(memoryview(data))
        if flags & FLAG_ERROR:
            code, message = decode_error(bytes(meta))
            raise _error(code, message)
        if rrid != rid or rop != op:
            raise RpmpError(ErrorCode.BAD_FRAME, f"response for request {rrid} op {rop:#x}, expected {rid} op {op:#x}")
        return flags, bytes(meta), data

    def call(self, op: int, meta: bytes = b"", data: ReadableBuffer | None = None,
             flags: int = 0) -> tuple[bytes, pa.Buffer | None]:
        rid = self.send(op, meta, data, flags)
        _, rmeta, rdata = self.recv(op, rid)
        return rmeta, rdata

    def close(self) -> None:
        self.sock.close()
        if self._pipe is not None:
            self._pipe.close()


class Client:
    """Talks to one or more RPMP nodes; safe to share between threads."""

    def __init__(self, nodes: str | Iterable[NodeAddr] = "127.0.0.1:7177", timeout: float = 120.0,
                 max_idle: int = 8, zero_copy: bool = True, tls: bool = False, ca: str | None = None,
                 cert: str | None = None, key: str | None = None, server_hostname: str | None = None,
                 tenant: str | None = None, secret: str | bytes | None = None, secret_file: str | None = None):
        items: list[NodeAddr] = list(nodes.split(",")) if isinstance(nodes, str) else list(nodes)
        self.nodes = [_addr(n) for n in items if str(n).strip()]
        if not self.nodes:
            raise ValueError("no RPMP node given")
        self.timeout = timeout
        self.max_idle = max_idle
        self.zero_copy = zero_copy
        # TLS (nodes started with --tls-cert): `ca` checks their certificates (default: the system's CAs),
        # `cert`/`key` is a client certificate (nodes with --tls-ca), `server_hostname` the name to check when
        # it is not the address connected to.
        if not tls and (ca or cert or key or server_hostname):
            raise ValueError("ca, cert, key and server_hostname are TLS settings: give tls=True too")
        self.tls = _tls.client_context(ca, cert, key) if tls else None
        self.server_hostname = server_hostname
        # Authentication (nodes started with --auth-file): every connection opened proves `tenant` knows its secret
        # and checks that the node knows it too. tenant "@cluster" with the cluster secret is the operator's.
        self.tenant = tenant
        self._secret = _auth.client_secret(tenant, secret, secret_file)
        self._idle: dict[tuple[str, int], list[Connection]] = {}
        self._lock = threading.Lock()
        self._leases = _LeaseKeeper(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop renewing leases and close the pooled connections."""
        self._leases.close()
        with self._lock:
            conns = [c for lst in self._idle.values() for c in lst]
            self._idle.clear()
        for c in conns:
            c.close()

    @contextmanager
    def connection(self, node: NodeAddr | None = None) -> Iterator[Connection]:
        """A pooled connection to `node` (default: the first node); dropped if the caller fails mid-way."""
        key = _addr(node) if node is not None else self.nodes[0]
        with self._lock:
            idle = self._idle.get(key)
            conn = idle.pop() if idle else None
        if conn is None:
            conn = Connection(key[0], key[1], self.timeout, self.zero_copy, self.tls, self.server_hostname)
            if self.tenant is not None:
                try:
                    self._authenticate(conn)
                except BaseException:
                    conn.close()
                    raise
        else:
            conn.reused = True
        try:
            yield conn
        except (RpmpError, ProtocolError) as e:
            if e.code in FATAL_ERRORS:  # the node closed the connection
                conn.close()
            else:
                self._release(key, conn)
            raise
        except BaseException:
            conn.close()
            raise
        else:
            self._release(key, conn)

    def _authenticate(self, conn: Connection) -> None:
        """AUTH, check the node's proof, AUTH_PROOF (docs/PROTOCOL.md "Authentication and tenants")."""
        assert self.tenant is not None and self._secret is not None
        where = f"{conn.host}:{conn.port}"
        handshake = _auth.ClientHandshake(self.tenant, self._secret)
        try:
            proof = handshake.proof_meta(conn.call(Op.AUTH, handshake.auth_meta)[0])
        except AuthFailedError as e:
            raise AuthFailedError(ErrorCode.AUTH_FAILED, f"node {where} refused tenant {self.tenant}: {e.message}") \
                from None
        if proof is None:
            raise AuthFailedError(ErrorCode.AUTH_FAILED, f"node {where} could not prove it knows the secret of tenant "
                                  f"{self.tenant}: not the node you meant, or its auth file has another secret")
        try:
            conn.call(Op.AUTH_PROOF, proof)
        except AuthFailedError as e:
            raise AuthFailedError(ErrorCode.AUTH_FAILED, f"node {where} refused tenant {self.tenant}: {e.message} "
                                  f"(wrong secret?)") from None

    def _release(self, key: tuple[str, int], conn: Connection) -> None:
        if conn.broken:
            conn.close()
            return
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()

    def _call(self, op: int, meta: bytes = b"", data: ReadableBuffer | None = None,
              node: NodeAddr | None = None) -> tuple[bytes, pa.Buffer | None]:
        conn = None
        try:
            with self.connection(node) as conn:
                return conn.call(op, meta, data)
        except (ConnectionError, OSError) as e:
            if isinstance(e, TimeoutError) or conn is None or not conn.stale:
                raise
            self._drop_idle(node)  # its siblings went stale with it: start over on a new connection
        with self.connection(node) as conn:
            return conn.call(op, meta, data)

    def _drop_idle(self, node: NodeAddr | None) -> None:
        key = _addr(node) if node is not None else self.nodes[0]
        with self._lock:
            conns = self._idle.pop(key, [])
        for c in conns:
            c.close()

    # ---- control --------------------------------------------------------------------------------
    def hello(self, node: NodeAddr | None = None) -> dict[str, int | str]:
        meta, _ = self._call(Op.HELLO, encode_hello(VERSION, "rpmp-python"), node=node)
        version, node_id, max_data = decode_hello_resp(meta)
        return {"version": version, "node_id": node_id, "max_data": max_data}

    def ping(self, node: NodeAddr | None = None) -> None:
        self._call(Op.PING, node=node)

    def stats(self, node: NodeAddr | None = None) -> dict[str, Any]:
        import json

        _, data = self._call(Op.STATS, node=node)
        return json.loads(data.to_pybytes()) if data is not None else {}

    def members(self, node: NodeAddr | None = None) -> tuple[int, list[Node]]:
        meta, _ = self._call(Op.MEMBERS, node=node)
        epoch, nodes = decode_members(meta)
        return epoch, list(nodes)

    # ---- shuffle --------------------------------------------------------------------------------
    def register_shuffle(self, app: str, shuffle: int, num_partitions: int, replicas: int = 1,
                         node: NodeAddr | None = None) -> Placement:
        """Register through `node`, or else through the client's nodes in order: one that is unreachable or
        answers UNAVAILABLE (a draining node, a cluster still converging) is left for the next; the last
        error is raised when none takes it. From then on the client renews the app's lease."""
        meta_req = encode_register(app, shuffle, num_partitions, replicas)
        targets: list[NodeAddr] = [node] if node is not None else list(self.nodes)
        for i, target in enumerate(targets):
            try:
                meta, _ = self._call(Op.REGISTER_SHUFFLE, meta_req, node=target)
                break
            except (OSError, UnavailableError):
                if i == len(targets) - 1:
                    raise
        self._leases.hold(app, node if node is not None else targets[i])
        epoch, nodes, prefs = decode_register_resp(meta)
        return Placement(epoch, tuple(nodes), tuple(tuple(p) for p in prefs))

    def _target(self, placement: Placement | None, partition: int, node: NodeAddr | None) -> NodeAddr | None:
        if node is not None:
            return node
        return placement.primary(partition) if placement is not None else None

    def push(self, app: str, shuffle: int, partition: int, map_index: int, attempt: int, seq: int,
             data: ReadableBuffer, placement: Placement | None = None, node: NodeAddr | None = None,
             last: bool = False) -> None:
        """Push one segment (checksummed here) to the partition's primary node; `last` marks the attempt's
        final segment for this partition (readers that pass `attempts` to fetch require it)."""
        checksum = xxh3(data)
        meta = encode_push(app, shuffle, partition, map_index, attempt, seq | (SEQ_LAST if last else 0), checksum)
        self._call(Op.PUSH, meta, data, node=self._target(placement, partition, node))

    def push_many(self, app: str, shuffle: int, segments: Iterable[tuple[int, int, int, int, ReadableBuffer]],
                  placement: Placement | None = None, node: NodeAddr | None = None, window: int = 16) -> int:
        """Push (partition, map_index, attempt, seq, data) segments, up to `window` in flight per node
        (`seq | SEQ_LAST` marks an attempt's final segment for a partition)."""
        by_node: dict[tuple[str, int], list[tuple[int, int, int, int, ReadableBuffer]]] = {}
        for seg in segments:
            target = self._target(placement, seg[0], node)
            by_node.setdefault(_addr(target) if target is not None else self.nodes[0], []).append(seg)
        count = 0
        for key, segs in by_node.items():
            with self.connection(key) as conn:
                pending: deque[int] = deque()
                try:
                    for p, m, a, s, data in segs:
                        meta = encode_push(app, shuffle, p, m, a, s, xxh3(data))
                        pending.append(conn.send(Op.PUSH, meta, data))
                        if len(pending) >= window:
                            conn.recv(Op.PUSH, pending.popleft())
                    while pending:
                        conn.recv(Op.PUSH, pending.popleft())
                except BaseException:
                    conn.broken = conn.broken or bool(pending)  # their replies would meet the next caller
                    raise
                count += len(segs)
        return count

    def map_end(self, app: str, shuffle: int, map_index: int, attempt: int,
                counts: Iterable[tuple[int, int, int]], node: NodeAddr | None = None) -> None:
        """Tell a node what this map attempt pushed to it: (partition, segments, bytes) per partition."""
        self._call(Op.MAP_END, encode_map_end(app, shuffle, map_index, attempt, list(counts)), node=node)

    def iter_fetch_raw(self, app: str, shuffle: int, partition: int, start_map: int = 0,
                       end_map: int = END_MAP_ALL, attempts: Iterable[int] = (),
                       node: NodeAddr | None = None) -> Iterator[tuple[int, pa.Buffer | None]]:
        """The FETCH reply frame by frame as it arrives: (record count, data buffer) per frame (at most
        16 MiB each), so a large partition can be consumed without holding all of it. Stopping early
        closes the connection (the rest of the reply is not read)."""
        meta = encode_fetch(app, shuffle, partition, start_map, end_map, list(attempts))
        with self.connection(node) as conn:
            rid = conn.send(Op.FETCH, meta)
            while True:
                flags, rmeta, data = conn.recv(Op.FETCH, rid)
                yield decode_fetch_resp(rmeta), data
                if not flags & FLAG_MORE:
                    return

    def fetch_raw(self, app: str, shuffle: int, partition: int, start_map: int = 0, end_map: int = END_MAP_ALL,
                  attempts: Iterable[int] = (), node: NodeAddr | None = None) -> list[tuple[int, pa.Buffer | None]]:
        """The whole FETCH reply: (record count, data buffer) per frame."""
        return list(self.iter_fetch_raw(app, shuffle, partition, start_map, end_map, attempts, node))

    def fetch(self, app: str, shuffle: int, partition: int, start_map: int = 0, end_map: int = END_MAP_ALL,
              attempts: Iterable[int] | None = None, placement: Placement | None = None,
              node: NodeAddr | None = None, verify: bool = True) -> list[Segment]:
        """The segments of one partition: only the given attempts (if any), each (map, attempt, seq) once,
        every checksum verified, and each given attempt that has records whole (indices 0..n-1, the last
        marked SEQ_LAST). A node that cannot give all of that (unreachable, an error, a record that fails its
        checksum, a missing tail) is left for the next one on the placement's preference list; when none
        can, the error names every node tried and what went wrong there."""
        wanted = set(attempts) if attempts else None
        targets: list[NodeAddr | None] = [node] if node is not None else (
            list(placement.nodes_for(partition)) if placement else [None])
        problems: list[tuple[str, Exception]] = []
        for target in targets:
            host, port = _addr(target) if target is not None else self.nodes[0]
            name = f"{host}:{port}"
            try:
                frames = self.fetch_raw(app, shuffle, partition, start_map, end_map, wanted or (), node=target)
                out = self._records(frames, partition, start_map, end_map, wanted, verify, name)
                if wanted:
                    self._check_complete(out, partition, name)
                return out
            except (OSError, ConnectionError, RpmpError) as e:
                if isinstance(e, RpmpError) and e.code == ErrorCode.BAD_REQUEST:
                    raise
                problems.append((name, e))
        if len(problems) == 1 and isinstance(problems[0][1], RpmpError):
            raise problems[0][1]
        detail = "; ".join(f"{n}: {e}" for n, e in problems)
        last = problems[-1][1]
        if all(not isinstance(e, RpmpError) for _, e in problems):
            raise UnavailableError(ErrorCode.UNAVAILABLE, f"no node of partition {partition} answered: {detail}")
        cls, code = (type(last), last.code) if isinstance(last, RpmpError) else (UnavailableError,
                                                                                   ErrorCode.UNAVAILABLE)
        raise cls(code, f"no node has partition {partition} of shuffle {shuffle} of {app!r} intact: {detail}")

    @staticmethod
    def _records(frames: Iterable[tuple[int, pa.Buffer | None]], partition: int, start_map: int, end_map: int,
                 wanted: set[int] | None, verify: bool, name: str) -> list[Segment]:
        out: list[Segment] = []
        seen: set[tuple[int, int, int]] = set()
        for nrec, data in frames:
            if data is None:
                if nrec:
                    raise RpmpError(ErrorCode.BAD_FRAME, f"frame announces {nrec} records but carries no data")
                continue
            view = memoryview(data)
            got = 0
            for m, a, s, start, n, checksum in iter_records(view):
                got += 1
                if not (start_map <= m < end_map) or (wanted is not None and a not in wanted) or (m, a, s) in seen:
                    continue
                payload = view[start:start + n]
                if verify and xxh3(payload) != checksum:
                    raise CorruptError(ErrorCode.CORRUPT, f"record ({m}, {a}, {s & SEQ_INDEX}) of partition "
                                       f"{partition} from node {name} fails its checksum")
                seen.add((m, a, s))
                out.append(Segment(m, a, s & SEQ_INDEX, payload, bool(s & SEQ_LAST)))
            if got != nrec:
                raise RpmpError(ErrorCode.BAD_FRAME, f"frame announces {nrec} records, carries {got}")
        return out

    @staticmethod
    def _check_complete(segments: list[Segment], partition: int, name: str) -> None:
        """Each attempt present must have segments 0..n-1 with SEQ_LAST on n-1 (PROTOCOL.md "Completeness")."""
        by_attempt: dict[tuple[int, int], list[Segment]] = {}
        for seg in segments:
            by_attempt.setdefault((seg.map_index, seg.attempt), []).append(seg)
        for (m, a), segs in by_attempt.items():
            idx = sorted(seg.seq for seg in segs)
            lasts = [seg.seq for seg in segs if seg.last]
            if idx != list(range(len(idx))) or lasts != [len(idx) - 1]:
                raise IncompleteError(ErrorCode.INCOMPLETE, f"node {name} has map {m} attempt {a} of partition "
                                      f"{partition} in part: segments {idx[:8]}{'...' if len(idx) > 8 else ''}, "
                                      f"final segment {'marked at ' + str(lasts) if lasts else 'missing'}")

    def partition_info(self, app: str, shuffle: int, partition: int,
                       node: NodeAddr | None = None) -> dict[str, Any]:
        meta, _ = self._call(Op.PARTITION_INFO, encode_partition_info(app, shuffle, partition), node=node)
        path, records, nbytes, blocks, spill_files = decode_partition_info_resp(meta)
        # A block's `file` is 0 for pool_path, k > 0 for spill_files[k - 1].
        return {"pool_path": path, "records": records, "bytes": nbytes, "blocks": list(blocks),
                "spill_files": list(spill_files)}

    def delete_shuffle(self, app: str, shuffle: int, node: NodeAddr | None = None) -> int:
        meta, _ = self._call(Op.DELETE_SHUFFLE, encode_delete_shuffle(app, shuffle), node=node)
        return decode_u64(meta)

    def delete_app(self, app: str, node: NodeAddr | None = None) -> int:
        """Delete the app's data on every node (and stop renewing its lease)."""
        self._leases.release(app)
        meta, _ = self._call(Op.DELETE_APP, encode_delete_app(app), node=node)
        return decode_u64(meta)

    # ---- leases and drain -----------------------------------------------------------------------
    def lease(self, app: str, node: NodeAddr | None = None) -> int:
        """Renew the app's lease on every node (the node forwards it); returns that node's app TTL in ms
        (0: apps never expire there). register_shuffle starts renewing on its own; this is one renewal."""
        meta, _ = self._call(Op.LEASE, encode_lease(app), node=node)
        return decode_lease_resp(meta)

    def release(self, app: str) -> None:
        """Stop renewing the app's lease: its data is deleted once the nodes' TTL passes."""
        self._leases.release(app)

    def holds_lease(self, app: str) -> bool:
        with self._leases.cond:
            return app in self._leases.apps

    def drain(self, node: NodeAddr | None = None, timeout: int = 0) -> None:
        """DRAIN a node: it takes no new shuffles, serves what it holds, and stops once it holds none or
        `timeout` seconds passed (0: no limit)."""
        self._call(Op.DRAIN, encode_drain(timeout), node=node)

    # ---- key-value ------------------------------------------------------------------------------
    def put(self, key: str | bytes, value: ReadableBuffer, node: NodeAddr | None = None) -> None:
        self._call(Op.PUT, encode_key(key), value, node=node)

    def get(self, key: str | bytes, node: NodeAddr | None = None) -> pa.Buffer:
        _, data = self._call(Op.GET, encode_key(key), node=node)
        return data if data is not None else pa.py_buffer(b"")

    def delete(self, key: str | bytes, node: NodeAddr | None = None) -> None:
        self._call(Op.DELETE, encode_key(key), node=node)

    def put_table(self, key: str | bytes, table: pa.Table, node: NodeAddr | None = None) -> None:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        self.put(key, sink.getvalue(), node=node)

    def get_table(self, key: str | bytes, node: NodeAddr | None = None) -> pa.Table:
        return pa.ipc.open_stream(self.get(key, node=node)).read_all()

    # ---- pool addresses -------------------------------------------------------------------------
    def alloc(self, size: int, node: NodeAddr | None = None) -> int:
        meta, _ = self._call(Op.ALLOC, encode_alloc(size), node=node)
        return decode_u64(meta)

    def write(self, address: int, data: ReadableBuffer, offset: int = 0, node: NodeAddr | None = None) -> None:
        self._call(Op.WRITE, encode_write(address, offset), data, node=node)

    def read(self, address: int, length: int, offset: int = 0, node: NodeAddr | None = None) -> pa.Buffer:
        _, data = self._call(Op.READ, encode_read(address, offset, length), node=node)
        return data if data is not None else pa.py_buffer(b"")

    def free(self, address: int, node: NodeAddr | None = None) -> None:
        self._call(Op.FREE, encode_free(address), node=node)


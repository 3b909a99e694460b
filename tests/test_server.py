"""The RPMP node as a real process on loopback, driven through the Python client and raw sockets."""

import concurrent.futures as cf
import os
import random
import signal
import socket
import struct
import threading
import time

import pyarrow as pa
import pytest
import xxhash

from rpmp.client import (
    BadRequestError,
    ChecksumMismatchError,
    Client,
    ConflictError,
    IncompleteError,
    NotFoundError,
    RpmpError,
)
from rpmp.protocol import FLAG_RESPONSE, MAGIC, VERSION, ErrorCode, Op, ProtocolError

HDR = struct.Struct("<IBBHQIIQ")
APP = "app-20261121-0001"


def payload(*ident, size=None) -> bytes:
    rng = random.Random(hash(ident))
    n = size if size is not None else rng.choice([1, 17, 1000, 70_000, 300_000])
    return rng.randbytes(n)


def test_control_ops(node):
    with Client(node.addr) as c:
        c.ping()
        hello = c.hello()
        assert hello == {"version": 2, "node_id": node.addr, "max_data": 256 << 20}
        epoch, nodes = c.members()
        assert epoch >= 1 and [(n.node_id, n.state) for n in nodes] == [(node.addr, 1)]
        st = c.stats()
        assert st["node"] == node.addr and st["pool"]["path"] == node.pool and st["pool"]["blocks"] == 0


def test_push_fetch_byte_exact_and_merged_into_blocks(node):
    with Client(node.addr) as c:
        pl = c.register_shuffle(APP, 1, num_partitions=4)
        assert [len(p) for p in pl.prefs] == [1, 1, 1, 1] and pl.primary(0).node_id == node.addr
        sent = {p: [] for p in range(4)}
        segs = []
        for m in range(20):
            for p in range(4):
                for s in range(3):
                    data = payload(p, m, s, size=20_000 + 37 * m + s)
                    segs.append((p, m, 1000 + m, s, data))
                    sent[p].append((m, 1000 + m, s, data))
        assert c.push_many(APP, 1, segs, placement=pl) == 240
        for p in range(4):
            got = c.fetch(APP, 1, p, placement=pl)
            assert [(g.map_index, g.attempt, g.seq, bytes(g.data)) for g in got] == sent[p]
            info = c.partition_info(APP, 1, p)
            total = sum(len(d) for *_, d in sent[p])
            assert info["records"] == 60 and info["bytes"] == total
            # 60 records of ~20-21 KB merge into a few blocks (64 KiB, doubling), not 60 small ones
            blocks = info["blocks"]
            assert len(blocks) == 5 and sum(b.used for b in blocks) == total + 60 * 32
            assert info["spill_files"] == [] and all(b.file == 0 for b in blocks)  # no disk tier: the pool file


def test_large_segments_get_their_own_blocks_and_many_blocks_fill(node):
    big = payload("big", size=6 << 20)
    with Client(node.addr) as c:
        c.register_shuffle(APP, 2, 1)
        c.push(APP, 2, 0, 0, 7, 0, big)
        small = [payload("s", i, size=1 << 20) for i in range(9)]
        for i, d in enumerate(small):
            c.push(APP, 2, 0, 1, 8, i, d)
        got = c.fetch(APP, 2, 0)
        assert [bytes(g.data) for g in got] == [big, *small]
        blocks = c.partition_info(APP, 2, 0)["blocks"]
        # the 6 MiB segment has a block of its own; nine 1 MiB segments fill growing merge blocks
        # (1 MiB, 2 MiB, then 4 MiB blocks holding three each)
        assert sorted(b.used for b in blocks)[-1] == (6 << 20) + 32
        assert [b.used // ((1 << 20) + 32) for b in blocks[1:]] == [1, 2, 3, 3]


def test_filters_duplicates_and_attempts(node):
    with Client(node.addr) as c:
        c.register_shuffle(APP, 3, 2)
        for m in range(6):
            for attempt in (m * 10, m * 10 + 1):  # two attempts of every map task
                c.push(APP, 3, 1, m, attempt, 0, payload(m, attempt), last=True)
        c.push(APP, 3, 1, 2, 20, 0, payload(2, 20), last=True)  # a retried push: stored once
        committed = [m * 10 + (m % 2) for m in range(6)]
        got = c.fetch(APP, 3, 1, attempts=committed)
        assert [(g.map_index, g.attempt) for g in got] == [(m, m * 10 + (m % 2)) for m in range(6)]
        ranged = c.fetch(APP, 3, 1, start_map=2, end_map=4, attempts=committed)
        assert [(g.map_index, bytes(g.data)) for g in ranged] == [(2, payload(2, 20)), (3, payload(3, 31))]
        assert len(c.fetch(APP, 3, 1)) == 12
        assert c.fetch(APP, 3, 0) == []  # nothing pushed: empty, not an error
        raw = c.fetch_raw(APP, 3, 1, attempts=committed)
        assert sum(n for n, _ in raw) == 6  # the node filtered too
        assert c.stats()["counters"]["duplicates"] == 1


def test_map_end_counts(node):
    with Client(node.addr) as c:
        c.register_shuffle(APP, 4, 3)
        d0, d1 = payload("a", size=100), payload("b", size=250)
        c.push(APP, 4, 0, 5, 55, 0, d0)
        c.push(APP, 4, 2, 5, 55, 0, d1)
        c.push(APP, 4, 2, 5, 55, 1, d0)
        c.map_end(APP, 4, 5, 55, [(0, 1, 100), (2, 2, 350)])
        with pytest.raises(IncompleteError, match="partition 2: node has 2 segments/350 bytes, map says 3/350"):
            c.map_end(APP, 4, 5, 55, [(0, 1, 100), (2, 3, 350)])
        with pytest.raises(BadRequestError, match="partition 7 is out of range"):
            c.map_end(APP, 4, 5, 55, [(7, 1, 1)])


def test_registration_rules(node):
    with Client(node.addr) as c:
        a = c.register_shuffle(APP, 5, 10)
        assert c.register_shuffle(APP, 5, 10) == a
        with pytest.raises(ConflictError, match="registered with 10 partitions, not 11"):
            c.register_shuffle(APP, 5, 11)
        with pytest.raises(NotFoundError, match="not registered"):
            c.push(APP, 99, 0, 0, 0, 0, b"x")
        with pytest.raises(BadRequestError, match="partition 10 is out of range"):
            c.push(APP, 5, 10, 0, 0, 0, b"x")
        # the client refuses bad names before sending (the node's own check: test_bad_requests_...)
        with pytest.raises(ProtocolError, match="contains '/'"):
            c.register_shuffle("bad/app", 1, 1)
        with pytest.raises(ProtocolError, match="limit is 120"):
            c.register_shuffle("x" * 121, 1, 1)
        c.ping()  # the connection pool still works after all those errors


def test_delete_shuffle_and_app_free_blocks(node):
    with Client(node.addr) as c:
        for sid in (6, 7):
            c.register_shuffle(APP, sid, 2)
            c.push(APP, sid, 0, 0, 1, 0, payload(sid, size=5000))
        c.register_shuffle("other-app", 1, 1)
        c.push("other-app", 1, 0, 0, 1, 0, b"keep")
        blocks = c.stats()["pool"]["blocks"]
        assert c.delete_shuffle(APP, 6) == 3  # one data block + the registration's two copies
        assert c.stats()["pool"]["blocks"] == blocks - 3
        with pytest.raises(NotFoundError):
            c.fetch(APP, 6, 0)
        assert c.delete_app(APP) == 3
        assert [bytes(s.data) for s in c.fetch("other-app", 1, 0)] == [b"keep"]


def test_wrong_checksum_is_refused_and_nothing_stored(node):
    with Client(node.addr) as c:
        c.register_shuffle(APP, 8, 1)
        with c.connection() as conn:
            from rpmp import _wire as W

            meta = W.encode_push(APP, 8, 0, 0, 1, 0, xxhash.xxh3_64_intdigest(b"right") ^ 1)
            with pytest.raises(ChecksumMismatchError, match="payload XXH3"):
                conn.call(Op.PUSH, meta, b"right")
            conn.call(Op.PING)  # same connection keeps working
        assert c.fetch(APP, 8, 0) == []
        c.push(APP, 8, 0, 0, 1, 0, b"right")  # a correct retry of the same segment is accepted
        assert [bytes(s.data) for s in c.fetch(APP, 8, 0)] == [b"right"]


def test_key_value_and_arrow_tables(node):
    with Client(node.addr) as c:
        value = payload("kv", size=1 << 20)
        c.put("k1", value)
        buf = c.get("k1")
        assert isinstance(buf, pa.Buffer) and buf.to_pybytes() == value
        c.put("k1", b"replaced")
        assert c.get("k1").to_pybytes() == b"replaced"
        c.put(b"\x00bin", b"")
        assert c.get(b"\x00bin").to_pybytes() == b""
        table = pa.table({"id": list(range(1000)), "name": [f"n{i}" for i in range(1000)]})
        c.put_table("t", table)
        assert c.get_table("t").equals(table)
        c.delete("k1")
        with pytest.raises(NotFoundError, match="no value under key"):
            c.get("k1")
        with pytest.raises(NotFoundError):
            c.delete("k1")
        with pytest.raises(ProtocolError, match="limit is 160"):
            c.put("k" * 161, b"x")


def test_address_api_and_isolation(node):
    with Client(node.addr) as c:
        addr = c.alloc(10_000)
        c.write(addr, b"hello", offset=100)
        c.write(addr, b"HE", offset=100)
        assert c.read(addr, 5, offset=100).to_pybytes() == b"HEllo"
        assert c.read(addr, 100).to_pybytes() == bytes(100)  # the gap before the first write reads as zeros
        with pytest.raises(BadRequestError, match="exceeds the 10000 bytes allocated"):
            c.write(addr, b"x" * 11, offset=9_990)
        with pytest.raises(BadRequestError, match="published"):
            c.read(addr, 10, offset=100)
        c.register_shuffle(APP, 9, 1)
        c.push(APP, 9, 0, 0, 1, 0, b"secret")
        shuffle_block = c.partition_info(APP, 9, 0)["blocks"][0].address
        for op in (lambda: c.read(shuffle_block, 1), lambda: c.write(shuffle_block, b"x"),
                   lambda: c.free(shuffle_block)):
            with pytest.raises(NotFoundError, match="no block allocated at address"):
                op()
        c.free(addr)
        with pytest.raises(NotFoundError):
            c.read(addr, 1)
        assert [bytes(s.data) for s in c.fetch(APP, 9, 0)] == [b"secret"]


def test_many_concurrent_clients(node):
    nclients, maps_each, parts = 8, 6, 5
    with Client(node.addr) as c:
        pl = c.register_shuffle(APP, 10, parts)

    def writer(w: int) -> None:
        with Client(node.addr) as c:
            segs = [(p, w * maps_each + m, 5000 + w * maps_each + m, s, payload(w, m, p, s))
                    for m in range(maps_each) for p in range(parts) for s in range(2)]
            c.push_many(APP, 10, segs, placement=pl, window=8)

    with cf.ThreadPoolExecutor(nclients) as ex:
        list(ex.map(writer, range(nclients)))

    def reader(p: int) -> dict:
        with Client(node.addr) as c:
            return {(s.map_index, s.seq): bytes(s.data) for s in c.fetch(APP, 10, p, placement=pl)}

    with cf.ThreadPoolExecutor(4) as ex:
        results = list(ex.map(reader, list(range(parts)) * 2))
    for i, got in enumerate(results):
        p = i % parts
        expect = {(w * maps_each + m, s): payload(w, m, p, s) for w in range(nclients) for m in range(maps_each)
                  for s in range(2)}
        assert got == expect


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_restart_serves_committed_segments(node_factory, how):
    n = node_factory()
    with Client(n.addr) as c:
        c.register_shuffle(APP, 11, 3)
        sent = {p: [payload("r", p, i) for i in range(30)] for p in range(3)}
        c.push_many(APP, 11, [(p, i, 100 + i, 0, d) for p, ds in sent.items() for i, d in enumerate(ds)])
        c.put("kv", b"survives")
        addr = c.alloc(64)
        c.write(addr, b"raw bytes")
    n.stop(signal.SIGKILL if how == "sigkill" else signal.SIGTERM)
    n2 = node_factory(pool=n.pool)
    with Client(n2.addr) as c:
        for p, ds in sent.items():  # no order across blocks (PROTOCOL.md): compare by map index
            got = sorted(c.fetch(APP, 11, p), key=lambda s: s.map_index)
            assert [bytes(s.data) for s in got] == ds
        assert c.get("kv").to_pybytes() == b"survives"
        assert c.read(addr, 9).to_pybytes() == b"raw bytes"
        with pytest.raises(ConflictError):
            c.register_shuffle(APP, 11, 4)  # the registration survived too
        c.push(APP, 11, 0, 0, 100, 0, sent[0][0])  # and so did the duplicate index
        assert len(c.fetch(APP, 11, 0)) == 30


# ---- bad input: raw sockets ----------------------------------------------------------------------

def raw_conn(node) -> socket.socket:
    s = socket.create_connection((node.host, node.port), timeout=10)
    return s


def read_frame(s: socket.socket) -> tuple[int, int, bytes, bytes]:
    head = b""
    while len(head) < 32:
        chunk = s.recv(32 - len(head))
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    magic, version, op, flags, rid, mlen, _, dlen = HDR.unpack(head)
    body = b""
    while len(body) < mlen + dlen:
        chunk = s.recv(mlen + dlen - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return op, flags, body[:mlen], body[mlen:]


def error_of(meta: bytes) -> tuple[int, str]:
    code, n = struct.unpack_from("<HH", meta)
    return code, meta[4:4 + n].decode()


def assert_closed(s: socket.socket) -> None:
    s.settimeout(10)
    try:
        assert s.recv(1) == b""
    except ConnectionResetError:
        pass


@pytest.mark.parametrize("frame, code, text", [
    (HDR.pack(0xDEADBEEF, VERSION, Op.PING, 0, 1, 0, 0, 0), ErrorCode.BAD_FRAME, "bad magic"),
    (HDR.pack(MAGIC, 3, Op.PING, 0, 1, 0, 0, 0), ErrorCode.BAD_VERSION, "version 3 is not supported"),
    (HDR.pack(MAGIC, VERSION, Op.PING, 0, 1, 0, 7, 0), ErrorCode.BAD_FRAME, "reserved"),
    (HDR.pack(MAGIC, VERSION, Op.PUSH, 0, 1, 2 << 20, 0, 0), ErrorCode.TOO_LARGE, "meta of 2097152 bytes exceeds"),
    (HDR.pack(MAGIC, VERSION, Op.PUSH, 0, 1, 10, 0, 1 << 40), ErrorCode.TOO_LARGE,
     "data of 1099511627776 bytes exceeds the limit of 268435456"),
    (os.urandom(7) + b"garbage" * 10, ErrorCode.BAD_FRAME, "bad magic"),
])
def test_broken_framing_gets_error_and_close_while_others_work(node, frame, code, text):
    with Client(node.addr) as good:
        good.register_shuffle(APP, 12, 1)
        stop = threading.Event()
        errors = []

        def keep_working():
            i = 0
            while not stop.is_set() and i < 10_000:
                try:
                    good.push(APP, 12, 0, 0, 1, i, b"x" * 100)
                except Exception as e:  # pragma: no cover - reported below
                    errors.append(e)
                    return
                i += 1

        t = threading.Thread(target=keep_working)
        t.start()
        s = raw_conn(node)
        s.sendall(frame)
        op, flags, meta, _ = read_frame(s)
        got_code, message = error_of(meta)
        assert flags & 2 and got_code == code and text in message, message
        assert_closed(s)
        s.close()
        stop.set()
        t.join()
        assert not errors
        assert good.fetch(APP, 12, 0)  # the other client's data is there


def test_truncated_frame_then_disconnect_loses_nothing(node):
    with Client(node.addr) as c:
        c.register_shuffle(APP, 13, 1)
        c.push(APP, 13, 0, 0, 1, 0, b"before")
        from rpmp import _wire as W

        data = b"y" * 100_000
        meta = W.encode_push(APP, 13, 0, 0, 1, 1, xxhash.xxh3_64_intdigest(data))
        s = raw_conn(node)
        s.sendall(HDR.pack(MAGIC, VERSION, Op.PUSH, 0, 1, len(meta), 0, len(data)) + meta + data[:50_000])
        s.close()  # died halfway through the payload
        s = raw_conn(node)
        s.sendall(HDR.pack(MAGIC, VERSION, Op.PUSH, 0, 1, 40, 0, 0)[:20])
        s.close()  # died inside a header
        assert [bytes(x.data) for x in c.fetch(APP, 13, 0)] == [b"before"]
        c.push(APP, 13, 0, 0, 1, 1, data)
        assert [bytes(x.data) for x in c.fetch(APP, 13, 0)] == [b"before", data]


def test_bad_requests_keep_the_connection_open(node):
    from rpmp import _wire as W

    s = raw_conn(node)
    cases = [
        (HDR.pack(MAGIC, VERSION, 0x7F, 0, 1, 0, 0, 0), ErrorCode.UNKNOWN_OPCODE, "unknown opcode 0x7f"),
        (HDR.pack(MAGIC, VERSION, Op.PUSH, 0, 2, 3, 0, 0) + b"abc", ErrorCode.BAD_FRAME, "truncated"),
        (HDR.pack(MAGIC, VERSION, Op.FETCH, 0, 3, 5, 0, 0) + b"\x05\x00abc", ErrorCode.BAD_FRAME, "truncated"),
        (HDR.pack(MAGIC, VERSION, Op.PING, 0, 4, 0, 0, 3) + b"xyz", ErrorCode.BAD_REQUEST, "takes no data part"),
    ]
    for app, text in ((b"bad/app", "contains '/'"), (b"x" * 121, "limit is 120"), (b"", "is empty")):
        meta = struct.pack("<H", len(app)) + app + struct.pack("<IIB", 1, 1, 1)
        cases.append((HDR.pack(MAGIC, VERSION, Op.REGISTER_SHUFFLE, 0, 6, len(meta), 0, 0) + meta,
                      ErrorCode.BAD_REQUEST, text))
    key = b"k" * 161
    meta = struct.pack("<I", len(key)) + key
    cases.append((HDR.pack(MAGIC, VERSION, Op.PUT, 0, 7, len(meta), 0, 5) + meta + b"value", ErrorCode.BAD_REQUEST,
                  "limit is 160"))
    meta = W.encode_push(APP, 404, 0, 0, 1, 0, 0)
    cases.append((HDR.pack(MAGIC, VERSION, Op.PUSH, 0, 5, len(meta), 0, 1000) + meta + b"z" * 1000,
                  ErrorCode.NOT_FOUND, "not registered"))
    for frame, code, text in cases:
        s.sendall(frame)
        op, flags, rmeta, _ = read_frame(s)
        got, message = error_of(rmeta)
        assert (got, text in message) == (code, True), message
    s.sendall(HDR.pack(MAGIC, VERSION, Op.PING, 0, 9, 0, 0, 0))
    op, flags, _, _ = read_frame(s)
    assert op == Op.PING and flags == 1
    s.close()


def test_client_error_carries_node_message(node):
    with Client(node.addr) as c:
        with pytest.raises(RpmpError) as e:
            c.fetch("nobody", 1, 0)
        assert e.value.code == ErrorCode.NOT_FOUND and "shuffle 1 of app 'nobody'" in e.value.message


def test_pool_full_is_an_error_and_loses_nothing(node_factory):
    n = node_factory(pool_size="48m")
    from rpmp.client import PoolFullError

    with Client(n.addr) as c:
        c.register_shuffle(APP, 14, 4)
        stored = []
        with pytest.raises(PoolFullError, match="full"):
            for i in range(100):
                data = payload("full", i, size=1 << 20)
                c.push(APP, 14, i % 4, i, i, 0, data)
                stored.append((i % 4, data))
        assert len(stored) > 10
        for p in range(4):
            assert [bytes(s.data) for s in c.fetch(APP, 14, p)] == [d for q, d in stored if q == p]
        c.delete_shuffle(APP, 14)  # room again
        c.register_shuffle(APP, 15, 1)
        c.push(APP, 15, 0, 0, 1, 0, b"fits again")
        assert [bytes(s.data) for s in c.fetch(APP, 15, 0)] == [b"fits again"]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_a_client_that_does_not_read_is_paused_not_buffered(node):
    from rpmp import _wire as W

    with Client(node.addr) as c:
        c.put("big", payload("bp", size=256 << 10))
        before = rss_kib(node.proc.pid)
        s = raw_conn(node)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        req = W.frame(Op.GET, 0, 1, W.encode_key("big"))
        s.setblocking(False)
        sent = 0
        for _ in range(4000):  # 4000 x 256 KiB = 1 GiB of replies if the node buffered them
            try:
                sent += s.send(req * 16)
            except BlockingIOError:
                break
        time.sleep(1.0)
        growth = rss_kib(node.proc.pid) - before
        assert growth < 64 << 10, f"node grew by {growth} KiB for a client that does not read"
        assert c.get("big").size == 256 << 10  # everyone else is served meanwhile
        s.close()


# ---- FETCH replies by sendfile(2) ----------------------------------------------------------------

@pytest.mark.parametrize("sendfile", [True, False], ids=["sendfile", "transport"])
def test_large_fetch_is_byte_exact_by_either_path(node_factory, sendfile):
    n = node_factory(pool_size="512m", extra=["--sendfile" if sendfile else "--no-sendfile"])
    with Client(n.addr) as c:
        pl = c.register_shuffle(APP, 7, num_partitions=2)
        # 2 big records (own blocks), 300 small ones merged into blocks: > 16 MiB, so several frames
        segs = [(0, m, m + 50, s, payload(7, m, s, size=9_000_000 if s == 0 and m < 2 else 40_000 + m))
                for m in range(100) for s in range(3)]
        c.push_many(APP, 7, segs, placement=pl)
        frames = c.fetch_raw(APP, 7, 0)
        assert len(frames) >= 2 and all(f[1] is not None for f in frames)
        got = c.fetch(APP, 7, 0, placement=pl)
        assert [(g.map_index, g.attempt, g.seq, bytes(g.data)) for g in got] == [(m, a, s, bytes(d))
                                                                              for _, m, a, s, d in segs]
        # a small partition takes the transport either way; the node's counters say which path ran
        c.push(APP, 7, 1, 0, 50, 0, b"tiny", placement=pl)
        assert [bytes(g.data) for g in c.fetch(APP, 7, 1, placement=pl)] == [b"tiny"]
        counters = c.stats()["counters"]
        total = sum(len(d) for *_, d in segs) + 32 * len(segs)
        if sendfile:
            assert counters["sendfile_replies"] == 2 and counters["sendfile_bytes"] == 2 * total
        else:
            assert counters["sendfile_replies"] == 0 and counters["sendfile_bytes"] == 0


def test_replies_stay_in_order_around_a_sendfile_reply(node_factory):
    from rpmp import _wire as W

    node = node_factory(extra=["--sendfile"])
    big = payload("order", size=3 << 20)
    with Client(node.addr) as c:
        c.register_shuffle(APP, 8, num_partitions=1)
        c.push(APP, 8, 0, 0, 1, 0, big)
        c.put("small", b"v" * 100)
    s = raw_conn(node)
    # PING, FETCH (sendfile), GET, FETCH, PING in one write: five replies, in request order
    reqs = [W.frame(Op.PING, 0, 1, b""), W.frame(Op.FETCH, 0, 2, W.encode_fetch(APP, 8, 0, 0, 2**32 - 1, [])),
            W.frame(Op.GET, 0, 3, W.encode_key("small")),
            W.frame(Op.FETCH, 0, 4, W.encode_fetch(APP, 8, 0, 0, 2**32 - 1, [])), W.frame(Op.PING, 0, 5, b"")]
    s.sendall(b"".join(reqs))
    got = []
    for _ in range(5):
        op, _, _, data = read_frame(s)
        got.append((op, data))
    assert [op for op, _ in got] == [Op.PING, Op.FETCH, Op.GET, Op.FETCH, Op.PING]
    assert got[2][1] == b"v" * 100
    for _, data in (got[1], got[3]):
        recs = list(W.iter_records(memoryview(data)))
        assert len(recs) == 1 and data[recs[0][3]:recs[0][3] + recs[0][4]] == big
    s.close()


def fetch_with_small_window(n, c: Client, shuffle: int, segments: int, tag: str) -> socket.socket:
    """`segments` 4 MiB segments in one partition, and a raw connection with a 64 KiB receive buffer that has
    asked for all of it: how fast the node may send is up to how fast the test reads."""
    from rpmp import _wire as W

    c.register_shuffle(APP, shuffle, num_partitions=1)
    for m in range(segments):
        c.push(APP, shuffle, 0, m, 1, 0, payload(tag, m, size=4 << 20))
    s = raw_conn(n)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    s.sendall(W.frame(Op.FETCH, 0, 1, W.encode_fetch(APP, shuffle, 0, 0, 2**32 - 1, [])))
    return s


def test_a_client_that_stops_reading_a_fetch_is_dropped_others_served(node_factory):
    n = node_factory(pool_size="512m", extra=["--send-timeout", "1"])
    with Client(n.addr) as c:
        s = fetch_with_small_window(n, c, 9, 24, "slow")
        # 96 MiB of reply that nobody reads: others are served meanwhile ...
        t0 = time.monotonic()
        while c.stats()["counters"]["dropped_connections"] == 0:
            assert time.monotonic() - t0 < 15, "a client that reads nothing was never dropped"
            c.ping()
            time.sleep(0.1)
        # ... and after send-timeout seconds without progress, the node drops the connection
        assert time.monotonic() - t0 >= 0.9
        got = 0
        s.settimeout(10)
        with pytest.raises((ConnectionResetError, AssertionError)):
            while True:
                chunk = s.recv(1 << 20)
                assert chunk, "closed"
                got += len(chunk)
        assert got < 96 << 20
        s.close()
        assert len(c.fetch(APP, 9, 0)) == 24  # the data is all still there


def test_a_client_that_reads_a_fetch_slowly_is_not_dropped(node_factory):
    """Dropping is for a client that takes none of its replies, not for one slower than send_timeout."""
    n = node_factory(pool_size="256m", extra=["--send-timeout", "1"])
    with Client(n.addr) as c:
        s = fetch_with_small_window(n, c, 11, 8, "trickle")
        s.settimeout(10)
        got = bytearray()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.5:  # 3.5 send timeouts at about 1 MiB/s: far from all of the 32 MiB
            chunk = s.recv(256 << 10)
            assert chunk, f"the node closed a connection that was reading (after {len(got)} bytes)"
            got += chunk
            time.sleep(0.2)
        assert c.stats()["counters"]["dropped_connections"] == 0
        assert 0 < len(got) < 32 << 20
        _, _, op, flags, rid, _, _, dlen = HDR.unpack(got[:32])
        assert (op, rid) == (Op.FETCH, 1) and flags & FLAG_RESPONSE and dlen > 0  # the reply it was reading
        s.close()


def test_streamed_fetch_stopped_early_does_not_poison_the_connection_pool(node):
    with Client(node.addr, max_idle=1) as c:
        pl = c.register_shuffle(APP, 10, num_partitions=1)
        segs = [(0, m, 1, 0, payload("stream", m, size=6 << 20)) for m in range(6)]  # 36 MiB: 3+ frames
        c.push_many(APP, 10, segs, placement=pl)
        frames = c.iter_fetch_raw(APP, 10, 0)
        nrec, first = next(frames)
        assert nrec >= 1 and first.size >= 6 << 20
        frames.close()  # the rest of the reply is never read: that connection must not be reused
        for _ in range(3):
            got = c.fetch(APP, 10, 0, placement=pl)
            assert [(g.map_index, bytes(g.data)) for g in got] == [(m, bytes(d)) for _, m, _, _, d in segs]
            c.ping()

"""A bounded, seeded protocol fuzzer for one RPMP node, with an honest client working beside it.

    python tests/fuzz.py --seconds 600 --seed 1            # starts its own node, prints JSON figures
    python tests/fuzz.py --node 127.0.0.1:7177 --pid 1234  # attack a node that is already running

`run_fuzz(node_addr, node_pid, seconds, seed, connections)` is the harness (tests/test_fuzz.py runs it in CI):

- `connections` attacker threads, each with its own `random.Random(f"{seed}/{i}")`, run scenarios over
  pipelined connections: structured mutations of the request frames of tests/vectors (every header field
  and every meta field: lengths, counts, names, partitions, huge u32/u64 values, attempt lists), meta
  truncated at every position, streams cut at every position, meta_len/data_len lies followed by a stall
  or a close, lengths at and past the 1 MiB meta / max_data / 64 MiB segment limits, random garbage,
  valid frames for unregistered shuffles, FETCH (reply >= 64 KiB) pipelined with PUSHes the node refuses
  before reading their data, ALLOC/WRITE/READ racing FREE from another connection, REGISTER with huge
  partition counts, HEARTBEAT with odd node ids and FORWARDED frames with bogus placements, slow senders,
  connection churn and idle connections. Every loop is bounded in count and in time.
- An honest client (rpmp.client.Client) in a separate process (its latencies are not inflated by the
  attackers' GIL): registers shuffles, pushes and fetches segments (byte-exact), put/get, alloc/write/read,
  and records every error and the latency of every operation.
- A monitor samples the node's /proc/PID/status (alive, VmRSS, RssAnon); a reader thread per attack
  connection parses every reply and records each error frame with code INTERNAL (11), with the frame that
  caused it.

Reproducible: the frames each attacker thread generates depend only on the seed and on the node's replies
(thread interleaving and timing are not reproducible, the bytes are). Attack traffic stays away from the
honest client's names (apps, keys) and keeps its own pool use bounded (it deletes what it stored), so an
honest error means the node failed, not that the attacker took the honest client's data or room.

Fake HEARTBEATs name the node's own host:port (with odd node ids): the membership protocol trusts
heartbeats by design, and a fake member at an unreachable address would make honest registrations
UNAVAILABLE without any bug involved.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

from rpmp import _wire as W
from rpmp.cluster import LocalNode, new_pool_path
from rpmp.protocol import (
    DEFAULT_MAX_DATA,
    FLAG_ERROR,
    FLAG_FORWARDED,
    FLAG_MORE,
    FLAG_RESPONSE,
    MAGIC,
    MAX_META,
    MAX_PARTITIONS,
    MAX_SEGMENT,
    VERSION,
    ErrorCode,
    Op,
)

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = struct.Struct("<IBBHQIIQ")  # magic, version, opcode, flags, request_id, meta_len, reserved, data_len
INTERNAL = int(ErrorCode.INTERNAL)
VECTORS = os.path.join(HERE, "vectors", "vectors.json")
CODE_NAMES = {int(c): c.name for c in ErrorCode}
FOREIGN_ADDRESS = 0x7E57_0000_0000  # far past any pool: the vectors' own address could be a live honest block
NO_BLOCK = [0, 1, 7, 0x7F, 0xFF, 1 << 40, 1 << 63, (1 << 64) - 1, FOREIGN_ADDRESS, FOREIGN_ADDRESS + 1]


# ---- meta as tokens: the layout of every request (docs/PROTOCOL.md), so each field can be mutated ----------
# A token is ("int", width, value) | ("str", bytes) | ("bytes", bytes) | ("list", [item tokens...]) |
# ("raw", bytes) (a mutated encoding). A list item is itself a list of tokens.

def t_int(width: int, v: int) -> tuple:
    return ("int", width, v)


def t_node(n: dict) -> list:
    return [("str", n["node_id"].encode()), ("str", n["host"].encode()), t_int(2, n["port"]), t_int(1, n["state"])]


def tokens_for(op: str, f: dict) -> list:
    app = ("str", f.get("app", "").encode())
    if op == "HELLO":
        return [t_int(2, f["version"]), ("str", f["client_name"].encode())]
    if op in ("PING", "STATS", "MEMBERS"):
        return []
    if op == "HEARTBEAT":
        return [*t_node(f["self"]), t_int(8, f["known_epoch"])]
    if op == "REGISTER_SHUFFLE":
        toks = [app, t_int(4, f["shuffle"]), t_int(4, f["num_partitions"]), t_int(1, f["replicas"])]
        if "placement" in f:
            pl = f["placement"]
            prefs = pl["prefs"]
            ell = len(prefs[0]) if prefs else 0
            toks += [t_int(8, pl["epoch"]), ("list", [t_node(n) for n in pl["nodes"]]), t_int(1, ell)]
            toks += [t_int(2, i) for row in prefs for i in row]
        return toks
    if op == "PUSH":
        return [app, t_int(4, f["shuffle"]), t_int(4, f["partition"]), t_int(4, f["map_index"]),
                t_int(8, f["attempt"]), t_int(4, f["seq"]), t_int(8, f["checksum"])]
    if op == "MAP_END":
        return [app, t_int(4, f["shuffle"]), t_int(4, f["map_index"]), t_int(8, f["attempt"]),
                ("list", [[t_int(4, c["partition"]), t_int(4, c["segments"]), t_int(8, c["bytes"])]
                          for c in f["counts"]])]
    if op == "FETCH":
        return [app, t_int(4, f["shuffle"]), t_int(4, f["partition"]), t_int(4, f["start_map"]),
                t_int(4, f["end_map"]), ("list", [[t_int(8, a)] for a in f["attempts"]])]
    if op == "PARTITION_INFO":
        return [app, t_int(4, f["shuffle"]), t_int(4, f["partition"])]
    if op == "DELETE_SHUFFLE":
        return [app, t_int(4, f["shuffle"])]
    if op in ("DELETE_APP", "LEASE"):
        return [app]
    if op == "DRAIN":
        return [t_int(4, f["timeout_s"])]
    if op in ("PUT", "GET", "DELETE"):
        return [("bytes", bytes.fromhex(f["key"]))]
    if op == "ALLOC":
        return [t_int(8, f["size"])]
    if op == "WRITE":
        return [t_int(8, f["address"]), t_int(8, f["offset"])]
    if op == "READ":
        return [t_int(8, f["address"]), t_int(8, f["offset"]), t_int(8, f["length"])]
    if op == "FREE":
        return [t_int(8, f["address"])]
    if op == "AUTH":
        return [("str", f["tenant"].encode()), ("bytes", bytes.fromhex(f["nonce"]))]
    if op == "AUTH_PROOF":
        return [("bytes", bytes.fromhex(f["proof"]))]
    raise ValueError(op)


_INT_FMT = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}


def enc(tokens: list) -> bytes:
    out = bytearray()
    for t in tokens:
        kind = t[0]
        if kind == "int":
            out += struct.pack(_INT_FMT[t[1]], t[2] & ((1 << (8 * t[1])) - 1))
        elif kind == "str":
            out += struct.pack("<H", len(t[1]) & 0xFFFF) + t[1]
        elif kind == "bytes":
            out += struct.pack("<I", len(t[1])) + t[1]
        elif kind == "list":
            out += struct.pack("<I", len(t[1]))
            for item in t[1]:
                out += enc(item)
        else:
            out += t[1]
    return bytes(out)


def hdr(op: int, flags: int, rid: int, meta_len: int, data_len: int, magic: int = MAGIC, version: int = VERSION,
        reserved: int = 0) -> bytes:
    return HEADER.pack(magic, version, op, flags, rid, meta_len, reserved, data_len)


def load_templates() -> list[dict]:
    """The request vectors as token lists; each is checked to encode to its .bin file byte for byte."""
    with open(VECTORS) as fh:
        vectors = json.load(fh)["vectors"]
    out = []
    for v in vectors:
        if v["kind"] != "request" or v["op"] == "DRAIN":  # see ALL_OPS
            continue
        toks = tokens_for(v["op"], v["fields"])
        with open(os.path.join(HERE, "vectors", v["file"]), "rb") as fh:
            raw = fh.read()
        meta = raw[32:32 + v["meta_len"]]
        if enc(toks) != meta:
            raise AssertionError(f"fuzz token layout of {v['file']} does not match the vector")
        if v["op"] in ("WRITE", "READ", "FREE"):  # never an address the honest client may own
            toks = [t_int(8, FOREIGN_ADDRESS), *toks[1:]]
        out.append({"op": v["opcode"], "name": v["op"], "flags": v["flags"], "tokens": toks,
                    "data": raw[32 + v["meta_len"]:], "file": v["file"]})
    return out


# ---- mutations ---------------------------------------------------------------------------------------------
def interesting(width: int) -> list[int]:
    top = (1 << (8 * width)) - 1
    vals = [0, 1, 2, 3, 7, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, top, top - 1, top >> 1, (top >> 1) + 1]
    if width >= 4:
        vals += [MAX_PARTITIONS - 1, MAX_PARTITIONS, MAX_PARTITIONS + 1, MAX_META, MAX_META + 1, MAX_SEGMENT,
                 MAX_SEGMENT + 1, DEFAULT_MAX_DATA, DEFAULT_MAX_DATA + 1, 4096, 4095, 0x7FFFFFFF, 0x80000000,
                 0xFFFFFFFF, 0xFFFFFFFE, 174762, 174763, 524287, 524288]
    if width == 8:
        vals += [1 << 32, (1 << 32) + 1, 1 << 40, 1 << 48, (1 << 63) - 1, 1 << 63, (1 << 64) - 4096]
    return [v & top for v in vals]


BAD_STRS = [b"", b"/", b"a/b", b"\x00", b"a\x00b", b"\xff\xfe\xfd", b"\xc3", b"\xed\xa0\x80", b"a" * 120, b"a" * 121,
            "é".encode() * 60, "é".encode() * 61, b".", b"..", b"a" * 1000, b"\xf4\x90\x80\x80"]
BAD_KEYS = [b"", b"k", b"x" * 160, b"x" * 161, b"x" * 4096, b"\x00" * 8]


def mutate_token(t: tuple, rng: random.Random) -> tuple:
    kind = t[0]
    if kind == "int":
        width, v = t[1], t[2]
        r = rng.random()
        if r < 0.55:
            return t_int(width, rng.choice(interesting(width)))
        if r < 0.7:
            return t_int(width, v ^ (1 << rng.randrange(8 * width)))
        if r < 0.8:
            return t_int(width, v + rng.choice((-1, 1)))
        if r < 0.9:
            return t_int(width, rng.getrandbits(8 * width))
        other = rng.choice([w for w in (1, 2, 4, 8) if w != width])  # wrong width: everything after shifts
        return ("raw", struct.pack(_INT_FMT[other], v & ((1 << (8 * other)) - 1)))
    if kind in ("str", "bytes"):
        body = t[1]
        pfx = "<H" if kind == "str" else "<I"
        top = 0xFFFF if kind == "str" else 0xFFFFFFFF
        r = rng.random()
        if r < 0.35:  # a length that lies about the bytes that follow
            n = rng.choice([len(body) + 1, len(body) + 100, top, 0, max(0, len(body) - 1), top // 2])
            return ("raw", struct.pack(pfx, min(n, top)) + body)
        if r < 0.75:
            return (kind, rng.choice(BAD_STRS if kind == "str" else BAD_KEYS))
        if r < 0.85:
            return (kind, bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 200))))
        if r < 0.9:
            return (kind, b"z" * rng.choice([65535, 65536 if kind == "bytes" else 65535, 300]))
        return (kind, body + body)
    if kind == "list":
        items = t[1]
        r = rng.random()
        if r < 0.3:  # a count that lies
            n = rng.choice([0xFFFFFFFF, 1 << 28, len(items) + 1, len(items) + 1000, 0, 0x7FFFFFFF])
            return ("raw", struct.pack("<I", n) + b"".join(enc(i) for i in items))
        if r < 0.45:
            return ("list", [])
        if r < 0.6 and items:  # many items: up to past the 1 MiB meta bound
            n = rng.choice([1000, 20000, 140000])
            return ("list", [items[rng.randrange(len(items))] for _ in range(n)])
        if r < 0.7 and items:
            return ("list", items + items)
        if items:
            i = rng.randrange(len(items))
            new = list(items)
            new[i] = mutate_tokens(items[i], rng, 1)
            return ("list", new)
        return ("raw", struct.pack("<I", 1))
    return ("raw", bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 9))))


def mutate_tokens(tokens: list, rng: random.Random, n: int, frozen: frozenset = frozenset()) -> list:
    """`n` mutations; tokens at `frozen` indices keep their value (the structure around them may change)."""
    toks = list(tokens)
    for _ in range(n):
        r = rng.random()
        if not toks or r < 0.05:
            toks.append(("raw", bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 17)))))
        elif r < 0.1 and not frozen:
            del toks[rng.randrange(len(toks))]
        elif r < 0.13 and not frozen:
            i = rng.randrange(len(toks))
            toks.insert(i, toks[i])
        else:
            i = rng.randrange(len(toks))
            if i not in frozen:
                toks[i] = mutate_token(toks[i], rng)
    return toks


# HEARTBEAT `self` host and port: always the node's own. A well-formed heartbeat makes its sender a live
# member (the membership trusts heartbeats by design); one at an address nobody serves would make every honest
# REGISTER_SHUFFLE fail UNAVAILABLE (forwarding) for `dead_after` seconds without any bug involved.
HEARTBEAT_FROZEN = frozenset({1, 2})


UNKNOWN_OPS = [0x00, 0x09, 0x0F, 0x18, 0x1F, 0x27, 0x30, 0x7F, 0x80, 0xFF]
# Never DRAIN: a well-formed one would take the node under test out of service (it exits once empty), which
# is what DRAIN is for, not a bug the fuzzer could find.
ALL_OPS = [int(o) for o in Op if o != Op.DRAIN]


# ---- shared state ------------------------------------------------------------------------------------------
class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.frames: Counter = Counter()  # frames sent, by scenario kind
        self.bytes_sent = 0
        self.replies = 0
        self.error_codes: Counter = Counter()
        self.internal: list[dict] = []
        self.internal_count = 0
        self.bad_replies: list[str] = []  # replies that break the protocol (bad magic, out of order, ...)
        self.connect_failures = 0
        self.node_closed = 0
        self.attacker_exceptions: Counter = Counter()

    def sent(self, kind: str, frames: int, nbytes: int) -> None:
        with self.lock:
            self.frames[kind] += frames
            self.bytes_sent += nbytes


class NodeGone(Exception):
    pass


class Conn:
    """One attack connection: the attacker thread writes; a reader thread parses every reply."""

    def __init__(self, addr: tuple[str, int], stats: Stats, kind: str, cleanup: list, timeout: float = 5.0):
        self.stats = stats
        self.kind = kind
        self.cleanup = cleanup
        try:
            self.sock = socket.create_connection(addr, timeout=timeout)
        except OSError as e:
            with stats.lock:
                stats.connect_failures += 1
            raise NodeGone(str(e)) from e
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rid = 0
        self.sent: dict[int, tuple] = {}  # rid -> (kind, opcode, head of the frame, cleanup item)
        self.replies: dict[int, tuple] = {}  # rid -> (flags, meta) for rids somebody waits for
        self.waiting: set[int] = set()
        self.order: list[int] = []  # rids of complete replies, in arrival order (for ordering checks)
        self.track_order = False
        self.cond = threading.Condition()
        self.eof = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def next_rid(self) -> int:
        self.rid += 1
        return self.rid

    def note(self, rid: int, op: int, frame_head: bytes, item=None) -> None:
        with self.cond:
            self.sent[rid] = (self.kind, op, frame_head[:160].hex(), item)

    def send(self, data: bytes, frames: int = 1) -> bool:
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        self.stats.sent(self.kind, frames, len(data))
        return True

    def frame(self, op: int, meta: bytes, data: bytes = b"", flags: int = 0, item=None) -> int:
        rid = self.next_rid()
        buf = hdr(op, flags, rid, len(meta), len(data)) + meta + data
        self.note(rid, op, buf, item)
        self.send(buf)
        return rid

    def _recv_exact(self, n: int, into: bytearray | None = None) -> bytes | None:
        chunks = bytearray() if into is None else into
        while len(chunks) < n:
            try:
                got = self.sock.recv(min(n - len(chunks), 1 << 20))
            except TimeoutError:
                if self.eof:
                    return None
                continue
            except OSError:
                return None
            if not got:
                return None
            chunks += got
        return bytes(chunks)

    def _discard(self, n: int) -> bool:
        while n:
            try:
                got = self.sock.recv(min(n, 1 << 20))
            except TimeoutError:
                if self.eof:
                    return False
                continue
            except OSError:
                return False
            if not got:
                return False
            n -= len(got)
        return True

    def _read(self) -> None:
        st = self.stats
        try:
            while True:
                h = self._recv_exact(32)
                if h is None:
                    break
                magic, version, op, flags, rid, meta_len, reserved, data_len = HEADER.unpack(h)
                if magic != MAGIC or version != VERSION or not flags & FLAG_RESPONSE or meta_len > MAX_META:
                    with st.lock:
                        if len(st.bad_replies) < 20:
                            st.bad_replies.append(f"unparseable reply header {h.hex()} on a {self.kind} connection")
                    break
                meta = self._recv_exact(meta_len) if meta_len else b""
                if meta is None or (data_len and not self._discard(data_len)):
                    break
                if flags & FLAG_MORE:
                    continue
                with st.lock:
                    st.replies += 1
                with self.cond:
                    info = self.sent.pop(rid, None)
                if flags & FLAG_ERROR:
                    try:
                        code, message = W.decode_error(meta)
                    except Exception as e:  # noqa: BLE001 - a broken error frame is itself a finding
                        code, message = -1, f"undecodable error meta {meta[:80].hex()}: {e}"
                    with st.lock:
                        st.error_codes[CODE_NAMES.get(code, str(code))] += 1
                        if code == INTERNAL:
                            st.internal_count += 1
                            if len(st.internal) < 50:
                                st.internal.append({"message": message, "op": op, "kind": self.kind,
                                                    "request_head_hex": info[2] if info else None})
                elif info is not None and info[3] is not None:
                    item = info[3]
                    if item[0] == "alloc" and len(meta) == 8:
                        item = ("free", struct.unpack("<Q", meta)[0])
                    self.cleanup.append(item)
                with self.cond:
                    if self.track_order:
                        self.order.append(rid)
                    if rid in self.waiting:
                        self.replies[rid] = (flags, meta)
                        self.cond.notify_all()
        finally:
            with self.cond:
                self.eof = True
                self.cond.notify_all()

    def wait(self, rid: int, timeout: float = 5.0) -> tuple | None:
        end = time.monotonic() + timeout
        with self.cond:
            while rid not in self.replies and not self.eof:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return self.replies.pop(rid, None)

    def call(self, op: int, meta: bytes, data: bytes = b"", flags: int = 0, timeout: float = 5.0) -> tuple | None:
        rid = self.next_rid()
        with self.cond:
            self.waiting.add(rid)
        buf = hdr(op, flags, rid, len(meta), len(data)) + meta + data
        self.note(rid, op, buf)
        if not self.send(buf):
            return None
        return self.wait(rid, timeout)

    def drain(self, timeout: float) -> None:
        """Wait (bounded) until every frame sent got its reply or the node closed."""
        end = time.monotonic() + timeout
        with self.cond:
            while self.sent and not self.eof and time.monotonic() < end:
                self.cond.wait(0.01)

    def close(self, reset: bool = False) -> None:
        try:
            if reset:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.eof = True
        self.reader.join(2.0)
        self.sock.close()


# ---- the attacker ------------------------------------------------------------------------------------------
class Attacker:
    """One attack thread: scenarios in a seeded order until the deadline."""

    def __init__(self, idx: int, addr: tuple[str, int], seed: int, deadline: float, stats: Stats, templates,
                 stop: threading.Event, big_sem: threading.Semaphore, budget: dict, lock_path: str):
        self.lock_path = lock_path
        self.idx = idx
        self.addr = addr
        self.rng = random.Random(f"{seed}/{idx}")
        self.deadline = deadline
        self.stats = stats
        self.templates = templates
        self.stop = stop
        self.big_sem = big_sem  # at most one huge in-flight reservation at a time (pool room for the honest)
        self.budget = budget  # bytes of big data parts left to send, shared
        self.app = f"fz{seed}-t{idx}"
        self.cleanup: list = []  # things the node stored for us: ("app", name) | ("key", k) | ("free", addr)
        self.idle: list[Conn] = []
        self.main: Conn | None = None
        self.trunc_pos: dict[str, int] = {}
        self.registered: set[int] = set()
        self.iter = 0
        self.fetch_ready = False

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def conn(self, kind: str) -> Conn:
        return Conn(self.addr, self.stats, kind, self.cleanup)

    def run(self) -> None:
        scenarios = [(self.s_mutate, 26), (self.s_truncate_meta, 8), (self.s_truncate_stream, 6),
                     (self.s_len_lie, 7), (self.s_huge, 5), (self.s_garbage, 6), (self.s_unregistered, 8),
                     (self.s_fetch_refused_push, 6), (self.s_addr_race, 6), (self.s_register_huge, 2),
                     (self.s_heartbeat_forwarded, 5), (self.s_slow, 3), (self.s_churn, 4), (self.s_idle, 2)]
        funcs = [f for f, _ in scenarios]
        weights = [w for _, w in scenarios]
        try:
            self.setup()
            while not self.stop.is_set() and self.left() > 0:
                self.iter += 1
                f = self.rng.choices(funcs, weights)[0]
                try:
                    f()
                except NodeGone:
                    if self.stop.wait(0.2):
                        break
                except Exception as e:  # noqa: BLE001 - a harness bug must not end the run silently
                    with self.stats.lock:
                        self.stats.attacker_exceptions[f"{f.__name__}: {type(e).__name__}: {e}"[:200]] += 1
                if self.iter % 25 == 0:
                    self.do_cleanup()
        except NodeGone:
            pass
        finally:
            for c in self.idle:
                c.close()
            self.idle.clear()
            try:
                self.do_cleanup(final=True)
            except NodeGone:
                pass
            if self.main is not None:
                self.main.close()

    # -- helpers --
    def main_conn(self) -> Conn:
        if self.main is None or self.main.eof:
            if self.main is not None:
                self.main.close()
            self.main = self.conn("mutate")
        return self.main

    def setup(self) -> None:
        c = self.conn("setup")
        try:
            for sid in range(3):
                c.call(Op.REGISTER_SHUFFLE, W.encode_register(self.app, sid, 4, 1))
                self.registered.add(sid)
            if self.idx == 0:  # the vectors' own shuffle, so mutated templates sometimes hit a live one
                c.call(Op.REGISTER_SHUFFLE, W.encode_register("app-20261121235131-0001", 7, 4, 2))
        finally:
            c.close()

    def do_cleanup(self, final: bool = False) -> None:
        items, self.cleanup[:] = list(self.cleanup), []
        c = self.conn("cleanup")
        try:
            n = 0
            for it in items:
                if it[0] == "key":
                    c.frame(Op.DELETE, W.encode_key(it[1]))
                elif it[0] == "free":
                    c.frame(Op.FREE, W.encode_free(it[1]))
                elif it[0] == "app":
                    c.frame(Op.DELETE_APP, enc([("str", it[1])]))
                n += 1
            if final or self.iter % 100 == 0:
                c.frame(Op.DELETE_APP, W.encode_delete_app(self.app))
                self.registered.clear()
                self.fetch_ready = False
                if self.idx == 0 and not final:
                    c.frame(Op.REGISTER_SHUFFLE, W.encode_register("app-20261121235131-0001", 7, 4, 2))
            c.drain(5.0)
        finally:
            c.close()

    def template(self) -> dict:
        t = self.rng.choice(self.templates)
        if t["name"] == "HEARTBEAT":
            toks = list(t["tokens"])
            toks[1], toks[2] = ("str", self.addr[0].encode()), t_int(2, self.addr[1])
            return {**t, "tokens": toks}
        if self.rng.random() < 0.5 and t["tokens"] and t["tokens"][0][0] == "str" and t["name"] not in (
                "HELLO", "HEARTBEAT"):
            toks = [("str", self.app.encode()), *t["tokens"][1:]]
            if t["name"] != "DELETE_APP" and len(toks) > 1 and toks[1][0] == "int":
                toks[1] = t_int(4, self.rng.randrange(3))
            t = {**t, "tokens": toks}
        return t

    def cleanup_item(self, t: dict, toks: list):
        name = t["name"]
        if name == "PUT" and toks and toks[0][0] == "bytes":
            return ("key", toks[0][1])
        if name == "ALLOC":
            return ("alloc",)
        if name == "REGISTER_SHUFFLE" and toks and toks[0][0] == "str":
            return ("app", toks[0][1])
        return None

    def ping(self) -> bytes:
        return hdr(Op.PING, 0, 0, 0, 0)

    # -- scenarios --
    def s_mutate(self) -> None:
        """A pipelined batch of mutated vector frames (header and/or meta), then a PING probe."""
        c = self.main_conn()
        c.kind = "mutate"
        out = bytearray()
        frames = 0
        poisoned = False
        for _ in range(self.rng.randrange(1, 17)):
            t = self.template()
            toks = t["tokens"]
            r = self.rng.random()
            if r < 0.75:
                toks = mutate_tokens(toks, self.rng, self.rng.choice((1, 1, 1, 2, 3)),
                                     HEARTBEAT_FROZEN if t["name"] == "HEARTBEAT" else frozenset())
            meta = enc(toks)
            data = t["data"]
            op, flags, rid = t["op"], t["flags"], c.next_rid()
            meta_len, data_len, magic, version, reserved = len(meta), len(data), MAGIC, VERSION, 0
            if r >= 0.6:  # header fields
                field = self.rng.choice(["magic", "version", "op", "op", "flags", "flags", "rid", "meta_len",
                                         "reserved", "data_len", "data_len"])
                if field == "magic":
                    magic = self.rng.choice([0, 0x52504D50, 0x504D5053, self.rng.getrandbits(32)])
                elif field == "version":
                    version = self.rng.choice([0, 1, 3, 255])
                elif field == "op":
                    op = self.rng.choice(UNKNOWN_OPS + ALL_OPS)
                elif field == "flags":
                    flags = self.rng.choice([FLAG_RESPONSE, FLAG_ERROR, FLAG_MORE, FLAG_FORWARDED, 0xFFF0, 0xFFFF,
                                             FLAG_FORWARDED | 0x10, self.rng.getrandbits(16)])
                elif field == "rid":
                    rid = self.rng.choice([0, (1 << 64) - 1, 1 << 63, self.rng.getrandbits(64)])
                elif field == "meta_len":
                    meta_len = self.rng.choice([0, max(0, len(meta) - 1), len(meta) + 1, len(meta) + 64, MAX_META,
                                                MAX_META + 1, 0xFFFFFFFF])
                elif field == "reserved":
                    reserved = self.rng.choice([1, 0xFFFFFFFF, 0x80000000])
                else:
                    data_len = self.rng.choice([0, len(data) + 1, len(data) + 4096, DEFAULT_MAX_DATA,
                                                DEFAULT_MAX_DATA + 1, MAX_SEGMENT + 1, 1 << 63, (1 << 64) - 1])
                poisoned = poisoned or meta_len != len(meta) or data_len != len(data)
            meta_len &= 0xFFFFFFFF
            frame = HEADER.pack(magic & 0xFFFFFFFF, version, op, flags, rid & ((1 << 64) - 1), meta_len, reserved,
                                data_len) + meta + data
            c.note(rid, op, frame, self.cleanup_item(t, toks) if r < 0.6 else None)
            out += frame
            frames += 1
            if poisoned:
                break
        if not poisoned:
            out += self.ping()
            frames += 1
        c.send(bytes(out), frames)
        if poisoned:  # the node waits for bytes that will not come (or never ends a frame): stall, then go
            time.sleep(self.rng.choice([0, 0, 0.01, 0.05, 0.2]))
            c.close(reset=self.rng.random() < 0.3)
            self.main = None
        elif self.rng.random() < 0.3:
            c.drain(2.0)

    def s_truncate_meta(self) -> None:
        """One template's meta cut at every position, each with a consistent header (expect BAD_FRAME each)."""
        t = self.rng.choice(self.templates)
        meta = enc(t["tokens"])
        if len(meta) < 2:
            return
        c = self.conn("truncate_meta")
        try:
            out = bytearray()
            for k in range(len(meta)):
                data = t["data"]
                out += hdr(t["op"], t["flags"], c.next_rid(), k, len(data)) + meta[:k] + data
            out += self.ping()
            c.send(bytes(out), len(meta) + 1)
            c.drain(3.0)
        finally:
            c.close()

    def s_truncate_stream(self) -> None:
        """A valid frame cut at the next position of a per-template cursor, then a close, a stall or garbage."""
        t = self.rng.choice(self.templates)
        full = hdr(t["op"], t["flags"], 1, len(enc(t["tokens"])), len(t["data"])) + enc(t["tokens"]) + t["data"]
        k = self.trunc_pos.get(t["file"], 1)
        self.trunc_pos[t["file"]] = k % (len(full) - 1) + 1
        c = self.conn("truncate_stream")
        try:
            c.send(full[:k])
            then = self.rng.random()
            if then < 0.3:
                time.sleep(self.rng.uniform(0, 0.1))
            elif then < 0.6:
                c.send(full + self.ping(), 2)  # the rest of the stream is now out of step
                c.drain(0.5)
        finally:
            c.close(reset=self.rng.random() < 0.3)

    def s_len_lie(self) -> None:
        """meta_len or data_len bigger than what is sent; then a stall, a close, or a trickle."""
        c = self.conn("len_lie")
        try:
            which = self.rng.random()
            if which < 0.4:  # meta lie
                t = self.rng.choice(self.templates)
                meta = enc(t["tokens"])
                claim = min(MAX_META, len(meta) + self.rng.choice([1, 10, 1000, 100000, MAX_META]))
                c.send(hdr(t["op"], t["flags"], 1, claim, len(t["data"])) + meta)
            else:  # data lie on a request that takes data (PUSH to our shuffle, PUT, WRITE)
                kind = self.rng.choice(["push", "put", "write"])
                claim = self.rng.choice([1 << 10, 1 << 16, 1 << 20, 8 << 20])
                if kind == "push":
                    meta = W.encode_push(self.app, self.rng.randrange(3), self.rng.randrange(4), 9, 9,
                                         self.rng.randrange(1 << 20), 0)
                    op = Op.PUSH
                elif kind == "put":
                    meta, op = W.encode_key(f"{self.app}/lie/{self.rng.randrange(1 << 30)}"), Op.PUT
                else:
                    meta, op = W.encode_write(self.rng.choice([0, 4096, 1 << 24]), 0), Op.WRITE
                sent = self.rng.randrange(0, min(claim, 1 << 16))
                c.send(hdr(op, 0, 1, len(meta), claim) + meta + bytes(sent))
            r = self.rng.random()
            if r < 0.5:
                time.sleep(self.rng.choice([0, 0.01, 0.1, 0.3]))
            elif r < 0.7:
                end = time.monotonic() + 0.3
                while time.monotonic() < end and c.send(b"\x00"):
                    time.sleep(0.005)
        finally:
            c.close(reset=self.rng.random() < 0.3)

    def s_huge(self) -> None:
        """Lengths at and past the limits: 1 MiB meta (sent in full), max_data, 64 MiB segments."""
        c = self.conn("huge")
        try:
            r = self.rng.random()
            if r < 0.3:  # a full 1 MiB meta of garbage for a real op: a valid frame size, bad meta
                op = self.rng.choice([Op.PUSH, Op.FETCH, Op.GET, Op.REGISTER_SHUFFLE, Op.MAP_END, Op.HEARTBEAT])
                meta_len = self.rng.choice([MAX_META, MAX_META - 1])
                c.send(hdr(op, 0, 1, meta_len, 0) + self.rng.randbytes(meta_len) + self.ping(), 2)
                c.drain(3.0)
            elif r < 0.5:  # past the limits: TOO_LARGE and close
                op = self.rng.choice([Op.PUT, Op.PUSH, Op.WRITE, Op.GET, Op.PING])
                ml, dl = self.rng.choice([(MAX_META + 1, 0), (0xFFFFFFFF, 0), (8, DEFAULT_MAX_DATA + 1),
                                          (8, (1 << 64) - 1), (8, 1 << 63)])
                c.send(hdr(op, 0, 1, ml, dl) + bytes(8))
                c.drain(1.0)
            else:  # claims a huge data part within max_data, sends a prefix (or, on a budget, all), closes
                with self.big_sem:
                    kind = self.rng.choice(["push_big", "push_unreg", "put_max", "write_big"])
                    if kind == "push_big":
                        claim = self.rng.choice([MAX_SEGMENT, MAX_SEGMENT + 1])
                        meta, op = W.encode_push(self.app, self.rng.randrange(3), 0, 5, 5, 0, 0), Op.PUSH
                    elif kind == "push_unreg":
                        claim = self.rng.choice([MAX_SEGMENT + 1, 32 << 20])
                        meta, op = W.encode_push(f"nope{self.rng.randrange(1 << 30)}", 1, 0, 0, 0, 0, 0), Op.PUSH
                    elif kind == "put_max":
                        claim = self.rng.choice([DEFAULT_MAX_DATA, DEFAULT_MAX_DATA - 1, 128 << 20])
                        meta, op = W.encode_key(f"{self.app}/huge"), Op.PUT
                    else:
                        claim = self.rng.choice([DEFAULT_MAX_DATA, 16 << 20])
                        meta, op = W.encode_write(self.rng.choice([0, 4096]), 0), Op.WRITE
                    c.send(hdr(op, 0, 1, len(meta), claim) + meta)
                    full = False
                    with self.stats.lock:
                        if claim <= MAX_SEGMENT + 1 and self.budget["bytes"] >= claim and self.rng.random() < 0.15:
                            self.budget["bytes"] -= claim
                            full = True
                    send = claim if full else self.rng.choice([0, 1 << 12, 1 << 20, 4 << 20])
                    chunk = bytes(1 << 20)
                    while send > 0 and self.left() > 0:
                        n = min(send, len(chunk))
                        if not c.send(chunk[:n], 0):
                            break
                        send -= n
                    if full:
                        c.drain(10.0)
                        with self.stats.lock:
                            self.stats.frames["huge_full"] += 1
                    else:
                        time.sleep(self.rng.choice([0, 0.05, 0.2]))
                    if op == Op.PUT:
                        self.cleanup.append(("key", f"{self.app}/huge".encode()))
        finally:
            c.close(reset=self.rng.random() < 0.3)

    def s_garbage(self) -> None:
        c = self.conn("garbage")
        try:
            n = self.rng.choice([1, 7, 31, 32, 33, 100, 4096, 65536])
            junk = self.rng.randbytes(n)
            if self.rng.random() < 0.5:  # past the magic and version, into the header's other fields
                junk = struct.pack("<IB", MAGIC, VERSION) + junk
            c.send(junk)
            c.drain(0.5)
        finally:
            c.close(reset=self.rng.random() < 0.3)

    def s_unregistered(self) -> None:
        """Well-formed requests for shuffles, keys and addresses nobody registered or stored."""
        c = self.main_conn()
        c.kind = "unregistered"
        rng = self.rng
        out = bytearray()
        nfr = 0
        for _ in range(rng.randrange(4, 24)):
            app = rng.choice([f"ghost{rng.randrange(1 << 20)}", self.app, "app-20261121235131-0001"])
            sid = rng.choice([rng.getrandbits(32), 1000 + rng.randrange(100), 0xFFFFFFFF])
            p = rng.choice([0, 1, 3, (1 << 24) - 1, 1 << 24, 0xFFFFFFFF]) if rng.random() < 0.3 else rng.randrange(4)
            pick = rng.randrange(9)
            data = b""
            if pick == 0:
                data = rng.randbytes(rng.choice([0, 1, 100, 70000]))
                meta, op = W.encode_push(app, sid, min(p, (1 << 24) - 1), 1, 2, 3, W.xxh3(data)), Op.PUSH
            elif pick == 1:
                meta, op = W.encode_fetch(app, sid, min(p, (1 << 24) - 1), 0, 0xFFFFFFFF, []), Op.FETCH
            elif pick == 2:
                meta, op = W.encode_map_end(app, sid, 1, 2, [(min(p, (1 << 24) - 1), 1, 1)]), Op.MAP_END
            elif pick == 3:
                meta, op = W.encode_partition_info(app, sid, min(p, (1 << 24) - 1)), Op.PARTITION_INFO
            elif pick == 4:
                meta, op = W.encode_delete_shuffle(app, sid), Op.DELETE_SHUFFLE
            elif pick == 5:
                meta, op = W.encode_key(f"ghost/{rng.randrange(1 << 30)}"), rng.choice([Op.GET, Op.DELETE])
            elif pick == 6:
                meta, op = W.encode_read(rng.choice(NO_BLOCK), rng.choice([0, 1, 4096]),
                                         rng.choice([0, 1, 4096, 1 << 40])), Op.READ
            elif pick == 7:
                meta, op = W.encode_free(rng.choice(NO_BLOCK)), Op.FREE
            else:
                data = rng.randbytes(rng.choice([1, 64]))
                meta, op = W.encode_write(rng.choice(NO_BLOCK), rng.choice([0, 1, (1 << 64) - 1])), Op.WRITE
            rid = c.next_rid()
            frame = hdr(op, 0, rid, len(meta), len(data)) + meta + data
            c.note(rid, op, frame)
            out += frame
            nfr += 1
        c.send(bytes(out), nfr)
        if rng.random() < 0.5:
            c.drain(2.0)

    def _ensure_fetch_data(self) -> None:
        """>= 64 KiB in partition 0 of our shuffle 0 (a FETCH reply that goes out by sendfile)."""
        if self.fetch_ready:
            return
        c = self.conn("fetch_refused_push")
        try:
            c.call(Op.REGISTER_SHUFFLE, W.encode_register(self.app, 0, 4, 1))
            for seq in range(3):
                payload = self.rng.randbytes(40 << 10)
                c.call(Op.PUSH, W.encode_push(self.app, 0, 0, 0, 1, seq, W.xxh3(payload)), payload)
            self.fetch_ready = True
        finally:
            c.close()

    def s_fetch_refused_push(self) -> None:
        """FETCH (reply >= 64 KiB, sendfile) followed on the same connection by PUSHes the node refuses before
        reading their data part; the replies must come back complete and in order."""
        self._ensure_fetch_data()
        c = self.conn("fetch_refused_push")
        rng = self.rng
        try:
            c.track_order = True
            out = bytearray()
            rids = []
            for _ in range(rng.randrange(1, 5)):
                rid = c.next_rid()
                meta = W.encode_fetch(self.app, 0, 0, 0, 0xFFFFFFFF, rng.choice([[], [1], [1, 2]]))
                f = hdr(Op.FETCH, 0, rid, len(meta), 0) + meta
                c.note(rid, Op.FETCH, f)
                out += f
                rids.append(rid)
                for _ in range(rng.randrange(1, 4)):
                    why = rng.randrange(4)
                    data = rng.randbytes(rng.choice([1, 1000, 64 << 10, 200 << 10]))
                    if why == 0:  # unregistered shuffle
                        meta = W.encode_push(f"ghost{rng.randrange(99)}", 0, 0, 0, 1, 0, W.xxh3(data))
                    elif why == 1:  # partition out of range
                        meta = W.encode_push(self.app, 0, rng.choice([4, 100, (1 << 24) - 1]), 0, 1, 0, W.xxh3(data))
                    elif why == 2:  # bad app name
                        meta = enc([("str", b"a/b"), t_int(4, 0), t_int(4, 0), t_int(4, 0), t_int(8, 1),
                                    t_int(4, 0), t_int(8, 0)])
                    else:  # truncated meta
                        meta = W.encode_push(self.app, 0, 0, 0, 1, 0, 0)[:-3]
                    rid = c.next_rid()
                    f = hdr(Op.PUSH, 0, rid, len(meta), len(data)) + meta + data
                    c.note(rid, Op.PUSH, f)
                    out += f
                    rids.append(rid)
            rid = c.next_rid()
            out += hdr(Op.PING, 0, rid, 0, 0)
            rids.append(rid)
            c.note(rid, Op.PING, b"")
            c.send(bytes(out), len(rids))
            c.drain(5.0)
            with c.cond:
                got = list(c.order)
            if got != rids[:len(got)] or (len(got) < len(rids) and not c.eof):
                with self.stats.lock:
                    if len(self.stats.bad_replies) < 20:
                        self.stats.bad_replies.append(
                            f"fetch_refused_push: sent rids {rids}, replies came for {got} (eof={c.eof})")
        finally:
            c.close()

    def s_addr_race(self) -> None:
        """ALLOC on one connection; WRITE/READ pipelined on it while another connection FREEs the address.

        Under an flock shared with the honest client's alloc..free sequences: the use-after-free writes of
        this race must not land on a block the allocator has just handed to the honest client."""
        with open(self.lock_path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                self._addr_race()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _addr_race(self) -> None:
        rng = self.rng
        a = self.conn("addr_race")
        b = self.conn("addr_race")
        try:
            size = rng.choice([1, 64, 4096, 65536, 1 << 20])
            rep = a.call(Op.ALLOC, W.encode_alloc(size))
            if rep is None or rep[0] & FLAG_ERROR or len(rep[1]) != 8:
                return
            addr = struct.unpack("<Q", rep[1])[0]
            out = bytearray()
            n = 0
            for _ in range(rng.randrange(2, 12)):
                pick = rng.randrange(3)
                if pick == 0:
                    off = rng.choice([0, 1, size - 1, size, size + 1, (1 << 64) - 1, (1 << 63)])
                    data = rng.randbytes(rng.choice([1, 2, 100, size, size + 1]))
                    meta = W.encode_write(addr, off & ((1 << 64) - 1))
                    f = hdr(Op.WRITE, 0, a.next_rid(), len(meta), len(data)) + meta + data
                elif pick == 1:
                    meta = W.encode_read(addr, rng.choice([0, 1, size - 1, size, (1 << 64) - 1]),
                                         rng.choice([0, 1, size, size + 1, (1 << 64) - 1, 1 << 63]))
                    f = hdr(Op.READ, 0, a.next_rid(), len(meta), 0) + meta
                else:
                    meta = W.encode_free(addr + rng.choice([0, 0, 1, -1 if addr else 0]))
                    f = hdr(Op.FREE, 0, a.next_rid(), len(meta), 0) + meta
                a.note(a.rid, f[5], f)
                out += f
                n += 1
            fr = W.encode_free(addr)
            racer = threading.Thread(target=lambda: (time.sleep(rng.random() * 0.002),
                                                     b.send(hdr(Op.FREE, 0, 1, len(fr), 0) + fr)))
            racer.start()
            a.send(bytes(out), n)
            racer.join()
            b.send(hdr(Op.FREE, 0, 2, len(fr), 0) + fr)  # double free
            a.drain(2.0)
            b.drain(2.0)
            self.stats.sent("addr_race", 2, 0)
        finally:
            a.close()
            b.close()

    def s_register_huge(self) -> None:
        """REGISTER with huge partition counts (up to and past 2^24, past what the 1 MiB reply can hold)."""
        c = self.conn("register_huge")
        rng = self.rng
        try:
            nparts = rng.choice([MAX_PARTITIONS, MAX_PARTITIONS + 1, 0xFFFFFFFF, 524288, 524287, 300000, 174763,
                                 100000, 0])
            replicas = rng.choice([1, 1, 2, 8, 0, 9, 255])
            sid = 100 + rng.randrange(1000)
            meta = enc([("str", self.app.encode()), t_int(4, sid), t_int(4, nparts), t_int(1, replicas)])
            c.call(Op.REGISTER_SHUFFLE, meta, timeout=30)
            c.call(Op.DELETE_SHUFFLE, W.encode_delete_shuffle(self.app, sid), timeout=10)
            self.stats.sent("register_huge", 2, 0)
        finally:
            c.close()

    def s_heartbeat_forwarded(self) -> None:
        """HEARTBEATs with odd node ids (at the node's own address), FORWARDED registrations with bogus
        placements followed by pushes to them, FORWARDED pushes and deletes."""
        c = self.main_conn()
        c.kind = "heartbeat_forwarded"
        rng = self.rng
        host, port = self.addr
        pick = rng.randrange(4)
        if pick == 0:
            nid = rng.choice(["", "x", f"odd-{rng.randrange(8)}", "é" * 40, "#0", f"{host}:{port}", "a" * 3000,
                              "\x00", f"{host}:{port}#1"]).encode()
            meta = enc([("str", nid), ("str", host.encode()), t_int(2, port), t_int(1, rng.choice([0, 1, 2, 3, 255])),
                        t_int(8, rng.choice(interesting(8)))])
            c.frame(Op.HEARTBEAT, meta)
        elif pick == 1:  # FORWARDED REGISTER with a placement the node stores as it is, then pushes to it
            sid = 50 + rng.randrange(10)
            nodes = [[("str", f"{host}:{port}".encode()), ("str", host.encode()), t_int(2, port), t_int(1, 1)],
                     [("str", b"bogus:1"), ("str", b"127.0.0.1"), t_int(2, 1), t_int(1, rng.choice([1, 3]))]]
            nparts = 4
            ell = rng.choice([0, 1, 2, 3])
            prefs = [t_int(2, rng.choice([0, 1, 2, 0xFFFF])) for _ in range(nparts * ell)]
            toks = [("str", self.app.encode()), t_int(4, sid), t_int(4, nparts), t_int(1, rng.choice([1, 2, 3, 8])),
                    t_int(8, rng.choice([0, 1, (1 << 64) - 1])), ("list", rng.choice([nodes, nodes[:1], []])),
                    t_int(1, ell), *prefs]
            if rng.random() < 0.3:
                toks = mutate_tokens(toks, rng, 1)
            c.frame(Op.REGISTER_SHUFFLE, enc(toks), flags=FLAG_FORWARDED)
            data = rng.randbytes(rng.choice([1, 100]))
            for p in range(nparts):
                c.frame(Op.PUSH, W.encode_push(self.app, sid, p, 0, 1, 0, W.xxh3(data)), data)
            c.frame(Op.FETCH, W.encode_fetch(self.app, sid, 0, 0, 0xFFFFFFFF, []))
            c.frame(Op.DELETE_SHUFFLE, W.encode_delete_shuffle(self.app, sid), flags=FLAG_FORWARDED)
        elif pick == 2:  # FORWARDED pushes (no replication) and odd request ids
            data = rng.randbytes(100)
            for _ in range(rng.randrange(1, 6)):
                meta = W.encode_push(self.app, rng.randrange(3), rng.randrange(4), rng.randrange(4), 2,
                                     rng.randrange(1 << 31), W.xxh3(data))
                rid = rng.choice([0, (1 << 64) - 1, rng.getrandbits(64)])
                buf = hdr(Op.PUSH, FLAG_FORWARDED, rid, len(meta), len(data)) + meta + data
                c.note(rid, Op.PUSH, buf)
                c.send(buf)
        else:
            ops = [Op.DELETE_APP, Op.DELETE_SHUFFLE, Op.MEMBERS, Op.STATS, Op.HELLO, Op.PING]
            op = rng.choice(ops)
            if op == Op.DELETE_APP:
                meta = W.encode_delete_app(f"ghost{rng.randrange(99)}")
            elif op == Op.DELETE_SHUFFLE:
                meta = W.encode_delete_shuffle(f"ghost{rng.randrange(99)}", rng.getrandbits(32))
            elif op == Op.HELLO:
                meta = enc([t_int(2, rng.choice([0, 1, 2, 3, 0xFFFF])), ("str", rng.choice(BAD_STRS))])
            else:
                meta = b""
            c.frame(op, meta, flags=FLAG_FORWARDED | rng.choice([0, 0xFFF0]))
        if rng.random() < 0.3:
            c.drain(2.0)

    def s_slow(self) -> None:
        """A valid frame one byte every few ms (bounded to ~1.5 s)."""
        c = self.conn("slow")
        rng = self.rng
        try:
            data = rng.randbytes(rng.choice([0, 50]))
            if data:
                meta = W.encode_push(self.app, rng.randrange(3), rng.randrange(4), 7, 7, rng.randrange(1 << 20),
                                     W.xxh3(data))
                f = hdr(Op.PUSH, 0, 1, len(meta), len(data)) + meta + data
            else:
                f = hdr(Op.STATS, 0, 1, 0, 0)
            end = time.monotonic() + 1.5
            delay = rng.choice([0.002, 0.005, 0.01])
            for i in range(len(f)):
                if time.monotonic() > end or self.left() <= 0 or not c.send(f[i:i + 1], 1 if i == len(f) - 1 else 0):
                    break
                time.sleep(delay)
            c.drain(1.0)
        finally:
            c.close()

    def s_churn(self) -> None:
        """Open/close connections fast: some send nothing, some half a header, some reset."""
        rng = self.rng
        for _ in range(rng.randrange(5, 40)):
            try:
                s = socket.create_connection(self.addr, timeout=2.0)
            except OSError as e:
                with self.stats.lock:
                    self.stats.connect_failures += 1
                raise NodeGone(str(e)) from e
            try:
                r = rng.random()
                if r < 0.3:
                    s.sendall(hdr(Op.PING, 0, 1, 0, 0)[:rng.randrange(1, 32)])
                elif r < 0.5:
                    s.sendall(hdr(Op.STATS, 0, 1, 0, 0))  # close before the reply
                if rng.random() < 0.4:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            finally:
                s.close()
            self.stats.sent("churn", 1, 0)

    def s_idle(self) -> None:
        """Keep a few connections open and silent (some with half a frame) until the end of the run."""
        if len(self.idle) >= 8:
            return
        c = self.conn("idle")
        if self.rng.random() < 0.5:
            c.send(hdr(Op.PUT, 0, 1, 8, 100)[:self.rng.randrange(1, 33)])
        self.idle.append(c)


# ---- the monitor -------------------------------------------------------------------------------------------
def proc_status(pid: int) -> dict | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            text = fh.read()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k in ("State", "VmRSS", "RssAnon", "RssShmem"):
            out[k] = v.strip()
    return out


def node_alive(pid: int) -> bool:
    st = proc_status(pid)
    return st is not None and not st.get("State", "").startswith(("Z", "X"))


def _kib(v: str | None) -> int:
    return int(v.split()[0]) if v else 0


class Monitor(threading.Thread):
    def __init__(self, pid: int, stop: threading.Event, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.stop, self.interval = pid, stop, interval
        self.peak_rss = self.peak_anon = 0
        self.first_anon = self.last_anon = 0
        self.samples = 0
        self.died_at: float | None = None
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            if self.died_at is not None:
                self.stop.set()  # no point attacking a dead node
                return
            self.stop.wait(self.interval)

    def sample(self) -> None:
        st = proc_status(self.pid)
        if st is None or st.get("State", "").startswith(("Z", "X")):
            if self.died_at is None:
                self.died_at = time.monotonic() - self.t0
            return
        rss, anon = _kib(st.get("VmRSS")), _kib(st.get("RssAnon"))
        self.peak_rss, self.peak_anon = max(self.peak_rss, rss), max(self.peak_anon, anon)
        if not self.samples:
            self.first_anon = anon
        self.last_anon = anon
        self.samples += 1


# ---- the honest client (a separate process) ----------------------------------------------------------------
def honest_main(addr: str, seconds: float, seed: int, lock_path: str) -> dict:
    """Registers, pushes, fetches (byte-exact), put/get, alloc/write/read/free until the deadline; returns every
    error and latency figures. Runs in its own process: `python tests/fuzz.py --honest ADDR ...`."""
    from rpmp.client import Client

    rng = random.Random(f"{seed}/honest")
    lat: list[float] = []
    worst: dict[str, float] = {}
    errors: list[str] = []
    nerr = 0
    ops = Counter()
    slow: list[str] = []
    deadline = time.monotonic() + seconds
    app = f"honest-{seed}"

    def timed(name: str, fn, *a, **kw):
        nonlocal nerr
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        except Exception as e:  # noqa: BLE001 - every error is a finding
            nerr += 1
            if len(errors) < 50:
                errors.append(f"{name}: {type(e).__name__}: {e}"[:500])
            return None
        finally:
            dt = time.perf_counter() - t0
            lat.append(dt)
            ops[name] += 1
            worst[name] = max(worst.get(name, 0.0), dt)
            if dt > 1.0 and len(slow) < 50:
                slow.append(f"{name} {dt:.3f}s at +{seconds - (deadline - time.monotonic()):.1f}s")

    def check(ok: bool, what: str) -> None:
        nonlocal nerr
        if not ok:
            nerr += 1
            if len(errors) < 50:
                errors.append(f"mismatch: {what}")

    with Client(addr, timeout=30.0) as c:
        sid = 0
        while time.monotonic() < deadline:
            sid += 1
            kind = sid % 3
            if kind == 0:  # a shuffle: register, push, map_end, fetch byte-exact, delete
                nparts = rng.choice([1, 4, 16])
                pl = timed("register", c.register_shuffle, app, sid, nparts)
                if pl is None:
                    continue
                sent: dict[int, dict] = {}
                counts: dict[int, list[int]] = {}
                segs = []
                for seq in range(rng.randrange(1, 8)):
                    p = rng.randrange(nparts)
                    size = rng.choice([0, 1, 100, 4000, 70000, 300000])
                    data = rng.randbytes(size)
                    segs.append((p, 3, 17, seq, data))
                    sent.setdefault(p, {})[(3, 17, seq)] = data
                    cnt = counts.setdefault(p, [0, 0])
                    cnt[0] += 1
                    cnt[1] += size
                before = nerr
                if rng.random() < 0.5:
                    for p, m, a, s, data in segs:
                        timed("push", c.push, app, sid, p, m, a, s, data, node=addr)
                else:
                    timed("push_many", c.push_many, app, sid, segs, node=addr)
                pushed = nerr == before  # else the failed push is the error; what is stored is not known
                if pushed:
                    timed("map_end", c.map_end, app, sid, 3, 17, [(p, n, b) for p, (n, b) in counts.items()],
                          node=addr)
                for p, want in sent.items():
                    got = timed("fetch", c.fetch, app, sid, p, node=addr)
                    if got is not None and pushed:
                        have = {(s.map_index, s.attempt, s.seq): bytes(s.data) for s in got}
                        check(have == want, f"fetch {app}/{sid}/{p}: {len(have)} records, expected {len(want)}"
                                            f"{'' if set(have) == set(want) else ' (other ids)'}")
                timed("delete_shuffle", c.delete_shuffle, app, sid)
            elif kind == 1:  # key-value
                key = f"{app}/k{sid}"
                value = rng.randbytes(rng.choice([0, 1, 1000, 65536, 300000, 1 << 20]))
                timed("put", c.put, key, value)
                got = timed("get", c.get, key)
                if got is not None:
                    check(got.to_pybytes() == value, f"get {key}: {len(got)} bytes, expected {len(value)}")
                timed("delete", c.delete, key)
            else:  # addresses (under the flock the attackers' use-after-free races take)
                size = rng.choice([1, 4096, 100000])
                data = rng.randbytes(size)
                with open(lock_path, "a+") as fh:
                    fcntl.flock(fh, fcntl.LOCK_EX)
                    address = timed("alloc", c.alloc, size)
                    if address is not None:
                        timed("write", c.write, address, data)
                        got = timed("read", c.read, address, size)
                        if got is not None:
                            check(got.to_pybytes() == data, f"read {address:#x}: bytes differ")
                        timed("free", c.free, address)
                    fcntl.flock(fh, fcntl.LOCK_UN)
            if sid % 20 == 0:
                timed("ping", c.ping)
                timed("stats", c.stats)
    lat.sort()
    return {"ops": sum(ops.values()), "ops_by_kind": dict(ops), "errors": nerr, "error_samples": errors,
            "worst_latency_s": lat[-1] if lat else 0.0,
            "p99_latency_s": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0,
            "p50_latency_s": lat[len(lat) // 2] if lat else 0.0,
            "worst_by_op_s": {k: round(v, 4) for k, v in worst.items()}, "slow_ops": slow}


# ---- the harness -------------------------------------------------------------------------------------------
def run_fuzz(node_addr: str, node_pid: int, seconds: float, seed: int, connections: int = 6) -> dict:
    """Attack the node at `node_addr` (process `node_pid`) for `seconds` with `connections` attacker threads
    while an honest client works beside it; returns the figures (see the module docstring)."""
    host, _, port = node_addr.rpartition(":")
    addr = (host, int(port))
    templates = load_templates()
    stats = Stats()
    stop = threading.Event()
    t0 = time.monotonic()
    deadline = t0 + seconds
    monitor = Monitor(node_pid, stop)
    monitor.start()
    lock_fd, lock_path = tempfile.mkstemp(prefix="rpmp-fuzz-", suffix=".lock")
    os.close(lock_fd)
    honest = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--honest", node_addr,
                               "--seconds", str(seconds), "--seed", str(seed), "--lock", lock_path],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    big_sem = threading.Semaphore(1)
    budget = {"bytes": 512 << 20}
    attackers = [Attacker(i, addr, seed, deadline, stats, templates, stop, big_sem, budget, lock_path)
                 for i in range(connections)]
    threads = [threading.Thread(target=a.run, name=f"attacker-{i}", daemon=True) for i, a in enumerate(attackers)]
    for t in threads:
        t.start()
    try:
        out, err = honest.communicate(timeout=seconds + 120)
    except subprocess.TimeoutExpired:
        honest.kill()
        out, err = honest.communicate()
        out = ""
    stop.set()
    for t in threads:
        t.join(30)
    monitor.sample()
    os.unlink(lock_path)
    elapsed = time.monotonic() - t0
    try:
        h = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        h = {"ops": 0, "errors": 1, "error_samples": [f"honest client produced no result: {err[-2000:]}"],
             "worst_latency_s": float("inf"), "p99_latency_s": float("inf")}
    with stats.lock:
        return {
            "seed": seed, "seconds": seconds, "elapsed_s": round(elapsed, 2), "connections": connections,
            "frames_sent": sum(stats.frames.values()), "frames_by_kind": dict(stats.frames),
            "bytes_sent": stats.bytes_sent, "replies": stats.replies, "error_codes": dict(stats.error_codes),
            "node_alive": node_alive(node_pid), "node_crashes": 0 if monitor.died_at is None else 1,
            "node_died_at_s": monitor.died_at,
            "honest_ops": h.get("ops", 0), "honest_errors": h.get("errors", 0),
            "honest_error_samples": h.get("error_samples", []),
            "honest_worst_latency_s": h.get("worst_latency_s"), "honest_p99_latency_s": h.get("p99_latency_s"),
            "honest_p50_latency_s": h.get("p50_latency_s"), "honest_worst_by_op_s": h.get("worst_by_op_s", {}),
            "honest_ops_by_kind": h.get("ops_by_kind", {}), "honest_slow_ops": h.get("slow_ops", []),
            "node_peak_rss_mib": round(monitor.peak_rss / 1024, 1),
            "node_peak_anon_mib": round(monitor.peak_anon / 1024, 1),
            "node_first_anon_mib": round(monitor.first_anon / 1024, 1),
            "node_last_anon_mib": round(monitor.last_anon / 1024, 1),
            "internal_errors": stats.internal_count, "internal_samples": stats.internal[:20],
            "bad_replies": stats.bad_replies, "connect_failures": stats.connect_failures,
            "attacker_exceptions": dict(stats.attacker_exceptions.most_common(20)),
        }


# ---- the node's stderr -------------------------------------------------------------------------------------
class StderrWatch(threading.Thread):
    """Drains a node's stderr (a full pipe would block the node) and keeps its tracebacks: Python ones
    (with the log line before them) and faulthandler dumps (`Fatal Python error: ...`)."""

    def __init__(self, stream, keep_tail: int = 200, log_path: str | None = None):
        super().__init__(daemon=True)
        self.stream = stream
        self.log = open(log_path, "w") if log_path else None  # noqa: SIM115 - closed by run()
        self.tracebacks: Counter = Counter()
        self.first_seen: dict[str, str] = {}
        self.tail: list[str] = []
        self.keep_tail = keep_tail
        self.lines = 0
        self.warnings: Counter = Counter()

    def run(self) -> None:
        block: list[str] | None = None
        prev = ""
        try:
            for line in self.stream:
                line = line.rstrip("\n")
                self.lines += 1
                if self.log is not None:
                    self.log.write(line + "\n")
                self.tail.append(line)
                if len(self.tail) > self.keep_tail:
                    del self.tail[0]
                if " WARNING " in line:
                    self.warnings[re.sub(r"\d+", "N", line.split(": ", 1)[-1])[:100]] += 1
                if block is not None:
                    if line.startswith((" ", "\t")) or line.startswith(("Current thread", "Thread 0x", "Stack",
                                                                       "Traceback", "During handling",
                                                                       "The above exception")) or not line:
                        block.append(line)
                        continue
                    if block and block[0].startswith("Fatal Python error") and not line.startswith("Extension"):
                        block.append(line)
                        continue
                    block.append(line)  # the exception line (or the Extension modules line)
                    self._keep(block)
                    block = None
                    continue
                if line.startswith("Traceback (most recent call last)"):
                    block = [prev, line] if prev else [line]
                elif line.startswith("Fatal Python error"):
                    block = [line]
                prev = line
        except (ValueError, OSError):
            pass
        if self.log is not None:
            self.log.close()
        if block:
            self._keep(block)

    def _keep(self, block: list[str]) -> None:
        text = "\n".join(block)
        key = re.sub(r"0x[0-9a-f]+|\d+", "N", "\n".join(b for b in block[1:] if b.strip()))
        self.tracebacks[key] += 1
        self.first_seen.setdefault(key, text)

    def distinct(self) -> list[dict]:
        return [{"count": n, "text": self.first_seen[k]} for k, n in self.tracebacks.most_common()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--connections", type=int, default=6)
    ap.add_argument("--node", help="host:port of a running node (default: start one)")
    ap.add_argument("--pid", type=int, help="pid of that node (for liveness and memory)")
    ap.add_argument("--pool-size", default="1g", help="pool of the node started here (see tests/test_fuzz.py)")
    ap.add_argument("--stderr-log", help="write the node's whole stderr to this file")
    ap.add_argument("--honest", metavar="ADDR", help=argparse.SUPPRESS)
    ap.add_argument("--lock", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.honest:
        print(json.dumps(honest_main(args.honest, args.seconds, args.seed, args.lock)), flush=True)
        return
    if args.node:
        print(json.dumps(run_fuzz(args.node, args.pid, args.seconds, args.seed, args.connections), indent=2))
        return
    # a segfault dumps the node's Python stacks to stderr; the tests' heartbeat settings, as test_fuzz's node
    node = LocalNode(new_pool_path("rpmp-fuzz"), pool_size=args.pool_size, stderr="pipe", remove_pool=True,
                     args=["--heartbeat-interval", "0.2", "--dead-after", "1.5"],
                     env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    with node:
        assert node.proc is not None and node.proc.stderr is not None
        watch = StderrWatch(node.proc.stderr, log_path=args.stderr_log)
        watch.start()
        res = run_fuzz(node.address, node.proc.pid, args.seconds, args.seed, args.connections)
        res["node_returncode"] = node.returncode  # None: it survived
        node.signal(signal.SIGTERM)
        watch.join(25)  # the node's stderr ends when it exits: read all of it before stop() closes the pipe
        res["node_exit"] = node.reap()  # SIGKILL if it did not exit within 20 s
        res["stderr_lines"] = watch.lines
        res["stderr_warnings"] = dict(watch.warnings.most_common(15))
        res["stderr_tracebacks"] = watch.distinct()
        res["stderr_tail"] = watch.tail[-30:]
        print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()

"""Corruption, completeness and bounds, on real node processes: a byte that comes back different from what
went in is detected on every read path, a replica is served where one exists, the node counts and
quarantines what it finds, and no request can hold the node's memory, time or connections for good.

Bytes are flipped in the pool file itself, with the node running (its mapping sees the write at once) and
with the node stopped (the open scan must find it).
"""

import os
import random
import signal
import socket
import struct
import threading
import time

import pytest
from test_cluster import wait_for

from rpmp import _wire as W
from rpmp._pool import HEADER_SIZE
from rpmp.client import (
    BadRequestError,
    Client,
    CorruptError,
    IncompleteError,
    RpmpError,
)
from rpmp.protocol import FLAG_FORWARDED, MAGIC, RECORD_HEADER_SIZE, SEQ_LAST, VERSION, ErrorCode, Node, Op

APP = "app-integrity-1"


def flip(path: str, offset: int, mask: int = 0x01) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        b = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([b[0] ^ mask]), offset)
    finally:
        os.close(fd)


def find(path: str, needle: bytes) -> int:
    with open(path, "rb") as f:
        data = f.read()
    at = data.find(needle)
    assert at >= 0 and data.find(needle, at + 1) < 0, "needle must occur exactly once in the pool"
    return at


def record_offsets(c: Client, partition: int, node=None) -> list[int]:
    """File offsets of the records of partition `partition` of shuffle 1, in block order."""
    info = c.partition_info(APP, 1, partition, node=node)
    assert not info["spill_files"], "these nodes have no disk tier: every block is in the pool file"
    out = []
    fd = os.open(info["pool_path"], os.O_RDONLY)
    try:
        for b in info["blocks"]:
            pos = 0
            while pos < b.used:
                out.append(b.file_offset + pos)
                _, _, _, n, _ = W.unpack_record_header(os.pread(fd, RECORD_HEADER_SIZE, b.file_offset + pos))
                pos += RECORD_HEADER_SIZE + n
    finally:
        os.close(fd)
    return out


def restart_flipped(node_factory, node, offset: int, mask: int = 0x01):
    """Stop a node, flip bits of its pool file at `offset` while it is down, and start it again on it."""
    node.stop()
    flip(node.pool, offset, mask)
    return node_factory(pool=node.pool)


def stop_and_log(node) -> str:
    """Stop a node and return what it logged."""
    node.stop()
    return node.stderr_text()


def integrity(c: Client, node=None) -> dict:
    return c.stats(node=node)["integrity"]


def segments(n: int, seed: int, size: int = 3000) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size + i) for i in range(n)]


def push_attempt(c: Client, partition: int, map_index: int, attempt: int, datas: list[bytes], **kw) -> None:
    for i, d in enumerate(datas):
        c.push(APP, 1, partition, map_index, attempt, i, d, last=i == len(datas) - 1, **kw)


# ---- shuffle records ----------------------------------------------------------------------------------

def test_fetch_of_a_flipped_record_is_corrupt_counted_and_quarantined(node):
    datas = segments(4, 1)
    with Client(node.addr) as c:
        c.register_shuffle(APP, 1, 1)
        push_attempt(c, 0, 0, 7, datas)
        offsets = record_offsets(c, 0)
        flip(node.pool, offsets[2] + RECORD_HEADER_SIZE + 100)
        with pytest.raises(CorruptError, match=r"record \(0, 7, 2\) of shuffle 1 .* fails its checksum on node"):
            c.fetch(APP, 1, 0)
        assert integrity(c)["corrupt_records"] == 1
        flip(node.pool, offsets[2] + RECORD_HEADER_SIZE + 100)  # repaired bytes: still quarantined, never served
        with pytest.raises(CorruptError, match="quarantined"):
            c.fetch(APP, 1, 0, attempts=[7])
        assert integrity(c)["corrupt_records"] == 1  # counted once
        # records of other attempts are still served
        push_attempt(c, 0, 1, 8, datas[:1])
        assert [bytes(s.data) for s in c.fetch(APP, 1, 0, attempts=[8])] == datas[:1]
    log = stop_and_log(node)
    assert f"CORRUPT record (0, 7, 2) of shuffle 1 of {APP} partition 0: block" in log
    assert log.count("CORRUPT record") == 1


def test_a_large_fetch_is_verified_off_the_loop_and_still_caught(node):
    datas = segments(6, 2, size=600_000)  # > 1 MiB in all: verified on a worker thread
    with Client(node.addr) as c:
        c.register_shuffle(APP, 1, 1)
        push_attempt(c, 0, 0, 7, datas)
        assert [bytes(s.data) for s in c.fetch(APP, 1, 0, attempts=[7])] == datas
        flip(node.pool, record_offsets(c, 0)[5] + RECORD_HEADER_SIZE + 599_999, 0x80)
        with pytest.raises(CorruptError):
            c.fetch(APP, 1, 0)
        c.ping()  # the node and the connection pool are fine


def test_reader_falls_back_to_the_replica_and_names_the_bad_copy(node_factory):
    seed = node_factory()
    other = node_factory(seeds=seed.addr)
    with Client(seed.addr) as c:
        wait_for(lambda: sum(m.state == 1 for m in c.members()[1]) == 2, what="2 live members")
        with Client(other.addr) as c2:
            wait_for(lambda: sum(m.state == 1 for m in c2.members()[1]) == 2, what="2 members on the other")
        pl = c.register_shuffle(APP, 1, 1, replicas=2)
        datas = segments(3, 3)
        push_attempt(c, 0, 0, 7, datas, placement=pl)
        primary = pl.primary(0)
        prim_proc = seed if primary.node_id == seed.addr else other
        flip(prim_proc.pool, record_offsets(c, 0, node=primary.node_id)[1] + RECORD_HEADER_SIZE + 5)
        got = c.fetch(APP, 1, 0, attempts=[7], placement=pl)
        assert [bytes(s.data) for s in got] == datas  # the replica's intact copy
        assert integrity(c, node=primary.node_id)["corrupt_records"] == 1
        replica = pl.nodes_for(0)[1]
        assert integrity(c, node=replica.node_id)["corrupt_records"] == 0
        # the client-side check names the node too (a node told not to verify serves the bad bytes)
        with pytest.raises(CorruptError, match=primary.node_id):
            c.fetch(APP, 1, 0, node=primary.node_id)


def test_client_detects_corruption_a_node_does_not_check(node_factory):
    node = node_factory(extra=["--no-verify-fetch"])
    with Client(node.addr) as c:
        c.register_shuffle(APP, 1, 1)
        datas = segments(2, 4)
        push_attempt(c, 0, 0, 7, datas)
        flip(node.pool, record_offsets(c, 0)[0] + RECORD_HEADER_SIZE)
        with pytest.raises(CorruptError, match=rf"record \(0, 7, 0\) of partition 0 from node {node.addr}"):
            c.fetch(APP, 1, 0)


def test_stopped_node_finds_a_flipped_payload_at_open(node_factory):
    node = node_factory()
    with Client(node.addr) as c:
        c.register_shuffle(APP, 1, 2)
        push_attempt(c, 0, 0, 7, segments(3, 5))
        push_attempt(c, 1, 0, 7, segments(3, 6))
        off = record_offsets(c, 0)[1]
    node2 = restart_flipped(node_factory, node, off + RECORD_HEADER_SIZE + 10)
    with Client(node2.addr) as c:
        assert integrity(c)["corrupt_records"] == 1
        with pytest.raises(CorruptError):
            c.fetch(APP, 1, 0)
        assert [bytes(s.data) for s in c.fetch(APP, 1, 1, attempts=[7])] == segments(3, 6)


def test_a_lost_tail_is_never_a_short_answer(node_factory):
    """The reproduction of the silently wrong Spark answer: a flipped record magic on a stopped node."""
    node = node_factory()
    datas = segments(4, 7)
    with Client(node.addr) as c:
        c.register_shuffle(APP, 1, 1)
        push_attempt(c, 0, 0, 7, datas)
        offs = record_offsets(c, 0)
    node2 = restart_flipped(node_factory, node, offs[2])  # the magic of the third record
    with Client(node2.addr) as c:
        st = integrity(c)
        assert st["corrupt_records"] == 1 and st["lost_record_bytes"] == len(datas[2])  # skipped, length trusted
        with pytest.raises(IncompleteError, match=rf"node {node2.addr} has map 0 attempt 7 .* segments \[0, 1, 3\]"):
            c.fetch(APP, 1, 0, attempts=[7])


def test_a_flipped_length_loses_the_rest_of_the_block_loudly(node_factory):
    node = node_factory()
    datas = segments(4, 8)
    with Client(node.addr) as c:
        c.register_shuffle(APP, 1, 1)
        push_attempt(c, 0, 0, 7, datas)
        offs = record_offsets(c, 0)
    node2 = restart_flipped(node_factory, node, offs[1] + 20 + 2, 0x40)  # record 1's length: its end no
    # longer lands on a record
    with Client(node2.addr) as c:
        assert integrity(c)["lost_record_bytes"] > 0
        with pytest.raises(IncompleteError, match="final segment missing"):
            c.fetch(APP, 1, 0, attempts=[7])


def test_one_flipped_registration_copy_keeps_the_shuffle(node_factory):
    node = node_factory()
    datas = segments(2, 9)
    with Client(node.addr) as c:
        c.register_shuffle(APP, 1, 3)
        push_attempt(c, 2, 0, 7, datas)
    node.stop()
    # the registration's payload: partition count 3, replicas 1, then the placement (epoch first)
    with open(node.pool, "rb") as f:
        raw = f.read()
    at = raw.find(struct.pack("<II", 3, 1) + struct.pack("<Q", 1))
    assert at > 0
    flip(node.pool, at)
    node2 = node_factory(pool=node.pool)
    with Client(node2.addr) as c:
        assert [bytes(s.data) for s in c.fetch(APP, 1, 2, attempts=[7])] == datas
        assert integrity(c)["corrupt_registrations"] == 0


# ---- values -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [5000, 3 << 20], ids=["small", "large"])
def test_get_of_a_flipped_value_is_corrupt_until_replaced(node, size):
    value = random.Random(size).randbytes(size)
    with Client(node.addr) as c:
        c.put("k", value)
        assert c.get("k").to_pybytes() == value
        flip(node.pool, find(node.pool, value[:64]) + size // 2)
        with pytest.raises(CorruptError, match="the value under key b'k' fails its checksum"):
            c.get("k")
        with pytest.raises(CorruptError):
            c.get("k")
        assert integrity(c)["corrupt_values"] == 1
        c.put("k", b"fresh")
        assert c.get("k").to_pybytes() == b"fresh"


def test_a_value_flipped_while_stopped_is_corrupt_not_missing(node_factory):
    node = node_factory()
    value = random.Random(1).randbytes(10_000)
    with Client(node.addr) as c:
        c.put("k", value)
        c.put("k2", b"intact")
    node2 = restart_flipped(node_factory, node, find(node.pool, value[:64]) + 10)
    with Client(node2.addr) as c:
        with pytest.raises(CorruptError):
            c.get("k")
        assert c.get("k2").to_pybytes() == b"intact"
        c.delete("k")
        with pytest.raises(RpmpError, match="no value"):
            c.get("k")


# ---- bounds -------------------------------------------------------------------------------------------

def test_an_aborted_push_larger_than_a_block_gives_its_block_back(node):
    with Client(node.addr) as c:
        c.register_shuffle(APP, 1, 1)
        c.push(APP, 1, 0, 0, 1, 0, b"x" * 1000)
        before = c.stats()["pool"]
        for i in range(3):
            s = socket.create_connection((node.host, node.port))
            meta = W.encode_push(APP, 1, 0, 0, 2, i, 0)
            s.sendall(W.frame(Op.PUSH, 0, 1, meta, 20 << 20) + b"y" * 4096)
            s.close()
        def same() -> bool:
            after = c.stats()["pool"]
            return (after["blocks"], after["allocated"]) == (before["blocks"], before["allocated"])

        wait_for(same, what="blocks given back")
        time.sleep(1.0)  # all three connections are over by now: nothing was allocated again and kept
        assert same() and c.stats()["receiving"] == 0


def test_register_cost_is_bounded_before_it_is_computed(node):
    with Client(node.addr) as c:
        t = time.monotonic()
        with pytest.raises(BadRequestError, match="a placement of 16777216 partitions x 1 nodes needs"):
            c.register_shuffle(APP, 1, 1 << 24)
        took = time.monotonic() - t
        c.ping()
        assert took < 2.0, f"refusing took {took:.1f} s"  # it used to compute 2**24 placements first (24 s)


def test_a_stalled_put_frame_is_dropped_and_its_room_given_back(node_factory):
    node = node_factory(extra=["--frame-timeout", "1"])
    with Client(node.addr) as c:
        free = c.stats()["pool"]["free"]
        stalled = []
        for i in range(3):
            s = socket.create_connection((node.host, node.port))
            s.sendall(W.frame(Op.PUT, 0, 1, W.encode_key(f"stall{i}"), 4 << 20) + b"z" * 4096)
            stalled.append(s)
        wait_for(lambda: c.stats()["pool"]["free"] <= free - (12 << 20), what="room reserved")
        # the deadline: --frame-timeout plus 1 s per MiB of data
        wait_for(lambda: c.stats()["pool"]["free"] == free, timeout=15, what="room given back")
        assert c.stats()["counters"]["timed_out_frames"] == 3
        for s in stalled:
            s.settimeout(5)
            assert s.recv(100) == b""  # dropped
            s.close()


def test_idle_connections_make_room_for_new_clients(node_factory):
    node = node_factory(extra=["--max-connections", "8"])
    idle = [socket.create_connection((node.host, node.port)) for _ in range(8)]
    try:
        time.sleep(5.5)  # EVICT_IDLE
        with Client(node.addr) as c:
            c.put("k", b"v")
            assert c.get("k").to_pybytes() == b"v"
            assert c.stats()["counters"]["evicted_connections"] >= 1
    finally:
        for s in idle:
            s.close()


def test_a_pooled_connection_to_a_restarted_node_reconnects(node_factory):
    node = node_factory()
    with Client(node.addr) as c:
        c.put("k", b"v1")
        port = node.port
        node.stop()
        node2 = node_factory(pool=node.pool, port=port)
        assert c.get("k").to_pybytes() == b"v1"  # the pooled connection was stale: a new one is used
        c.put("k", b"v2")
        assert c.get("k", node=node2.addr).to_pybytes() == b"v2"


def test_staging_memory_is_bounded_across_connections(node_factory):
    """Connections that announce a 1 MiB meta part and stall may not take more than the node's budget; the
    node stays responsive for others and the stalled ones are dropped at the frame deadline."""
    node = node_factory(extra=["--staging-memory", "4m", "--frame-timeout", "2"])
    hogs = []
    for i in range(16):
        s = socket.create_connection((node.host, node.port))
        s.sendall(struct.pack("<IBBHQIIQ", MAGIC, VERSION, Op.PUT, 0, i, (1 << 20) - 8, 0, 0) + b"a" * 100_000)
        hogs.append(s)
    with Client(node.addr) as c:
        wait_for(lambda: c.stats()["counters"]["staging_waits"] >= 1, what="a connection waiting for staging")
        c.put("k", b"v")
        assert c.get("k").to_pybytes() == b"v"
        rss = int(next(line.split()[1] for line in open(f"/proc/{node.proc.pid}/status") if
                       line.startswith("RssAnon")))
        assert rss < 200_000, f"node anonymous memory {rss} kB"  # 16 MiB of claimed meta, 4 MiB granted
        wait_for(lambda: c.stats()["counters"]["timed_out_frames"] >= 16, timeout=15, what="stalled frames dropped")
    for s in hogs:
        s.close()


# ---- membership and node-to-node requests -----------------------------------------------------------

def test_heartbeats_cannot_take_over_or_flood_the_member_table(node):
    peer = FakePeer("peer-a", lambda op, rid, meta: W.frame(op, 1, rid))
    liar = FakePeer("bob", lambda op, rid, meta: W.frame(op, 1, rid))
    try:
        with Client(node.addr) as c:
            with c.connection() as conn:
                with pytest.raises(BadRequestError, match="this node's own id"):
                    conn.call(Op.HEARTBEAT, W.encode_heartbeat(Node(node.addr, "127.0.0.1", 1), 0))
                for i in range(17):
                    with pytest.raises(BadRequestError, match="node id"):
                        conn.call(Op.HEARTBEAT, W.encode_heartbeat(Node("x" * 60_000 + str(i), "127.0.0.1", 9), 0))
                # an address nobody serves, and one that answers with another id, are never admitted
                conn.call(Op.HEARTBEAT, W.encode_heartbeat(Node("ghost", "127.0.0.1", 1), 0))
                conn.call(Op.HEARTBEAT, W.encode_heartbeat(Node("liar", "127.0.0.1", liar.port), 0))
            join(c, peer, "peer-a")  # admitted once its address answers HELLO with its id
            with c.connection() as conn:
                with pytest.raises(RpmpError, match=f"is alive at 127.0.0.1:{peer.port}") as e:
                    conn.call(Op.HEARTBEAT, W.encode_heartbeat(Node("peer-a", "127.0.0.1", peer.port + 1), 0))
                assert e.value.code == ErrorCode.CONFLICT
                for nid, port in (("peer-b", peer.port), ("impostor", node.port)):  # a live address, another id
                    with pytest.raises(RpmpError, match=f"127.0.0.1:{port} is the address of live node") as e:
                        conn.call(Op.HEARTBEAT, W.encode_heartbeat(Node(nid, "127.0.0.1", port), 0))
                    assert e.value.code == ErrorCode.CONFLICT
            time.sleep(2.5)  # the checks of ghost and liar have failed by now
            epoch, members = c.members()
            assert sorted(m.node_id for m in members) == sorted([node.addr, "peer-a"])
            assert [m for m in members if m.node_id == node.addr][0].port == node.port
    finally:
        peer.close()
        liar.close()


def test_a_forwarded_registration_from_a_stranger_is_refused(node):
    with Client(node.addr) as c:
        me = Node(node.addr, node.host, node.port)
        evil = Node("evil:1", "127.0.0.1", 1)
        placement = W.encode_register_resp(1, [evil, me], [(1, 0)])
        meta = W.encode_register_forwarded(APP, 1, 1, 2, placement)
        with c.connection() as conn, pytest.raises(RpmpError, match="evil:1 at 127.0.0.1:1, which this node does not"):
            conn.call(Op.REGISTER_SHUFFLE, meta, flags=FLAG_FORWARDED)
        from rpmp.client import NotFoundError
        with pytest.raises(NotFoundError):
            c.partition_info(APP, 1, 0)


def test_final_segment_flag_round_trips(node):
    with Client(node.addr) as c:
        c.register_shuffle(APP, 1, 1)
        c.push_many(APP, 1, [(0, 0, 7, 0, b"a"), (0, 0, 7, 1 | SEQ_LAST, b"")])
        got = c.fetch(APP, 1, 0, attempts=[7])
        assert [(s.seq, s.last, bytes(s.data)) for s in got] == [(0, False, b"a"), (1, True, b"")]


# ---- the address API ----------------------------------------------------------------------------------

def test_a_new_block_never_shows_an_earlier_tenants_bytes(node):
    with Client(node.addr) as c:
        a = c.alloc(1 << 20)
        c.write(a, b"\xaa" * (1 << 20))
        c.free(a)
        b = c.alloc(1 << 20)
        c.write(b, b"!", offset=(1 << 20) - 1)
        assert c.read(b, 1 << 20).to_pybytes() == bytes((1 << 20) - 1) + b"!"
        with pytest.raises(BadRequestError, match="ALLOC size 67108865 is not in 1..67108864"):
            c.alloc((64 << 20) + 1)


def test_read_of_a_flipped_address_block_is_corrupt_until_freed(node_factory):
    node = node_factory()
    pattern = random.Random(5).randbytes(50_000)
    with Client(node.addr) as c:
        a = c.alloc(60_000)
        c.write(a, pattern)
        flip(node.pool, a + HEADER_SIZE + 7)  # an address is the block's pool offset; its payload follows the header
        with pytest.raises(CorruptError, match=f"the block at {a:#x} fails its checksum on node {node.addr}"):
            c.read(a, 10, offset=40_000)  # any range: the whole block is checked
        with pytest.raises(CorruptError):
            c.write(a, b"x")
        assert integrity(c)["corrupt_values"] == 1
        c.free(a)
        b = c.alloc(60_000)
        c.write(b, pattern)
    node2 = restart_flipped(node_factory, node, b + HEADER_SIZE + 9)  # and while the node is stopped
    with Client(node2.addr) as c:
        with pytest.raises(CorruptError):
            c.read(b, 1)


def test_acknowledged_writes_are_all_or_nothing_across_sigkill(node_factory):
    """Writers fill 4 addresses with one repeated byte per WRITE (256 KiB); the node is SIGKILLed under them.
    After every restart each address holds one byte value throughout: the last acknowledged one, or the one
    in flight at the kill, never a mix."""
    node = node_factory()
    with Client(node.addr) as c:
        addrs = [c.alloc(256 << 10) for _ in range(4)]
        for a in addrs:
            c.write(a, b"\0" * (256 << 10))
    rng = random.Random(11)
    pool, port = node.pool, node.port
    for cycle in range(8):
        acked = {a: None for a in addrs}
        inflight = {a: set() for a in addrs}
        stop = time.monotonic() + rng.uniform(0.3, 1.2)

        def writer(a, seed, stop=stop, acked=acked, inflight=inflight):
            r = random.Random(seed)
            with Client(f"127.0.0.1:{port}", timeout=5) as wc:
                while time.monotonic() < stop + 5:
                    v = r.randrange(1, 256)
                    inflight[a].add(v)
                    try:
                        wc.write(a, bytes([v]) * (256 << 10))
                    except (OSError, RpmpError):
                        return
                    acked[a] = v

        threads = [threading.Thread(target=writer, args=(a, cycle * 10 + i)) for i, a in enumerate(addrs)]
        for t in threads:
            t.start()
        time.sleep(max(0.0, stop - time.monotonic()))
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()
        for t in threads:
            t.join(30)
        node.stop()
        node = node_factory(pool=pool, port=port)
        with Client(node.addr) as c:
            for a in addrs:
                got = c.read(a, 256 << 10).to_pybytes()
                values = set(got)
                assert len(values) == 1, f"cycle {cycle}: address {a:#x} holds a mix of {sorted(values)[:8]}"
                v = values.pop()
                assert v == (acked[a] or 0) or v in inflight[a], f"cycle {cycle}: {v} was never written"


def test_a_frame_waits_for_room_that_stalled_senders_hold(node_factory):
    """Stalled senders holding the receive bound make an honest PUT wait (back-pressure), not fail; a frame
    larger than one frame may reserve is refused at once."""
    node = node_factory(pool_size="256m", extra=["--frame-timeout", "2"])
    hogs = []
    for i in range(2):
        s = socket.create_connection((node.host, node.port))
        s.sendall(W.frame(Op.PUT, 0, 1, W.encode_key(f"hog{i}"), 60 << 20) + b"h" * 1000)
        hogs.append(s)
    value = random.Random(3).randbytes(20 << 20)
    with Client(node.addr) as c:
        wait_for(lambda: c.stats()["pool"]["free"] < (150 << 20), what="the hogs' room reserved")
        t = time.monotonic()
        c.put("honest", value)  # 120 + 20 MiB > half of 256 MiB: it waits until the hogs are dropped
        waited = time.monotonic() - t
        assert c.get("honest").to_pybytes() == value
        st = c.stats()["counters"]
        assert st["room_waits"] >= 1 and st["timed_out_frames"] == 2
        assert waited > 2.0, waited
        with pytest.raises(RpmpError, match="more than one frame may reserve on this node") as e:
            c.put("huge", b"x" * (65 << 20))
        assert e.value.code == ErrorCode.POOL_FULL
    for s in hogs:
        s.close()


def test_a_deleted_shuffle_never_comes_back_under_its_reused_id(node_factory):
    """Delete a shuffle while a slow reader pins its blocks, register the same id again, push, SIGKILL:
    after the restart FETCH returns exactly the new segments (the pinned blocks were retired durably)."""
    node = node_factory()
    old = segments(8, 21, size=1 << 20)
    new = segments(100, 22, size=2000)
    with Client(node.addr) as c:
        c.register_shuffle(APP, 1, 1)
        push_attempt(c, 0, 0, 7, old)
        slow = socket.create_connection((node.host, node.port))
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sendall(W.frame(Op.FETCH, 0, 1, W.encode_fetch(APP, 1, 0)))  # 8 MiB reply, never read
        time.sleep(0.5)
        assert c.delete_shuffle(APP, 1) >= 1
        assert c.stats()["pending_free"] >= 1  # pinned by the slow reader
        c.register_shuffle(APP, 1, 1)
        push_attempt(c, 0, 0, 9, new)
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait()
    slow.close()
    node.stop()
    node2 = node_factory(pool=node.pool)
    with Client(node2.addr) as c:
        got = c.fetch(APP, 1, 0)
        assert [(s.attempt, bytes(s.data)) for s in got] == [(9, d) for d in new]


class FakePeer:
    """A TCP server that says it is node `name` (HELLO) and answers every other request frame with
    `reply(op, rid, meta) -> bytes` (a whole frame)."""

    def __init__(self, name: str, reply):
        self.name = name
        self.reply = reply
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.requests: list[int] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn: socket.socket) -> None:
        with conn:
            while True:
                head = conn.recv(32, socket.MSG_WAITALL)
                if len(head) < 32:
                    return
                op, _flags, rid, meta_len, data_len = W.unpack_header(head)
                meta = conn.recv(meta_len, socket.MSG_WAITALL) if meta_len else b""
                if data_len:
                    conn.recv(data_len, socket.MSG_WAITALL)
                self.requests.append(op)
                if op == Op.HELLO:
                    conn.sendall(W.frame(op, 1, rid, W.encode_hello_resp(2, self.name, 1 << 20)))
                else:
                    conn.sendall(self.reply(op, rid, meta))

    def close(self) -> None:
        self.srv.close()


def join(c: Client, peer: FakePeer, name: str) -> None:
    """Heartbeat `peer` into the node's members as `name` and wait until it is admitted."""
    def admitted() -> bool:
        with c.connection() as conn:
            conn.call(Op.HEARTBEAT, W.encode_heartbeat(Node(name, "127.0.0.1", peer.port), 0))
        return any(m.node_id == name and m.state == 1 for m in c.members()[1])
    wait_for(admitted, timeout=5, what=f"{name} admitted")


def test_a_peer_reply_with_the_wrong_opcode_or_flags_is_refused(node):
    # a "peer" that answers every forwarded request with a response frame of another opcode
    peer = FakePeer("fake-peer", lambda op, rid, meta: W.frame(Op.PING, 1, rid))
    try:
        with Client(node.addr) as c:
            join(c, peer, "fake-peer")
            with pytest.raises(RpmpError, match="fake-peer did not take the registration") as e:
                c.register_shuffle(APP, 1, 4)
            assert e.value.code == ErrorCode.UNAVAILABLE and Op.REGISTER_SHUFFLE in peer.requests
    finally:
        peer.close()


def test_a_peers_absurd_delete_count_cannot_overflow_the_reply(node):
    peer = FakePeer("fake-peer", lambda op, rid, meta: W.frame(op, 1, rid, W.encode_u64((1 << 64) - 1)
                                                   if op == Op.DELETE_SHUFFLE else b""))
    try:
        with Client(node.addr) as c:
            c.register_shuffle(APP, 1, 1)
            c.push(APP, 1, 0, 0, 1, 0, b"x", last=True)
            join(c, peer, "fake-peer")
            assert c.delete_shuffle(APP, 1) == (1 << 64) - 1  # clamped, not an INTERNAL error
            assert Op.DELETE_SHUFFLE in peer.requests
    finally:
        peer.close()


def test_replicated_pushes_racing_deletes_never_answer_internal(node_factory):
    seed = node_factory()
    other = node_factory(seeds=seed.addr)
    errors: dict[int, int] = {}
    with Client(seed.addr) as c, Client([seed.addr, other.addr]) as pc:
        wait_for(lambda: sum(m.state == 1 for m in c.members()[1]) == 2, what="2 live members")
        with Client(other.addr) as c2:
            wait_for(lambda: sum(m.state == 1 for m in c2.members()[1]) == 2, what="2 members on the other")
        for i in range(200):
            pl = c.register_shuffle(APP, i, 1, replicas=2)
            t = threading.Thread(target=lambda i=i: c.delete_shuffle(APP, i))
            try:
                t.start()
                pc.push(APP, i, 0, 0, 1, 0, b"p" * 70_000, placement=pl, last=True)
            except RpmpError as e:
                errors[int(e.code)] = errors.get(int(e.code), 0) + 1
            finally:
                t.join(10)
    assert ErrorCode.INTERNAL not in errors, errors
    assert set(errors) <= {ErrorCode.NOT_FOUND, ErrorCode.UNAVAILABLE}, errors

"""Storage in-process: the block index agrees with the pool, ranges name the right file bytes, the receive
bound is given back on every path, and placements are decoded once."""

import os

import pytest
import xxhash

from rpmp._wire import encode_register_resp, unpack_record_header
from rpmp.protocol import RECORD_HEADER_SIZE, Node
from rpmp.server.storage import Storage, StorageError
from rpmp.server.storage import shuffles as shuffle_mod

MIB = 1 << 20
NODES = [Node("a:1", "127.0.0.1", 1), Node("b:2", "127.0.0.1", 2), Node("c:3", "127.0.0.1", 3)]


def placement(nparts: int, width: int = 2) -> bytes:
    return encode_register_resp(1, NODES, [[(p + i) % 3 for i in range(width)] for p in range(nparts)])


def push(st: Storage, sh, p: int, ident: tuple[int, int, int], data: bytes) -> bool:
    checksum = xxhash.xxh3_64_intdigest(data)
    res = st.shuffles.reserve(sh, p, *ident, len(data), checksum)
    res.view[:] = data
    return st.shuffles.commit(res, checksum)


def assert_index_matches_pool(st: Storage) -> None:
    live = {info.id: info for info in st.pool}
    assert set(st.blocks.index) == set(live)
    for block, b in st.blocks.index.items():
        info = live[block]
        assert (b.capacity, b.used, b.file_offset) == (info.capacity, info.used, info.payload_offset), hex(block)


def test_index_follows_pushes_puts_writes_and_deletes_and_is_rebuilt_at_open(pool_path):
    st = Storage(pool_path, 64 * MIB, name="n1")
    sh = st.shuffles.register("app", 1, 4, 1, placement(4))
    payloads = {}
    for i in range(40):  # small segments fill merge blocks that grow from 64 KiB; a 5 MiB one gets its own
        data = os.urandom(5 * MIB if i == 7 else 3000 + 97 * i)
        assert push(st, sh, i % 4, (i, 1, 0), data)
        payloads[(i % 4, i)] = data
    res = st.values.reserve(b"k", 10)
    res.view[:] = b"0123456789"
    st.values.commit(res)
    address = st.addresses.alloc(4096)
    w = st.addresses.reserve(address, 100, 5)
    w.view[:] = b"hello"
    st.addresses.commit(w)
    assert st.blocks.used(address) == 105
    assert_index_matches_pool(st)
    assert st.blocks.receiving == 0

    st.close()
    st = Storage(pool_path, 64 * MIB, name="n1")
    assert_index_matches_pool(st)
    sh = st.shuffles.get("app", 1)
    for p in range(4):
        runs = st.shuffles.select(sh, p)
        got = {}
        for run in runs:
            for r in run.records:
                at = r.offset - run.start
                got[(p, r.map_index)] = bytes(run.view[at + RECORD_HEADER_SIZE:at + RECORD_HEADER_SIZE + r.length])
            run.view.release()
        assert got == {k: v for k, v in payloads.items() if k[0] == p}
    assert st.shuffles.delete("app", 1) > 0
    assert_index_matches_pool(st)
    st.close()


def test_ranges_name_the_pool_file_bytes_they_view(pool_path):
    st = Storage(pool_path, 32 * MIB)
    sh = st.shuffles.register("app", 2, 1, 1, placement(1))
    for i in range(3):
        push(st, sh, 0, (i, 5, i), bytes([i + 1]) * (1000 + i))
    runs = st.shuffles.select(sh, 0)
    assert len(runs) == 1 and len(runs[0].records) == 3  # contiguous records of one block: one range
    rng = runs[0].range
    assert rng.fd is not None
    assert os.pread(rng.fd, rng.nbytes, rng.offset) == bytes(rng.view)
    assert unpack_record_header(rng.view, 0) == (0, 5, 0, 1000, xxhash.xxh3_64_intdigest(b"\x01" * 1000))
    rng.view.release()
    st.close()


def test_a_failed_reservation_gives_its_room_back(pool_path):
    st = Storage(pool_path, 16 * MIB)
    sh = st.shuffles.register("app", 3, 1, 1, placement(1))
    filled = 0
    with pytest.raises(StorageError) as e:  # fill the pool with values until an allocation fails
        for i in range(64):
            res = st.values.reserve(b"fill%d" % i, MIB)
            st.values.commit(res)
            filled += 1
    assert e.value.kind == "pool_full" and 8 <= filled < 16
    assert st.blocks.receiving == 0
    with pytest.raises(StorageError) as e:
        st.shuffles.reserve(sh, 0, 0, 0, 0, MIB, 0)
    assert e.value.kind == "pool_full"
    assert st.blocks.receiving == 0
    assert st.shuffles.select(sh, 0) == [] and sh.partitions[0].blocks == []
    address = st.addresses.alloc(1024)
    with pytest.raises(StorageError, match="exceeds the 1024 bytes"):
        st.addresses.reserve(address, 1000, 100)
    assert st.blocks.receiving == 0
    st.close()


def test_receive_bound_counts_reservations_until_commit_or_abort(pool_path):
    st = Storage(pool_path, 64 * MIB)
    sh = st.shuffles.register("app", 4, 2, 1, placement(2))
    a = st.shuffles.reserve(sh, 0, 0, 0, 0, 1000, 0)
    b = st.values.reserve(b"v", 2000)
    assert st.blocks.receiving == 3000
    st.shuffles.abort(a)
    st.values.abort(b)
    assert st.blocks.receiving == 0
    assert st.shuffles.select(sh, 0) == []
    assert_index_matches_pool(st)  # the aborted push's empty block and the value's block are freed
    st.close()


def test_replica_nodes_decode_a_small_placement_once(pool_path, monkeypatch):
    st = Storage(pool_path, 32 * MIB)
    sh = st.shuffles.register("app", 5, 8, 2, placement(8))
    calls = []
    real = shuffle_mod.decode_register_resp
    monkeypatch.setattr(shuffle_mod, "decode_register_resp", lambda *a: calls.append(1) or real(*a))
    assert [n.node_id for n in st.shuffles.replica_nodes(sh, 0)] == ["a:1", "b:2"]
    assert [n.node_id for n in st.shuffles.replica_nodes(sh, 4)] == ["b:2", "c:3"]
    assert len(calls) == 1
    st.close()


def test_a_large_placement_is_not_kept_in_memory(pool_path):
    st = Storage(pool_path, 64 * MIB)
    nparts = 10_000  # 2 bytes x 2 nodes per partition: past the 16 KiB cache limit
    raw = placement(nparts)
    assert len(raw) > shuffle_mod.PLACEMENT_CACHE
    sh = st.shuffles.register("app", 6, nparts, 2, raw)
    assert sh.encoded_placement is None
    assert st.shuffles.placement(sh) == raw
    assert [n.node_id for n in st.shuffles.replica_nodes(sh, nparts - 1)] == ["a:1", "b:2"]
    assert sh.decoded_placement is None
    st.close()


def test_a_merge_block_shrinks_to_what_the_allocator_has_when_free_space_is_scattered(pool_path):
    """A partition's next merge block is 4 MiB, but the pool's free space is in 64 KiB holes: the push takes a
    smaller block (down to its record) instead of answering POOL_FULL."""
    st = Storage(pool_path, 16 * MIB)
    sh = st.shuffles.register("app", 1, 2, 1, placement(2))
    part = sh.part(0)
    part.next_capacity = 4 * MIB
    filler = []
    while True:  # fill the pool with 64 KiB blocks, then free every other one
        try:
            filler.append(st.blocks.alloc(64 << 10, b"Sfill"))
        except StorageError:
            break
    for b in filler[::2]:
        st.blocks.free(b)
    with pytest.raises(StorageError):
        st.blocks.alloc(4 * MIB, b"Sbig")
    data = os.urandom(1000)
    assert push(st, sh, 0, (0, 0, 0), data)
    assert [st.blocks.capacity(b) for b in part.blocks] == [64 << 10]
    [run] = st.shuffles.select(sh, 0)
    assert bytes(run.view[RECORD_HEADER_SIZE:]) == data
    run.view.release()
    st.close()

"""The PMem pool (native/rpmp_pool.c through rpmp._pool): round trips, recovery, errors, views."""

import mmap
import os
import struct
import subprocess
import sys
import textwrap

import pyarrow as pa
import pytest
import xxhash

from rpmp._pool import (
    DEFAULT_BLOCK_CAPACITY,
    HEADER_SIZE,
    MAX_BLOCK_CAPACITY,
    BlockCorruptError,
    BlockKeyError,
    BlockNotFoundError,
    BlockSealedError,
    Pool,
    PoolBusyError,
    PoolClosedError,
    PoolExistsError,
    PoolFullError,
    PoolLayoutError,
    PoolNotFoundError,
    PoolSizeError,
)

MiB = 1 << 20


def pattern(n: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-looking bytes (so misplaced bytes are caught)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += xxhash.xxh64_digest(struct.pack("<QQ", seed, i))
        i += 1
    return bytes(out[:n])


@pytest.mark.parametrize("size", [0, 1, 7, 4096, 65537, DEFAULT_BLOCK_CAPACITY, 9 * MiB + 3])
def test_round_trip_sizes(pool_path, size):
    data = pattern(size, size)
    with Pool.create(pool_path, 64 * MiB) as pool:
        block = pool.alloc(max(size, 1) if size > DEFAULT_BLOCK_CAPACITY else DEFAULT_BLOCK_CAPACITY,
                           key=b"k")
        assert pool.append(block, data) == 0
        assert pool.read(block) == data
        out = bytearray(size)
        assert pool.read_into(block, out) == size
        assert out == data
        view = pool.view(block)
        assert view.readonly and view.nbytes == size and bytes(view) == data
        buf = pool.buffer(block)
        assert isinstance(buf, pa.Buffer) and buf.to_pybytes() == data
        del view, buf
        info = pool.info(block)
        assert (info.used, info.key, info.sealed) == (size, b"k", False)


def test_appends_accumulate_and_report_offsets(pool_path):
    parts = [pattern(n, n) for n in (10, 0, 4096, 333, 1 * MiB)]
    with Pool.create(pool_path, 32 * MiB) as pool:
        block = pool.alloc()
        offsets = [pool.append(block, p) for p in parts]
        assert offsets == [0, 10, 10, 4106, 4439]
        assert pool.read(block) == b"".join(parts)
        assert pool.read(block, 4106, 333) == parts[3]
        # any buffer-protocol object is accepted without a Python-level copy
        pool.append(block, memoryview(bytearray(b"xyz")))
        pool.append(block, pa.py_buffer(b"arrow"))
        assert pool.read(block)[-8:] == b"xyzarrow"


def test_block_larger_than_default_and_write_at_offset(pool_path):
    with Pool.create(pool_path, 64 * MiB) as pool:
        block = pool.alloc(10 * MiB)
        pool.write(block, 6 * MiB, b"tail")
        assert pool.info(block).used == 6 * MiB + 4
        pool.write(block, 0, b"head")
        assert pool.info(block).used == 6 * MiB + 4  # used only grows
        assert pool.read(block, 0, 4) == b"head" and pool.read(block, 6 * MiB, 4) == b"tail"


def test_write_past_capacity_is_refused_and_keeps_data(pool_path):
    with Pool.create(pool_path, 16 * MiB) as pool:
        block = pool.alloc(100)
        pool.append(block, b"a" * 60)
        with pytest.raises(PoolSizeError, match="exceeds the block's capacity of 100"):
            pool.append(block, b"b" * 41)
        with pytest.raises(PoolSizeError):
            pool.write(block, 101, b"")
        assert pool.read(block) == b"a" * 60
        with pytest.raises(PoolSizeError, match="published bytes"):
            pool.read(block, 50, 11)


def test_seal_checksum_and_immutability(pool_path):
    data = pattern(12345)
    with Pool.create(pool_path, 16 * MiB) as pool:
        block = pool.alloc()
        pool.append(block, data)
        pool.seal(block)
        pool.seal(block)  # idempotent
        info = pool.info(block)
        assert info.sealed and info.checksum == xxhash.xxh64_intdigest(data)
        with pytest.raises(BlockSealedError, match="sealed"):
            pool.append(block, b"x")
        pool.verify(block)
        assert pool.read(block) == data


def test_reopen_after_clean_close(pool_path):
    blocks = {}
    with Pool.create(pool_path, 64 * MiB) as pool:
        for i in range(20):
            block = pool.alloc(DEFAULT_BLOCK_CAPACITY if i % 2 else 5000, key=f"key-{i}".encode())
            pool.append(block, pattern(1000 + i * 97, i))
            if i % 3 == 0:
                pool.seal(block)
            blocks[block] = i
    with Pool.open(pool_path) as pool:
        assert pool.recovery == {"blocks_kept": 20, "freed_damaged": 0, "freed_unsealed": 0,
                                 "freed_retired": 0, "corrupt": 0}
        assert pool.corrupt_blocks == frozenset()
        assert sorted(pool.blocks()) == sorted(blocks)
        for block, i in blocks.items():
            info = pool.info(block)
            assert info.key == f"key-{i}".encode()
            assert info.sealed == (i % 3 == 0)
            assert pool.read(block) == pattern(1000 + i * 97, i)
        st = pool.stats()
        assert st["blocks"] == 20 and st["sealed_blocks"] == 7 and st["open_blocks"] == 13
        assert st["used"] == sum(1000 + i * 97 for i in range(20))
    check = subprocess.run(["pmempool", "check", "-v", pool_path], capture_output=True, text=True)
    assert check.returncode == 0 and "consistent" in check.stdout, check.stdout + check.stderr


def test_free_and_stats(pool_path):
    with Pool.create(pool_path, 64 * MiB) as pool:
        st0 = pool.stats()
        assert st0["capacity"] == 64 * MiB and st0["blocks"] == 0 and st0["used"] == 0
        a, b = pool.alloc(), pool.alloc(1000)
        pool.append(a, b"x" * 500)
        st = pool.stats()
        assert st["blocks"] == 2 and st["used"] == 500
        assert st["allocated"] == 2 * HEADER_SIZE + DEFAULT_BLOCK_CAPACITY + 1000
        assert st["free"] == st["capacity"] - st["allocated"]
        pool.free(a)
        assert pool.blocks() == [b] and len(pool) == 1 and a not in pool
        with pytest.raises(BlockNotFoundError):
            pool.read(a)
        with pytest.raises(BlockNotFoundError):
            pool.free(a)
        assert pool.stats()["used"] == 0


def test_default_block_fills_chunks_exactly(pool_path):
    """4 MiB blocks must not spill into a 17th 256 KiB chunk: 32 fit where 32 x 4 MiB of heap exists."""
    with Pool.create(pool_path, 160 * MiB) as pool:
        n = 0
        with pytest.raises(PoolFullError):
            while True:
                pool.alloc()
                n += 1
        # 160 MiB minus libpmemobj's metadata leaves room for 37 whole 4 MiB blocks (34 if they spilled)
        assert n >= 37


@pytest.mark.parametrize("bad", [0, 1, 8, 4095, 4096, 1 << 40, (1 << 64) - 1])
def test_bad_block_addresses(pool_path, bad):
    with Pool.create(pool_path, 16 * MiB) as pool:
        pool.alloc()
        for op in (pool.read, pool.info, pool.seal, pool.free, pool.view, pool.payload_offset):
            with pytest.raises(BlockNotFoundError):
                op(bad)


def test_errors_are_named(pool_path, tmp_path):
    with pytest.raises(PoolNotFoundError, match="does not exist"):
        Pool.open(pool_path)
    with pytest.raises(PoolSizeError, match="minimum"):
        Pool.create(pool_path, 1 * MiB)
    pool = Pool.create(pool_path, 16 * MiB)
    with pytest.raises(PoolExistsError):
        Pool.create(pool_path, 16 * MiB)
    with pytest.raises(BlockKeyError, match="longer than 192"):
        pool.alloc(10, key=b"k" * 193)
    with pytest.raises(PoolSizeError):
        pool.alloc(MAX_BLOCK_CAPACITY + 1)
    with pytest.raises(PoolSizeError, match="larger than the pool allows"):
        pool.alloc(32 * MiB)
    with pytest.raises(PoolFullError, match="is full"):
        pool.alloc(15 * MiB)
    pool.close()
    with pytest.raises(PoolClosedError):
        pool.alloc()
    other = str(tmp_path / "other.pool")
    subprocess.run(["pmempool", "create", "--layout=not-rpmp", "obj", "--size=16M", other], check=True)
    with pytest.raises(PoolLayoutError, match="not an RPMP pool"):
        Pool.open(other)
    junk = str(tmp_path / "junk.pool")
    with open(junk, "wb") as f:
        f.write(os.urandom(16 * MiB))
    with pytest.raises(PoolLayoutError):
        Pool.open(junk)


def test_pool_full_keeps_earlier_data(pool_path):
    with Pool.create(pool_path, 32 * MiB) as pool:
        written = {}
        with pytest.raises(PoolFullError, match="is full"):
            for i in range(100):
                block = pool.alloc(1 * MiB)
                pool.append(block, pattern(1 * MiB, i))
                pool.seal(block)
                written[block] = i
        assert len(written) > 10
        for block, i in written.items():
            pool.verify(block)
            assert pool.read(block) == pattern(1 * MiB, i)
        # freeing makes room again
        first = next(iter(written))
        pool.free(first)
        pool.alloc(1 * MiB)


def test_second_process_gets_locked_error(pool_path):
    with Pool.create(pool_path, 16 * MiB):
        code = textwrap.dedent(f"""
            from rpmp._pool import Pool, PoolLockedError
            try:
                Pool.open({pool_path!r})
            except PoolLockedError as e:
                print("LOCKED", e)
            """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.stdout.startswith("LOCKED") and "another process" in out.stdout, out.stderr


def test_second_process_reads_sealed_block_through_read_only_mapping(pool_path):
    data = pattern(3 * MiB + 11, 42)
    with Pool.create(pool_path, 32 * MiB) as pool:
        block = pool.alloc()
        pool.append(block, data)
        pool.seal(block)
        offset = pool.payload_offset(block)
        assert offset == block + HEADER_SIZE
        code = textwrap.dedent(f"""
            import mmap, sys, xxhash
            with open({pool_path!r}, "rb") as f:
                m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
                sys.stdout.write(xxhash.xxh64_hexdigest(m[{offset}:{offset + len(data)}]))
            """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout == xxhash.xxh64_hexdigest(data)
    # the same from this process, after close
    with open(pool_path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        assert m[offset:offset + len(data)] == data
        m.close()


def test_views_are_zero_copy_and_pin_the_pool(pool_path):
    with Pool.create(pool_path, 16 * MiB) as pool:
        block = pool.alloc()
        pool.append(block, b"0123456789")
        view = pool.view(block)
        buf = pool.buffer(block, 2, 4)
        assert bytes(buf) == b"2345"
        assert buf.address == pa.py_buffer(view).address + 2
        with pytest.raises(TypeError):
            view[0] = 1
        pool.write(block, 3, b"X")  # an overwrite inside the block shows through both views
        assert bytes(view) == b"012X456789" and bytes(buf) == b"2X45"
        with pytest.raises(PoolBusyError):
            pool.free(block)
        with pytest.raises(PoolBusyError):
            pool.close()
        del view, buf
        pool.free(block)


def test_unsealed_seal_required_block_is_freed_on_open(pool_path):
    with Pool.create(pool_path, 16 * MiB) as pool:
        done = pool.alloc(100, key=b"put/done", seal_required=True)
        pool.append(done, b"value")
        pool.seal(done)
        half = pool.alloc(100, key=b"put/half", seal_required=True)
        pool.append(half, b"val")
        appendable = pool.alloc(100, key=b"shuffle")
        pool.append(appendable, b"records")
    with Pool.open(pool_path) as pool:
        assert pool.recovery["freed_unsealed"] == 1 and pool.recovery["blocks_kept"] == 2
        assert {i.key: pool.read(i.id) for i in pool} == {b"put/done": b"value", b"shuffle": b"records"}


def test_damaged_header_is_freed_and_corrupt_payload_is_reported_on_open(pool_path):
    with Pool.create(pool_path, 16 * MiB) as pool:
        keep, damage, corrupt = (pool.alloc(1000, key=k) for k in (b"keep", b"damage", b"corrupt"))
        for b in (keep, damage, corrupt):
            pool.append(b, pattern(1000, b))
            pool.seal(b)
    flipped = bytearray(pattern(1000, corrupt))
    flipped[500] ^= 0xFF
    with open(pool_path, "r+b") as f:
        f.seek(damage + 40)  # inside the key: the header no longer matches its hdr_check
        f.write(b"Z")
        f.seek(corrupt + HEADER_SIZE + 500)  # a payload byte of a sealed block
        f.write(flipped[500:501])
    with Pool.open(pool_path) as pool:
        # the damaged header cannot say what it is: freed; the corrupt value is kept and named, so a
        # reader gets "corrupt", never a silent "not found"
        assert pool.recovery == {"blocks_kept": 2, "freed_damaged": 1, "freed_unsealed": 0,
                                 "freed_retired": 0, "corrupt": 1}
        assert pool.blocks() == sorted([keep, corrupt]) and pool.corrupt_blocks == frozenset([corrupt])
        assert pool.read(keep) == pattern(1000, keep)
        info = pool.info(corrupt)
        assert info.key == b"corrupt" and info.sealed
        assert info.checksum == xxhash.xxh64_intdigest(pattern(1000, corrupt))
        assert pool.read(corrupt) == bytes(flipped)
        with pytest.raises(BlockCorruptError, match="does not match its checksum"):
            pool.verify(corrupt)
        pool.verify(keep)
        pool.free(corrupt)  # the owner decides; once freed its address leaves the set
        assert pool.corrupt_blocks == frozenset() and pool.blocks() == [keep]
    with Pool.open(pool_path) as pool:
        assert pool.recovery == {"blocks_kept": 1, "freed_damaged": 0, "freed_unsealed": 0,
                                 "freed_retired": 0, "corrupt": 0}


def test_open_without_verify_keeps_corrupt_block_but_verify_catches_it(pool_path):
    with Pool.create(pool_path, 16 * MiB) as pool:
        block = pool.alloc(1000)
        pool.append(block, b"a" * 1000)
        pool.seal(block)
    with open(pool_path, "r+b") as f:
        f.seek(block + HEADER_SIZE)
        f.write(b"b")
    with Pool.open(pool_path, verify=False) as pool:
        assert pool.blocks() == [block]
        assert pool.recovery["corrupt"] == 0 and pool.corrupt_blocks == frozenset()  # not looked at
        with pytest.raises(BlockCorruptError, match="does not match its checksum"):
            pool.verify(block)


def test_reserve_flush_publish_receives_in_place(pool_path):
    data = pattern(300_000, 9)
    with Pool.create(pool_path, 16 * MiB) as pool:
        block = pool.alloc()
        pool.append(block, b"head")
        target = pool.reserve(block, 4, len(data))
        assert not target.readonly and pool.used(block) == 4
        target[: 100_000] = data[: 100_000]
        pool.flush(block, 4, 100_000)
        target[100_000:] = data[100_000:]
        assert pool.read(block) == b"head"  # nothing visible before publish
        pool.publish(block, 4, len(data))
        assert pool.used(block) == 4 + len(data) and pool.read(block, 4) == data
        with pytest.raises(PoolBusyError):
            pool.free(block)
        del target
        with pytest.raises(PoolSizeError, match="capacity"):
            pool.reserve(block, DEFAULT_BLOCK_CAPACITY - 10, 11)
        pool.seal(block)
        with pytest.raises(BlockSealedError):
            pool.reserve(block, 0, 1)


def test_reserved_but_unpublished_bytes_vanish_on_reopen(pool_path):
    with Pool.create(pool_path, 16 * MiB) as pool:
        block = pool.alloc()
        pool.append(block, b"kept")
        view = pool.reserve(block, 4, 6)
        view[:] = b"unseen"
        del view
    with Pool.open(pool_path) as pool:
        assert pool.read(block) == b"kept"


def test_read_and_view_lengths_out_of_range_are_size_errors(pool_path):
    """A huge or negative length is a PoolSizeError naming the range, not a MemoryError from allocating it
    first nor an OverflowError."""
    with Pool.create(pool_path, 16 * MiB) as pool:
        block = pool.alloc(100)
        pool.append(block, b"0123456789")
        for offset, length in ((0, 1 << 62), (0, (1 << 64) - 1), (0, -1), (5, 6), (10, 1), (3, -3)):
            with pytest.raises(PoolSizeError, match=f"read of {length} bytes at {offset} exceeds the block's 10 "
                                                      "published bytes"):
                pool.read(block, offset, length)
            with pytest.raises(PoolSizeError, match=f"view of {length} bytes at {offset} exceeds the block's 10"):
                pool.view(block, offset, length)
        with pytest.raises(PoolSizeError, match="offset 11 is past the block's 10 published bytes"):
            pool.read(block, 11)
        assert pool.read(block, 10) == b"" and pool.read(block, 4, 3) == b"456" and bytes(pool.view(block, 7)) == b"789"
        assert bytes(pool.view(block, 10, 0)) == b""


def test_offset_plus_length_that_wraps_is_refused_everywhere(pool_path):
    """offset + len past 2**64 wraps to a small number: every range check must still refuse it."""
    with Pool.create(pool_path, 16 * MiB) as pool:
        block = pool.alloc(100)
        pool.append(block, b"a" * 10)
        huge = (1 << 64) - 8
        with pytest.raises(PoolSizeError, match="write of 16 bytes at 18446744073709551608 exceeds"):
            pool.write(block, huge, b"b" * 16)
        for op in (pool.reserve, pool.flush, pool.publish):
            with pytest.raises(PoolSizeError, match="16 bytes at 18446744073709551608 exceed the block's capacity"):
                op(block, huge, 16)
            with pytest.raises(PoolSizeError, match=f"{huge} bytes at 16 exceed the block's capacity"):
                op(block, 16, huge)
        with pytest.raises(PoolSizeError, match="read of 16 bytes at 18446744073709551608 exceeds"):
            pool.read_into(block, bytearray(16), huge)
        assert pool.read(block) == b"a" * 10 and pool.used(block) == 10 and pool.stats()["used"] == 10


def test_a_forged_header_inside_a_payload_is_not_a_block(pool_path):
    """A tenant can write a perfectly valid-looking block header into its own payload; that address must
    not be accepted as a block (free() on it would hand libpmemobj a pointer it never allocated)."""
    with Pool.create(pool_path, 16 * MiB) as pool:
        block = pool.alloc(4096)
        head = struct.pack("<QIIQII", 0x314B4C42504D5052, 1, 0, 1000, 0, 0) + bytes(192)
        header = head + struct.pack("<QQQII", xxhash.xxh64_intdigest(head), 0, 0, 1, 0)
        assert len(header) == HEADER_SIZE
        pool.write(block, 1024, header)
        forged = block + HEADER_SIZE + 1024
        for op in (pool.read, pool.info, pool.seal, pool.free, pool.view, pool.verify, pool.used):
            with pytest.raises(BlockNotFoundError, match=f"no live block at {forged:#x}"):
                op(forged)
        with pytest.raises(BlockNotFoundError):
            pool.tx_write(forged, 0, b"x")
        assert pool.blocks() == [block]


@pytest.mark.parametrize("checked", [False, True])
@pytest.mark.parametrize("shift", [1, 8, 4095, -1, -8, -4095])
def test_write_and_read_from_an_overlapping_view_of_the_same_block(pool_path, shift, checked):
    """The source of a write (or the target of a read) may be a view of the very block: memmove semantics."""
    n = 2 * MiB
    data = pattern(n + 8192, 3)
    src = 4096
    expected = bytearray(data)
    expected[src + shift:src + shift + n] = data[src:src + n]
    with Pool.create(pool_path, 32 * MiB) as pool:
        block = pool.alloc(n + 8192, checked=checked)
        pool.write(block, 0, data)
        pool.write(block, src + shift, pool.view(block, src, n))
        assert pool.read(block) == expected
        if not checked:  # reserve() is for plain blocks
            target = pool.reserve(block, src + shift, n)
            pool.read_into(block, target, src)
            del target
            assert pool.read(block, src + shift, n) == bytes(expected[src:src + n])


def test_retired_block_keeps_its_bytes_for_readers_and_is_freed_by_a_crash(pool_path):
    """A block deleted while a zero-copy view reads it is retired: the view still reads the same bytes,
    the deletion is durable (the next open frees it), and free() once the view is gone releases it."""
    from rpmp._pool import BlockSealedError, PoolBusyError

    pool = Pool.create(pool_path, 16 << 20)
    a = pool.alloc(4096, b"S-old")
    pool.write(a, 0, b"old bytes")
    b = pool.alloc(4096, b"S-kept")
    pool.write(b, 0, b"kept")
    view = pool.view(a)
    with pytest.raises(PoolBusyError):
        pool.free(a)
    pool.retire(a)
    pool.retire(a)  # idempotent
    assert bytes(view) == b"old bytes"
    with pytest.raises(BlockSealedError):
        pool.seal(a)
    with pytest.raises(BlockSealedError):
        pool.write(a, 0, b"x")
    st = pool.stats()
    assert st["blocks"] == 2 and st["open_blocks"] == 1
    view.release()
    pool.free(a)
    assert pool.stats()["blocks"] == 1 and pool.stats()["open_blocks"] == 1
    c = pool.alloc(4096, b"S-crash")
    pool.retire(c)  # and the process dies before free(): simulated by closing
    pool.close()
    with Pool.open(pool_path) as again:
        assert again.recovery["freed_retired"] == 1
        assert [i.key for i in again] == [b"S-kept"]
        assert again.stats()["open_blocks"] == 1

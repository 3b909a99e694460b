"""Checked blocks and failure-atomic writes (Pool.tx_write, rpmp_block_tx_write): content, checksum, gap
zeroing, refusals, and corrupt checked blocks reported at open. The crash side is tests/test_crash_tx.py."""

import pytest
import xxhash

from rpmp._pool import (
    HEADER_SIZE,
    BlockCorruptError,
    BlockNotFoundError,
    BlockSealedError,
    Pool,
    PoolFullError,
    PoolSizeError,
)

MiB = 1 << 20
EMPTY_XXH64 = xxhash.xxh64_intdigest(b"")


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 131 + seed * 7 + (i >> 8)) & 0xFF for i in range(n))


def apply(model: bytearray, offset: int, data: bytes) -> None:
    if offset > len(model):
        model += bytes(offset - len(model))
    model[offset:offset + len(data)] = data


def test_checked_block_verifies_from_the_start_and_after_reopen(pool_path):
    with Pool.create(pool_path, 16 * MiB) as pool:
        block = pool.alloc(1000, key=b"A", checked=True)
        plain = pool.alloc(1000)
        info = pool.info(block)
        assert info.checked and not info.sealed and info.used == 0 and info.checksum == EMPTY_XXH64
        assert not pool.info(plain).checked
        pool.verify(block)
    with Pool.open(pool_path) as pool:
        assert pool.recovery == {"blocks_kept": 2, "freed_damaged": 0, "freed_unsealed": 0,
                                 "freed_retired": 0, "corrupt": 0}
        assert pool.info(block).checked
        pool.verify(block)


def test_tx_writes_append_overwrite_and_gap_keep_content_and_checksum(pool_path):
    writes = [(0, pattern(100, 1)), (100, pattern(50, 2)), (20, pattern(10, 3)),  # append, append, overwrite
              (400, pattern(7, 4)),  # gap of 250 bytes: zeros
              (140, pattern(300, 5)),  # over the end of the old bytes, the gap and past the end
              (0, b""), (447, b""),  # empty writes: at the start, at the end
              (600, b""),  # an empty write past the end still zero-fills up to it
              (4096 - 1, b"Z")]  # the last byte of the block
    with Pool.create(pool_path, 16 * MiB) as pool:
        block = pool.alloc(4096, checked=True)
        model = bytearray()
        for offset, data in writes:
            pool.tx_write(block, offset, data)
            apply(model, offset, data)
            info = pool.info(block)
            assert (info.used, info.checksum) == (len(model), xxhash.xxh64_intdigest(bytes(model)))
            assert pool.read(block) == model
            pool.verify(block)
        assert pool.stats()["used"] == 4096
        pool.seal(block)
        assert pool.info(block).checksum == xxhash.xxh64_intdigest(bytes(model))
        with pytest.raises(BlockSealedError, match="is sealed"):
            pool.tx_write(block, 0, b"x")
    with Pool.open(pool_path) as pool:
        assert pool.read(block) == model and pool.corrupt_blocks == frozenset()


def test_write_and_append_on_a_checked_block_keep_its_checksum(pool_path):
    with Pool.create(pool_path, 16 * MiB) as pool:
        block = pool.alloc(1000, checked=True)
        assert pool.append(block, b"hello ") == 0
        pool.write(block, 10, b"world")  # past the end: the gap is zeroed as in tx_write
        assert pool.append(block, b"!") == 15
        expected = b"hello \0\0\0\0world!"
        assert pool.read(block) == expected
        assert pool.info(block).checksum == xxhash.xxh64_intdigest(expected)
        pool.verify(block)


def test_zero_copy_writes_are_refused_on_a_checked_block(pool_path):
    with Pool.create(pool_path, 16 * MiB) as pool:
        block = pool.alloc(1000, checked=True)
        pool.tx_write(block, 0, b"abc")
        for op in (lambda: pool.reserve(block, 3, 10), lambda: pool.flush(block, 0, 3),
                   lambda: pool.publish(block, 3, 10)):
            with pytest.raises(BlockSealedError, match="is checked: zero-copy writes cannot keep its checksum"):
                op()
        assert pool.read(block) == b"abc"
        pool.verify(block)


def test_tx_write_range_errors(pool_path):
    with Pool.create(pool_path, 16 * MiB) as pool:
        block = pool.alloc(100, checked=True)
        pool.tx_write(block, 0, b"a" * 60)
        for offset, n in ((60, 41), (101, 0), (100, 1), ((1 << 64) - 1, 2), ((1 << 64) - 8, 16)):
            # (1 << 64) - 1 + 2 wraps to 1: a check of offset + len <= capacity would pass it
            with pytest.raises(PoolSizeError, match=f"write of {n} bytes at {offset} exceeds the block's "
                                                      "capacity of 100"):
                pool.tx_write(block, offset, b"b" * n)
            with pytest.raises(PoolSizeError, match="exceeds the block's capacity of 100"):
                pool.write(block, offset, b"b" * n)
        pool.tx_write(block, 100, b"")
        pool.tx_write(block, 99, b"c")
        assert pool.read(block) == b"a" * 60 + bytes(39) + b"c"
        pool.verify(block)
        with pytest.raises(BlockNotFoundError):
            pool.tx_write(block + 8, 0, b"x")
        both = pool.alloc(100, seal_required=True, checked=True)
        assert pool.info(both).checked and pool.info(both).seal_required


@pytest.mark.parametrize("checked", [True, False])
def test_gap_is_zeroed_over_an_earlier_tenants_bytes(pool_path, checked):
    """A block reuses pool memory that held another block's bytes: a write past the end must not let a read
    of the gap return them."""
    cap = 1 * MiB
    with Pool.create(pool_path, 16 * MiB) as pool:
        tenants = []
        with pytest.raises(PoolFullError):  # the whole heap gets a tenant's bytes
            while True:
                tenants.append(pool.alloc(cap, key=b"old"))
                pool.append(tenants[-1], b"\xab" * cap)
        for b in tenants:
            pool.free(b)
        block = pool.alloc(cap, key=b"new", checked=checked)
        with open(pool_path, "rb") as f:  # the earlier tenant's bytes are still there, past `used`
            f.seek(block + HEADER_SIZE)
            assert f.read(cap - 1) == b"\xab" * (cap - 1), "no stale bytes under the new block: proves nothing"
        pool.tx_write(block, cap - 1, b"\x01")
        data = pool.read(block)
        assert len(data) == cap and data == bytes(cap - 1) + b"\x01"
        if checked:
            assert pool.info(block).checksum == xxhash.xxh64_intdigest(data)
            pool.verify(block)


def test_open_checked_block_with_a_flipped_byte_is_reported(pool_path):
    with Pool.create(pool_path, 16 * MiB) as pool:
        good = pool.alloc(1000, key=b"good", checked=True)
        bad = pool.alloc(1000, key=b"bad", checked=True)
        plain = pool.alloc(1000, key=b"plain")  # no checksum to hold it to: never reported
        for b in (good, bad, plain):
            pool.tx_write(b, 0, b"x" * 500)
    with open(pool_path, "r+b") as f:
        for b in (bad, plain):
            f.seek(b + HEADER_SIZE + 499)
            f.write(b"y")
    with Pool.open(pool_path, verify=False) as pool:
        assert pool.recovery["corrupt"] == 0 and pool.corrupt_blocks == frozenset()
        with pytest.raises(BlockCorruptError, match=f"block {bad:#x} payload does not match its checksum"):
            pool.verify(bad)
        pool.verify(good)
        pool.verify(plain)
    with Pool.open(pool_path) as pool:
        assert pool.recovery == {"blocks_kept": 3, "freed_damaged": 0, "freed_unsealed": 0,
                                 "freed_retired": 0, "corrupt": 1}
        assert pool.corrupt_blocks == frozenset([bad])
        assert pool.read(bad) == b"x" * 499 + b"y"  # kept as it is: the owner reports it
        # a whole rewrite makes it consistent again (the checksum is recomputed over what is there)
        pool.tx_write(bad, 0, b"z" * 500)
        pool.verify(bad)


def test_tx_write_that_cannot_log_its_overwrite_fails_cleanly(pool_path):
    """Overwriting published bytes needs undo-log room in the pool; without it the write is refused and the
    block keeps its old content and checksum."""
    with Pool.create(pool_path, 32 * MiB) as pool:
        block = pool.alloc(4 * MiB, checked=True)
        old = bytes(range(256)) * (4 * MiB // 256)
        pool.tx_write(block, 0, old)
        filler = []
        for size in (1 * MiB, 64 << 10, 4096, 256):
            while True:
                try:
                    filler.append(pool.alloc(size))
                except PoolFullError:
                    break
        try:
            pool.tx_write(block, 0, b"\xee" * (4 * MiB))
        except PoolFullError as e:
            assert "no room to log a write of 4194304 bytes" in str(e)
            assert pool.read(block) == old
            assert pool.info(block).checksum == xxhash.xxh64_intdigest(old)
        else:
            pytest.fail("a 4 MiB undo log fit in a full pool")
        pool.verify(block)
        for b in filler:
            pool.free(b)
        pool.tx_write(block, 0, b"\xee" * (4 * MiB))
        assert pool.read(block) == b"\xee" * (4 * MiB)
        pool.verify(block)

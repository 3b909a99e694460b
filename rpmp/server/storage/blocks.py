"""The one block allocator over the pool, and the index of every live block's size.

The pool (libpmemobj) is the durable truth: a block's capacity, its published length (`used`) and its
key survive a crash there. `Blocks` keeps a copy of capacity, used and file offset per live block, built
from the pool at open and updated by every call that changes them, so that the hot paths (a push picks a
block with room, a fetch names file ranges) make no C call to learn a size. Every store (shuffles, values,
addresses) allocates, publishes and frees through here, which puts in one place the receive bound (how much
of the pool data still arriving may hold) and the deferred free of blocks zero-copy readers still pin.

Blocks moved to the disk tier keep being named by id (ids with `disk.SPILLED` set): the calls that read or
free a block send those to the `DiskTier`, so the stores need not know which tier holds a block. A spilled
block is immutable: its capacity is its length, and nothing is reserved, published or written into it.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from rpmp._pool import (
    BlockCorruptError,
    BlockInfo,
    BlockNotFoundError,
    Pool,
    PoolBusyError,
    PoolFullError,
    PoolSizeError,
)
from rpmp.server.contract import FileRange
from rpmp.server.storage.disk import DiskTier, is_spilled

log = logging.getLogger("rpmp.storage")

MAX_FRAME_FLOOR = 64 << 20  # one frame may always reserve this much (an ALLOC'd block's largest WRITE)


class StorageError(Exception):
    """A request the storage cannot serve; `kind` maps to a protocol error code."""

    def __init__(self, kind: str, message: str, wait: float | None = None):
        """`wait`: for "busy", how long the request may wait for room (None: the network's default)."""
        super().__init__(message)
        self.kind = kind
        self.wait = wait


@dataclass(slots=True)
class Block:
    capacity: int
    used: int  # published bytes, as the pool has them
    file_offset: int  # of the payload in the pool file


def _open_for_ranges(path: str) -> int | None:
    """The pool file, read-only, for sendfile(2) of FETCH ranges: only a regular file can be sent from (a pool
    on tmpfs or an fsdax mount, not a device-DAX)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


class Blocks:
    """Allocation, publication and freeing of pool blocks, with the index of their sizes."""

    def __init__(self, pool: Pool, path: str, on_room: Callable[[], None] | None = None,
                 disk: DiskTier | None = None):
        """`on_room` is told when room for data still arriving is given back (senders may wait for it);
        `disk`: the disk tier, if the node has one."""
        self.pool = pool
        self.path = path
        self.disk = disk
        # Told when data arriving finds the pool full; returns the error to answer with ("busy": wait for the
        # spiller to make room). None: POOL_FULL at once.
        self.on_full: Callable[[StorageError], StorageError] | None = None
        self.on_alloc: Callable[[], None] | None = None  # told after each allocation (the spiller's high mark)
        self.index: dict[int, Block] = {}
        self.pending_free: set[int] = set()  # retired blocks readers still pin: freed when released
        self.fd = _open_for_ranges(path)
        self.on_room = on_room
        self.receiving = 0  # bytes reserved for data parts still arriving
        capacity = pool.stats()["capacity"]
        self.max_receiving = capacity // 2
        # One frame may reserve at most this much: a few stalled senders must not take the whole bound.
        self.max_frame = min(self.max_receiving, max(MAX_FRAME_FLOOR, capacity // 16))

    # ---- the index --------------------------------------------------------------------------------
    def load(self, info: BlockInfo) -> None:
        """Index a block found in the pool at open."""
        self.index[info.id] = Block(info.capacity, info.used, info.payload_offset)

    def _disk_of(self, block: int) -> DiskTier | None:
        """The disk tier when `block` is one of its ids (`disk.SPILLED` set); None for a pool block."""
        if not is_spilled(block):
            return None
        assert self.disk is not None, f"block {block:#x} names a spill file, and this node has no disk tier"
        return self.disk

    def load_spilled(self, block: int) -> None:
        """Index a block of the disk tier (found at open, or just moved there)."""
        disk = self._disk_of(block)
        assert disk is not None
        extent = disk.extent(block)
        self.index[block] = Block(extent.length, extent.length, extent.body_offset)

    def capacity(self, block: int) -> int:
        return self.index[block].capacity

    def used(self, block: int) -> int:
        return self.index[block].used

    def room(self, block: int) -> int:
        b = self.index[block]
        return b.capacity - b.used

    def file_offset(self, block: int) -> int:
        return self.index[block].file_offset

    def key(self, block: int) -> bytes:
        """A block's key (the pool's, or the one its extent keeps)."""
        disk = self._disk_of(block)
        return disk.extent(block).key if disk is not None else self.pool.info(block).key

    def spill_path(self, block: int) -> str | None:
        """The spill file that holds a block moved to disk; None for a block in the pool."""
        disk = self._disk_of(block)
        return disk.path(block) if disk is not None else None

    # ---- allocation -------------------------------------------------------------------------------
    def alloc(self, capacity: int, key: bytes, seal_required: bool = False, checked: bool = False) -> int:
        try:
            block = self.pool.alloc(capacity, key, seal_required, checked)
        except PoolFullError as e:
            self.retry_frees()
            if not self.pending_free:
                raise StorageError("pool_full", str(e)) from None
            raise StorageError("pool_full", f"{e} ({len(self.pending_free)} blocks wait for readers)") from None
        except PoolSizeError as e:
            raise StorageError("bad_request", str(e)) from None
        info = self.pool.info(block)
        self.index[block] = Block(info.capacity, info.used, info.payload_offset)
        if self.on_alloc is not None:
            self.on_alloc()
        return block

    def when_full(self, e: StorageError) -> StorageError:
        """The error for data that found no room: `e`, or, when the pool is full and the disk tier can make
        room, "busy" (the frame waits)."""
        return self.on_full(e) if e.kind == "pool_full" and self.on_full is not None else e

    def free(self, block: int) -> None:
        """Free a block; one that zero-copy readers still hold is retired first (its deletion is durable at
        once: a crash can never bring it back, e.g. under a re-registered shuffle id) and freed later.
        A spilled block's free is durable after `sync_frees`."""
        self.index.pop(block, None)
        disk = self._disk_of(block)
        if disk is not None:
            if disk.free(block):
                self.pending_free.discard(block)
            else:
                self.pending_free.add(block)
            return
        try:
            self.pool.free(block)
            self.pending_free.discard(block)
        except PoolBusyError:
            if block not in self.pending_free:
                self.pool.retire(block)
                self.pending_free.add(block)
        except BlockNotFoundError:
            self.pending_free.discard(block)

    def retry_frees(self) -> int:
        """Free blocks whose deletion waited for readers or in-flight pushes; returns how many are left."""
        for block in list(self.pending_free):
            self.free(block)
        self.sync_frees()
        return len(self.pending_free)

    def sync_frees(self) -> None:
        """Make the frees of spilled blocks durable (pool frees are at once)."""
        if self.disk is not None and self.disk.dirty:
            self.disk.sync()

    # ---- bytes ------------------------------------------------------------------------------------
    def reserve(self, block: int, offset: int, length: int) -> memoryview:
        """Writable pool memory past the published end, for receiving straight into the pool."""
        return self.pool.reserve(block, offset, length)

    def publish(self, block: int, offset: int, length: int, flushed: bool = False) -> None:
        """Persist reserved bytes and make them visible (the pool's used = max(used, offset + length))."""
        self.pool.publish(block, offset, length, flushed)
        b = self.index[block]
        b.used = max(b.used, offset + length)

    def write(self, block: int, offset: int, data: bytes) -> None:
        self.pool.write(block, offset, data)
        b = self.index[block]
        b.used = max(b.used, offset + len(data))

    def tx_write(self, block: int, offset: int, data: memoryview) -> None:
        """One transaction: the bytes, a zero-filled gap past the old end, and the block's new checksum."""
        self.pool.tx_write(block, offset, data)
        b = self.index[block]
        b.used = max(b.used, offset + data.nbytes)

    def seal(self, block: int) -> None:
        self.pool.seal(block)

    def view(self, block: int, offset: int = 0, length: int | None = None) -> memoryview:
        """A zero-copy view of published bytes; it pins the block (a free waits) until released."""
        disk = self._disk_of(block)
        return disk.view(block, offset, length) if disk is not None else self.pool.view(block, offset, length)

    def range(self, block: int, offset: int, length: int) -> FileRange:
        """Published bytes as a range of the file that holds them (the pool's, or a spill file), which the
        network may send as they are."""
        disk = self._disk_of(block)
        if disk is not None:
            return FileRange(disk.view(block, offset, length), self.index[block].file_offset + offset,
                             disk.fd(block), disk=True)
        return FileRange(self.pool.view(block, offset, length), self.index[block].file_offset + offset, self.fd)

    def read(self, block: int, offset: int = 0) -> bytes:
        disk = self._disk_of(block)
        return disk.read(block, offset) if disk is not None else self.pool.read(block, offset)

    def verify(self, block: int) -> bool:
        """Whether a sealed or checked block's bytes match its checksum; thread-safe while a view pins it."""
        disk = self._disk_of(block)
        if disk is not None:
            return disk.verify(block)
        try:
            self.pool.verify(block)
            return True
        except BlockCorruptError:
            return False

    # ---- the receive bound ------------------------------------------------------------------------
    def begin_receive(self, length: int) -> None:
        """Data parts still arriving may hold at most half the pool, and one frame at most `max_frame` of it:
        slow or stalled senders (each also bounded in time by the network) must not be able to reserve all
        of it. Over the bound the frame waits for room ("busy"), the network holding it."""
        if length > self.max_frame:
            raise StorageError("pool_full", f"a data part of {length} bytes is more than one frame may reserve on "
                               f"this node ({self.max_frame} bytes of its {self.max_receiving * 2}-byte pool)")
        if self.receiving + length > self.max_receiving:
            raise StorageError("busy", f"{self.receiving} bytes of this node's pool are reserved for data still "
                               f"arriving; {length} more would exceed half the pool")
        self.receiving += length

    def received(self, length: int, notify: bool = True) -> None:
        """A reservation ended (committed or aborted): its room counts no more. `notify=False` for one that
        never got its block: telling waiters would wake the frame that just failed, again and again."""
        self.receiving -= length
        if notify and self.on_room is not None:
            self.on_room()

    def close(self) -> None:
        if self.disk is not None:
            self.disk.close()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self.pool.close()

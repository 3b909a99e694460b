"""The spiller: moves idle blocks from the pool to the disk tier, so that a shuffle larger than the pool
degrades to disk speed instead of failing.

Above the high mark (pool use as a fraction of its capacity) it moves whole blocks that no push holds,
the oldest shuffles' and full blocks first, in batches, until use is below the low mark. A push that finds
the pool full waits (the network holds its frame, up to `full_wait`) and wakes the spiller at once.

Shuffle blocks go first, then values (GET serves them from disk after). A value's pool checksum is checked
before it moves (a spill file's checksum is taken of what it is given: it must not bless damaged bytes);
records need no such check, as each carries its own XXH3 to the reader.

A batch is written by one thread (`DiskTier.append`: pwrite and one fdatasync) while the event loop
serves on; back on the loop, each block's records are pointed at its extent and the pool block is freed.
So a crash leaves every block in the pool, in a spill file, or in both (the restart keeps the pool's),
never in neither.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rpmp.server.storage import Storage, StorageError
from rpmp.server.storage.blocks import Blocks
from rpmp.server.storage.disk import DiskFullError, DiskTier, _File
from rpmp.server.storage.spill import PAGE, Extent

log = logging.getLogger("rpmp.storage")

BATCH_BYTES = 64 << 20  # one batch (one fdatasync) moves at most this much...
BATCH_SHARE = 8  # ...and at most 1/8 of the pool: room comes back a batch at a time and pushes above the high
# mark wait for it (a 64 MiB batch in a 128 MiB pool left 129 pushes waiting per 1 GB TeraSort); smaller batches
# cost an fdatasync each (4 MiB ones halved the spill rate). Pools of 512 MiB and more get 64 MiB batches.
TICK = 0.5  # seconds between looks at the pool's use when nothing wakes the spiller


class Spiller:
    def __init__(self, storage: Storage, high: float, low: float, full_wait: float):
        assert storage.disk is not None, "a spiller needs a disk tier"
        self.storage = storage
        self.disk: DiskTier = storage.disk
        self.high, self.low, self.full_wait = high, low, full_wait
        self.active = False  # above the high mark, and not yet below the low one
        self.urgent = False  # a push waits for room
        self.idle_warned = False
        self._wake: asyncio.Event | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="rpmp-spill")
        self.batch_bytes = max(4 << 20, min(BATCH_BYTES, storage.pool.stats()["capacity"] // BATCH_SHARE))
        storage.blocks.on_full = self.on_full
        storage.blocks.on_alloc = self.on_alloc

    def on_full(self, e: StorageError) -> StorageError:
        """A push found the pool full (`e` says what failed): it waits for room (busy) while the spiller makes
        some."""
        self.urgent = True
        self.kick()
        return StorageError("busy", f"{self.storage.full_message()} ({e})", wait=self.full_wait)

    def on_alloc(self) -> None:
        """A block was allocated: crossing the high mark wakes the spiller now, not at its next tick (at
        50 MB/s of pushes, the half-second tick let a 128 MiB pool fill from 85 % to full before it looked)."""
        if not self.active and self._use() >= self.high:
            self.kick()

    def kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _use(self) -> float:
        st = self.storage.pool.stats()
        return st["allocated"] / st["capacity"]

    def _wanted(self) -> bool:
        use = self._use()
        if use >= self.high:
            self.active = True
        elif use <= self.low:
            self.active = False
        return self.active or self.urgent

    async def run(self) -> None:
        self._wake = asyncio.Event()
        try:
            while True:
                try:
                    await asyncio.wait_for(self._wake.wait(), TICK)
                except TimeoutError:
                    pass
                self._wake.clear()
                while self._wanted():
                    moved = await self.batch()
                    self.urgent = False
                    if moved:
                        self.idle_warned = False
                        if self.storage.blocks.on_room is not None:  # pushes waiting for room try again
                            self.storage.blocks.on_room()
                        continue
                    if not self.idle_warned:
                        self.idle_warned = True
                        log.warning("%s; nothing more can be moved to disk now (no idle block, or no room)",
                                    self.storage.full_message().replace(" is full (", " is at ("))
                    break
        finally:
            self._executor.shutdown(wait=True)

    async def batch(self) -> int:
        """Move one batch of idle blocks to disk; returns how many moved."""
        shuffles, values, blocks = self.storage.shuffles, self.storage.values, self.storage.blocks
        room = self.disk.room()
        try:
            target = self.disk.target()
        except DiskFullError:
            return 0
        items: list[tuple[Any, Any, int, bytes, memoryview]] = []  # (store, token, block, key, view)
        total = 0
        candidates: Iterator[tuple[Any, Any, int]] = itertools.chain(
            ((shuffles, t, b) for t, b in shuffles.spill_candidates()),
            ((values, t, b) for t, b in values.spill_candidates()))
        for store, token, block in candidates:
            n = blocks.used(block)
            if total + n + 2 * PAGE > room:
                break
            items.append((store, token, block, store.take(token, block), blocks.view(block, 0, n)))
            total += n + 2 * PAGE
            if total >= self.batch_bytes:
                break
        if not items:
            return 0
        began = time.monotonic()
        try:
            extents = await asyncio.get_running_loop().run_in_executor(
                self._executor, _write, blocks, target,
                [(block, key, view, store is values) for store, _, block, key, view in items])
        except BaseException as e:  # a failed write, or the node stopping: the blocks stay in the pool
            for store, token, block, _, view in items:
                view.release()
                store.give_back(token, block)
            if not isinstance(e, OSError):
                raise
            self.disk.paused(target, e)
            return 0
        seconds = time.monotonic() - began
        for (store, token, block, _, view), extent in zip(items, extents, strict=True):
            view.release()  # before the pool block is freed: it need not wait for us
            if extent is None:  # a value whose pool bytes fail their checksum: quarantined, never moved
                values.quarantine(token, block)
                continue
            store.moved(token, block, self.disk.add(target, extent, seconds / len(items)))
        blocks.sync_frees()
        return len(items)


def _write(blocks: Blocks, target: _File, items: Sequence[tuple[int, bytes, memoryview, bool]]) -> list[Extent | None]:
    """The spiller thread's part: check what must be checked, then append the rest (one fdatasync)."""
    keep = [not check or blocks.verify(block) for block, _, _, check in items]
    written = iter(DiskTier.append(target, [(key, view) for (_, key, view, _), ok in zip(items, keep, strict=True)
                                            if ok]))
    return [next(written) if ok else None for ok in keep]

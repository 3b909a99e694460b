"""Storage: the node's data in its pool, and the in-memory indexes rebuilt from the pool at open.

One allocator and three stores over it, told apart by the first byte of each block's pool key, so that a
restart rebuilds everything from the pool alone (the pool's blocks are the only durable state of a node):

- `blocks.Blocks`: allocation, publication and (deferred) freeing of blocks, the index of their sizes, the
  receive bound, and the pool file ranges FETCH replies are sent from;
- `shuffles.ShuffleStore`: ``S`` blocks (a partition's records, merged) and ``M`` blocks (registrations);
- `values.ValueStore`: ``K`` blocks (the key-value API);
- `addresses.AddressStore`: ``A`` blocks (the address API) and ``W`` scratch blocks;
- `disk.DiskTier` (with spill directories): the blocks moved out of the pool into spill files, which a
  restart reads back too (`spiller.Spiller` moves them, off the event loop).

Everything here runs on the node's event-loop thread, without locks, except the checks documented as
thread-safe (they only read views the loop made). Pushes to one partition may be in flight on several
connections at once; each in-flight push holds an open block exclusively (its bytes are published in one
step when complete), so a half-received push can never be published by another.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

from rpmp._pool import DEFAULT_BLOCK_CAPACITY, Pool
from rpmp.server.storage.addresses import AddressStore
from rpmp.server.storage.blocks import Blocks, StorageError
from rpmp.server.storage.disk import DiskTier, SpilledInfo
from rpmp.server.storage.shuffles import Record, Run, Shuffle, ShuffleStore
from rpmp.server.storage.values import ValueStore

__all__ = ["Storage", "StorageError", "Record", "Run", "Shuffle"]

log = logging.getLogger("rpmp.storage")


class Storage:
    """The node's pool, its block allocator, and the shuffle, value and address stores over them."""

    def __init__(self, path: str, size: int, block_capacity: int = DEFAULT_BLOCK_CAPACITY, verify: bool = True,
                 name: str = "", on_room: Callable[[], None] | None = None, spill_dirs: Sequence[str] = (),
                 spill_size: int = 0, app_quota: int = 0):
        """`verify`: check every sealed block and record at open; `name`: the node's id (errors name the node
        that holds a bad copy); `on_room`: told when room for data still arriving is given back;
        `spill_dirs`, `spill_size`: the disk tier (none without directories); `app_quota`: payload bytes one app
        may hold on this node, both tiers together (0: no quota)."""
        self.pool = Pool.open_or_create(path, size, verify)
        self.path = path
        self.verify = verify
        self.disk = DiskTier(spill_dirs, spill_size, os.path.basename(path)) if spill_dirs else None
        self.name = name or path
        # Integrity counters (STATS "integrity"), shared by the stores.
        self.counters = {"corrupt_records": 0, "corrupt_values": 0, "corrupt_registrations": 0,
                         "lost_record_bytes": 0}
        self.blocks = Blocks(self.pool, path, on_room, self.disk)
        self.shuffles = ShuffleStore(self.blocks, self.name, block_capacity, verify, self.counters)
        self.shuffles.quota = app_quota
        self.values = ValueStore(self.blocks, self.name, self.counters)
        self.addresses = AddressStore(self.blocks, self.name, self.counters)
        self._rebuild()

    def _rebuild(self) -> None:
        """Index every block of the pool and hand it to the store its key's kind names (run once, at open)."""
        stores = {kind: store for store in (self.shuffles, self.values, self.addresses) for kind in store.KINDS}
        in_pool: set[bytes] = set()
        for info in self.pool:
            self.blocks.load(info)
            store = stores.get(info.key[:1])
            if store is None:
                log.warning("pool block %#x has an unknown key %r; left alone", info.id, info.key[:16])
                continue
            in_pool.add(info.key)
            store.load(info)
        damaged: set[int] = set()  # spilled blocks whose body fails its extent's checksum
        if self.disk is not None:
            self._load_disk(in_pool, damaged)
        self.shuffles.loaded()
        corrupt = set(self.pool.corrupt_blocks) | damaged  # blocks whose bytes changed while stopped
        self.values.loaded(corrupt)
        self.addresses.loaded(corrupt)

    def _load_disk(self, in_pool: set[bytes], damaged: set[int]) -> None:
        """Index the disk tier's blocks. One found in the pool too was being moved when the node stopped
        (its extent was durable, the pool block not yet freed): the pool copy is kept. One whose body fails
        its checksum has its records checked one by one as they are indexed (the bad ones are quarantined)."""
        assert self.disk is not None
        stores = {kind: store for store in (self.shuffles, self.values) for kind in store.KINDS}
        for block, key, intact in self.disk.open(self.verify):
            store = stores.get(key[:1])
            if key in in_pool or store is None:
                if store is None:
                    log.warning("spilled block %#x has a key %r no store takes; freed", block, key[:16])
                self.blocks.free(block)
                continue
            if intact:
                self.shuffles.intact_on_disk.add(block)
            else:
                damaged.add(block)
                log.error("spilled block %#x (%s) fails its checksum; its records are checked one by one",
                          block, self.disk.path(block))
            self.blocks.load_spilled(block)
            store.load(SpilledInfo(block, key))
        self.blocks.sync_frees()

    def full_message(self) -> str:
        """What a push that finds no room is told: the node, and both tiers' sizes and use."""
        st = self.pool.stats()
        text = (f"node {self.name}: pool {self.path} is full "
                f"({st['allocated'] >> 20} of {st['capacity'] >> 20} MiB in use)")
        if self.disk is None:
            return text + "; this node has no disk tier (--spill-dir)"
        d = self.disk
        size = f"{d.capacity >> 20} MiB" if d.capacity else "their file systems' free space"
        return (text + f"; disk tier {', '.join(d.dirs)}: {d.used >> 20} MiB spilled of {size}, "
                f"{d.room() >> 20} MiB left")

    @property
    def pending_free(self) -> set[int]:
        return self.blocks.pending_free

    def retry_frees(self) -> int:
        return self.blocks.retry_frees()

    def stats(self) -> dict[str, object]:
        return {"pool": {**self.pool.stats(), "path": self.path}, "apps": self.shuffles.stats(),
                "values": len(self.values.values), "addresses": len(self.addresses.addresses),
                "pending_free": len(self.blocks.pending_free), "orphaned_shuffles": len(self.shuffles.orphans),
                "receiving": self.blocks.receiving, "integrity": dict(self.counters),
                "spill": self.disk.stats() if self.disk is not None else None}

    def close(self) -> None:
        self.blocks.close()

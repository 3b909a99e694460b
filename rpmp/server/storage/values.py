"""Values of the key-value API (PUT/GET/DELETE): one sealed ``K`` block per value.

The block's key carries a version after the kind byte, so that a crash between sealing a new value and
freeing the old one keeps the newer at the next open. A value is checked against its block checksum
before it leaves; one that fails is quarantined until it is replaced or deleted.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from rpmp._pool import BlockInfo
from rpmp.server.storage.blocks import Blocks, StorageError
from rpmp.server.storage.disk import SpilledInfo, is_spilled

log = logging.getLogger("rpmp.storage")

KKEY = struct.Struct("<cQ")  # b"K", version; then the user's key


def _shown(key: bytes) -> bytes:
    """A stored key as its owner named it (a tenant's keys carry rpmp.auth's 9-byte prefix), cut for messages."""
    return (key[9:] if key[:1] == b"\x1f" and len(key) > 9 else key)[:40]


@dataclass(slots=True)
class PutReservation:
    """Room for one value: `view` is where the network receives it."""

    key: bytes
    block: int
    version: int
    length: int
    view: memoryview


class ValueStore:
    KINDS = (b"K",)

    def __init__(self, blocks: Blocks, name: str, counters: dict[str, int]):
        self.blocks = blocks
        self.name = name
        self.counters = counters
        self.values: dict[bytes, tuple[int, int]] = {}  # key -> (block, version)
        self.corrupt: set[int] = set()  # value blocks that failed their checksum
        self._version = 0

    def load(self, info: BlockInfo | SpilledInfo) -> None:
        _, version = KKEY.unpack_from(info.key)
        key = info.key[KKEY.size:]
        old = self.values.get(key)
        if old is not None:  # a crash between a PUT's seal and its old value's free
            stale = old[0] if old[1] < version else info.id
            self.blocks.free(stale)
            if stale == info.id:
                return
        self.values[key] = (info.id, version)
        self._version = max(self._version, version)

    def loaded(self, corrupt_blocks: set[int]) -> None:
        """Quarantine values the pool found damaged at open (sealed blocks whose bytes changed while stopped)."""
        for key, (block, _) in self.values.items():
            if block in corrupt_blocks:
                self._mark_corrupt(key, block)

    def reserve(self, key: bytes, length: int) -> PutReservation:
        self.blocks.begin_receive(length)
        try:
            self._version += 1
            block = self.blocks.alloc(length, KKEY.pack(b"K", self._version) + key, seal_required=True)
            return PutReservation(key, block, self._version, length, self.blocks.reserve(block, 0, length))
        except StorageError as e:
            self.blocks.received(length, notify=False)
            raise self.blocks.when_full(e) from None
        except BaseException:
            self.blocks.received(length, notify=False)
            raise

    def commit(self, res: PutReservation) -> None:
        """Publish and seal the new value, then free the old one: a crash in between keeps the newer."""
        res.view.release()
        self.blocks.received(res.length)
        self.blocks.publish(res.block, 0, res.length)
        self.blocks.seal(res.block)
        old = self.values.get(res.key)
        self.values[res.key] = (res.block, res.version)
        if old is not None:
            self.blocks.free(old[0])
            self.corrupt.discard(old[0])

    def abort(self, res: PutReservation) -> None:
        res.view.release()
        self.blocks.received(res.length)
        self.blocks.free(res.block)

    def get(self, key: bytes, check_up_to: int) -> tuple[int, memoryview, bool]:
        """The block and a zero-copy view of a value, and whether it was checked already: values up to
        `check_up_to` bytes are checked here, larger ones are left to the caller (`block_ok`)."""
        entry = self.values.get(key)
        if entry is None:
            raise StorageError("not_found", f"no value under key {_shown(key)!r}")
        block = entry[0]
        if block in self.corrupt:
            raise self._error(key, block)
        view = self.blocks.view(block)
        if view.nbytes > check_up_to:
            return block, view, False
        if not self.blocks.verify(block):
            view.release()
            raise self.quarantine(key, block)
        return block, view, True

    def block_ok(self, block: int) -> bool:
        """Whether a value's bytes match their checksum; thread-safe while a view pins the block."""
        return self.blocks.verify(block)

    def quarantine(self, key: bytes, block: int) -> StorageError:
        self._mark_corrupt(key, block)
        return self._error(key, block)

    def _mark_corrupt(self, key: bytes, block: int) -> None:
        if block in self.corrupt:
            return
        self.corrupt.add(block)
        self.counters["corrupt_values"] += 1
        log.error("CORRUPT value (key %r): block %#x (pool file offset %d) fails its checksum; quarantined",
                  key[:40], block, self.blocks.file_offset(block))

    def _error(self, key: bytes, block: int) -> StorageError:
        return StorageError("corrupt", f"the value under key {_shown(key)!r} fails its checksum on node {self.name} "
                            f"(block {block:#x}); it is quarantined until replaced or deleted")

    # ---- moving values to the disk tier ------------------------------------------------------------
    def spill_candidates(self) -> Iterator[tuple[bytes, int]]:
        """(key, block) of values in the pool that may move to disk (not empty, not quarantined)."""
        for key, (block, _) in list(self.values.items()):
            if not is_spilled(block) and block not in self.corrupt and self.blocks.used(block):
                yield key, block

    def take(self, key: bytes, block: int) -> bytes:
        return self.blocks.key(block)

    def give_back(self, key: bytes, block: int) -> None:
        """A value stays in the pool (nothing to undo: values are immutable)."""

    def moved(self, key: bytes, block: int, spilled: int) -> bool:
        """A value's bytes are durable on disk as `spilled`: it is served from there and its pool block freed.
        False (and `spilled` freed) when the value was replaced or deleted meanwhile."""
        entry = self.values.get(key)
        if entry is None or entry[0] != block:
            self.blocks.free(spilled)
            return False
        self.blocks.load_spilled(spilled)
        self.values[key] = (spilled, entry[1])
        self.blocks.free(block)
        return True

    def delete(self, key: bytes) -> None:
        entry = self.values.pop(key, None)
        if entry is None:
            raise StorageError("not_found", f"no value under key {_shown(key)!r}")
        self.blocks.free(entry[0])
        self.corrupt.discard(entry[0])

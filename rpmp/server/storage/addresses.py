"""Blocks of the address API (ALLOC/WRITE/READ/FREE): ``A`` blocks, and ``W`` scratch blocks.

Address blocks are "checked": every WRITE is one libpmemobj transaction (`Blocks.tx_write`) that also
zero-fills any gap past the published end and recomputes the block's checksum, so a crash leaves the old
or the new bytes, a READ never sees an earlier tenant's, and a READ can verify what it serves. A WRITE's
data part is received into a ``W`` scratch block first (the receive bound covers it), then copied in by
the transaction; scratch blocks found at open are freed: such a write never happened.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rpmp._pool import BlockInfo, PoolSizeError
from rpmp.server.storage.blocks import Blocks, StorageError

log = logging.getLogger("rpmp.storage")

MAX_ADDRESS_BLOCK = 64 << 20  # an ALLOC's largest size: every WRITE re-hashes the block, so keep that bounded


@dataclass(slots=True)
class WriteReservation:
    """Room for one WRITE's data: `view` (in the scratch block) is where the network receives it."""

    block: int  # the address block written
    offset: int
    length: int
    scratch: int
    view: memoryview


class AddressStore:
    KINDS = (b"A", b"W")

    def __init__(self, blocks: Blocks, name: str, counters: dict[str, int]):
        self.blocks = blocks
        self.name = name
        self.counters = counters
        # address -> its owner's tag (rpmp.auth.key_tag; b"" when allocated on a node running open or by @cluster),
        # stored in the block's key (b"A" + tag) so that it survives restarts
        self.addresses: dict[int, bytes] = {}
        self.corrupt: set[int] = set()  # address blocks that failed their checksum

    def load(self, info: BlockInfo) -> None:
        if info.key[:1] == b"A":
            self.addresses[info.id] = bytes(info.key[1:])
        else:  # a WRITE's data that was still arriving: the write never happened
            self.blocks.free(info.id)

    def loaded(self, corrupt_blocks: set[int]) -> None:
        for block in self.addresses.keys() & corrupt_blocks:
            self._mark_corrupt(block)

    def alloc(self, size: int, owner: bytes = b"") -> int:
        """A new block owned by the tenant whose tag is `owner` (b"": nobody's, as on a node running open)."""
        if not 1 <= size <= MAX_ADDRESS_BLOCK:
            raise StorageError("bad_request", f"ALLOC size {size} is not in 1..{MAX_ADDRESS_BLOCK}")
        block = self.blocks.alloc(size, b"A" + owner, checked=True)
        self.addresses[block] = owner
        return block

    def _address(self, address: int, owner: bytes | None = None) -> int:
        """`address` if it is an address block `owner` may use (None: anyone's, for a node running open and for
        @cluster); another tenant's block is NOT_FOUND, as one never allocated."""
        if address not in self.addresses or (owner is not None and self.addresses[address] != owner):
            raise StorageError("not_found", f"no block allocated at address {address:#x}")
        return address

    def reserve(self, address: int, offset: int, length: int, owner: bytes | None = None) -> WriteReservation:
        block = self._address(address, owner)
        capacity = self.blocks.capacity(block)
        if offset > capacity or length > capacity - offset:
            raise StorageError("bad_request", f"WRITE of {length} bytes at {offset} exceeds the {capacity} bytes "
                               f"allocated at {address:#x}")
        self.blocks.begin_receive(length)
        try:
            scratch = self.blocks.alloc(max(length, 1), b"W")
            return WriteReservation(block, offset, length, scratch, self.blocks.reserve(scratch, 0, length))
        except BaseException:
            self.blocks.received(length)
            raise

    def commit(self, res: WriteReservation) -> None:
        try:
            self._address(res.block)  # freed while the data arrived
            if res.block in self.corrupt:
                raise StorageError("corrupt", f"the block at {res.block:#x} fails its checksum on node {self.name}; "
                                   "free it")
            self.blocks.tx_write(res.block, res.offset, res.view)
        finally:
            self.abort(res)

    def abort(self, res: WriteReservation) -> None:
        res.view.release()
        self.blocks.received(res.length)
        self.blocks.free(res.scratch)

    def read(self, address: int, offset: int, length: int, owner: bytes | None = None) -> tuple[int, memoryview]:
        """The block and a view of the range; check the block with `block_ok` before it leaves."""
        block = self._address(address, owner)
        if block in self.corrupt:
            raise self._error(block)
        try:
            return block, self.blocks.view(block, offset, length)
        except PoolSizeError as e:
            raise StorageError("bad_request", str(e)) from None

    def block_ok(self, block: int) -> bool:
        return self.blocks.verify(block)

    def quarantine(self, block: int) -> StorageError:
        self._mark_corrupt(block)
        return self._error(block)

    def _mark_corrupt(self, block: int) -> None:
        if block in self.corrupt:
            return
        self.corrupt.add(block)
        self.counters["corrupt_values"] += 1
        log.error("CORRUPT address block %#x (pool file offset %d) fails its checksum; quarantined", block,
                  self.blocks.file_offset(block))

    def _error(self, block: int) -> StorageError:
        return StorageError("corrupt", f"the block at {block:#x} fails its checksum on node {self.name}; it is "
                            "quarantined until freed")

    def free(self, address: int, owner: bytes | None = None) -> None:
        self.blocks.free(self._address(address, owner))
        self.addresses.pop(address, None)
        self.corrupt.discard(address)

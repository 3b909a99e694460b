"""Storage: the node's data in the PMem pool, and the in-memory index rebuilt from it.

Three kinds of blocks, told apart by the first byte of their pool key, so that a restart can rebuild
everything from the pool alone (DESIGN decision 4):

- ``S`` shuffle blocks: the records of one reduce partition, appended as they arrive (server-side
  merge into 4 MiB blocks; a record larger than a block gets a block of its own size). Each record is
  self-describing (PROTOCOL.md "records"), so the index is rebuilt by parsing the blocks.
- ``M`` shuffle metadata: the registration (partition count, replicas, placement), one small block.
- ``K`` values of the key-value API, one sealed block per value; the key carries a version so that a
  crash between writing a new value and freeing the old one keeps the newer.
- ``A`` blocks of the address API (ALLOC/WRITE/READ/FREE).

Everything here runs on the node's event-loop thread: no locks. Pushes to one partition may be in
flight on several connections at once; each in-flight push holds an open block exclusively (its bytes
are published in one step when complete), so a half-received push can never be published by another.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from rpmp import _pool
from rpmp._pool import DEFAULT_BLOCK_CAPACITY, Pool, PoolBusyError

log = logging.getLogger("rpmp.storage")

RECORD = struct.Struct("<IIQIIQ")  # magic, map_index, attempt, seq, length, checksum
RECORD_MAGIC = 0x31474553  # "SEG1"
RECORD_HEADER = RECORD.size
SKEY = struct.Struct("<cIII")  # b"S", shuffle, partition, block seq; then the app name
MKEY = struct.Struct("<cI")  # b"M", shuffle; then the app name
MIN_BLOCK = 64 << 10  # a partition's first merge block; each next one doubles, up to the 4 MiB block
KKEY = struct.Struct("<cQ")  # b"K", version; then the user's key
META = struct.Struct("<II")  # partition count, replicas; then the placement bytes


class StorageError(Exception):
    """A request the storage cannot serve; `kind` maps to a protocol error code."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(slots=True)
class Record:
    block: int
    offset: int  # of the record header in the block
    map_index: int
    attempt: int
    seq: int
    length: int


@dataclass
class Partition:
    blocks: list[int] = field(default_factory=list)  # in allocation order
    records: list[Record] = field(default_factory=list)  # in publish order
    open: list[int] = field(default_factory=list)  # blocks with room, not held by an in-flight push
    seen: dict[tuple[int, int, int], Record] = field(default_factory=dict)  # (map_index, attempt, seq)
    counts: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # (map, attempt) -> [segs, bytes]
    next_seq: int = 0
    bytes: int = 0
    next_capacity: int = 0  # capacity of the partition's next merge block (grows from MIN_BLOCK)


@dataclass
class Shuffle:
    app: str
    shuffle: int
    num_partitions: int
    replicas: int
    placement: bytes  # opaque to storage: the controller's encoded placement
    meta_block: int = 0
    partitions: dict[int, Partition] = field(default_factory=dict)

    def part(self, p: int) -> Partition:
        part = self.partitions.get(p)
        if part is None:
            part = self.partitions[p] = Partition()
        return part


@dataclass(slots=True)
class Reservation:
    """Room for one incoming payload: `view` is where the network receives it."""

    kind: str  # "record", "put" or "write"
    block: int
    offset: int  # where the payload starts in the block
    length: int
    view: memoryview
    shuffle: Shuffle | None = None
    partition: int = 0
    ident: tuple[int, int, int] = (0, 0, 0)
    key: bytes = b""
    dedicated: bool = False


class Storage:
    """The node's pool plus the indexes over it."""

    def __init__(self, path: str, size: int, block_capacity: int = DEFAULT_BLOCK_CAPACITY, verify: bool = True):
        self.pool = Pool.open_or_create(path, size, verify)
        self.path = path
        self.block_capacity = block_capacity
        self.shuffles: dict[tuple[str, int], Shuffle] = {}
        self.values: dict[bytes, tuple[int, int]] = {}  # key -> (block, version)
        self.addresses: set[int] = set()
        self.pending_free: set[int] = set()
        self._kv_version = 0
        self._rebuild()

    # ---- recovery -------------------------------------------------------------------------------
    def _rebuild(self) -> None:
        """Rebuild every index from the pool's blocks (run once at open)."""
        shuffle_blocks: list[tuple[str, int, int, int, int]] = []
        for info in self.pool:
            kind = info.key[:1]
            if kind == b"M":
                _, sid = MKEY.unpack_from(info.key)
                app = info.key[MKEY.size:].decode()
                raw = self.pool.read(info.id)
                nparts, replicas = META.unpack_from(raw)
                sh = Shuffle(app, sid, nparts, replicas, raw[META.size:], meta_block=info.id)
                self.shuffles[(app, sid)] = sh
            elif kind == b"S":
                _, sid, p, seq = SKEY.unpack_from(info.key)
                shuffle_blocks.append((info.key[SKEY.size:].decode(), sid, p, seq, info.id))
            elif kind == b"K":
                _, version = KKEY.unpack_from(info.key)
                key = info.key[KKEY.size:]
                old = self.values.get(key)
                if old is not None:  # a crash between a PUT's seal and its old value's free
                    stale = old[0] if old[1] < version else info.id
                    self.pool.free(stale)
                    if stale == info.id:
                        continue
                self.values[key] = (info.id, version)
                self._kv_version = max(self._kv_version, version)
            elif kind == b"A":
                self.addresses.add(info.id)
            else:
                log.warning("pool block %#x has an unknown key %r; left alone", info.id, info.key[:16])
        for app, sid, p, seq, block in sorted(shuffle_blocks):
            sh = self.shuffles.get((app, sid))
            if sh is None:  # data of a shuffle whose registration did not survive: unreachable
                self._free(block)
                continue
            part = sh.part(p)
            part.blocks.append(block)
            part.next_seq = max(part.next_seq, seq + 1)
            self._index_block(part, block)
            capacity = self.pool.info(block).capacity
            if capacity <= self.block_capacity:
                part.next_capacity = max(part.next_capacity, min(self.block_capacity, 2 * capacity))
            if self.pool.used(block) + RECORD_HEADER < capacity:
                part.open.append(block)

    def _index_block(self, part: Partition, block: int) -> None:
        data = self.pool.view(block)
        try:
            pos, end = 0, len(data)
            while pos + RECORD_HEADER <= end:
                magic, m, a, s, n, _ = RECORD.unpack_from(data, pos)
                if magic != RECORD_MAGIC or pos + RECORD_HEADER + n > end:
                    log.error("block %#x: bad record at %d; the rest of the block is ignored", block, pos)
                    break
                self._add_record(part, Record(block, pos, m, a, s, n))
                pos += RECORD_HEADER + n
        finally:
            data.release()

    @staticmethod
    def _add_record(part: Partition, rec: Record) -> None:
        ident = (rec.map_index, rec.attempt, rec.seq)
        if ident in part.seen:
            return
        part.seen[ident] = rec
        part.records.append(rec)
        c = part.counts.setdefault((rec.map_index, rec.attempt), [0, 0])
        c[0] += 1
        c[1] += rec.length
        part.bytes += rec.length

    # ---- shuffles -------------------------------------------------------------------------------
    def register(self, app: str, sid: int, num_partitions: int, replicas: int, placement: bytes) -> Shuffle:
        """Record a shuffle's registration durably (idempotent: an existing one is returned as is)."""
        sh = self.shuffles.get((app, sid))
        if sh is not None:
            return sh
        raw = META.pack(num_partitions, replicas) + placement
        block = self._alloc(len(raw), MKEY.pack(b"M", sid) + app.encode(), seal_required=True)
        self.pool.write(block, 0, raw)
        self.pool.seal(block)
        sh = Shuffle(app, sid, num_partitions, replicas, placement, meta_block=block)
        self.shuffles[(app, sid)] = sh
        return sh

    def shuffle(self, app: str, sid: int) -> Shuffle | None:
        return self.shuffles.get((app, sid))

    def reserve_record(self, sh: Shuffle, p: int, map_index: int, attempt: int, seq: int, length: int,
                       checksum: int) -> Reservation:
        """Room for one pushed segment in partition p; the record header is written here already."""
        part = sh.part(p)
        total = RECORD_HEADER + length
        block, dedicated = None, False
        if total > self.block_capacity:
            block, dedicated = self._new_shuffle_block(sh, p, part, total), True
        else:
            for i, b in enumerate(part.open):
                if self.pool.used(b) + total <= self.pool.info(b).capacity:
                    block = part.open.pop(i)
                    break
            if block is None:
                # Small partitions must not cost 4 MiB each (2,000 partitions of tiny data would take
                # 8 GB): merge blocks start at MIN_BLOCK and double up to the full block size.
                cap = min(self.block_capacity, max(MIN_BLOCK, part.next_capacity, total))
                part.next_capacity = min(self.block_capacity, 2 * cap)
                block = self._new_shuffle_block(sh, p, part, cap)
        offset = self.pool.used(block)
        view = self.pool.reserve(block, offset, total)
        RECORD.pack_into(view, 0, RECORD_MAGIC, map_index, attempt, seq, length, checksum)
        return Reservation("record", block, offset + RECORD_HEADER, length, view[RECORD_HEADER:], shuffle=sh,
                           partition=p, ident=(map_index, attempt, seq), dedicated=dedicated)

    def _new_shuffle_block(self, sh: Shuffle, p: int, part: Partition, capacity: int) -> int:
        key = SKEY.pack(b"S", sh.shuffle, p, part.next_seq) + sh.app.encode()
        block = self._alloc(capacity, key)
        part.next_seq += 1
        part.blocks.append(block)
        return block

    def commit_record(self, res: Reservation, flushed: bool = False) -> bool:
        """Publish a received segment; False if it was a duplicate (then nothing is published)."""
        sh, part = res.shuffle, res.shuffle.part(res.partition)
        alive = self.shuffles.get((sh.app, sh.shuffle)) is sh
        dup = res.ident in part.seen
        res.view.release()
        if alive and not dup:
            start = res.offset - RECORD_HEADER
            self.pool.publish(res.block, start, RECORD_HEADER + res.length, flushed)
            m, a, s = res.ident
            self._add_record(part, Record(res.block, start, m, a, s, res.length))
        self._return_block(part, res.block, alive)
        return alive and not dup

    def abort(self, res: Reservation) -> None:
        """Drop a reservation: nothing of it is published."""
        res.view.release()
        if res.kind == "record":
            sh = res.shuffle
            self._return_block(sh.part(res.partition), res.block, self.shuffles.get((sh.app, sh.shuffle)) is sh)
        elif res.kind == "put":
            self._free(res.block)

    def _return_block(self, part: Partition, block: int, alive: bool) -> None:
        if not alive or block in self.pending_free:
            self._free(block)
        elif self.pool.used(block) + RECORD_HEADER < self.pool.info(block).capacity:
            part.open.append(block)

    def payload(self, sh: Shuffle, p: int, ident: tuple[int, int, int]) -> memoryview | None:
        """A zero-copy view of one stored segment's payload (for forwarding it to replicas)."""
        part = sh.partitions.get(p)
        rec = part.seen.get(ident) if part else None
        if rec is None:
            return None
        return self.pool.view(rec.block, rec.offset + RECORD_HEADER, rec.length)

    def select(self, sh: Shuffle, p: int, start_map: int = 0, end_map: int = 0xFFFFFFFF,
               attempts: Iterable[int] | None = None) -> list[tuple[memoryview, int, int]]:
        """Zero-copy views of the records of partition p that pass the filters, as contiguous runs.

        Returns (view, record count, offset of the run in the pool file) per run. Views pin their blocks
        until released (a delete waits).
        """
        part = sh.partitions.get(p)
        if part is None or not part.records:
            return []
        wanted = set(attempts) if attempts else None
        runs: list[list[int]] = []  # [block, start, end, records]
        for r in part.records:
            if not (start_map <= r.map_index < end_map) or (wanted is not None and r.attempt not in wanted):
                continue
            end = r.offset + RECORD_HEADER + r.length
            last = runs[-1] if runs else None
            if last is not None and last[0] == r.block and last[2] == r.offset:
                last[2] = end
                last[3] += 1
            else:
                runs.append([r.block, r.offset, end, 1])
        return [(self.pool.view(b, s, e - s), n, self.pool.payload_offset(b) + s) for b, s, e, n in runs]

    def partition_blocks(self, sh: Shuffle, p: int) -> tuple[list[tuple[int, int, int, bool]], int, int]:
        """(address, file offset, used, sealed) of each block of partition p, records, payload bytes."""
        part = sh.partitions.get(p)
        if part is None:
            return [], 0, 0
        out = [(b, self.pool.payload_offset(b), self.pool.used(b), False) for b in part.blocks]
        return out, len(part.records), part.bytes

    def map_counts(self, sh: Shuffle, p: int, map_index: int, attempt: int) -> tuple[int, int]:
        part = sh.partitions.get(p)
        c = part.counts.get((map_index, attempt)) if part else None
        return (c[0], c[1]) if c else (0, 0)

    def delete_shuffle(self, app: str, sid: int) -> int:
        """Free a shuffle's blocks (those pinned by a fetch in flight are freed when released)."""
        sh = self.shuffles.pop((app, sid), None)
        if sh is None:
            return 0
        blocks = [b for part in sh.partitions.values() for b in part.blocks] + [sh.meta_block]
        for b in blocks:
            self._free(b)
        return len(blocks)

    def delete_app(self, app: str) -> int:
        return sum(self.delete_shuffle(a, s) for a, s in list(self.shuffles) if a == app)

    # ---- key-value API --------------------------------------------------------------------------
    def reserve_put(self, key: bytes, length: int) -> Reservation:
        self._kv_version += 1
        block = self._alloc(length, KKEY.pack(b"K", self._kv_version) + key, seal_required=True)
        return Reservation("put", block, 0, length, self.pool.reserve(block, 0, length), key=key)

    def commit_put(self, res: Reservation) -> None:
        """Publish and seal the new value, then free the old one: a crash in between keeps the newer."""
        res.view.release()
        self.pool.publish(res.block, 0, res.length)
        self.pool.seal(res.block)
        old = self.values.get(res.key)
        self.values[res.key] = (res.block, KKEY.unpack_from(self.pool.info(res.block).key)[1])
        if old is not None:
            self._free(old[0])

    def get(self, key: bytes) -> memoryview:
        entry = self.values.get(key)
        if entry is None:
            raise StorageError("not_found", f"no value under key {key[:40]!r}")
        return self.pool.view(entry[0])

    def delete(self, key: bytes) -> None:
        entry = self.values.pop(key, None)
        if entry is None:
            raise StorageError("not_found", f"no value under key {key[:40]!r}")
        self._free(entry[0])

    # ---- address API ----------------------------------------------------------------------------
    def alloc(self, size: int) -> int:
        block = self._alloc(size, b"A")
        self.addresses.add(block)
        return block

    def _address(self, address: int) -> int:
        if address not in self.addresses:
            raise StorageError("not_found", f"no block allocated at address {address:#x}")
        return address

    def reserve_write(self, address: int, offset: int, length: int) -> Reservation:
        block = self._address(address)
        try:
            view = self.pool.reserve(block, offset, length)
        except _pool.PoolSizeError as e:
            raise StorageError("bad_request", str(e)) from None
        return Reservation("write", block, offset, length, view)

    def commit_write(self, res: Reservation) -> None:
        res.view.release()
        self.pool.publish(res.block, res.offset, res.length)

    def read(self, address: int, offset: int, length: int) -> memoryview:
        block = self._address(address)
        try:
            return self.pool.view(block, offset, length)
        except _pool.PoolSizeError as e:
            raise StorageError("bad_request", str(e)) from None

    def free(self, address: int) -> None:
        self._free(self._address(address))
        self.addresses.discard(address)

    # ---- blocks ---------------------------------------------------------------------------------
    def _alloc(self, capacity: int, key: bytes, seal_required: bool = False) -> int:
        try:
            return self.pool.alloc(capacity, key, seal_required)
        except _pool.PoolFullError as e:
            self.retry_frees()
            if not self.pending_free:
                raise StorageError("pool_full", str(e)) from None
            raise StorageError("pool_full", f"{e} ({len(self.pending_free)} blocks wait for readers)") from None
        except _pool.PoolSizeError as e:
            raise StorageError("bad_request", str(e)) from None

    def _free(self, block: int) -> None:
        try:
            self.pool.free(block)
            self.pending_free.discard(block)
        except PoolBusyError:
            self.pending_free.add(block)
        except _pool.BlockNotFoundError:
            self.pending_free.discard(block)

    def retry_frees(self) -> int:
        """Free blocks whose deletion waited for readers or in-flight pushes; returns how many are left."""
        for block in list(self.pending_free):
            self._free(block)
        return len(self.pending_free)

    def stats(self) -> dict:
        st = self.pool.stats()
        apps: dict[str, dict] = {}
        for (app, _sid), sh in self.shuffles.items():
            a = apps.setdefault(app, {"shuffles": 0, "bytes": 0, "records": 0})
            a["shuffles"] += 1
            a["bytes"] += sum(p.bytes for p in sh.partitions.values())
            a["records"] += sum(len(p.records) for p in sh.partitions.values())
        return {"pool": {**st, "path": self.path}, "apps": apps, "values": len(self.values),
                "addresses": len(self.addresses), "pending_free": len(self.pending_free)}

    def close(self) -> None:
        self.pool.close()

"""Storage: the node's data in the PMem pool, and the in-memory index rebuilt from it.

Three kinds of blocks, told apart by the first byte of their pool key, so that a restart can rebuild
everything from the pool alone (DESIGN decision 4):

- ``S`` shuffle blocks: the records of one reduce partition, appended as they arrive (server-side
  merge into 4 MiB blocks; a record larger than a block gets a block of its own size). Each record is
  self-describing (PROTOCOL.md "records"), so the index is rebuilt by parsing the blocks.
- ``M`` shuffle metadata: the registration (partition count, replicas, placement), in two small sealed
  blocks (copies 0 and 1): a flipped bit in one must not orphan every block of the shuffle.
- ``K`` values of the key-value API, one sealed block per value; the key carries a version so that a
  crash between writing a new value and freeing the old one keeps the newer.
- ``A`` blocks of the address API (ALLOC/WRITE/READ/FREE), checked blocks written by transactions;
  ``W`` scratch blocks a WRITE's data arrives in (freed at open: such a write never happened).

Every byte that leaves is checked first: FETCH records against their XXH3 (``find_corrupt``, which may run
on a worker thread because it only reads views the loop made), GET values against their block checksum. A
record or value that fails is quarantined: counted, logged with its block and offset, never served again.

Everything else here runs on the node's event-loop thread: no locks. Pushes to one partition may be in
flight on several connections at once; each in-flight push holds an open block exclusively (its bytes
are published in one step when complete), so a half-received push can never be published by another.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from rpmp import _pool
from rpmp import _wire as W
from rpmp._pool import DEFAULT_BLOCK_CAPACITY, Pool, PoolBusyError
from rpmp.protocol import RECORD_MAGIC

log = logging.getLogger("rpmp.storage")

RECORD = struct.Struct("<IIQIIQ")  # magic, map_index, attempt, seq, length, checksum
RECORD_HEADER = RECORD.size  # PROTOCOL.md "records": 32
MAGIC = struct.Struct("<I")
SKEY = struct.Struct("<cIII")  # b"S", shuffle, partition, block seq; then the app name
MKEY = struct.Struct("<cIB")  # b"M", shuffle, copy (0 or 1); then the app name
META_COPIES = 2
MIN_BLOCK = 64 << 10  # a partition's first merge block; each next one doubles, up to the 4 MiB block
PLACEMENT_CACHE = 16 << 10  # placements up to this size are kept in memory too
MAX_SHUFFLES = 100_000  # registered shuffles per node: each costs memory for its index
MAX_ADDRESS_BLOCK = 64 << 20  # an ALLOC's largest size: every WRITE re-hashes the block, so keep that bounded
KKEY = struct.Struct("<cQ")  # b"K", version; then the user's key
META = struct.Struct("<II")  # partition count, replicas; then the placement bytes


def _cacheable(placement: bytes) -> bytes | None:
    return placement if len(placement) <= PLACEMENT_CACHE else None


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
    checksum: int
    corrupt: bool = False  # failed its checksum on this node: quarantined, never served again


@dataclass(slots=True)
class Run:
    """Contiguous selected records of one block: `view` covers them (and pins the block) from `start`."""

    view: memoryview
    start: int  # offset of the run in its block
    file_offset: int  # of the run in the pool file (for sendfile)
    records: list[Record]


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
    cached_placement: bytes | None  # the controller's encoded placement, when small; else read from the pool
    meta_blocks: tuple[int, ...] = ()
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
    scratch: int = 0  # a WRITE's data arrives here first


class Storage:
    """The node's pool plus the indexes over it."""

    def __init__(self, path: str, size: int, block_capacity: int = DEFAULT_BLOCK_CAPACITY, verify: bool = True,
                 name: str = "", on_room: Callable[[], None] | None = None):
        """`name`: the node's id (errors name the node that holds a bad copy); `on_room`: told when room for
        data still arriving is given back (senders may be waiting for it)."""
        self.pool = Pool.open_or_create(path, size, verify)
        self.path = path
        self.name = name or path
        self.block_capacity = block_capacity
        self.verify_on_open = verify
        self.shuffles: dict[tuple[str, int], Shuffle] = {}
        self.values: dict[bytes, tuple[int, int]] = {}  # key -> (block, version)
        self.addresses: set[int] = set()
        self.pending_free: set[int] = set()
        self.corrupt_blocks: set[int] = set()  # values and address blocks that failed their checksum
        self.orphans: dict[tuple[str, int], list[int]] = {}  # blocks of a shuffle whose registration is damaged
        self.counters = {"corrupt_records": 0, "corrupt_values": 0, "corrupt_registrations": 0,
                         "lost_record_bytes": 0}
        self._kv_version = 0
        self.receiving = 0  # bytes reserved for data parts still arriving
        self.on_room = on_room
        capacity = self.pool.stats()["capacity"]
        self.max_receiving = capacity // 2
        # One frame may reserve at most this much: a few stalled senders must not take the whole bound.
        self.max_frame = min(self.max_receiving, max(MAX_ADDRESS_BLOCK, capacity // 16))
        self._rebuild()

    # ---- recovery -------------------------------------------------------------------------------
    def _rebuild(self) -> None:
        """Rebuild every index from the pool's blocks (run once at open)."""
        shuffle_blocks: list[tuple[str, int, int, int, int]] = []
        metas: dict[tuple[str, int], list[int]] = {}
        for info in self.pool:
            kind = info.key[:1]
            if kind == b"M":
                _, sid, _copy = MKEY.unpack_from(info.key)
                metas.setdefault((info.key[MKEY.size:].decode(), sid), []).append(info.id)
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
            elif kind == b"W":  # a WRITE's data that was still arriving: the write never happened
                self.pool.free(info.id)
            else:
                log.warning("pool block %#x has an unknown key %r; left alone", info.id, info.key[:16])
        for (app, sid), blocks in metas.items():
            self._load_registration(app, sid, blocks)
        for app, sid, p, seq, block in sorted(shuffle_blocks):
            sh = self.shuffles.get((app, sid))
            if sh is None:
                if (app, sid) in self.orphans:  # its registration is damaged: keep the data, serve none of it
                    self.orphans[(app, sid)].append(block)
                else:  # no registration at all: a delete was interrupted after it freed the registration
                    self._free(block)
                continue
            part = sh.part(p)
            part.blocks.append(block)
            part.next_seq = max(part.next_seq, seq + 1)
            self._index_block(sh, p, part, block)
            capacity = self.pool.info(block).capacity
            if capacity <= self.block_capacity:
                part.next_capacity = max(part.next_capacity, min(self.block_capacity, 2 * capacity))
            if self.pool.used(block) + RECORD_HEADER < capacity:
                part.open.append(block)
        for block in self.pool.corrupt_blocks:  # sealed or checked blocks whose bytes changed while stopped
            if block in self.addresses:
                self._mark_corrupt(block, "address block", f"{block:#x}")
        for key, (block, _) in self.values.items():
            if block in self.pool.corrupt_blocks:
                self._mark_corrupt(block, "value", f"key {key[:40]!r}")

    def _load_registration(self, app: str, sid: int, blocks: list[int]) -> None:
        """Take the first copy of a registration that verifies; with none, quarantine the shuffle's data."""
        for block in blocks:
            if self._verify_block(block):
                raw = self.pool.read(block)
                nparts, replicas = META.unpack_from(raw)
                self.shuffles[(app, sid)] = Shuffle(app, sid, nparts, replicas, _cacheable(raw[META.size:]),
                                                    meta_blocks=(block, *(b for b in blocks if b != block)))
                if len(blocks) < META_COPIES:
                    log.warning("shuffle %d of %s: %d of %d registration copies left", sid, app, len(blocks),
                                META_COPIES)
                return
        self.counters["corrupt_registrations"] += 1
        self.orphans[(app, sid)] = list(blocks)
        log.error("shuffle %d of %s: every copy of its registration (blocks %s) fails its checksum; its data "
                  "is kept but not served (readers use replicas) until the shuffle is deleted", sid, app,
                  ", ".join(f"{b:#x}" for b in blocks))

    def _verify_block(self, block: int) -> bool:
        try:
            self.pool.verify(block)
            return True
        except _pool.BlockCorruptError:
            return False

    def _index_block(self, sh: Shuffle, p: int, part: Partition, block: int) -> None:
        """Index the records of one block; a damaged record is quarantined, and skipped when its length
        can still be trusted (the next record starts right after it), else the rest of the block is lost."""
        data = self.pool.view(block)
        try:
            pos, end = 0, len(data)
            while pos + RECORD_HEADER <= end:
                magic, m, a, s, n, checksum = RECORD.unpack_from(data, pos)
                nxt = pos + RECORD_HEADER + n
                if magic == RECORD_MAGIC and nxt <= end:
                    rec = Record(block, pos, m, a, s, n, checksum)
                    if self.verify_on_open and W.xxh3(data[pos + RECORD_HEADER:nxt]) != checksum:
                        self._quarantine(sh, p, rec, "at open")
                    self._add_record(part, rec)
                    pos = nxt
                    continue
                resync = nxt <= end and (nxt == end or (nxt + RECORD_HEADER <= end and
                                                        MAGIC.unpack_from(data, nxt)[0] == RECORD_MAGIC))
                self.counters["corrupt_records"] += 1
                if resync:
                    log.error("shuffle %d of %s partition %d: block %#x: damaged record header at %d "
                              "(%d payload bytes); skipped", sh.shuffle, sh.app, p, block, pos, n)
                    self.counters["lost_record_bytes"] += n
                    pos = nxt
                    continue
                log.error("shuffle %d of %s partition %d: block %#x: damaged record at %d; the block's last "
                          "%d bytes are lost on this node (readers find the gap and use a replica)",
                          sh.shuffle, sh.app, p, block, pos, end - pos)
                self.counters["lost_record_bytes"] += end - pos
                break
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
        if len(self.shuffles) >= MAX_SHUFFLES:
            raise StorageError("pool_full", f"this node holds {len(self.shuffles)} shuffles already, its limit; "
                               "delete finished ones")
        raw = META.pack(num_partitions, replicas) + placement
        blocks: list[int] = []
        try:
            for copy in range(META_COPIES):
                block = self._alloc(len(raw), MKEY.pack(b"M", sid, copy) + app.encode(), seal_required=True)
                blocks.append(block)
                self.pool.write(block, 0, raw)
                self.pool.seal(block)
        except BaseException:
            for b in blocks:
                self._free(b)
            raise
        for b in self.orphans.pop((app, sid), ()):  # data of a damaged registration of the same id
            self._free(b)
        sh = Shuffle(app, sid, num_partitions, replicas, _cacheable(placement), meta_blocks=tuple(blocks))
        self.shuffles[(app, sid)] = sh
        return sh

    def shuffle(self, app: str, sid: int) -> Shuffle | None:
        return self.shuffles.get((app, sid))

    def placement(self, sh: Shuffle) -> bytes:
        """A shuffle's encoded placement: kept in memory when small, else read from its registration block
        (a table of 100k partitions is hundreds of KiB: registered shuffles must not pin that in DRAM)."""
        if sh.cached_placement is not None:
            return sh.cached_placement
        for block in sh.meta_blocks:
            if self._verify_block(block):
                return self.pool.read(block, META.size)
        raise StorageError("corrupt", f"every copy of the registration of shuffle {sh.shuffle} of {sh.app!r} "
                           f"fails its checksum on node {self.name}")

    def reserve_record(self, sh: Shuffle, p: int, map_index: int, attempt: int, seq: int, length: int,
                       checksum: int) -> Reservation:
        """Room for one pushed segment in partition p; the record header is written here already."""
        self._begin_receive(length)
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
        self.receiving += length
        return Reservation("record", block, offset + RECORD_HEADER, length, view[RECORD_HEADER:], shuffle=sh,
                           partition=p, ident=(map_index, attempt, seq), dedicated=dedicated)

    def _new_shuffle_block(self, sh: Shuffle, p: int, part: Partition, capacity: int) -> int:
        key = SKEY.pack(b"S", sh.shuffle, p, part.next_seq) + sh.app.encode()
        block = self._alloc(capacity, key)
        part.next_seq += 1
        part.blocks.append(block)
        return block

    def commit_record(self, res: Reservation, checksum: int, flushed: bool = False) -> bool:
        """Publish a received segment; False if it was a duplicate (then nothing is published)."""
        sh, part = res.shuffle, res.shuffle.part(res.partition)
        alive = self.shuffles.get((sh.app, sh.shuffle)) is sh
        dup = res.ident in part.seen
        res.view.release()
        self._received(res.length)
        if alive and not dup:
            start = res.offset - RECORD_HEADER
            self.pool.publish(res.block, start, RECORD_HEADER + res.length, flushed)
            m, a, s = res.ident
            self._add_record(part, Record(res.block, start, m, a, s, res.length, checksum))
        self._return_block(part, res.block, alive)
        return alive and not dup

    def abort(self, res: Reservation) -> None:
        """Drop a reservation: nothing of it is published."""
        res.view.release()
        self._received(res.length)
        if res.scratch:
            self._free(res.scratch)
        if res.kind == "record":
            sh = res.shuffle
            self._return_block(sh.part(res.partition), res.block, self.shuffles.get((sh.app, sh.shuffle)) is sh)
        elif res.kind == "put":
            self._free(res.block)

    def _return_block(self, part: Partition, block: int, alive: bool) -> None:
        if not alive or block in self.pending_free:
            self._free(block)
        elif self.pool.used(block) == 0:  # an aborted push left its new block empty: give the room back
            part.blocks.remove(block)
            self._free(block)
        elif self.pool.used(block) + RECORD_HEADER < self.pool.info(block).capacity:
            part.open.append(block)

    def payload(self, sh: Shuffle, p: int, ident: tuple[int, int, int]) -> memoryview | None:
        """A zero-copy view of one stored segment's payload (for forwarding it to replicas); it pins the block."""
        if self.shuffles.get((sh.app, sh.shuffle)) is not sh:
            return None
        part = sh.partitions.get(p)
        rec = part.seen.get(ident) if part else None
        if rec is None or rec.corrupt:
            return None
        return self.pool.view(rec.block, rec.offset + RECORD_HEADER, rec.length)

    def select(self, sh: Shuffle, p: int, start_map: int = 0, end_map: int = 0xFFFFFFFF,
               attempts: Iterable[int] | None = None) -> list[Run]:
        """The records of partition p that pass the filters, as contiguous runs of zero-copy views.

        The views pin their blocks until released (a delete waits). A quarantined record among them is
        StorageError("corrupt"): the reader must take the partition from a replica.
        """
        part = sh.partitions.get(p)
        if part is None or not part.records:
            return []
        wanted = set(attempts) if attempts else None
        spans: list[list] = []  # [block, start, end, records]
        for r in part.records:
            if not (start_map <= r.map_index < end_map) or (wanted is not None and r.attempt not in wanted):
                continue
            if r.corrupt:
                raise self._corrupt_error(sh, p, r)
            end = r.offset + RECORD_HEADER + r.length
            last = spans[-1] if spans else None
            if last is not None and last[0] == r.block and last[2] == r.offset:
                last[2] = end
                last[3].append(r)
            else:
                spans.append([r.block, r.offset, end, [r]])
        return [Run(self.pool.view(b, s, e - s), s, self.pool.payload_offset(b) + s, recs) for b, s, e, recs in spans]

    @staticmethod
    def find_corrupt(runs: list[Run]) -> list[Record]:
        """Records of `runs` whose bytes no longer match what was acknowledged (header or payload XXH3).

        Reads only the runs' views, so it may run on a worker thread while the loop goes on.
        """
        bad = []
        for run in runs:
            view = run.view
            for r in run.records:
                at = r.offset - run.start
                magic, m, a, s, n, checksum = RECORD.unpack_from(view, at)
                if (magic, m, a, s, n, checksum) != (RECORD_MAGIC, r.map_index, r.attempt, r.seq, r.length,
                                                     r.checksum) \
                        or W.xxh3(view[at + RECORD_HEADER:at + RECORD_HEADER + n]) != checksum:
                    bad.append(r)
        return bad

    def quarantine(self, sh: Shuffle, p: int, bad: list[Record]) -> StorageError:
        """Mark records that failed their check; returns the error to answer with."""
        for r in bad:
            self._quarantine(sh, p, r, "on read")
        return self._corrupt_error(sh, p, bad[0])

    def _quarantine(self, sh: Shuffle, p: int, r: Record, when: str) -> None:
        if r.corrupt:
            return
        r.corrupt = True
        self.counters["corrupt_records"] += 1
        log.error("CORRUPT record (%d, %d, %d) of shuffle %d of %s partition %d: block %#x bytes %d..%d (pool "
                  "file offset %d) fail their checksum %s; quarantined", r.map_index, r.attempt, r.seq, sh.shuffle,
                  sh.app, p, r.block, r.offset, r.offset + RECORD_HEADER + r.length,
                  self.pool.payload_offset(r.block) + r.offset, when)

    def _corrupt_error(self, sh: Shuffle, p: int, r: Record) -> StorageError:
        return StorageError("corrupt", f"record ({r.map_index}, {r.attempt}, {r.seq & 0x7FFFFFFF}) of shuffle "
                            f"{sh.shuffle} of {sh.app!r} partition {p} fails its checksum on node {self.name} "
                            f"(block {r.block:#x} offset {r.offset}); it is quarantined: read a replica")

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
        """Free a shuffle's blocks, registration first: a crash midway leaves only unregistered data, which
        the next open frees. Blocks pinned by a fetch in flight are freed when released."""
        sh = self.shuffles.pop((app, sid), None)
        if sh is None:
            orphans = self.orphans.pop((app, sid), [])
            for b in orphans:
                self._free(b)
            return len(orphans)
        blocks = [*sh.meta_blocks, *(b for part in sh.partitions.values() for b in part.blocks)]
        for b in blocks:
            self._free(b)
        return len(blocks)

    def delete_app(self, app: str) -> int:
        ids = {k for k in (*self.shuffles, *self.orphans) if k[0] == app}
        return sum(self.delete_shuffle(a, s) for a, s in ids)

    # ---- key-value API --------------------------------------------------------------------------
    def reserve_put(self, key: bytes, length: int) -> Reservation:
        self._begin_receive(length)
        self._kv_version += 1
        block = self._alloc(length, KKEY.pack(b"K", self._kv_version) + key, seal_required=True)
        res = Reservation("put", block, 0, length, self.pool.reserve(block, 0, length), key=key)
        self.receiving += length
        return res

    def commit_put(self, res: Reservation) -> None:
        """Publish and seal the new value, then free the old one: a crash in between keeps the newer."""
        res.view.release()
        self._received(res.length)
        self.pool.publish(res.block, 0, res.length)
        self.pool.seal(res.block)
        old = self.values.get(res.key)
        self.values[res.key] = (res.block, KKEY.unpack_from(self.pool.info(res.block).key)[1])
        if old is not None:
            self._free(old[0])
            self.corrupt_blocks.discard(old[0])

    def get(self, key: bytes, check_up_to: int) -> tuple[int, memoryview, bool]:
        """The block and a zero-copy view of a value, and whether it was checked already: values up to
        `check_up_to` bytes are checked here, larger ones are left to the caller (`block_ok`)."""
        entry = self.values.get(key)
        if entry is None:
            raise StorageError("not_found", f"no value under key {key[:40]!r}")
        block = entry[0]
        if block in self.corrupt_blocks:
            raise self._value_error(key, block)
        view = self.pool.view(block)
        if view.nbytes > check_up_to:
            return block, view, False
        try:
            self.pool.verify(block)
        except _pool.BlockCorruptError:
            view.release()
            raise self.quarantine_value(key, block) from None
        return block, view, True

    def block_ok(self, block: int) -> bool:
        """Whether a value's (or address block's) bytes match their checksum; thread-safe while a view pins it."""
        return self._verify_block(block)

    def quarantine_value(self, key: bytes, block: int) -> StorageError:
        self._mark_corrupt(block, "value", f"key {key[:40]!r}")
        return self._value_error(key, block)

    def _mark_corrupt(self, block: int, what: str, name: str) -> None:
        if block in self.corrupt_blocks:
            return
        self.corrupt_blocks.add(block)
        self.counters["corrupt_values"] += 1
        log.error("CORRUPT %s (%s): block %#x (pool file offset %d) fails its checksum; quarantined", what, name,
                  block, self.pool.payload_offset(block))

    def _value_error(self, key: bytes, block: int) -> StorageError:
        return StorageError("corrupt", f"the value under key {key[:40]!r} fails its checksum on node {self.name} "
                            f"(block {block:#x}); it is quarantined until replaced or deleted")

    def delete(self, key: bytes) -> None:
        entry = self.values.pop(key, None)
        if entry is None:
            raise StorageError("not_found", f"no value under key {key[:40]!r}")
        self._free(entry[0])
        self.corrupt_blocks.discard(entry[0])

    # ---- address API ----------------------------------------------------------------------------
    # Address blocks are "checked": every WRITE is one libpmemobj transaction (Pool.tx_write) that also
    # zero-fills any gap past the published end and recomputes the block's checksum, so a crash leaves the
    # old or the new bytes, a READ never sees an earlier tenant's, and a READ can verify what it serves.
    # The data part is received into a scratch pool block first (the receive bound covers it), then
    # copied in by the transaction.
    def alloc(self, size: int) -> int:
        if not 1 <= size <= MAX_ADDRESS_BLOCK:
            raise StorageError("bad_request", f"ALLOC size {size} is not in 1..{MAX_ADDRESS_BLOCK}")
        block = self._alloc(size, b"A", checked=True)
        self.addresses.add(block)
        return block

    def _address(self, address: int) -> int:
        if address not in self.addresses:
            raise StorageError("not_found", f"no block allocated at address {address:#x}")
        return address

    def reserve_write(self, address: int, offset: int, length: int) -> Reservation:
        block = self._address(address)
        capacity = self.pool.info(block).capacity
        if offset > capacity or length > capacity - offset:
            raise StorageError("bad_request", f"WRITE of {length} bytes at {offset} exceeds the {capacity} bytes "
                               f"allocated at {address:#x}")
        self._begin_receive(length)
        scratch = self._alloc(max(length, 1), b"W")
        res = Reservation("write", block, offset, length, self.pool.reserve(scratch, 0, length), scratch=scratch)
        self.receiving += length
        return res

    def commit_write(self, res: Reservation) -> None:
        try:
            self._address(res.block)  # freed while the data arrived
            if res.block in self.corrupt_blocks:
                raise StorageError("corrupt", f"the block at {res.block:#x} fails its checksum on node {self.name}; "
                                   "free it")
            self.pool.tx_write(res.block, res.offset, res.view)
        finally:
            res.view.release()
            self._received(res.length)
            self._free(res.scratch)

    def read(self, address: int, offset: int, length: int) -> tuple[int, memoryview]:
        """The block and a view of the range; check the block with `block_ok` before it leaves."""
        block = self._address(address)
        if block in self.corrupt_blocks:
            raise self._address_error(block)
        try:
            return block, self.pool.view(block, offset, length)
        except _pool.PoolSizeError as e:
            raise StorageError("bad_request", str(e)) from None

    def quarantine_address(self, block: int) -> StorageError:
        self._mark_corrupt(block, "address block", f"{block:#x}")
        return self._address_error(block)

    def _address_error(self, block: int) -> StorageError:
        return StorageError("corrupt", f"the block at {block:#x} fails its checksum on node {self.name}; it is "
                            "quarantined until freed")

    def free(self, address: int) -> None:
        self._free(self._address(address))
        self.addresses.discard(address)
        self.corrupt_blocks.discard(address)

    # ---- blocks ---------------------------------------------------------------------------------
    def _received(self, length: int) -> None:
        self.receiving -= length
        if self.on_room is not None:
            self.on_room()

    def _begin_receive(self, length: int) -> None:
        """Data parts still arriving may hold at most half the pool, and one frame at most `max_frame` of it:
        slow or stalled senders (each also bounded in time by the network) must not be able to reserve all
        of it. Over the bound the frame waits for room ("busy"), the network holding it."""
        if length > self.max_frame:
            raise StorageError("pool_full", f"a data part of {length} bytes is more than one frame may reserve on "
                               f"this node ({self.max_frame} bytes of its {self.max_receiving * 2}-byte pool)")
        if self.receiving + length > self.max_receiving:
            raise StorageError("busy", f"{self.receiving} bytes of this node's pool are reserved for data still "
                               f"arriving; {length} more would exceed half the pool")

    def _alloc(self, capacity: int, key: bytes, seal_required: bool = False, checked: bool = False) -> int:
        try:
            return self.pool.alloc(capacity, key, seal_required, checked)
        except _pool.PoolFullError as e:
            self.retry_frees()
            if not self.pending_free:
                raise StorageError("pool_full", str(e)) from None
            raise StorageError("pool_full", f"{e} ({len(self.pending_free)} blocks wait for readers)") from None
        except _pool.PoolSizeError as e:
            raise StorageError("bad_request", str(e)) from None

    def _free(self, block: int) -> None:
        """Free a block; one that zero-copy readers still hold is retired first (its deletion is durable at
        once: a crash can never bring it back, e.g. under a re-registered shuffle id) and freed later."""
        try:
            self.pool.free(block)
            self.pending_free.discard(block)
        except PoolBusyError:
            if block not in self.pending_free:
                self.pool.retire(block)
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
                "addresses": len(self.addresses), "pending_free": len(self.pending_free),
                "orphaned_shuffles": len(self.orphans), "receiving": self.receiving,
                "integrity": dict(self.counters)}

    def close(self) -> None:
        self.pool.close()

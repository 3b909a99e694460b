"""Shuffle data: the records of each reduce partition, merged into blocks as they arrive.

Two kinds of pool blocks, told apart by the first byte of their key:

- ``S`` blocks hold the records of one partition, appended as pushes complete (a partition's merge blocks
  start at 64 KiB and double up to the 4 MiB block; a record larger than a block gets a block of its
  own). Each record is self-describing (PROTOCOL.md "records", encoded by `rpmp._wire`), so the index is
  rebuilt at open by parsing the blocks.
- ``M`` blocks hold a shuffle's registration (partition count, replicas, placement), sealed, in two
  copies: a flipped bit in one must not orphan every block of the shuffle.

Every record that leaves is checked against its XXH3 first (`find_corrupt`, which may run on a worker
thread: it only reads views the loop made); one that fails is quarantined: counted, logged with its block
and offset, never served again (readers take the partition from a replica).
"""

from __future__ import annotations

import logging
import struct
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import attrgetter

from rpmp._pool import BlockInfo
from rpmp._wire import decode_register_resp, unpack_record_header, write_record_header, xxh3
from rpmp.auth import display_app
from rpmp.protocol import END_MAP_ALL, RECORD_HEADER_SIZE, Node, ProtocolError
from rpmp.server.contract import FileRange
from rpmp.server.storage.blocks import Blocks, StorageError
from rpmp.server.storage.disk import SpilledInfo, is_spilled

log = logging.getLogger("rpmp.storage")

SKEY = struct.Struct("<cIII")  # b"S", shuffle, partition, block seq; then the app name
MKEY = struct.Struct("<cIB")  # b"M", shuffle, copy (0 or 1); then the app name
META = struct.Struct("<II")  # partition count, replicas; then the placement bytes
LENGTH_FIELD = struct.Struct("<I")  # a damaged record header's claimed length (at byte 20): may it be skipped?
LENGTH_AT = 20
META_COPIES = 2
MIN_BLOCK = 64 << 10  # a partition's first merge block; each next one doubles, up to the full block
PLACEMENT_CACHE = 16 << 10  # placements up to this size are kept in memory (encoded and decoded)
MAX_SHUFFLES = 100_000  # registered shuffles per node: each costs memory for its index

Ident = tuple[int, int, int]  # (map_index, attempt, seq) of a segment
Placement = tuple[list[Node], list[tuple[int, ...]]]  # nodes, and per partition the indexes of its nodes


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

    @property
    def end(self) -> int:
        """Where the record ends in its block."""
        return self.offset + RECORD_HEADER_SIZE + self.length


@dataclass(slots=True)
class Run:
    """Contiguous selected records of one block: `range` covers them (its view pins the block) from `start`."""

    range: FileRange
    start: int  # offset of the run in its block
    records: list[Record]

    @property
    def view(self) -> memoryview:
        return self.range.view


@dataclass
class Partition:
    blocks: list[int] = field(default_factory=list)  # in allocation order
    records: list[Record] = field(default_factory=list)  # in publish order
    open: list[int] = field(default_factory=list)  # blocks with room, not held by an in-flight push
    seen: dict[Ident, Record] = field(default_factory=dict)
    counts: dict[tuple[int, int], list[int]] = field(default_factory=dict)  # (map, attempt) -> [segments, bytes]
    next_seq: int = 0
    bytes: int = 0
    next_capacity: int = 0  # capacity of the partition's next merge block (grows from MIN_BLOCK)
    # The records sorted by map index (publish order within a map) and their map indexes: what a map-range read
    # (AQE's skew split, the local shuffle reader) bisects instead of walking every record. Built by the first
    # such read after a change, dropped by the next add; derived from `records`, so a restart rebuilds it too.
    by_map: list[Record] | None = None
    map_keys: list[int] | None = None

    def add(self, rec: Record) -> None:
        ident = (rec.map_index, rec.attempt, rec.seq)
        if ident in self.seen:
            return
        self.seen[ident] = rec
        self.records.append(rec)
        self.by_map = None
        c = self.counts.setdefault((rec.map_index, rec.attempt), [0, 0])
        c[0] += 1
        c[1] += rec.length
        self.bytes += rec.length


@dataclass
class Shuffle:
    app: str
    shuffle: int
    num_partitions: int
    replicas: int
    meta_blocks: tuple[int, ...] = ()
    partitions: dict[int, Partition] = field(default_factory=dict)
    encoded_placement: bytes | None = None  # kept when small; else read from the registration block
    decoded_placement: Placement | None = None  # decoded on first use, when small

    def part(self, p: int) -> Partition:
        part = self.partitions.get(p)
        if part is None:
            part = self.partitions[p] = Partition()
        return part


@dataclass(slots=True)
class PushReservation:
    """Room for one pushed segment: `view` is where the network receives its payload."""

    shuffle: Shuffle
    partition: int
    ident: Ident
    block: int
    offset: int  # where the payload starts in the block
    length: int
    view: memoryview


class ShuffleStore:
    KINDS = (b"S", b"M")

    def __init__(self, blocks: Blocks, name: str, block_capacity: int, verify_on_open: bool, counters: dict[str, int]):
        self.blocks = blocks
        self.name = name  # the node's id: errors name the node that holds a bad copy
        self.block_capacity = block_capacity
        self.verify_on_open = verify_on_open
        self.counters = counters
        self.shuffles: dict[tuple[str, int], Shuffle] = {}
        self.orphans: dict[tuple[str, int], list[int]] = {}  # blocks of a shuffle whose registration is damaged
        self._loaded_meta: dict[tuple[str, int], list[int]] = {}
        self._loaded_data: list[tuple[str, int, int, int, int]] = []
        # What the last `select` looked at: index entries visited, payload bytes of the partition (the STATS
        # counters fetch_index_visited / fetch_partition_bytes; set once per select, not per record).
        self.last_visited = 0
        self.last_partition_bytes = 0
        self.busy: set[int] = set()  # blocks an in-flight push holds: never moved to disk meanwhile
        self.intact_on_disk: set[int] = set()  # spilled blocks found at open whose body checked whole
        self.quota = 0  # payload bytes one app may hold here, both tiers together (0: no quota)
        self.app_bytes: dict[str, int] = {}  # per app: payload bytes held and reserved for pushes in flight

    # ---- recovery -------------------------------------------------------------------------------
    def load(self, info: BlockInfo | SpilledInfo) -> None:
        """Note a block found at open; `loaded` indexes them once all are known."""
        if info.key[:1] == b"M":
            _, sid, _copy = MKEY.unpack_from(info.key)
            self._loaded_meta.setdefault((info.key[MKEY.size:].decode(), sid), []).append(info.id)
        else:
            _, sid, p, seq = SKEY.unpack_from(info.key)
            self._loaded_data.append((info.key[SKEY.size:].decode(), sid, p, seq, info.id))

    def loaded(self) -> None:
        for (app, sid), metas in self._loaded_meta.items():
            self._load_registration(app, sid, metas)
        for app, sid, p, seq, block in sorted(self._loaded_data):
            sh = self.shuffles.get((app, sid))
            if sh is None:
                if (app, sid) in self.orphans:  # its registration is damaged: keep the data, serve none of it
                    self.orphans[(app, sid)].append(block)
                else:  # no registration at all: a delete was interrupted after it freed the registration
                    self.blocks.free(block)
                continue
            part = sh.part(p)
            part.blocks.append(block)
            part.next_seq = max(part.next_seq, seq + 1)
            self._index_block(sh, p, part, block)
            capacity = self.blocks.capacity(block)
            if capacity <= self.block_capacity:
                part.next_capacity = max(part.next_capacity, min(self.block_capacity, 2 * capacity))
            if self.blocks.room(block) > RECORD_HEADER_SIZE:
                part.open.append(block)
        self._loaded_meta, self._loaded_data = {}, []
        for (app, _), sh in self.shuffles.items():
            self.app_bytes[app] = self.app_bytes.get(app, 0) + sum(part.bytes for part in sh.partitions.values())

    def _load_registration(self, app: str, sid: int, metas: list[int]) -> None:
        """Take the first copy of a registration that verifies; with none, quarantine the shuffle's data."""
        for block in metas:
            if self.blocks.verify(block):
                raw = self.blocks.read(block)
                nparts, replicas = META.unpack_from(raw)
                self.shuffles[(app, sid)] = Shuffle(app, sid, nparts, replicas,
                                                    meta_blocks=(block, *(b for b in metas if b != block)),
                                                    encoded_placement=_cacheable(raw[META.size:]))
                if len(metas) < META_COPIES:
                    log.warning("shuffle %d of %s: %d of %d registration copies left", sid, app, len(metas),
                                META_COPIES)
                return
        self.counters["corrupt_registrations"] += 1
        self.orphans[(app, sid)] = list(metas)
        log.error("shuffle %d of %s: every copy of its registration (blocks %s) fails its checksum; its data "
                  "is kept but not served (readers use replicas) until the shuffle is deleted", sid, app,
                  ", ".join(f"{b:#x}" for b in metas))

    def _index_block(self, sh: Shuffle, p: int, part: Partition, block: int) -> None:
        """Index the records of one block; a damaged record is quarantined, and skipped when its length
        can still be trusted (the next record starts right after it), else the rest of the block is lost."""
        data = self.blocks.view(block)
        # A spilled block whose whole body matched its extent's checksum needs no check record by record.
        verify = self.verify_on_open and block not in self.intact_on_disk
        try:
            pos, end = 0, len(data)
            while pos + RECORD_HEADER_SIZE <= end:
                nxt = pos + RECORD_HEADER_SIZE + LENGTH_FIELD.unpack_from(data, pos + LENGTH_AT)[0]
                header = _header(data, pos) if nxt <= end else None
                if header is not None:
                    m, a, s, n, checksum = header
                    rec = Record(block, pos, m, a, s, n, checksum)
                    if verify and xxh3(data[pos + RECORD_HEADER_SIZE:nxt]) != checksum:
                        self._quarantine(sh, p, rec, "at open")
                    part.add(rec)
                    pos = nxt
                    continue
                self.counters["corrupt_records"] += 1
                if nxt <= end and (nxt == end or _header(data, nxt) is not None):
                    log.error("shuffle %d of %s partition %d: block %#x: damaged record header at %d "
                              "(%d payload bytes); skipped", sh.shuffle, sh.app, p, block, pos,
                              nxt - pos - RECORD_HEADER_SIZE)
                    self.counters["lost_record_bytes"] += nxt - pos - RECORD_HEADER_SIZE
                    pos = nxt
                    continue
                log.error("shuffle %d of %s partition %d: block %#x: damaged record at %d; the block's last "
                          "%d bytes are lost on this node (readers find the gap and use a replica)",
                          sh.shuffle, sh.app, p, block, pos, end - pos)
                self.counters["lost_record_bytes"] += end - pos
                break
        finally:
            data.release()

    # ---- registrations --------------------------------------------------------------------------
    def register(self, app: str, sid: int, num_partitions: int, replicas: int, placement: bytes) -> Shuffle:
        """Record a shuffle's registration durably (idempotent: an existing one is returned as is)."""
        sh = self.shuffles.get((app, sid))
        if sh is not None:
            return sh
        if len(self.shuffles) >= MAX_SHUFFLES:
            raise StorageError("pool_full", f"this node holds {len(self.shuffles)} shuffles already, its limit; "
                               "delete finished ones")
        raw = META.pack(num_partitions, replicas) + placement
        metas: list[int] = []
        try:
            for copy in range(META_COPIES):
                block = self.blocks.alloc(len(raw), MKEY.pack(b"M", sid, copy) + app.encode(), seal_required=True)
                metas.append(block)
                self.blocks.write(block, 0, raw)
                self.blocks.seal(block)
        except BaseException:
            for b in metas:
                self.blocks.free(b)
            raise
        for b in self.orphans.pop((app, sid), ()):  # data of a damaged registration of the same id
            self.blocks.free(b)
        sh = Shuffle(app, sid, num_partitions, replicas, meta_blocks=tuple(metas),
                     encoded_placement=_cacheable(placement))
        self.shuffles[(app, sid)] = sh
        return sh

    def get(self, app: str, sid: int) -> Shuffle | None:
        return self.shuffles.get((app, sid))

    def placement(self, sh: Shuffle) -> bytes:
        """A shuffle's encoded placement: kept in memory when small, else read from its registration block
        (a table of 100k partitions is hundreds of KiB: registered shuffles must not pin that in DRAM)."""
        if sh.encoded_placement is not None:
            return sh.encoded_placement
        for block in sh.meta_blocks:
            if self.blocks.verify(block):
                return self.blocks.read(block, META.size)
        raise StorageError("corrupt", f"every copy of the registration of shuffle {sh.shuffle} of "
                           f"{display_app(sh.app)!r} fails its checksum on node {self.name}")

    def replica_nodes(self, sh: Shuffle, p: int) -> list[Node]:
        """The nodes that hold partition p (its placement row, in preference order, first `replicas`): decoded
        once per shuffle when its placement is small, rather than on every replicated push."""
        table = sh.decoded_placement
        if table is None:
            _, nodes, prefs = decode_register_resp(self.placement(sh), sh.num_partitions)
            table = (nodes, prefs)
            if sh.encoded_placement is not None:
                sh.decoded_placement = table
        nodes, prefs = table
        return [nodes[i] for i in prefs[p][:sh.replicas]]

    # ---- pushes ---------------------------------------------------------------------------------
    def reserve(self, sh: Shuffle, p: int, map_index: int, attempt: int, seq: int, length: int,
                checksum: int) -> PushReservation:
        """Room for one pushed segment in partition p; the record header is written here already."""
        held = self.app_bytes.get(sh.app, 0)
        if self.quota and held + length > self.quota:
            raise StorageError("quota", f"app {display_app(sh.app)!r} holds {held} bytes on node {self.name}; {length} "
                               f"more would exceed its quota of {self.quota} bytes (delete finished shuffles)")
        self.blocks.begin_receive(length)
        try:
            part = sh.part(p)
            total = RECORD_HEADER_SIZE + length
            if total > self.block_capacity:
                block = self._new_block(sh, p, part, total)
            else:
                block = self._block_with_room(sh, p, part, total)
            offset = self.blocks.used(block)
            view = self.blocks.reserve(block, offset, total)
        except StorageError as e:
            self.blocks.received(length, notify=False)
            raise self.blocks.when_full(e) from None
        except BaseException:
            self.blocks.received(length, notify=False)
            raise
        self.busy.add(block)
        self.app_bytes[sh.app] = held + length
        write_record_header(view, 0, map_index, attempt, seq, length, checksum)
        return PushReservation(sh, p, (map_index, attempt, seq), block, offset + RECORD_HEADER_SIZE, length,
                               view[RECORD_HEADER_SIZE:])

    def _block_with_room(self, sh: Shuffle, p: int, part: Partition, total: int) -> int:
        for i, b in enumerate(part.open):
            if self.blocks.room(b) >= total:
                return part.open.pop(i)
        # Small partitions must not cost 4 MiB each (2,000 partitions of tiny data would take 8 GB): merge
        # blocks start at MIN_BLOCK and double up to the full block size.
        cap = min(self.block_capacity, max(MIN_BLOCK, part.next_capacity, total))
        part.next_capacity = min(self.block_capacity, 2 * cap)
        while True:
            try:
                return self._new_block(sh, p, part, cap)
            except StorageError as e:
                # A merge block's size is a wish, the record's is the need: the allocator may have no run of
                # `cap` bytes while smaller ones are free (free space is not contiguous), so halve down to it.
                if e.kind != "pool_full" or cap <= max(total, MIN_BLOCK):
                    raise
                cap = max(total, MIN_BLOCK, cap // 2)

    def _new_block(self, sh: Shuffle, p: int, part: Partition, capacity: int) -> int:
        block = self.blocks.alloc(capacity, SKEY.pack(b"S", sh.shuffle, p, part.next_seq) + sh.app.encode())
        part.next_seq += 1
        part.blocks.append(block)
        return block

    def commit(self, res: PushReservation, checksum: int, flushed: bool = False) -> bool:
        """Publish a received segment; False if it was a duplicate (then nothing is published)."""
        sh, part = res.shuffle, res.shuffle.part(res.partition)
        alive = self.shuffles.get((sh.app, sh.shuffle)) is sh
        dup = res.ident in part.seen
        res.view.release()
        self.blocks.received(res.length)
        self.busy.discard(res.block)
        if dup or not alive:  # nothing is published: the app's reservation is given back
            self._unreserve(sh.app, res.length)
        if alive and not dup:
            start = res.offset - RECORD_HEADER_SIZE
            self.blocks.publish(res.block, start, RECORD_HEADER_SIZE + res.length, flushed)
            m, a, s = res.ident
            part.add(Record(res.block, start, m, a, s, res.length, checksum))
        self._return_block(part, res.block, alive)
        return alive and not dup

    def _unreserve(self, app: str, n: int) -> None:
        left = self.app_bytes.get(app, 0) - n
        if left > 0:
            self.app_bytes[app] = left
        else:
            self.app_bytes.pop(app, None)

    def abort(self, res: PushReservation) -> None:
        """Drop a reservation: nothing of it is published."""
        self._unreserve(res.shuffle.app, res.length)
        res.view.release()
        self.blocks.received(res.length)
        self.busy.discard(res.block)
        sh = res.shuffle
        self._return_block(sh.part(res.partition), res.block, self.shuffles.get((sh.app, sh.shuffle)) is sh)

    def _return_block(self, part: Partition, block: int, alive: bool) -> None:
        if not alive or block in self.blocks.pending_free:
            self.blocks.free(block)
        elif self.blocks.used(block) == 0:  # an aborted push left its new block empty: give the room back
            part.blocks.remove(block)
            self.blocks.free(block)
        elif self.blocks.room(block) > RECORD_HEADER_SIZE:
            part.open.append(block)

    def payload(self, sh: Shuffle, p: int, ident: Ident) -> memoryview | None:
        """A zero-copy view of one stored segment's payload (for forwarding it to replicas); it pins the block."""
        if self.shuffles.get((sh.app, sh.shuffle)) is not sh:
            return None
        part = sh.partitions.get(p)
        rec = part.seen.get(ident) if part else None
        if rec is None or rec.corrupt:
            return None
        return self.blocks.view(rec.block, rec.offset + RECORD_HEADER_SIZE, rec.length)

    def map_counts(self, sh: Shuffle, p: int, map_index: int, attempt: int) -> tuple[int, int]:
        part = sh.partitions.get(p)
        c = part.counts.get((map_index, attempt)) if part else None
        return (c[0], c[1]) if c else (0, 0)

    # ---- reads ----------------------------------------------------------------------------------
    def select(self, sh: Shuffle, p: int, start_map: int = 0, end_map: int = 0xFFFFFFFF,
               attempts: Iterable[int] | None = None) -> list[Run]:
        """The records of partition p that pass the filters, as contiguous runs of pool file ranges.

        The ranges pin their blocks until released (a delete waits). A quarantined record among them is
        StorageError("corrupt"): the reader must take the partition from a replica.
        """
        part = sh.partitions.get(p)
        self.last_visited = self.last_partition_bytes = 0
        if part is None or not part.records:
            return []
        records = part.records
        if start_map > 0 or end_map < END_MAP_ALL:  # a map range: only its records are looked at
            if part.by_map is None or part.map_keys is None:
                part.by_map = sorted(records, key=_MAP_INDEX)
                part.map_keys = [r.map_index for r in part.by_map]
            lo = bisect_left(part.map_keys, start_map)
            records = part.by_map[lo:bisect_left(part.map_keys, end_map, lo)]
        self.last_visited, self.last_partition_bytes = len(records), part.bytes
        wanted = set(attempts) if attempts else None
        spans: list[tuple[int, int, list[Record]]] = []  # (block, start, records): records back to back
        end = 0  # where the last span ends in its block
        for r in records:
            if wanted is not None and r.attempt not in wanted:
                continue
            if r.corrupt:
                raise self._corrupt_error(sh, p, r)
            if spans and spans[-1][0] == r.block and end == r.offset:
                spans[-1][2].append(r)
            else:
                spans.append((r.block, r.offset, [r]))
            end = r.end
        return [Run(self.blocks.range(b, s, recs[-1].end - s), s, recs) for b, s, recs in spans]

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
                if _header(view, at) != (r.map_index, r.attempt, r.seq, r.length, r.checksum) \
                        or xxh3(view[at + RECORD_HEADER_SIZE:at + RECORD_HEADER_SIZE + r.length]) != r.checksum:
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
        log.error("CORRUPT record (%d, %d, %d) of shuffle %d of %s partition %d: block %#x bytes %d..%d (offset "
                  "%d of %s) fail their checksum %s; quarantined", r.map_index, r.attempt, r.seq, sh.shuffle,
                  sh.app, p, r.block, r.offset, r.end, self.blocks.file_offset(r.block) + r.offset,
                  self.blocks.spill_path(r.block) or "the pool file", when)

    def _corrupt_error(self, sh: Shuffle, p: int, r: Record) -> StorageError:
        return StorageError("corrupt", f"record ({r.map_index}, {r.attempt}, {r.seq & 0x7FFFFFFF}) of shuffle "
                            f"{sh.shuffle} of {display_app(sh.app)!r} partition {p} fails its checksum on node "
                            f"{self.name} (block {r.block:#x} offset {r.offset}); it is quarantined: read a replica")

    def partition_blocks(self, sh: Shuffle, p: int) -> tuple[list[tuple[int, int, int, bool, int]], int, int,
                                                             list[str]]:
        """What a reader on this host needs to read partition p straight out of the files that hold it:
        (address, file offset, used, sealed, file) of each block, records, payload bytes, and the spill files
        the blocks name (file 0 is the pool file, k > 0 the k-th spill file of the list)."""
        part = sh.partitions.get(p)
        if part is None:
            return [], 0, 0, []
        files: dict[str, int] = {}
        out = []
        for b in part.blocks:
            path = self.blocks.spill_path(b)
            f = 0 if path is None else files.setdefault(path, len(files) + 1)
            out.append((b, self.blocks.file_offset(b), self.blocks.used(b), path is not None, f))
        return out, len(part.records), part.bytes, list(files)

    # ---- deletes --------------------------------------------------------------------------------
    def delete(self, app: str, sid: int) -> int:
        """Free a shuffle's blocks, registration first: a crash midway leaves only unregistered data, which
        the next open frees. Blocks pinned by a fetch in flight are freed when released."""
        sh = self.shuffles.pop((app, sid), None)
        if sh is None:
            orphans = self.orphans.pop((app, sid), [])
            for b in orphans:
                self.blocks.free(b)
            return len(orphans)
        blocks = [*sh.meta_blocks, *(b for part in sh.partitions.values() for b in part.blocks)]
        self._unreserve(app, sum(part.bytes for part in sh.partitions.values()))
        for b in blocks:
            self.blocks.free(b)
        self.blocks.sync_frees()  # a delete of spilled data is durable before it is acknowledged
        return len(blocks)

    def delete_app(self, app: str) -> int:
        ids = {k for k in (*self.shuffles, *self.orphans) if k[0] == app}
        return sum(self.delete(a, s) for a, s in ids)

    # ---- moving blocks to the disk tier ----------------------------------------------------------
    def spill_candidates(self) -> Iterator[tuple[tuple[Shuffle, int], int]]:
        """((shuffle, partition), block) of pool blocks that may move to disk: not held by a push in flight,
        with data. The oldest shuffles first (the likeliest to be finished), full blocks before those that
        still have room (pushes would fill those next)."""
        later: list[tuple[tuple[Shuffle, int], int]] = []
        for sh in list(self.shuffles.values()):
            for p, part in list(sh.partitions.items()):
                for b in part.blocks:
                    if is_spilled(b) or b in self.busy or self.blocks.used(b) == 0:
                        continue
                    if b in part.open and self.blocks.room(b) > MIN_BLOCK:
                        later.append(((sh, p), b))
                    else:
                        yield (sh, p), b
        for (sh, p), b in later:
            if b in sh.part(p).blocks and b not in self.busy:
                yield (sh, p), b

    def take(self, where: tuple[Shuffle, int], block: int) -> bytes:
        """Hold a block for moving to disk: pushes no longer add to it. Returns its pool key."""
        part = where[0].part(where[1])
        if block in part.open:
            part.open.remove(block)
        return self.blocks.key(block)

    def give_back(self, where: tuple[Shuffle, int], block: int) -> None:
        """A block that could not be moved takes pushes again."""
        sh, p = where
        if self.shuffles.get((sh.app, sh.shuffle)) is sh and block in sh.part(p).blocks \
                and self.blocks.room(block) > RECORD_HEADER_SIZE:
            sh.part(p).open.append(block)

    def moved(self, where: tuple[Shuffle, int], block: int, spilled: int) -> bool:
        """A block's bytes are durable in the disk tier as `spilled`: its records point there from now on and
        the pool block is freed. False (and `spilled` is freed) when the shuffle was deleted meanwhile."""
        sh, p = where
        part = sh.partitions.get(p)
        if self.shuffles.get((sh.app, sh.shuffle)) is not sh or part is None or block not in part.blocks:
            self.blocks.free(spilled)
            return False
        self.blocks.load_spilled(spilled)
        part.blocks[part.blocks.index(block)] = spilled
        for r in part.records:
            if r.block == block:
                r.block = spilled
        self.blocks.free(block)
        return True


    def stats(self) -> dict[str, dict[str, int]]:
        apps: dict[str, dict[str, int]] = {}
        for (app, _sid), sh in self.shuffles.items():
            a = apps.setdefault(app, {"shuffles": 0, "bytes": 0, "records": 0, "spilled_bytes": 0})
            a["shuffles"] += 1
            a["bytes"] += sum(p.bytes for p in sh.partitions.values())
            a["records"] += sum(len(p.records) for p in sh.partitions.values())
            a["spilled_bytes"] += sum(self.blocks.used(b) for p in sh.partitions.values() for b in p.blocks
                                      if is_spilled(b))
        return apps


_MAP_INDEX = attrgetter("map_index")


def _cacheable(placement: bytes) -> bytes | None:
    return placement if len(placement) <= PLACEMENT_CACHE else None


def _header(buf: memoryview, at: int) -> tuple[int, int, int, int, int] | None:
    """The record header at `at` (the codec's reading of it), or None where it is damaged."""
    try:
        return unpack_record_header(buf, at)
    except ProtocolError:
        return None

"""The disk tier: spill files in one or more directories, and the ids of the blocks moved into them.

A block moved to disk becomes one extent of a spill file (`spill.SpillFile`) and gets a new id with the
`SPILLED` bit set (file number and page of the extent in the other bits), so that the stores keep naming
blocks by id and `Blocks` sends each id to its tier. Extents are written by the spiller's thread
(`append`) and published on the event loop (`add`); everything else runs on the loop.

Files are named ``<pool file name>.<number>.spill`` so a node finds its own after a restart; new extents
go to the directories in turn, each into its current file until that holds `MAX_FILE_BYTES`, then a new
one. A file none of whose extents is live any more is deleted (a restart starts new files: appends never
follow a tail a crash may have torn).

Freeing an extent punches its pages out of the file. An extent a reader still maps is first retired
(only its header page is punched: a scan no longer finds it, as a retired pool block is never brought
back) and freed once the mapping is released, so a delete is durable when it is acknowledged.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from rpmp.server.storage.spill import PAGE, Extent, SpillFile, SpillFileError

log = logging.getLogger("rpmp.storage")

SPILLED = 1 << 62  # a block id with this bit names an extent of a spill file, not a pool block
FILE_SHIFT = 40  # id = SPILLED | file number << FILE_SHIFT | extent offset in pages
MAX_FILE_BYTES = 1 << 30  # a spill file takes new extents until it is this long
FREE_SPACE_FLOOR = 256 << 20  # without a --spill-size, leave this much of a directory's file system free
ENOSPC_PAUSE = 5.0  # seconds a directory that ran out of space is not written to


@dataclass(frozen=True, slots=True)
class SpilledInfo:
    """What the stores' `load` reads of a block found in the disk tier at open (a pool block's BlockInfo)."""

    id: int
    key: bytes


def is_spilled(block: int) -> bool:
    return block & SPILLED != 0


class DiskFullError(Exception):
    """No directory of the disk tier has room for what is to be spilled."""


@dataclass(eq=False, slots=True)
class _File:
    number: int
    dir: str
    spill: SpillFile
    live: int = 0  # extents not freed


@dataclass(eq=False, slots=True)
class _Spilled:
    file: _File
    extent: Extent
    mapping: mmap.mmap | None = None
    retired: bool = False  # header punched; the body waits for its readers


class DiskTier:
    """The spill files of one node: where extents are written, the live ones, and their mappings."""

    file_mode = 0o600  # of new spill files (the node sets --pool-mode): who may map them reads every tenant's data

    def __init__(self, dirs: Sequence[str], capacity: int, stem: str):
        """`capacity`: bytes the files may hold together (0: what the file systems have, less a floor);
        `stem`: the pool file's name, which names this node's spill files."""
        if not dirs:
            raise ValueError("a disk tier needs at least one directory")
        self.dirs = [os.path.abspath(d) for d in dirs]
        self.capacity = capacity
        self.stem = stem
        self.files: dict[int, _File] = {}
        self.current: dict[str, _File] = {}  # per directory: the file new extents go to
        self.extents: dict[int, _Spilled] = {}
        self.mapped: set[int] = set()  # ids whose extent is mapped now
        self.dirty: set[_File] = set()  # files with holes punched and not yet synced
        self.used = 0  # bytes of live extents in the files (header pages and padding included)
        self.bytes = 0  # their bodies' bytes
        self.counters = {"spilled_bytes": 0, "spilled_blocks": 0, "spill_seconds": 0.0, "spill_errors": 0,
                         "freed_extents": 0}
        self._next_number = 0
        self._turn = 0
        self._paused: dict[str, float] = {}  # directory -> until when it is not written (it ran out of space)
        self._pattern = re.compile(re.escape(stem) + r"\.(\d+)\.spill")
        self._opening = False  # files emptied while `open` scans them are removed when it is done

    # ---- open -------------------------------------------------------------------------------------
    def open(self, verify: bool) -> Iterator[tuple[int, bytes, bool]]:
        """Every extent found in this node's spill files, as (id, key, intact): the caller keeps it (it is
        live from now on) or frees it. `verify`: check every body (else only the last of each file, which
        a torn append can only be)."""
        self._opening = True
        for d in self.dirs:
            for name in sorted(os.listdir(d)):
                m = self._pattern.fullmatch(name)
                if m is None:
                    continue
                number = int(m.group(1))
                self._next_number = max(self._next_number, number + 1)
                try:
                    f = _File(number, d, SpillFile(os.path.join(d, name)))
                except SpillFileError as e:
                    log.error("%s; left alone", e)
                    continue
                self.files[number] = f
                size = os.fstat(f.spill.fd).st_size
                for extent, ok in f.spill.scan(verify):
                    if extent.body_offset + extent.length > size:  # an append the crash cut short: unreadable
                        log.warning("spill file %s: the extent at %d is cut short (a spill that did not finish); "
                                    "dropped", f.spill.path, extent.offset)
                        continue
                    block = self._add(f, extent)
                    yield block, extent.key, ok
        self._opening = False
        for f in [f for f in self.files.values() if f.live == 0]:
            self._remove(f)

    # ---- writing (the spiller) --------------------------------------------------------------------
    def room(self) -> int:
        """Bytes that may still be spilled (by --spill-size, or by the file systems' free space)."""
        if self.capacity:
            return max(0, self.capacity - self.used)
        now = time.monotonic()
        free = 0
        for d in self.dirs:
            if self._paused.get(d, 0) > now:
                continue
            st = os.statvfs(d)
            free += max(0, st.f_bavail * st.f_frsize - FREE_SPACE_FLOOR)
        return free

    def target(self) -> _File:
        """The file the next batch goes to (the directories take turns); creates it when needed. Loop only."""
        now = time.monotonic()
        for _ in range(len(self.dirs)):
            d = self.dirs[self._turn % len(self.dirs)]
            self._turn += 1
            if self._paused.get(d, 0) > now:
                continue
            f = self.current.get(d)
            if f is None or f.spill.tail >= MAX_FILE_BYTES:
                f = self._new_file(d)
            return f
        raise DiskFullError(f"every spill directory ran out of space in the last {ENOSPC_PAUSE:g} s")

    def _new_file(self, d: str) -> _File:
        old = self.current.get(d)
        number = self._next_number
        self._next_number += 1
        f = self.files[number] = self.current[d] = _File(number, d, SpillFile(
            os.path.join(d, f"{self.stem}.{number:06d}.spill")))
        if self.file_mode != 0o600:  # created 0600
            os.fchmod(f.spill.fd, self.file_mode)
        if old is not None and old.live == 0:
            self._remove(old)
        return f

    @staticmethod
    def append(f: _File, items: Sequence[tuple[bytes, memoryview]]) -> list[Extent]:
        """Write extents into `f` and make them durable (one fdatasync). Runs on the spiller's thread; the
        loop must not append to `f` meanwhile."""
        out = [f.spill.append(key, body, 0, sync=False) for key, body in items]
        f.spill.sync()
        return out

    def paused(self, f: _File, e: OSError) -> None:
        """An append into `f` failed: count it, and rest its directory a while when it is full."""
        self.counters["spill_errors"] += 1
        if e.errno in (28, 122):  # ENOSPC, EDQUOT
            self._paused[f.dir] = time.monotonic() + ENOSPC_PAUSE
        log.error("spilling into %s failed: %s", f.spill.path, e)

    def add(self, f: _File, extent: Extent, seconds: float = 0.0) -> int:
        """Publish a durable extent: its block id from now on."""
        self.counters["spilled_blocks"] += 1
        self.counters["spilled_bytes"] += extent.length
        self.counters["spill_seconds"] += seconds
        return self._add(f, extent)

    def _add(self, f: _File, extent: Extent) -> int:
        block = SPILLED | f.number << FILE_SHIFT | extent.offset // PAGE
        self.extents[block] = _Spilled(f, extent)
        f.live += 1
        self.used += extent.end - extent.offset
        self.bytes += extent.length
        return block

    # ---- reading ----------------------------------------------------------------------------------
    def extent(self, block: int) -> Extent:
        return self.extents[block].extent

    def path(self, block: int) -> str:
        return self.extents[block].file.spill.path

    def fd(self, block: int) -> int:
        return self.extents[block].file.spill.fd

    def view(self, block: int, offset: int = 0, length: int | None = None) -> memoryview:
        """Bytes of an extent's body, mapped; the view pins the mapping (a free waits) until released."""
        s = self.extents[block]
        if s.mapping is None:
            if s.extent.length == 0:
                return memoryview(b"")
            s.mapping = s.file.spill.map(s.extent)
            self.mapped.add(block)
        end = s.extent.length if length is None else offset + length
        if not 0 <= offset <= end <= s.extent.length:
            raise ValueError(f"bytes {offset}..{end} are not in spilled block {block:#x} of {s.extent.length}")
        return memoryview(s.mapping)[offset:end]

    def read(self, block: int, offset: int = 0) -> bytes:
        s = self.extents[block]
        return os.pread(s.file.spill.fd, s.extent.length - offset, s.extent.body_offset + offset)

    def verify(self, block: int) -> bool:
        s = self.extents[block]
        return s.file.spill.verify(s.extent)

    def unmap_idle(self) -> None:
        """Drop mappings no reader holds (mapped pages count in the node's RSS)."""
        for block in list(self.mapped):
            s = self.extents.get(block)
            if s is None or s.mapping is None:
                self.mapped.discard(block)
                continue
            try:
                s.mapping.close()
            except BufferError:
                continue
            s.mapping = None
            self.mapped.discard(block)

    # ---- freeing ----------------------------------------------------------------------------------
    def free(self, block: int) -> bool:
        """Free an extent (durable after `sync`); False when readers still map it: then it is retired (a
        scan no longer finds it) and must be freed again once they release it."""
        s = self.extents.get(block)
        if s is None:
            return True
        if s.mapping is not None:
            try:
                s.mapping.close()
            except BufferError:
                if not s.retired:
                    s.file.spill.free(s.extent, sync=False, header_only=True)
                    s.retired = True
                    self.dirty.add(s.file)
                return False
            s.mapping = None
            self.mapped.discard(block)
        s.file.spill.free(s.extent, sync=False)
        self.dirty.add(s.file)
        del self.extents[block]
        self.counters["freed_extents"] += 1
        self.used -= s.extent.end - s.extent.offset
        self.bytes -= s.extent.length
        s.file.live -= 1
        if s.file.live == 0 and not self._opening and self.current.get(s.file.dir) is not s.file:
            self._remove(s.file)
        return True

    def sync(self) -> None:
        """Make punched holes durable (a delete is acknowledged only after this)."""
        for f in self.dirty:
            if f.spill.fd >= 0:
                f.spill.sync()
        self.dirty.clear()

    def _remove(self, f: _File) -> None:
        """Delete a file none of whose extents is live."""
        self.files.pop(f.number, None)
        if self.current.get(f.dir) is f:
            del self.current[f.dir]
        self.dirty.discard(f)
        try:
            os.unlink(f.spill.path)
        except FileNotFoundError:
            pass
        f.spill.close()

    def stats(self) -> dict[str, object]:
        return {"dirs": self.dirs, "files": len(self.files), "capacity": self.capacity, "used": self.used,
                "blocks": len(self.extents), "bytes": self.bytes, **self.counters}

    def close(self) -> None:
        self.unmap_idle()
        self.sync()
        for f in self.files.values():
            f.spill.close()

"""Spill files: the disk tier's append-only files, one extent per block moved out of the pool.

The pool is the durable truth of a node; a block moved to disk must stay as durable and as self-describing
there, so that a restart rebuilds the index from the pool *and* the spill files. An extent is written
and `fdatasync`ed before the pool block is freed, so a kill at any moment leaves the block in the pool,
in a spill file, or in both (the caller keeps one); never in neither.

Layout (all integers little-endian; PAGE = 4096):

- page 0, the file header: ``RPMPSPF1``, a version, and a random 32-byte secret of this file;
- then extents, each starting on a page: a header page (``RPMPSPX1``, the extent's sequence number, the
  body's length and XXH3, the key, and a BLAKE2b MAC of all of it keyed with the file's secret), then the
  body, padded to a page.

The MAC is what lets a scan trust a header: bodies are client data, and a client could push bytes that
look like an extent header. Without the file's secret it cannot make one whose MAC holds, so a scan that
has to resynchronise (after a damaged header, it tries each page) never takes client bytes for an extent.

Freed extents become holes (`fallocate(PUNCH_HOLE)`), which a scan skips with SEEK_DATA; a file whose
extents are all freed is deleted by its owner. Reading an extent maps its pages (`mmap`), so views of it
pin the mapping the way pool views pin a block: `release` fails with BufferError while a view is out.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import logging
import mmap
import os
import secrets
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from rpmp._wire import xxh3

log = logging.getLogger("rpmp.storage")

PAGE = 4096
FILE_MAGIC = b"RPMPSPF1"
EXTENT_MAGIC = b"RPMPSPX1"
VERSION = 1
FILE_HEADER = struct.Struct("<8sI32s")  # magic, version, secret
EXTENT_HEADER = struct.Struct("<8sQQQH")  # magic, sequence, body length, body XXH3, key length
MAC_SIZE = 16
MAX_KEY = PAGE - EXTENT_HEADER.size - MAC_SIZE

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


class SpillFileError(Exception):
    """A spill file that is not one, or of another version: never overwritten, never read as ours."""


def _pages(n: int) -> int:
    return (n + PAGE - 1) // PAGE * PAGE


@dataclass(frozen=True, slots=True)
class Extent:
    """One block's bytes in a spill file: the header page at `offset`, the body right after it."""

    offset: int
    seq: int
    length: int  # of the body
    checksum: int  # XXH3-64 of the body
    key: bytes

    @property
    def body_offset(self) -> int:
        return self.offset + PAGE

    @property
    def end(self) -> int:
        """Where the next extent may start."""
        return self.body_offset + _pages(self.length)


class SpillFile:
    """One append-only spill file. `append` blocks (it writes and syncs): call it off the event loop."""

    def __init__(self, path: str):
        """Open `path`, creating it with a new secret if it does not exist."""
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            self.secret = secrets.token_bytes(32)
            os.pwrite(self.fd, FILE_HEADER.pack(FILE_MAGIC, VERSION, self.secret).ljust(PAGE, b"\0"), 0)
            os.fsync(self.fd)
            _sync_dir(os.path.dirname(os.path.abspath(path)))
        except FileExistsError:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            head = os.pread(self.fd, FILE_HEADER.size, 0)
            if len(head) < FILE_HEADER.size:
                os.close(self.fd)
                raise SpillFileError(f"{path} is not an RPMP spill file (only {len(head)} bytes)") from None
            magic, version, self.secret = FILE_HEADER.unpack(head)
            if magic != FILE_MAGIC or version != VERSION:
                os.close(self.fd)
                raise SpillFileError(f"{path} is not an RPMP spill file of version {VERSION} "
                                     f"(magic {magic!r}, version {version})") from None
        self.tail = max(PAGE, _pages(os.fstat(self.fd).st_size))  # where the next extent goes

    def _mac(self, header: bytes, key: bytes) -> bytes:
        return hashlib.blake2b(header + key, key=self.secret, digest_size=MAC_SIZE).digest()

    def _header(self, seq: int, length: int, checksum: int, key: bytes) -> bytes:
        head = EXTENT_HEADER.pack(EXTENT_MAGIC, seq, length, checksum, len(key))
        return (head + key + self._mac(head, key)).ljust(PAGE, b"\0")

    # ---- writing --------------------------------------------------------------------------------
    def append(self, key: bytes, body: bytes | bytearray | memoryview, seq: int, sync: bool = True) -> Extent:
        """Write one extent at the tail and make it durable (with `sync`; else call `sync` before relying on
        it); returns where it is. A crash part-way leaves a torn extent at the tail, which the next scan
        drops (its header or body fails its check)."""
        if len(key) > MAX_KEY:
            raise ValueError(f"a spill key is at most {MAX_KEY} bytes, not {len(key)}")
        view = memoryview(body).cast("B")
        extent = Extent(self.tail, seq, view.nbytes, xxh3(view), bytes(key))
        os.pwrite(self.fd, self._header(seq, extent.length, extent.checksum, extent.key), extent.offset)
        done = 0
        while done < view.nbytes:
            done += os.pwrite(self.fd, view[done:], extent.body_offset + done)
        if sync:
            os.fdatasync(self.fd)
        self.tail = extent.end
        return extent

    def sync(self) -> None:
        """Make appended extents and punched holes durable."""
        os.fdatasync(self.fd)

    def free(self, extent: Extent, sync: bool = True, header_only: bool = False) -> None:
        """Give an extent's pages back to the file system (a hole): durable once synced, and a scan never
        sees the extent again. `header_only` punches just its header page, which retires the extent (a scan
        no longer finds it) while views of its body stay readable; free the rest once they are released."""
        end = extent.body_offset if header_only else extent.end
        if _libc.fallocate(self.fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, extent.offset,
                           end - extent.offset) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"punching extent {extent.offset:#x} of {self.path}: {os.strerror(err)}")
        if sync:
            os.fdatasync(self.fd)

    # ---- reading --------------------------------------------------------------------------------
    def map(self, extent: Extent) -> mmap.mmap:
        """The extent's body, mapped read-only (its views pin the mapping; close it when none is out)."""
        if extent.length == 0:
            raise ValueError("an empty extent has nothing to map")
        return mmap.mmap(self.fd, extent.length, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ,
                         offset=extent.body_offset)

    def read(self, extent: Extent) -> bytes:
        return os.pread(self.fd, extent.length, extent.body_offset)

    def verify(self, extent: Extent) -> bool:
        """Whether the body's bytes still match the XXH3 its header records."""
        return xxh3(self.read(extent)) == extent.checksum

    def scan(self, verify: bool = True) -> Iterator[tuple[Extent, bool]]:
        """Every extent whose header is intact, with whether its body matches its checksum, in file order.

        Holes (freed extents) are skipped; a damaged header is skipped page by page (the MAC tells a header
        from client bytes in a body). An extent that does not match is either a torn append (the crash came
        before its sync, so its block is still in the pool) or damage to one that was durable (its block
        is gone from the pool): only the owner can tell, so it decides (`free` the first, count the second
        as lost). Bytes after the last intact header are an append torn inside its header page: cut.
        `verify=False` checks only the last extent's body, which a torn append can only be.
        """
        size = os.fstat(self.fd).st_size
        found: list[Extent] = []
        pos = PAGE
        while pos < size:
            try:
                pos = os.lseek(self.fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only holes are left
                break
            pos -= pos % PAGE
            extent = self._parse(pos)
            if extent is None:
                pos += PAGE
                continue
            found.append(extent)
            pos = extent.end
        for i, extent in enumerate(found):
            check = verify or i == len(found) - 1
            yield extent, extent.end <= _pages(size) and (not check or self.verify(extent))
        end = found[-1].end if found else PAGE
        if size > end:
            log.warning("spill file %s: %d bytes after its last extent header are a torn append; cut",
                        self.path, size - end)
            os.ftruncate(self.fd, end)
            os.fdatasync(self.fd)
        self.tail = end

    def _parse(self, pos: int) -> Extent | None:
        page = os.pread(self.fd, PAGE, pos)
        if len(page) < EXTENT_HEADER.size or not page.startswith(EXTENT_MAGIC):
            return None
        magic, seq, length, checksum, key_len = EXTENT_HEADER.unpack_from(page)
        if key_len > MAX_KEY:
            return None
        head = page[:EXTENT_HEADER.size]
        key = page[EXTENT_HEADER.size:EXTENT_HEADER.size + key_len]
        mac = page[EXTENT_HEADER.size + key_len:EXTENT_HEADER.size + key_len + MAC_SIZE]
        if not secrets.compare_digest(mac, self._mac(head, key)):
            return None
        return Extent(pos, seq, length, checksum, key)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _sync_dir(path: str) -> None:
    """Make a new file's directory entry durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

# cython: language_level=3
"""The RPMP block pool: a typed Python face of native/rpmp_pool.c (libpmemobj).

Blocks are named by their pool address (the object's offset in the pool file). Writes take any
C-contiguous buffer without copying it in Python; reads go into a caller's buffer or come back as
zero-copy read-only views (memoryview or pyarrow.Buffer) that stay valid while the block lives.
The GIL is released around every copy and checksum.

Zero-copy views pin their block and pool: every BlockView holds its Pool, and neither class lets the
cyclic GC clear its fields (no_gc_clear), so a view released from inside a garbage cycle, in whatever
order the collector breaks it, still finds the pool it must unpin.
"""

cimport cython

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from rpmp._cpool cimport *

import logging
import os
import stat as _stat

log = logging.getLogger("rpmp.pool")

DEFAULT_BLOCK_CAPACITY = RPMP_DEFAULT_BLOCK_CAPACITY
HEADER_SIZE = RPMP_HDR_SIZE
KEY_MAX = RPMP_KEY_MAX
MIN_POOL_SIZE = RPMP_MIN_POOL_SIZE
MAX_BLOCK_CAPACITY = RPMP_MAX_BLOCK_CAPACITY
OPEN = RPMP_BLOCK_OPEN
SEALED = RPMP_BLOCK_SEALED
RETIRED = RPMP_BLOCK_RETIRED
RECOVERY_KEYS = ("blocks_kept", "freed_damaged", "freed_unsealed", "freed_retired", "corrupt")


class PoolError(Exception):
    """Base of every pool error; `code` is the native error code."""

    code = 0


class PoolNotFoundError(PoolError):
    code = RPMP_E_NOENT


class PoolLayoutError(PoolError):
    code = RPMP_E_LAYOUT


class PoolLockedError(PoolError):
    code = RPMP_E_LOCKED


class PoolFullError(PoolError):
    code = RPMP_E_FULL


class PoolSizeError(PoolError, ValueError):
    code = RPMP_E_SIZE


class BlockKeyError(PoolError, ValueError):
    code = RPMP_E_KEY


class BlockNotFoundError(PoolError):
    code = RPMP_E_BLOCK


class BlockSealedError(PoolError):
    code = RPMP_E_STATE


class PoolExistsError(PoolError):
    code = RPMP_E_EXISTS


class PoolIOError(PoolError):
    code = RPMP_E_IO


class BlockCorruptError(PoolError):
    code = RPMP_E_CORRUPT


class PoolBusyError(PoolError):
    """The pool or block still has zero-copy views handed out."""

    code = -100


class PoolClosedError(PoolError):
    code = -101


_ERRORS = {cls.code: cls for cls in (
    PoolNotFoundError, PoolLayoutError, PoolLockedError, PoolFullError, PoolSizeError, BlockKeyError,
    BlockNotFoundError, BlockSealedError, PoolExistsError, PoolIOError, BlockCorruptError)}


cdef int _raise(int rc) except -1:
    cls = _ERRORS.get(rc, PoolError)
    raise cls(rpmp_last_error().decode("utf-8", "replace"))


cdef inline int _check(int rc) except -1:
    if rc != RPMP_OK:
        _raise(rc)
    return 0


# ---- checks before libpmemobj maps a file: one-line errors instead of a SIGBUS or a cryptic libpmemobj message ----

POOL_SIGNATURE = b"PMEMOBJ\0"  # the first bytes of every libpmemobj pool file (its pool header)
POOL_HEADER_BYTES = 4096  # libpmemobj's pool header: a pool whose header is still all zeros was never created


def _mib(n):
    return f"{n / (1 << 20):.0f} MiB" if n < (10 << 30) else f"{n / (1 << 30):.1f} GiB"


def _check_creatable(str path, uint64_t size):
    """Why a new pool of `size` bytes cannot be created at `path` (a PoolError of one line), or None."""
    if size < RPMP_MIN_POOL_SIZE:
        raise PoolSizeError(f"pool size {size} is below the minimum of {_mib(RPMP_MIN_POOL_SIZE)}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(folder):
        raise PoolNotFoundError(f"cannot create pool {path}: its folder {folder} does not exist")
    if not os.path.isdir(folder):
        raise PoolIOError(f"cannot create pool {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        why = "is on a read-only file system" if _read_only_fs(folder) else "is not writable"
        raise PoolIOError(f"cannot create pool {path}: its folder {folder} {why}")
    fs = os.statvfs(folder)
    free = fs.f_bavail * fs.f_frsize
    if size > free:
        raise PoolFullError(f"cannot create pool {path} of {_mib(size)}: its file system has {_mib(free)} free "
                            f"(of {_mib(fs.f_blocks * fs.f_frsize)}); give a smaller --pool-size or another folder")


def _read_only_fs(path):
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _inspect(str path):
    """What the existing file at `path` is: "pool" (it has a pool header: libpmemobj opens it), "unfinished" (a
    pool file libpmemobj began to create but never wrote the header of: it holds no data), or a PoolError of one
    line saying why it cannot be a pool. Reads at most the first 4 KiB; never maps it (an empty or short file
    mapped by libpmemobj ends the process with SIGBUS)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise PoolNotFoundError(f"pool {path} does not exist") from None
    if _stat.S_ISDIR(st.st_mode):
        raise PoolIOError(f"pool {path} is a folder, not a file; name a file in it (e.g. {path.rstrip('/')}/rpmp.pool)")
    if not _stat.S_ISREG(st.st_mode):
        raise PoolIOError(f"pool {path} is not a regular file")
    # libpmemobj creates the file with mode 0000 and gives it its mode once the pool is made: a file of ours with
    # mode 0000 whose header is blank is a creation cut short (by a kill, a crash, a full medium).
    unfinished = (st.st_mode & 0o777) == 0 and st.st_uid == os.geteuid()
    if st.st_size < POOL_HEADER_BYTES:
        if unfinished:
            return "unfinished"
        what = "an empty file" if st.st_size == 0 else f"a file of {st.st_size} bytes"
        raise PoolLayoutError(f"pool {path} is {what}, not an RPMP pool: remove it (the node then creates a new "
                              f"pool there) or name another --pool")
    try:
        with open(path, "rb") as f:
            head = f.read(POOL_HEADER_BYTES)
    except PermissionError:
        if unfinished:
            raise PoolLayoutError(f"pool {path} has mode 0000: a pool whose creation was cut short, or not a pool; "
                                  f"remove it if it holds nothing you need (the node then creates a new one)") from None
        raise PoolIOError(f"pool {path} is not readable by this user") from None
    except OSError as e:
        raise PoolIOError(f"pool {path}: cannot read it ({e.strerror})") from None
    if head.startswith(POOL_SIGNATURE):
        if not os.access(path, os.R_OK | os.W_OK):
            why = "is on a read-only file system" if _read_only_fs(path) else "is not writable by this user"
            raise PoolIOError(f"pool {path} {why}; the node writes to its pool")
        return "pool"
    if head.count(0) == len(head):
        if unfinished:
            return "unfinished"
        raise PoolLayoutError(f"pool {path} is a file of {_mib(st.st_size)} whose first 4 KiB are zeros: not an RPMP "
                              f"pool (or one whose creation was cut short); if it holds nothing you need, remove it and "
                              f"the node creates a new pool there")
    raise PoolLayoutError(f"{path} is not an RPMP pool (it begins {head[:8]!r}, not {POOL_SIGNATURE!r}): name another "
                          f"--pool, or remove this file if it is not needed")


def check_pool(path, uint64_t size):
    """What opening or creating the pool at `path` (`size` bytes if new) will do: "open", "create" or "recreate"
    (a pool file whose creation was cut short, holding no data: open_or_create removes it and creates the pool
    anew); or a PoolError of one line saying why neither can work. Touches nothing."""
    cdef str p = os.fsdecode(path)
    if not p:
        raise PoolIOError("empty pool path")
    if not os.path.lexists(p):
        _check_creatable(p, size)
        return "create"
    what = _inspect(p)
    if what == "unfinished":
        _check_creatable(p, size)
        return "recreate"
    return "open"



class BlockInfo:
    """What the header of one block says."""

    __slots__ = ("id", "payload_offset", "capacity", "used", "checksum", "sealed", "seal_required", "key",
                 "checked")

    def __init__(self, id, payload_offset, capacity, used, checksum, sealed, seal_required, key, checked=False):
        self.id = id
        self.payload_offset = payload_offset
        self.capacity = capacity
        self.used = used
        self.checksum = checksum  # of payload[0:used): valid when sealed or checked
        self.sealed = sealed
        self.seal_required = seal_required
        self.key = key
        self.checked = checked

    def __repr__(self):
        return (f"BlockInfo(id={self.id:#x}, key={self.key!r}, used={self.used}, capacity={self.capacity}, "
                f"sealed={self.sealed})")


@cython.no_gc_clear
cdef class BlockView:
    """A buffer over a block's payload bytes, straight out of the mapped pool.

    Read-only for view(); writable for reserve(), whose bytes count only once published.
    While exported it pins its block (Pool._hold). Single use: once its last export is released the
    block may be freed and its address reused, so it refuses to be exported again.
    """

    # no_gc_clear: Cython's tp_clear would set `pool` to None, and a memoryview released later in the
    # same collection would then unpin through None (SIGSEGV).
    cdef Pool pool
    cdef readonly uint64_t block
    cdef const uint8_t *ptr
    cdef Py_ssize_t length
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]
    cdef int exports
    cdef bint writable
    cdef bint spent

    def __getbuffer__(self, Py_buffer *buf, int flags):
        if flags & PyBUF_WRITABLE and not self.writable:
            raise BufferError("pool views are read-only")
        if self.pool is None or self.ptr == NULL:
            raise BufferError("not a view handed out by a Pool")
        if self.spent:
            raise BufferError(f"the view of block {self.block:#x} was released; take a new one")
        if self.pool._pool == NULL:
            raise PoolClosedError("pool is closed")
        self.shape[0] = self.length
        self.strides[0] = 1
        buf.buf = <void *>self.ptr
        buf.obj = self
        buf.len = self.length
        buf.readonly = 0 if self.writable else 1
        buf.itemsize = 1
        buf.format = "B"
        buf.ndim = 1
        buf.shape = self.shape
        buf.strides = self.strides
        buf.suboffsets = NULL
        buf.internal = NULL
        if self.exports == 0:
            self.pool._hold(self.block)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *buf):
        if self.exports <= 0:
            return
        self.exports -= 1
        if self.exports == 0:
            self.spent = True
            if self.pool is not None:  # never None with no_gc_clear; a guard all the same
                self.pool._unhold(self.block)

    def __len__(self):
        return self.length


@cython.no_gc_clear
cdef class Pool:
    """One open pool file. Use Pool.create / Pool.open / Pool.open_or_create, then close()."""

    # no_gc_clear: a view released during a collection still unpins through _held (never None).
    cdef rpmp_pool *_pool
    cdef readonly str path
    cdef readonly dict recovery
    cdef set _live
    cdef dict _held
    cdef set _corrupt

    def __cinit__(self):
        self._pool = NULL
        self._live = set()
        self._held = {}
        self._corrupt = set()
        self.recovery = {}

    def __dealloc__(self):
        # Views hold their Pool, so none is alive here; if one were, the mapping must outlive it.
        if self._pool != NULL and not self._held:
            rpmp_pool_close(self._pool)
            self._pool = NULL

    @staticmethod
    def create(path, uint64_t size):
        """Create a new pool file of `size` bytes (PoolExistsError if it is there already)."""
        cdef Pool p = Pool.__new__(Pool)
        cdef bytes bpath = os.fsencode(path)
        cdef const char *cpath = bpath
        cdef int rc
        if os.path.lexists(os.fsdecode(bpath)):
            raise PoolExistsError(f"pool {os.fsdecode(bpath)} already exists")
        _check_creatable(os.fsdecode(bpath), size)
        with nogil:
            rc = rpmp_pool_create(cpath, size, &p._pool)
        _check(rc)
        p.path = os.fsdecode(bpath)
        p.recovery = dict.fromkeys(RECOVERY_KEYS, 0)
        return p

    @staticmethod
    def open(path, bint verify=True):
        """Open an existing pool; the recovery scan runs here (see `recovery` for what it did).

        Blocks with a damaged header and unsealed seal-required blocks are freed. verify=True also checks
        the payload checksum of every sealed and checked block: blocks that fail it are kept and listed
        in `corrupt_blocks` (recovery["corrupt"] counts them; blocks_kept includes them).
        """
        cdef Pool p = Pool.__new__(Pool)
        cdef bytes bpath = os.fsencode(path)
        cdef const char *cpath = bpath
        cdef rpmp_recovery rec
        cdef int rc
        cdef uint64_t n, i
        cdef uint64_t *ids
        memset(&rec, 0, sizeof(rec))
        if _inspect(os.fsdecode(bpath)) == "unfinished":
            raise PoolLayoutError(f"pool {os.fsdecode(bpath)} was left half-created (its creation was cut short) and "
                                  f"holds no data: open_or_create creates it anew")
        with nogil:
            rc = rpmp_pool_open(cpath, verify, &p._pool, &rec)
        _check(rc)
        p.path = os.fsdecode(bpath)
        p.recovery = {"blocks_kept": rec.blocks_kept, "freed_damaged": rec.freed_damaged,
                      "freed_unsealed": rec.freed_unsealed, "freed_retired": rec.freed_retired,
                      "corrupt": rec.corrupt}
        n = rpmp_pool_corrupt(p._pool, NULL, 0)
        if n:
            ids = <uint64_t *>malloc(n * sizeof(uint64_t))
            if ids == NULL:
                raise MemoryError()
            try:
                n = min(n, rpmp_pool_corrupt(p._pool, ids, n))
                p._corrupt = {ids[i] for i in range(n)}
            finally:
                free(ids)
        p._live = set(p._scan())
        return p

    @staticmethod
    def open_or_create(path, uint64_t size, bint verify=True):
        """Open the pool at `path`, creating it with `size` bytes when the file does not exist, or anew when it
        is a pool file whose creation was cut short (check_pool: "recreate"; it holds no data)."""
        what = check_pool(path, size)
        if what == "open":
            return Pool.open(path, verify)
        if what == "recreate":
            log.warning("pool %s was left half-created (a creation cut short, by a kill or a crash) and holds no "
                        "data: creating it anew", os.fsdecode(path))
            os.unlink(path)
        return Pool.create(path, size)

    cdef inline rpmp_pool *_p(self) except NULL:
        if self._pool == NULL:
            raise PoolClosedError("pool is closed")
        return self._pool

    cdef inline int _live_check(self, uint64_t block) except -1:
        if block not in self._live:
            raise BlockNotFoundError(f"no live block at {block:#x}")
        return 0

    cdef void _hold(self, uint64_t block):
        self._held[block] = self._held.get(block, 0) + 1

    cdef void _unhold(self, uint64_t block):
        n = self._held.get(block, 0) - 1
        if n <= 0:
            self._held.pop(block, None)
        else:
            self._held[block] = n

    def _scan(self):
        cdef uint64_t cur = 0, nxt = 0
        cdef rpmp_pool *pool = self._p()
        while True:
            _check(rpmp_pool_next(pool, cur, &nxt))
            if nxt == 0:
                return
            yield nxt
            cur = nxt

    def close(self):
        """Close the pool. Refused (PoolBusyError) while zero-copy views of its blocks are alive."""
        if self._pool == NULL:
            return
        if self._held:
            raise PoolBusyError(f"{sum(self._held.values())} views of pool blocks are still alive")
        rpmp_pool_close(self._pool)
        self._pool = NULL
        self._live.clear()
        self._corrupt.clear()

    @property
    def closed(self):
        return self._pool == NULL

    @property
    def corrupt_blocks(self):
        """Ids of the blocks that the open scan (verify=True) found not matching their checksum, as a
        frozenset; a block leaves it once freed (its address may then be reused)."""
        return frozenset(self._corrupt)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def alloc(self, uint64_t capacity=RPMP_DEFAULT_BLOCK_CAPACITY, key=b"", bint seal_required=False,
              bint checked=False):
        """Allocate a block and return its pool address.

        seal_required=True: the block's content counts only once sealed; a crash before seal() frees it.
        checked=True: every write is a tx_write, so the block's checksum always covers its published
        bytes (verify() and the open scan check it) and a crash never leaves a half-done write;
        reserve/flush/publish are refused (BlockSealedError).
        """
        cdef rpmp_pool *pool = self._p()
        cdef bytes bkey = bytes(key)
        cdef const char *ckey = bkey
        cdef uint32_t klen = len(bkey) if len(bkey) <= 0xFFFFFFFF else 0xFFFFFFFF
        cdef uint32_t flags = (RPMP_BLOCK_SEAL_REQUIRED if seal_required else 0) | (
            RPMP_BLOCK_CHECKED if checked else 0)
        cdef uint64_t block = 0
        cdef int rc
        self._hold(0)  # pins the pool: no close() meanwhile
        try:
            with nogil:
                rc = rpmp_block_alloc(pool, ckey, klen, capacity, flags, &block)
        finally:
            self._unhold(0)
        _check(rc)
        self._live.add(block)
        return block

    def write(self, uint64_t block, uint64_t offset, data):
        """Persist `data` (any contiguous buffer) at `offset`, then publish it."""
        self._copy_in(block, offset, data, False)

    cdef int _copy_in(self, uint64_t block, uint64_t offset, data, bint tx) except -1:
        """write() or tx_write() of any contiguous buffer, the GIL let go around the copy."""
        cdef rpmp_pool *pool = self._p()
        self._live_check(block)
        cdef Py_buffer view
        cdef int rc
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        self._hold(block)  # the GIL is let go: no free() or close() meanwhile
        try:
            with nogil:
                if tx:
                    rc = rpmp_block_tx_write(pool, block, offset, view.buf, <uint64_t>view.len)
                else:
                    rc = rpmp_block_write(pool, block, offset, view.buf, <uint64_t>view.len)
        finally:
            self._unhold(block)
            PyBuffer_Release(&view)
        _check(rc)
        return 0

    def tx_write(self, uint64_t block, uint64_t offset, data):
        """Failure-atomic write of `data` at `offset`, in one libpmemobj transaction.

        Bytes between the published end and `offset` become zeros; `used` grows to offset + len(data)
        if that is past it; on a checked block the checksum is recomputed over all published bytes.
        After a crash the block holds exactly the old or the new content. PoolSizeError past capacity,
        BlockSealedError on a sealed block, PoolFullError if the pool has no room for the undo log.
        """
        self._copy_in(block, offset, data, True)

    def append(self, uint64_t block, data):
        """Persist `data` at the end of the block's published bytes; returns the offset it landed at."""
        cdef rpmp_pool *pool = self._p()
        self._live_check(block)
        cdef Py_buffer view
        cdef uint64_t at = 0
        cdef int rc
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        self._hold(block)  # the GIL is let go: no free() or close() meanwhile
        try:
            with nogil:
                rc = rpmp_block_append(pool, block, view.buf, <uint64_t>view.len, &at)
        finally:
            self._unhold(block)
            PyBuffer_Release(&view)
        _check(rc)
        return at

    def read_into(self, uint64_t block, buf, uint64_t offset=0):
        """Copy published bytes starting at `offset` into the writable buffer `buf`; returns len(buf)."""
        cdef rpmp_pool *pool = self._p()
        self._live_check(block)
        cdef Py_buffer view
        cdef int rc
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE | PyBUF_WRITABLE)
        self._hold(block)  # the GIL is let go: no free() or close() meanwhile
        try:
            with nogil:
                rc = rpmp_block_read(pool, block, offset, view.buf, <uint64_t>view.len)
        finally:
            self._unhold(block)
            PyBuffer_Release(&view)
        _check(rc)
        return view.len

    def read(self, uint64_t block, uint64_t offset=0, length=None):
        """Published bytes as a new bytes object (copy); see view() for zero-copy."""
        cdef uint64_t used = self.info(block).used
        if offset > used:
            raise PoolSizeError(f"offset {offset} is past the block's {used} published bytes")
        if length is not None and not 0 <= length <= used - offset:
            # checked before allocating: a huge or negative length is a range error, not a MemoryError
            raise PoolSizeError(f"read of {length} bytes at {offset} exceeds the block's {used} published bytes")
        cdef uint64_t n = used - offset if length is None else length
        out = bytearray(n)
        self.read_into(block, out, offset)
        return bytes(out)

    def view(self, uint64_t block, uint64_t offset=0, length=None):
        """A zero-copy read-only memoryview of published bytes; valid while the block lives."""
        cdef rpmp_pool *pool = self._p()
        self._live_check(block)
        cdef const uint8_t *data
        cdef uint64_t used
        _check(rpmp_block_data(pool, block, &data, &used))
        if length is not None and not 0 <= length <= used:
            raise PoolSizeError(f"view of {length} bytes at {offset} exceeds the block's {used} published bytes")
        cdef uint64_t n = used - offset if length is None and offset <= used else (length or 0)
        if offset > used or n > used - offset:
            raise PoolSizeError(f"view of {n} bytes at {offset} exceeds the block's {used} published bytes")
        return memoryview(self._make_view(block, data + offset, n, False))

    cdef BlockView _make_view(self, uint64_t block, const uint8_t *ptr, Py_ssize_t n, bint writable):
        cdef BlockView v = BlockView.__new__(BlockView)
        v.pool = self
        v.block = block
        v.ptr = ptr
        v.length = n
        v.writable = writable
        return v

    def reserve(self, uint64_t block, uint64_t offset, uint64_t length):
        """A writable memoryview of `length` bytes at `offset`, for receiving straight into the pool.

        Bytes past the published end stay invisible (also after a crash) until publish(); bytes below
        it are overwritten in place. The view pins the block like view() does.
        """
        cdef rpmp_pool *pool = self._p()
        self._live_check(block)
        cdef uint8_t *ptr
        _check(rpmp_block_reserve(pool, block, offset, length, &ptr))
        return memoryview(self._make_view(block, ptr, length, True))

    def flush(self, uint64_t block, uint64_t offset, uint64_t length):
        """Write back reserved bytes now (while they are hot in cache); publish() then only drains."""
        cdef rpmp_pool *pool = self._p()
        self._live_check(block)
        cdef int rc
        self._hold(block)  # no free() or close() meanwhile
        try:
            with nogil:
                rc = rpmp_block_flush(pool, block, offset, length)
        finally:
            self._unhold(block)
        _check(rc)

    def publish(self, uint64_t block, uint64_t offset, uint64_t length, bint flushed=False):
        """Make reserved bytes durable and visible: persist them, then used = max(used, offset+length)."""
        cdef rpmp_pool *pool = self._p()
        self._live_check(block)
        cdef int rc
        self._hold(block)  # no free() or close() meanwhile
        try:
            with nogil:
                rc = rpmp_block_publish(pool, block, offset, length, flushed)
        finally:
            self._unhold(block)
        _check(rc)

    def used(self, uint64_t block):
        """Published bytes of a block (cheaper than info())."""
        cdef const uint8_t *data
        cdef uint64_t n
        self._live_check(block)
        _check(rpmp_block_data(self._p(), block, &data, &n))
        return n

    def buffer(self, uint64_t block, uint64_t offset=0, length=None):
        """Like view() but as a zero-copy pyarrow.Buffer."""
        import pyarrow
        return pyarrow.py_buffer(self.view(block, offset, length))

    def seal(self, uint64_t block):
        """Checksum the published bytes and make the block immutable (idempotent)."""
        cdef rpmp_pool *pool = self._p()
        self._live_check(block)
        cdef int rc
        self._hold(block)  # no free() or close() meanwhile
        try:
            with nogil:
                rc = rpmp_block_seal(pool, block)
        finally:
            self._unhold(block)
        _check(rc)

    def verify(self, uint64_t block):
        """Recompute a sealed or checked block's checksum; BlockCorruptError if the payload changed."""
        cdef rpmp_pool *pool = self._p()
        self._live_check(block)
        cdef int rc
        self._hold(block)  # no free() or close() meanwhile
        try:
            with nogil:
                rc = rpmp_block_verify(pool, block)
        finally:
            self._unhold(block)
        _check(rc)

    def retire(self, uint64_t block):
        """Delete a block durably while zero-copy views still read it: its bytes stay for them, a crash
        frees it at open (it never comes back), and free() once the views are gone releases the room."""
        cdef rpmp_pool *pool = self._p()
        self._live_check(block)
        _check(rpmp_block_retire(pool, block))

    def free(self, uint64_t block):
        """Free a block. Refused (PoolBusyError) while zero-copy views of it are alive."""
        cdef rpmp_pool *pool = self._p()
        self._live_check(block)
        if block in self._held:
            raise PoolBusyError(f"block {block:#x} has {self._held[block]} live views")
        _check(rpmp_block_free(pool, block))
        self._live.discard(block)
        self._corrupt.discard(block)

    def info(self, uint64_t block):
        cdef rpmp_pool *pool = self._p()
        self._live_check(block)
        cdef c_block_info bi
        _check(rpmp_block_info(pool, block, &bi))
        return BlockInfo(bi.id, bi.payload_offset, bi.capacity, bi.used, bi.checksum,
                         bi.state == RPMP_BLOCK_SEALED, bool(bi.flags & RPMP_BLOCK_SEAL_REQUIRED),
                         bytes(bi.key[:bi.key_len]), bool(bi.flags & RPMP_BLOCK_CHECKED))

    def payload_offset(self, uint64_t block):
        """File offset of the block's first payload byte, for readers that map the pool file."""
        self._p()
        self._live_check(block)
        return block + RPMP_HDR_SIZE

    def blocks(self):
        """Pool addresses of all live blocks, in pool order."""
        self._p()
        return list(self._scan())

    def __iter__(self):
        return (self.info(b) for b in self.blocks())

    def __len__(self):
        return len(self._live)

    def __contains__(self, block):
        return block in self._live

    def stats(self):
        """capacity (pool file bytes), allocated, used, free and block counts."""
        cdef rpmp_stats st
        _check(rpmp_pool_stats(self._p(), &st))
        return {
            "capacity": st.pool_size,
            "allocated": st.allocated_bytes,
            "used": st.used_bytes,
            "free": st.pool_size - st.allocated_bytes if st.pool_size > st.allocated_bytes else 0,
            "blocks": st.blocks,
            "open_blocks": st.open_blocks,
            "sealed_blocks": st.sealed_blocks,
        }

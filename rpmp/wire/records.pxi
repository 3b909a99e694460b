# The on-media record format: the 32-byte header (magic b"SEG1", map_index, attempt, seq, length,
# checksum) before each segment's payload in a block and in FETCH data; packing, validating, iterating.

cdef inline void _fill_record(unsigned char* p, uint32_t map_index, uint64_t attempt, uint32_t seq, uint32_t length,
                              uint64_t checksum) noexcept:
    rp_st32(p, C_RECORD_MAGIC)
    rp_st32(p + 4, map_index)
    rp_st64(p + 8, attempt)
    rp_st32(p + 16, seq)
    rp_st32(p + 20, length)
    rp_st64(p + 24, checksum)


def pack_record_header(uint32_t map_index, uint64_t attempt, uint32_t seq, uint32_t length,
                       uint64_t checksum) -> bytes:
    """The 32-byte header that precedes a segment's payload in a block (magic b"SEG1")."""
    cdef bytes out = _new(C_RECORD_HEADER_SIZE)
    _fill_record(_ptr(out), map_index, attempt, seq, length, checksum)
    return out


def write_record_header(buf, Py_ssize_t offset, uint32_t map_index, uint64_t attempt, uint32_t seq,
                        uint32_t length, uint64_t checksum) -> None:
    """Write a record header into a writable buffer (e.g. reserved pool memory) at `offset`."""
    cdef Py_buffer view
    PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
    try:
        if offset < 0 or view.len - offset < C_RECORD_HEADER_SIZE:
            raise ValueError(f"no room for a record header at offset {offset} of a {view.len}-byte buffer")
        _fill_record(<unsigned char*>view.buf + offset, map_index, attempt, seq, length, checksum)
    finally:
        PyBuffer_Release(&view)


cdef int _check_record(const unsigned char* base, Py_ssize_t pos, Py_ssize_t end) except -1:
    """Validate the record at base+pos; returns 0 or raises BAD_FRAME."""
    if end - pos < C_RECORD_HEADER_SIZE:
        raise ProtocolError(BAD_FRAME, f"torn record at offset {pos}: {end - pos} bytes left, a record header "
                                       f"needs {C_RECORD_HEADER_SIZE}")
    cdef const unsigned char* p = base + pos
    cdef uint32_t magic = rp_ld32(p)
    if magic != C_RECORD_MAGIC:
        raise ProtocolError(BAD_FRAME, f"bad record magic 0x{magic:08x} at offset {pos} (expected b'SEG1')")
    cdef uint32_t length = rp_ld32(p + 20)
    if length > C_MAX_SEGMENT:
        raise ProtocolError(BAD_FRAME, f"record at offset {pos} claims {length} bytes, above the segment limit "
                                       f"{C_MAX_SEGMENT}")
    if end - pos - C_RECORD_HEADER_SIZE < length:
        raise ProtocolError(BAD_FRAME, f"torn record at offset {pos}: payload of {length} bytes runs past the end "
                                       f"({end - pos - C_RECORD_HEADER_SIZE} bytes left)")
    return 0


def unpack_record_header(buf, Py_ssize_t offset=0) -> tuple:
    """-> (map_index, attempt, seq, length, checksum) of the record header at `offset` (payload not checked)."""
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef uint32_t magic
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if offset < 0 or view.len - offset < C_RECORD_HEADER_SIZE:
            raise ProtocolError(BAD_FRAME, f"torn record header at offset {offset} of a {view.len}-byte buffer")
        p = <const unsigned char*>view.buf + offset
        magic = rp_ld32(p)
        if magic != C_RECORD_MAGIC:
            raise ProtocolError(BAD_FRAME, f"bad record magic 0x{magic:08x} at offset {offset} (expected b'SEG1')")
        return (rp_ld32(p + 4), rp_ld64(p + 8), rp_ld32(p + 16), rp_ld32(p + 20), rp_ld64(p + 24))
    finally:
        PyBuffer_Release(&view)


cdef class RecordIter:
    """Iterator over concatenated records: (map_index, attempt, seq, payload_offset, length, checksum).

    Holds a buffer export until exhausted or failed. A record that does not fit (torn write, a block freed
    under a one-sided reader) or has a bad magic raises ProtocolError(BAD_FRAME) and ends the iteration.
    """

    cdef Py_buffer view
    cdef bint held
    cdef Py_ssize_t pos
    cdef Py_ssize_t end

    def __cinit__(self, buf, Py_ssize_t start=0, Py_ssize_t end=-1):
        PyObject_GetBuffer(buf, &self.view, PyBUF_SIMPLE)
        self.held = True
        if end < 0 or end > self.view.len:
            end = self.view.len
        if start < 0 or start > end:
            self._release()
            raise ValueError(f"start {start} is outside the buffer range [0, {end}]")
        self.pos = start
        self.end = end

    def __dealloc__(self):
        self._release()

    cdef void _release(self) noexcept:
        if self.held:
            self.held = False
            PyBuffer_Release(&self.view)

    def __iter__(self):
        return self

    def __next__(self):
        if self.pos >= self.end or not self.held:
            self._release()
            raise StopIteration
        cdef const unsigned char* base = <const unsigned char*>self.view.buf
        try:
            _check_record(base, self.pos, self.end)
        except ProtocolError:
            self.pos = self.end
            self._release()
            raise
        cdef const unsigned char* p = base + self.pos
        cdef Py_ssize_t off = self.pos + C_RECORD_HEADER_SIZE
        cdef uint32_t length = rp_ld32(p + 20)
        self.pos = off + length
        return (rp_ld32(p + 4), rp_ld64(p + 8), rp_ld32(p + 16), off, length, rp_ld64(p + 24))


def iter_records(buf, Py_ssize_t start=0, Py_ssize_t end=-1) -> RecordIter:
    """Iterate the records in buf[start:end] (end=-1: to the end of buf); offsets are absolute in buf."""
    return RecordIter(buf, start, end)


def count_records(buf, Py_ssize_t start=0, Py_ssize_t end=-1) -> tuple:
    """-> (records, payload_bytes) of buf[start:end], validating every record like iter_records."""
    cdef Py_buffer view
    cdef Py_ssize_t pos, records = 0, total = 0
    cdef uint32_t length
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if end < 0 or end > view.len:
            end = view.len
        if start < 0 or start > end:
            raise ValueError(f"start {start} is outside the buffer range [0, {end}]")
        pos = start
        while pos < end:
            _check_record(<const unsigned char*>view.buf, pos, end)
            length = rp_ld32(<const unsigned char*>view.buf + pos + 20)
            pos += C_RECORD_HEADER_SIZE + length
            records += 1
            total += length
    finally:
        PyBuffer_Release(&view)
    return (records, total)

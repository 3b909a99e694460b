# Framing: the 32-byte frame header (magic, version, opcode, flags, request id, meta and data lengths),
# packed, parsed and validated, and frames of header + meta in one allocation.

cdef inline void _fill_header(unsigned char* p, uint8_t opcode, uint16_t flags, uint64_t request_id,
                              uint32_t meta_len, uint64_t data_len) noexcept:
    rp_st32(p, C_MAGIC)
    p[4] = C_VERSION
    p[5] = opcode
    rp_st16(p + 6, flags)
    rp_st64(p + 8, request_id)
    rp_st32(p + 16, meta_len)
    rp_st32(p + 20, 0)
    rp_st64(p + 24, data_len)


def pack_header(uint8_t opcode, uint16_t flags, uint64_t request_id, uint32_t meta_len, uint64_t data_len) -> bytes:
    """The 32-byte frame header. meta_len above 1 MiB raises TOO_LARGE (no node would accept it)."""
    if meta_len > C_MAX_META:
        raise ProtocolError(TOO_LARGE, f"meta of {meta_len} bytes exceeds the limit of {C_MAX_META}")
    cdef bytes out = _new(C_HEADER_SIZE)
    _fill_header(_ptr(out), opcode, flags, request_id, meta_len, data_len)
    return out


def pack_header_into(buf, Py_ssize_t offset, uint8_t opcode, uint16_t flags, uint64_t request_id,
                     uint32_t meta_len, uint64_t data_len) -> None:
    """Write a frame header into a writable buffer at `offset` (no allocation: for send buffers)."""
    if meta_len > C_MAX_META:
        raise ProtocolError(TOO_LARGE, f"meta of {meta_len} bytes exceeds the limit of {C_MAX_META}")
    cdef Py_buffer view
    PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
    try:
        if offset < 0 or view.len - offset < C_HEADER_SIZE:
            raise ValueError(f"no room for a {C_HEADER_SIZE}-byte header at offset {offset} "
                             f"of a {view.len}-byte buffer")
        _fill_header(<unsigned char*>view.buf + offset, opcode, flags, request_id, meta_len, data_len)
    finally:
        PyBuffer_Release(&view)


def unpack_header(buf, max_data=DEFAULT_MAX_DATA, Py_ssize_t offset=0) -> tuple:
    """Parse and validate the header at buf[offset:offset+32] -> (opcode, flags, request_id, meta_len, data_len).

    Raises BAD_FRAME (short buffer, bad magic, reserved != 0), BAD_VERSION, or TOO_LARGE (meta_len > 1 MiB,
    data_len > max_data). All of these mean the stream is lost: answer with an error frame and close.
    The opcode is not checked (an unknown opcode is answerable, UNKNOWN_OPCODE, once meta and data are read).
    """
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef uint64_t limit = max_data
    cdef Py_ssize_t n = _borrow(buf, &view, &p)
    cdef uint32_t magic, reserved, meta_len
    cdef uint64_t request_id, data_len
    cdef uint8_t version, opcode
    cdef uint16_t flags
    try:
        if offset < 0 or n - offset < C_HEADER_SIZE:
            raise ProtocolError(BAD_FRAME, f"truncated header: {max(n - offset, 0)} bytes, a header is {C_HEADER_SIZE}")
        p += offset
        magic = rp_ld32(p)
        version = p[4]
        opcode = p[5]
        flags = rp_ld16(p + 6)
        request_id = rp_ld64(p + 8)
        meta_len = rp_ld32(p + 16)
        reserved = rp_ld32(p + 20)
        data_len = rp_ld64(p + 24)
    finally:
        PyBuffer_Release(&view)
    if magic != C_MAGIC:
        raise ProtocolError(BAD_FRAME, f"bad magic 0x{magic:08x} (expected 0x{C_MAGIC:08x}, b'RPMP')")
    if version != C_VERSION:
        raise ProtocolError(BAD_VERSION, f"protocol version {version} is not supported (this end speaks {C_VERSION})")
    if reserved != 0:
        raise ProtocolError(BAD_FRAME, f"reserved header field is 0x{reserved:08x}, must be 0")
    if meta_len > C_MAX_META:
        raise ProtocolError(TOO_LARGE, f"meta of {meta_len} bytes exceeds the limit of {C_MAX_META}")
    if data_len > limit:
        raise ProtocolError(TOO_LARGE, f"data of {data_len} bytes exceeds the limit of {limit}")
    return (opcode, flags, request_id, meta_len, data_len)


def frame(uint8_t opcode, uint16_t flags, uint64_t request_id, meta=b"", uint64_t data_len=0) -> bytes:
    """Header + meta in one bytes object (the data part, if any, is sent after it by the caller)."""
    cdef Py_buffer view
    cdef const unsigned char* m
    cdef Py_ssize_t n = _borrow(meta, &view, &m)
    try:
        if n > C_MAX_META:
            raise ProtocolError(TOO_LARGE, f"meta of {n} bytes exceeds the limit of {C_MAX_META}")
        out = _new(C_HEADER_SIZE + n)
        _fill_header(_ptr(out), opcode, flags, request_id, <uint32_t>n, data_len)
        memcpy(_ptr(out) + C_HEADER_SIZE, m, n)
    finally:
        PyBuffer_Release(&view)
    return out

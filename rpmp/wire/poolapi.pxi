# Pool-API operations: PUT/GET/DELETE (a key), ALLOC (a size; an address back), WRITE, READ and FREE (an
# address handed out by ALLOC, with offset and length). Their data parts are the values themselves.

def encode_key(key) -> bytes:
    """PUT/GET/DELETE request meta: ``bytes key`` (1..160 bytes; a str key is taken as UTF-8)."""
    cdef Py_buffer view
    cdef bytes out
    if isinstance(key, str):
        key = (<str>key).encode("utf-8")
    PyObject_GetBuffer(key, &view, PyBUF_SIMPLE)
    try:
        if view.len < 1 or view.len > C_KEY_MAX:
            validate_key(bytes(key))  # raises
        out = _new(4 + view.len)
        rp_st32(_ptr(out), <uint32_t>view.len)
        memcpy(_ptr(out) + 4, view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return out


encode_put = encode_get = encode_delete = encode_key


def decode_key(meta) -> bytes:
    """PUT/GET/DELETE request meta -> key (bytes)."""
    cdef Py_buffer view
    cdef Cur c
    _open(&c, meta, &view, "key request")
    try:
        key = r_key(&c, "key")
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    return key


def encode_alloc(uint64_t size) -> bytes:
    if size == 0:
        raise ProtocolError(BAD_REQUEST, "ALLOC.size is 0, must be at least 1")
    return encode_u64(size)


def decode_alloc(meta) -> int:
    """-> size (at least 1)"""
    v = _decode_u64(meta, "ALLOC", "size")
    if v == 0:
        raise ProtocolError(BAD_REQUEST, "ALLOC.size is 0, must be at least 1")
    return v


def encode_alloc_resp(uint64_t address) -> bytes:
    return encode_u64(address)


def decode_alloc_resp(meta) -> int:
    """-> address"""
    return _decode_u64(meta, "ALLOC response", "address")


def encode_write(uint64_t address, uint64_t offset) -> bytes:
    cdef bytes out = _new(16)
    rp_st64(_ptr(out), address)
    rp_st64(_ptr(out) + 8, offset)
    return out


def decode_write(meta) -> tuple:
    """-> (address, offset)"""
    cdef Py_buffer view
    cdef Cur c
    _open(&c, meta, &view, "WRITE")
    try:
        address = r_u64(&c, "address")
        offset = r_u64(&c, "offset")
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    return (address, offset)


def encode_read(uint64_t address, uint64_t offset, uint64_t length) -> bytes:
    cdef bytes out = _new(24)
    rp_st64(_ptr(out), address)
    rp_st64(_ptr(out) + 8, offset)
    rp_st64(_ptr(out) + 16, length)
    return out


def decode_read(meta) -> tuple:
    """-> (address, offset, length)"""
    cdef Py_buffer view
    cdef Cur c
    _open(&c, meta, &view, "READ")
    try:
        address = r_u64(&c, "address")
        offset = r_u64(&c, "offset")
        length = r_u64(&c, "length")
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    return (address, offset, length)


def encode_free(uint64_t address) -> bytes:
    return encode_u64(address)


def decode_free(meta) -> int:
    """-> address"""
    return _decode_u64(meta, "FREE", "address")

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


cdef object _key_fields(Cur* c, Py_ssize_t arg):
    return r_key(c, "key")


def decode_key(meta) -> bytes:
    """PUT/GET/DELETE request meta -> key (bytes)."""
    return _decode(meta, "key request", _key_fields)


def encode_alloc(uint64_t size) -> bytes:
    if size == 0:
        raise ProtocolError(BAD_REQUEST, "ALLOC.size is 0, must be at least 1")
    return encode_u64(size)


cdef object _alloc_fields(Cur* c, Py_ssize_t arg):
    cdef uint64_t size = r_u64(c, "size")
    _finish(c)  # trailing bytes (BAD_FRAME) before a zero size (BAD_REQUEST)
    if size == 0:
        raise ProtocolError(BAD_REQUEST, "ALLOC.size is 0, must be at least 1")
    return size


def decode_alloc(meta) -> int:
    """-> size (at least 1)"""
    return _decode(meta, "ALLOC", _alloc_fields)


def encode_alloc_resp(uint64_t address) -> bytes:
    return encode_u64(address)


cdef object _address_fields(Cur* c, Py_ssize_t arg):
    return r_u64(c, "address")


def decode_alloc_resp(meta) -> int:
    """-> address"""
    return _decode(meta, "ALLOC response", _address_fields)


def encode_write(uint64_t address, uint64_t offset) -> bytes:
    cdef bytes out = _new(16)
    rp_st64(_ptr(out), address)
    rp_st64(_ptr(out) + 8, offset)
    return out


cdef object _write_fields(Cur* c, Py_ssize_t arg):
    address = r_u64(c, "address")
    offset = r_u64(c, "offset")
    return (address, offset)


def decode_write(meta) -> tuple:
    """-> (address, offset)"""
    return _decode(meta, "WRITE", _write_fields)


def encode_read(uint64_t address, uint64_t offset, uint64_t length) -> bytes:
    cdef bytes out = _new(24)
    rp_st64(_ptr(out), address)
    rp_st64(_ptr(out) + 8, offset)
    rp_st64(_ptr(out) + 16, length)
    return out


cdef object _read_fields(Cur* c, Py_ssize_t arg):
    address = r_u64(c, "address")
    offset = r_u64(c, "offset")
    length = r_u64(c, "length")
    return (address, offset, length)


def decode_read(meta) -> tuple:
    """-> (address, offset, length)"""
    return _decode(meta, "READ", _read_fields)


def encode_free(uint64_t address) -> bytes:
    return encode_u64(address)


def decode_free(meta) -> int:
    """-> address"""
    return _decode(meta, "FREE", _address_fields)

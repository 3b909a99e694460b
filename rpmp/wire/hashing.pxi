# Hashing: XXH3-64 (a segment's checksum, on the data path) and XXH64 (placement keys and tokens), over
# any buffer, large ones with the GIL released. The C is libxxhash's, declared in native/rpmp_wire.h.

cdef enum:
    GIL_FREE_HASH = 65536  # buffers from this size on are hashed without the GIL


cdef inline unsigned long long _digest(const void* p, size_t n, bint xxh3,
                                       unsigned long long seed) noexcept nogil:
    return XXH3_64bits_dispatch(p, n) if xxh3 else XXH64(p, n, seed)


cdef unsigned long long _hash(data, bint xxh3, unsigned long long seed) except? 0:
    """XXH3-64 (seed 0) or XXH64 (seed) of any C-contiguous buffer; large ones hashed with the GIL released."""
    cdef Py_buffer view
    cdef unsigned long long h
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if view.len >= GIL_FREE_HASH:
            with nogil:
                h = _digest(view.buf, <size_t>view.len, xxh3, seed)
        else:
            h = _digest(view.buf, <size_t>view.len, xxh3, seed)
    finally:
        PyBuffer_Release(&view)
    return h


def xxh3(data) -> int:
    """XXH3-64 (seed 0) of any C-contiguous buffer: the checksum of a segment's payload (PROTOCOL.md)."""
    return _hash(data, True, 0)


def xxh64(data, unsigned long long seed=0) -> int:
    """XXH64 of any C-contiguous buffer (placement tokens and keys, PROTOCOL.md 'Placement')."""
    return _hash(data, False, seed)

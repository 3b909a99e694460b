# Reading: Cur, a bounds-checked cursor over a meta's bytes, the r_* field readers every decoder uses, and
# _decode, the one frame around them (borrow the buffer, read the fields, insist the meta is consumed
# exactly, release), so that a decode_* is just its field reads.

cdef struct Cur:
    const unsigned char* p
    Py_ssize_t n
    Py_ssize_t pos
    const char* what  # message prefix: the opcode name, e.g. "PUSH" or "FETCH response"


cdef inline Py_ssize_t _borrow(object buf, Py_buffer* view, const unsigned char** p) except -1:
    """Point *p at buf's bytes and return their length; `view` must be released by the caller (for bytes,
    which are read in place without an export, releasing it is a no-op)."""
    rp_clear_view(view)
    if type(buf) is bytes:
        p[0] = <const unsigned char*>PyBytes_AS_STRING(buf)
        return len(<bytes>buf)
    PyObject_GetBuffer(buf, view, PyBUF_SIMPLE)
    p[0] = <const unsigned char*>view.buf
    return view.len


cdef inline int _open(Cur* c, object buf, Py_buffer* view, const char* what) except -1:
    """Point `c` at buf's bytes; `view` must be released by the caller (a no-op for bytes)."""
    c.n = _borrow(buf, view, &c.p)
    c.pos = 0
    c.what = what
    return 0


cdef str _s(const char* s):
    return (<bytes>s).decode("ascii")


cdef int _truncated(Cur* c, Py_ssize_t k, const char* field) except -1:
    raise ProtocolError(BAD_FRAME, f"truncated meta: {_s(c.what)}.{_s(field)} needs {k} bytes at offset {c.pos}, "
                                   f"{c.n - c.pos} left")


cdef inline int _need(Cur* c, Py_ssize_t k, const char* field) except -1:
    if c.n - c.pos < k:
        _truncated(c, k, field)
    return 0


cdef int _finish(Cur* c) except -1:
    if c.pos != c.n:
        raise ProtocolError(BAD_FRAME, f"trailing bytes: {_s(c.what)} meta has {c.n - c.pos} bytes after its "
                                       f"last field (meta is {c.n} bytes)")
    return 0


# A decoder's field reads: the fields of one meta from `c`, as the tuple (or value) the decoder returns.
# `arg` is the decoder's own parameter where it has one (REGISTER_SHUFFLE response: the expected number of
# partitions), else unused. A reader may call _finish itself to order its own checks after it.
ctypedef object (*Fields)(Cur* c, Py_ssize_t arg)


cdef inline object _decode(object meta, const char* what, Fields fields, Py_ssize_t arg=0):
    """Decode one meta: `fields` reads it, every byte must be read (BAD_FRAME otherwise), `what` names the
    meta in error messages. Holds a buffer export on `meta` only while reading."""
    cdef Py_buffer view
    cdef Cur c
    _open(&c, meta, &view, what)
    try:
        out = fields(&c, arg)
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    return out


cdef inline uint8_t r_u8(Cur* c, const char* field) except? 0xFF:
    _need(c, 1, field)
    c.pos += 1
    return c.p[c.pos - 1]


cdef inline uint16_t r_u16(Cur* c, const char* field) except? 0xFFFF:
    _need(c, 2, field)
    c.pos += 2
    return rp_ld16(c.p + c.pos - 2)


cdef inline uint32_t r_u32(Cur* c, const char* field) except? 0xFFFFFFFF:
    _need(c, 4, field)
    c.pos += 4
    return rp_ld32(c.p + c.pos - 4)


cdef inline uint64_t r_u64(Cur* c, const char* field) except? 0xFFFFFFFFFFFFFFFF:
    _need(c, 8, field)
    c.pos += 8
    return rp_ld64(c.p + c.pos - 8)


cdef str r_str(Cur* c, const char* field, bint strict=True):
    cdef Py_ssize_t n = r_u16(c, field)
    _need(c, n, field)
    cdef const char* p = <const char*>(c.p + c.pos)
    try:
        if strict:
            s = PyUnicode_DecodeUTF8(<char*>p, n, "strict")
        else:
            s = PyUnicode_DecodeUTF8(<char*>p, n, "replace")
    except UnicodeDecodeError:
        raise ProtocolError(BAD_REQUEST, f"{_s(c.what)}.{_s(field)} is not valid UTF-8") from None
    c.pos += n
    return s


cdef bytes r_bytes(Cur* c, const char* field):
    cdef Py_ssize_t n = r_u32(c, field)
    _need(c, n, field)
    b = PyBytes_FromStringAndSize(<char*>(c.p + c.pos), n)
    c.pos += n
    return b


cdef str r_app(Cur* c, const char* field):
    cdef Py_ssize_t n = r_u16(c, field)
    _need(c, n, field)
    cdef const char* p = <const char*>(c.p + c.pos)
    if n < 1 or n > C_APP_MAX or memchr(p, c'/', n) != NULL or memchr(p, 0, n) != NULL:
        validate_app(PyBytes_FromStringAndSize(<char*>p, n), f"{_s(c.what)}.{_s(field)}")  # raises
    try:
        s = PyUnicode_DecodeUTF8(<char*>p, n, "strict")
    except UnicodeDecodeError:
        validate_app(PyBytes_FromStringAndSize(<char*>p, n), f"{_s(c.what)}.{_s(field)}")
        raise  # not reached: validate_app rejects what UTF-8 decoding rejects
    c.pos += n
    return s


cdef bytes r_key(Cur* c, const char* field):
    cdef Py_ssize_t n = r_u32(c, field)
    _need(c, n, field)
    key = PyBytes_FromStringAndSize(<char*>(c.p + c.pos), n)
    if n < 1 or n > C_KEY_MAX:
        validate_key(key, f"{_s(c.what)}.{_s(field)}")  # raises
    c.pos += n
    return key


cdef uint32_t r_partition(Cur* c, const char* field) except? 0xFFFFFFFF:
    cdef uint32_t p = r_u32(c, field)
    if p >= C_MAX_PARTITIONS:
        raise ProtocolError(BAD_REQUEST, f"{_s(c.what)}.{_s(field)} {p} is not below {C_MAX_PARTITIONS}")
    return p


cdef tuple _STATES = (None, NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD, NodeState.DRAINING)


cdef object r_node(Cur* c):
    node_id = r_str(c, "node.node_id")
    host = r_str(c, "node.host")
    port = r_u16(c, "node.port")
    cdef uint8_t state = r_u8(c, "node.state")
    if state < C_STATE_ALIVE or state > C_STATE_DRAINING:
        raise ProtocolError(BAD_REQUEST, f"{_s(c.what)}.node.state {state} is not 1 (alive), 2 (suspect), 3 (dead) "
                                         f"or 4 (draining)")
    return Node(node_id, host, port, _STATES[state])


cdef list r_nodes(Cur* c, const char* field):
    cdef uint32_t count = r_u32(c, field)
    # every Node takes at least 2+2+2+1 bytes: refuse absurd counts before building anything
    _need(c, <Py_ssize_t>count * 7, field)
    cdef list out = []
    cdef uint32_t i
    for i in range(count):
        out.append(r_node(c))
    return out


cdef list r_u64_list(Cur* c, const char* field):
    cdef uint32_t count = r_u32(c, field)
    _need(c, <Py_ssize_t>count * 8, field)
    cdef list out = []
    cdef uint32_t i
    for i in range(count):
        out.append(rp_ld64(c.p + c.pos))
        c.pos += 8
    return out

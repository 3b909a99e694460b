# Writing: argument checks that raise what a decoder would (names, sizes, partitions), exact-size output
# (_new/_ptr: encoders compute the size first and write into one bytes object), and the w_* field writers.

cdef inline const char* _utf8(object s, Py_ssize_t* n, str field) except NULL:
    """UTF-8 bytes of a str (cached by CPython, no copy) or of bytes taken as already encoded."""
    if isinstance(s, str):
        try:
            return PyUnicode_AsUTF8AndSize(s, n)
        except UnicodeEncodeError:
            raise ProtocolError(BAD_REQUEST, f"{field} is not valid UTF-8 (lone surrogate)") from None
    if isinstance(s, bytes):
        n[0] = len(<bytes>s)
        return PyBytes_AS_STRING(s)
    raise TypeError(f"{field} must be str or bytes, not {type(s).__name__}")


cdef inline const char* _str_arg(object s, Py_ssize_t* n, str field) except NULL:
    cdef const char* p = _utf8(s, n, field)
    if n[0] > C_STR_MAX:
        raise ProtocolError(BAD_REQUEST, f"{field} is {n[0]} bytes, a str holds at most {C_STR_MAX}")
    return p


cdef inline const char* _app_arg(object app, Py_ssize_t* n, str field) except NULL:
    cdef const char* p = _utf8(app, n, field)
    if n[0] < 1 or n[0] > C_APP_MAX or memchr(p, c'/', n[0]) != NULL or memchr(p, 0, n[0]) != NULL:
        validate_app(app, field)  # raises with the precise reason
    if not isinstance(app, str):
        validate_app(app, field)  # bytes: check the UTF-8
    return p


cdef inline int _check_meta_size(Py_ssize_t size, str what) except -1:
    if size > C_MAX_META:
        raise ProtocolError(BAD_REQUEST, f"{what} meta would be {size} bytes, above the {C_MAX_META}-byte frame limit")
    return 0


cdef inline int _check_partition(uint32_t p, str field) except -1:
    if p >= C_MAX_PARTITIONS:
        raise ProtocolError(BAD_REQUEST, f"{field} {p} is not below {C_MAX_PARTITIONS}")
    return 0


cdef inline bytes _new(Py_ssize_t size):
    """An uninitialised bytes object of exactly `size` bytes, to be filled through _ptr."""
    return PyBytes_FromStringAndSize(NULL, size)


cdef inline unsigned char* _ptr(bytes b):
    return <unsigned char*>PyBytes_AS_STRING(b)


cdef inline unsigned char* w_str(unsigned char* p, const char* s, Py_ssize_t n) noexcept:
    rp_st16(p, <uint16_t>n)
    memcpy(p + 2, s, n)
    return p + 2 + n


cdef tuple _node_fields(object n):
    if isinstance(n, Node):
        return ((<object>n).node_id, (<object>n).host, (<object>n).port, (<object>n).state)
    node_id, host, port, state = n
    return (node_id, host, port, state)


cdef Py_ssize_t _node_size(tuple t, str field) except -1:
    cdef Py_ssize_t a, b
    _str_arg(t[0], &a, field + ".node_id")
    _str_arg(t[1], &b, field + ".host")
    return 2 + a + 2 + b + 3


cdef unsigned char* _w_node(unsigned char* p, tuple t, str field) except NULL:
    cdef Py_ssize_t n
    cdef const char* s
    cdef uint16_t port = t[2]
    cdef uint8_t state = t[3]
    if state < C_STATE_ALIVE or state > C_STATE_DRAINING:
        raise ProtocolError(BAD_REQUEST, f"{field}.state {state} is not 1 (alive), 2 (suspect), 3 (dead) or 4 "
                                         f"(draining)")
    s = _str_arg(t[0], &n, field + ".node_id")
    p = w_str(p, s, n)
    s = _str_arg(t[1], &n, field + ".host")
    p = w_str(p, s, n)
    rp_st16(p, port)
    p[2] = state
    return p + 3


cdef Py_ssize_t _nodes_size(list nodes, str field) except -1:
    cdef Py_ssize_t size = 4
    cdef tuple t
    for t in nodes:
        size += _node_size(t, field)
    return size


cdef unsigned char* _w_nodes(unsigned char* p, list nodes, str field) except NULL:
    cdef tuple t
    rp_st32(p, <uint32_t>len(nodes))
    p += 4
    for t in nodes:
        p = _w_node(p, t, field)
    return p

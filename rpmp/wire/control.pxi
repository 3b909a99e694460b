# Control operations (HELLO, MEMBERS, HEARTBEAT) and the two metas of a fixed shape every family uses:
# the empty meta (PING, STATS, MEMBERS requests, most responses) and the one-u64 meta (counts, addresses).

def decode_empty(meta, what: str = "meta") -> None:
    """Check that a meta that should be empty (PING, STATS, MEMBERS requests, most responses) is."""
    if len(meta) != 0:
        raise ProtocolError(BAD_FRAME, f"trailing bytes: {what} meta must be empty, it is {len(meta)} bytes")


def encode_u64(uint64_t value) -> bytes:
    """A meta of one u64: DELETE_SHUFFLE/DELETE_APP response (blocks_freed), ALLOC response (address),
    ALLOC request (size; encode_alloc checks it), FREE request (address)."""
    cdef bytes out = _new(8)
    rp_st64(_ptr(out), value)
    return out


cdef object _decode_u64(object meta, const char* what, const char* field):
    cdef Py_buffer view
    cdef Cur c
    _open(&c, meta, &view, what)
    try:
        v = r_u64(&c, field)
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    return v


def decode_u64(meta, what: str = "meta") -> int:
    """A meta of exactly one u64 (see encode_u64)."""
    cdef bytes w = what.encode("ascii", "replace")
    return _decode_u64(meta, w, "value")


def encode_hello(uint16_t version, client_name) -> bytes:
    cdef Py_ssize_t n
    cdef const char* s = _str_arg(client_name, &n, "HELLO.client_name")
    cdef bytes out = _new(4 + n)
    cdef unsigned char* p = _ptr(out)
    rp_st16(p, version)
    w_str(p + 2, s, n)
    return out


def decode_hello(meta) -> tuple:
    """-> (version, client_name)"""
    cdef Py_buffer view
    cdef Cur c
    _open(&c, meta, &view, "HELLO")
    try:
        version = r_u16(&c, "version")
        name = r_str(&c, "client_name")
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    return (version, name)


def encode_hello_resp(uint16_t version, node_id, uint64_t max_data) -> bytes:
    cdef Py_ssize_t n
    cdef const char* s = _str_arg(node_id, &n, "HELLO response.node_id")
    cdef bytes out = _new(12 + n)
    cdef unsigned char* p = _ptr(out)
    rp_st16(p, version)
    p = w_str(p + 2, s, n)
    rp_st64(p, max_data)
    return out


def decode_hello_resp(meta) -> tuple:
    """-> (version, node_id, max_data)"""
    cdef Py_buffer view
    cdef Cur c
    _open(&c, meta, &view, "HELLO response")
    try:
        version = r_u16(&c, "version")
        node_id = r_str(&c, "node_id")
        max_data = r_u64(&c, "max_data")
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    return (version, node_id, max_data)


def encode_members(uint64_t epoch, nodes) -> bytes:
    """MEMBERS and HEARTBEAT response: ``u64 epoch, list<Node>``; nodes are Node or 4-tuples."""
    cdef list ns = [_node_fields(n) for n in nodes]
    cdef Py_ssize_t size = 8 + _nodes_size(ns, "MEMBERS response.nodes")
    _check_meta_size(size, "MEMBERS response")
    cdef bytes out = _new(size)
    cdef unsigned char* p = _ptr(out)
    rp_st64(p, epoch)
    _w_nodes(p + 8, ns, "MEMBERS response.nodes")
    return out


def decode_members(meta) -> tuple:
    """-> (epoch, [Node, ...])"""
    cdef Py_buffer view
    cdef Cur c
    _open(&c, meta, &view, "MEMBERS response")
    try:
        epoch = r_u64(&c, "epoch")
        nodes = r_nodes(&c, "nodes")
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    return (epoch, nodes)


def encode_heartbeat(node, uint64_t known_epoch) -> bytes:
    """HEARTBEAT request: ``Node self, u64 known_epoch``."""
    cdef tuple t = _node_fields(node)
    cdef bytes out = _new(_node_size(t, "HEARTBEAT.self") + 8)
    rp_st64(_w_node(_ptr(out), t, "HEARTBEAT.self"), known_epoch)
    return out


def decode_heartbeat(meta) -> tuple:
    """-> (Node, known_epoch)"""
    cdef Py_buffer view
    cdef Cur c
    _open(&c, meta, &view, "HEARTBEAT")
    try:
        node = r_node(&c)
        epoch = r_u64(&c, "known_epoch")
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    return (node, epoch)

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


cdef object _value_fields(Cur* c, Py_ssize_t arg):
    return r_u64(c, "value")


def decode_u64(meta, what: str = "meta") -> int:
    """A meta of exactly one u64 (see encode_u64)."""
    cdef bytes w = what.encode("ascii", "replace")
    return _decode(meta, w, _value_fields)


def encode_hello(uint16_t version, client_name) -> bytes:
    cdef Py_ssize_t n
    cdef const char* s = _str_arg(client_name, &n, "HELLO.client_name")
    cdef bytes out = _new(4 + n)
    cdef unsigned char* p = _ptr(out)
    rp_st16(p, version)
    w_str(p + 2, s, n)
    return out


cdef object _hello_fields(Cur* c, Py_ssize_t arg):
    version = r_u16(c, "version")
    name = r_str(c, "client_name")
    return (version, name)


def decode_hello(meta) -> tuple:
    """-> (version, client_name)"""
    return _decode(meta, "HELLO", _hello_fields)


def encode_hello_resp(uint16_t version, node_id, uint64_t max_data) -> bytes:
    cdef Py_ssize_t n
    cdef const char* s = _str_arg(node_id, &n, "HELLO response.node_id")
    cdef bytes out = _new(12 + n)
    cdef unsigned char* p = _ptr(out)
    rp_st16(p, version)
    p = w_str(p + 2, s, n)
    rp_st64(p, max_data)
    return out


cdef object _hello_resp_fields(Cur* c, Py_ssize_t arg):
    version = r_u16(c, "version")
    node_id = r_str(c, "node_id")
    max_data = r_u64(c, "max_data")
    return (version, node_id, max_data)


def decode_hello_resp(meta) -> tuple:
    """-> (version, node_id, max_data)"""
    return _decode(meta, "HELLO response", _hello_resp_fields)


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


cdef object _members_fields(Cur* c, Py_ssize_t arg):
    epoch = r_u64(c, "epoch")
    nodes = r_nodes(c, "nodes")
    return (epoch, nodes)


def decode_members(meta) -> tuple:
    """-> (epoch, [Node, ...])"""
    return _decode(meta, "MEMBERS response", _members_fields)


def encode_heartbeat(node, uint64_t known_epoch) -> bytes:
    """HEARTBEAT request: ``Node self, u64 known_epoch``."""
    cdef tuple t = _node_fields(node)
    cdef bytes out = _new(_node_size(t, "HEARTBEAT.self") + 8)
    rp_st64(_w_node(_ptr(out), t, "HEARTBEAT.self"), known_epoch)
    return out


cdef object _heartbeat_fields(Cur* c, Py_ssize_t arg):
    node = r_node(c)
    epoch = r_u64(c, "known_epoch")
    return (node, epoch)


def decode_heartbeat(meta) -> tuple:
    """-> (Node, known_epoch)"""
    return _decode(meta, "HEARTBEAT", _heartbeat_fields)


def encode_drain(uint32_t timeout_s) -> bytes:
    """DRAIN request: ``u32 timeout_s`` (seconds until the node stops even if it still holds shuffles; 0: no
    limit). The response meta is empty."""
    cdef bytes out = _new(4)
    rp_st32(_ptr(out), timeout_s)
    return out


cdef object _drain_fields(Cur* c, Py_ssize_t arg):
    return r_u32(c, "timeout_s")


def decode_drain(meta) -> int:
    """-> timeout_s"""
    return _decode(meta, "DRAIN", _drain_fields)

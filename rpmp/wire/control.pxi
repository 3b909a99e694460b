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


cdef inline bytes r_nonce(Cur* c, const char* field):
    """A ``bytes`` field that must hold exactly NONCE_SIZE bytes (AUTH nonces and proofs)."""
    cdef bytes b = r_bytes(c, field)
    if len(b) != C_NONCE_SIZE:
        raise ProtocolError(BAD_REQUEST, f"{_s(c.what)}.{_s(field)} is {len(b)} bytes, it must be {C_NONCE_SIZE}")
    return b


cdef inline const unsigned char* _nonce_arg(object b, str field) except NULL:
    if not isinstance(b, bytes) or len(<bytes>b) != C_NONCE_SIZE:
        n = len(b) if isinstance(b, (bytes, bytearray, memoryview)) else -1
        raise ProtocolError(BAD_REQUEST, f"{field} is {n} bytes, it must be {C_NONCE_SIZE}")
    return <const unsigned char*>PyBytes_AS_STRING(b)


cdef inline unsigned char* w_nonce(unsigned char* p, const unsigned char* b) noexcept:
    rp_st32(p, C_NONCE_SIZE)
    memcpy(p + 4, b, C_NONCE_SIZE)
    return p + 4 + C_NONCE_SIZE


cdef inline int _check_tenant(const char* s, Py_ssize_t n, str field) except -1:
    if n < 1 or n > C_TENANT_MAX:
        raise ProtocolError(BAD_REQUEST, f"{field}: tenant name is {n} bytes, it must be 1..{C_TENANT_MAX}")
    return 0


def encode_auth(tenant, nonce) -> bytes:
    """AUTH request: ``str tenant, bytes nonce`` (the client's 32 random bytes)."""
    cdef Py_ssize_t n
    cdef const char* s = _str_arg(tenant, &n, "AUTH.tenant")
    _check_tenant(s, n, "AUTH.tenant")
    cdef const unsigned char* cn = _nonce_arg(nonce, "AUTH.nonce")
    cdef bytes out = _new(2 + n + 4 + C_NONCE_SIZE)
    w_nonce(w_str(_ptr(out), s, n), cn)
    return out


cdef object _auth_fields(Cur* c, Py_ssize_t arg):
    tenant = r_str(c, "tenant")
    cdef bytes raw = tenant.encode("utf-8")
    _check_tenant(raw, len(raw), f"{_s(c.what)}.tenant")
    nonce = r_nonce(c, "nonce")
    return (tenant, nonce)


def decode_auth(meta) -> tuple:
    """-> (tenant, nonce); the tenant is 1..TENANT_MAX bytes (its characters are the authenticator's
    business: an unknown name is AUTH_FAILED, not BAD_REQUEST), the nonce exactly 32 bytes."""
    return _decode(meta, "AUTH", _auth_fields)


def encode_auth_resp(nonce, proof) -> bytes:
    """AUTH response: ``bytes nonce, bytes proof`` (the node's 32 random bytes and its HMAC-SHA256)."""
    cdef const unsigned char* nn = _nonce_arg(nonce, "AUTH response.nonce")
    cdef const unsigned char* pr = _nonce_arg(proof, "AUTH response.proof")
    cdef bytes out = _new(2 * (4 + C_NONCE_SIZE))
    w_nonce(w_nonce(_ptr(out), nn), pr)
    return out


cdef object _auth_resp_fields(Cur* c, Py_ssize_t arg):
    nonce = r_nonce(c, "nonce")
    proof = r_nonce(c, "proof")
    return (nonce, proof)


def decode_auth_resp(meta) -> tuple:
    """-> (nonce, proof)"""
    return _decode(meta, "AUTH response", _auth_resp_fields)


def encode_auth_proof(proof) -> bytes:
    """AUTH_PROOF request: ``bytes proof`` (the client's HMAC-SHA256). The response meta is empty."""
    cdef const unsigned char* pr = _nonce_arg(proof, "AUTH_PROOF.proof")
    cdef bytes out = _new(4 + C_NONCE_SIZE)
    w_nonce(_ptr(out), pr)
    return out


cdef object _auth_proof_fields(Cur* c, Py_ssize_t arg):
    return r_nonce(c, "proof")


def decode_auth_proof(meta) -> bytes:
    """-> proof"""
    return _decode(meta, "AUTH_PROOF", _auth_proof_fields)

# Generic dispatch by opcode (tests, vectors, tools): the request and response codec tables, built from
# the per-opcode functions above, and encode/decode_request/response over them.

def _one(f):
    def g(meta):
        return (f(meta),)
    return g


def _empty(what):
    def g(meta):
        decode_empty(meta, what)
        return ()
    return g


def _enc_empty(*fields):
    if fields:
        raise TypeError("this opcode's meta is empty")
    return b""


_REQUEST_DECODERS = {
    Op.HELLO: decode_hello, Op.PING: _empty("PING"), Op.STATS: _empty("STATS"), Op.MEMBERS: _empty("MEMBERS"),
    Op.HEARTBEAT: decode_heartbeat, Op.DRAIN: _one(decode_drain), Op.REGISTER_SHUFFLE: decode_register,
    Op.AUTH: decode_auth, Op.AUTH_PROOF: _one(decode_auth_proof),
    Op.PUSH: decode_push, Op.LEASE: _one(decode_lease),
    Op.MAP_END: decode_map_end, Op.FETCH: decode_fetch, Op.PARTITION_INFO: decode_partition_info,
    Op.DELETE_SHUFFLE: decode_delete_shuffle, Op.DELETE_APP: _one(decode_delete_app), Op.PUT: _one(decode_key),
    Op.GET: _one(decode_key), Op.DELETE: _one(decode_key), Op.ALLOC: _one(decode_alloc), Op.WRITE: decode_write,
    Op.READ: decode_read, Op.FREE: _one(decode_free),
}
_REQUEST_ENCODERS = {
    Op.HELLO: encode_hello, Op.PING: _enc_empty, Op.STATS: _enc_empty, Op.MEMBERS: _enc_empty,
    Op.HEARTBEAT: encode_heartbeat, Op.DRAIN: encode_drain, Op.REGISTER_SHUFFLE: encode_register,
    Op.AUTH: encode_auth, Op.AUTH_PROOF: encode_auth_proof,
    Op.PUSH: encode_push, Op.LEASE: encode_lease,
    Op.MAP_END: encode_map_end, Op.FETCH: encode_fetch, Op.PARTITION_INFO: encode_partition_info,
    Op.DELETE_SHUFFLE: encode_delete_shuffle, Op.DELETE_APP: encode_delete_app, Op.PUT: encode_key,
    Op.GET: encode_key, Op.DELETE: encode_key, Op.ALLOC: encode_alloc, Op.WRITE: encode_write,
    Op.READ: encode_read, Op.FREE: encode_free,
}
_RESPONSE_DECODERS = {
    Op.HELLO: decode_hello_resp, Op.PING: _empty("PING response"), Op.STATS: _empty("STATS response"),
    Op.MEMBERS: decode_members, Op.HEARTBEAT: decode_members, Op.DRAIN: _empty("DRAIN response"),
    Op.AUTH: decode_auth_resp, Op.AUTH_PROOF: _empty("AUTH_PROOF response"),
    Op.REGISTER_SHUFFLE: decode_register_resp, Op.LEASE: _one(decode_lease_resp),
    Op.PUSH: _empty("PUSH response"), Op.MAP_END: _empty("MAP_END response"), Op.FETCH: _one(decode_fetch_resp),
    Op.PARTITION_INFO: decode_partition_info_resp, Op.DELETE_SHUFFLE: _one(decode_u64),
    Op.DELETE_APP: _one(decode_u64), Op.PUT: _empty("PUT response"), Op.GET: _empty("GET response"),
    Op.DELETE: _empty("DELETE response"), Op.ALLOC: _one(decode_alloc_resp), Op.WRITE: _empty("WRITE response"),
    Op.READ: _empty("READ response"), Op.FREE: _empty("FREE response"),
}
_RESPONSE_ENCODERS = {
    Op.HELLO: encode_hello_resp, Op.PING: _enc_empty, Op.STATS: _enc_empty, Op.MEMBERS: encode_members,
    Op.HEARTBEAT: encode_members, Op.DRAIN: _enc_empty, Op.REGISTER_SHUFFLE: encode_register_resp,
    Op.AUTH: encode_auth_resp, Op.AUTH_PROOF: _enc_empty,
    Op.LEASE: encode_lease_resp, Op.PUSH: _enc_empty,
    Op.MAP_END: _enc_empty, Op.FETCH: encode_fetch_resp, Op.PARTITION_INFO: encode_partition_info_resp,
    Op.DELETE_SHUFFLE: encode_u64, Op.DELETE_APP: encode_u64, Op.PUT: _enc_empty, Op.GET: _enc_empty,
    Op.DELETE: _enc_empty, Op.ALLOC: encode_alloc_resp, Op.WRITE: _enc_empty, Op.READ: _enc_empty,
    Op.FREE: _enc_empty,
}


def _lookup(dict table, int opcode):
    f = table.get(opcode)
    if f is None:
        raise ProtocolError(UNKNOWN_OPCODE, f"unknown opcode 0x{opcode:02x}")
    return f


def decode_request(int opcode, meta) -> tuple:
    """Decode any request's meta -> tuple named by rpmp.protocol.REQUEST_FIELDS[opcode]."""
    return _lookup(_REQUEST_DECODERS, opcode)(meta)


def encode_request(int opcode, *fields) -> bytes:
    """Encode any request's meta from the fields named by rpmp.protocol.REQUEST_FIELDS[opcode]."""
    return _lookup(_REQUEST_ENCODERS, opcode)(*fields)


def decode_response(int opcode, meta) -> tuple:
    """Decode a (non-error) response's meta -> tuple named by rpmp.protocol.RESPONSE_FIELDS[opcode]."""
    return _lookup(_RESPONSE_DECODERS, opcode)(meta)


def encode_response(int opcode, *fields) -> bytes:
    """Encode a (non-error) response's meta from the fields named by rpmp.protocol.RESPONSE_FIELDS[opcode]."""
    return _lookup(_RESPONSE_ENCODERS, opcode)(*fields)

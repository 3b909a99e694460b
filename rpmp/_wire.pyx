# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The RPMP wire codec (docs/PROTOCOL.md, version 2): frame headers, per-opcode meta, segment records.

Hot-path code for the node and the Python client, so it works on raw buffers in C and allocates only
the objects it returns. Every decoder accepts any C-contiguous buffer (bytes, bytearray, memoryview,
pyarrow.Buffer), copies what it returns (nothing refers back into the caller's buffer), checks every
bound, and raises only ``rpmp.protocol.ProtocolError`` on bad input:

- BAD_FRAME: bad magic, reserved != 0, truncated meta, trailing meta bytes, a torn record;
- BAD_VERSION: header version != 2;  TOO_LARGE: meta_len > 1 MiB or data_len > max_data;
- BAD_REQUEST: a field out of range (names, partition >= 2**24, ...); the message names the field,
  e.g. ``"PUSH.app: application name contains '/'"`` or ``"truncated meta: PUSH.attempt needs 8 bytes
  at offset 22, 3 left"``.

Encoders enforce the same rules (ProtocolError BAD_REQUEST, also when the meta would exceed 1 MiB:
e.g. a REGISTER_SHUFFLE placement table too big for one frame), so they cannot build a frame a decoder
rejects; an integer that does not fit its C type raises OverflowError (a caller bug, not bad input).

API (all integers are Python ints; "meta" means the bytes of a frame's meta part):

Frames
    pack_header(opcode, flags, request_id, meta_len, data_len) -> bytes (32)
    pack_header_into(buf, offset, opcode, flags, request_id, meta_len, data_len) -> None
    unpack_header(buf, max_data=DEFAULT_MAX_DATA, offset=0) -> (opcode, flags, request_id, meta_len, data_len)
    frame(opcode, flags, request_id, meta=b"", data_len=0) -> bytes  (header + meta)
    push_frame(request_id, app, shuffle, partition, map_index, attempt, seq, checksum, data_len, flags=0) -> bytes
        (header + PUSH meta in one allocation: the client's hot path)
    xxh3(buf) -> int  (a segment's checksum, XXH3-64 seed 0; releases the GIL for large buffers, so a thread
        can checksum the next segment while another sends)
    xxh64(buf, seed=0) -> int  (placement keys and tokens; not on the data path)
    error_frame(opcode, request_id, code, message) -> bytes  (RESPONSE|ERROR header + error meta)

Meta, request -> decoded tuple (names in rpmp.protocol.REQUEST_FIELDS)
    encode_hello(version, client_name) / decode_hello -> (version, client_name)
    decode_empty(meta, what="meta") -> None   (PING, STATS, MEMBERS requests; empty responses)
    encode_heartbeat(node, known_epoch) / decode_heartbeat -> (Node, known_epoch)
    encode_register(app, shuffle, num_partitions, replicas) / decode_register -> (app, shuffle, num_partitions,
        replicas)
    encode_register_forwarded(app, shuffle, num_partitions, replicas, placement) /
        decode_register_forwarded -> ((app, shuffle, num_partitions, replicas), placement: bytes)
    encode_push(app, shuffle, partition, map_index, attempt, seq, checksum) / decode_push -> same 7-tuple
    encode_map_end(app, shuffle, map_index, attempt, counts) / decode_map_end -> (app, shuffle, map_index,
        attempt, [PartCount(partition, segments, bytes), ...])
    encode_fetch(app, shuffle, partition, start_map=0, end_map=END_MAP_ALL, attempts=()) / decode_fetch ->
        (app, shuffle, partition, start_map, end_map, [attempt, ...])
    encode_partition_info(app, shuffle, partition) / decode_partition_info -> (app, shuffle, partition)
    encode_delete_shuffle(app, shuffle) / decode_delete_shuffle -> (app, shuffle)
    encode_delete_app(app) / decode_delete_app -> app
    encode_key(key) / decode_key -> bytes            (PUT, GET, DELETE)
    encode_alloc(size) / decode_alloc -> size
    encode_write(address, offset) / decode_write -> (address, offset)
    encode_read(address, offset, length) / decode_read -> (address, offset, length)
    encode_free(address) / decode_free -> address

Meta, response (names in rpmp.protocol.RESPONSE_FIELDS)
    encode_hello_resp(version, node_id, max_data) / decode_hello_resp -> (version, node_id, max_data)
    encode_members(epoch, nodes) / decode_members -> (epoch, [Node, ...])      (MEMBERS, HEARTBEAT)
    encode_register_resp(epoch, nodes, prefs) / decode_register_resp(meta, num_partitions=None) ->
        (epoch, [Node, ...], [(node index, ...) per partition])
    encode_fetch_resp(records) / decode_fetch_resp -> records
    encode_partition_info_resp(pool_path, records, nbytes, blocks) / decode_partition_info_resp ->
        (pool_path, records, bytes, [Block(address, file_offset, used, sealed), ...])
    encode_u64(value) / decode_u64(meta, what="meta") -> value   (DELETE_* blocks_freed, ALLOC address)
    encode_error(code, message) / decode_error -> (ErrorCode or int, message)

Generic (tests, tools): encode_request(op, *fields), decode_request(op, meta) -> tuple,
    encode_response(op, *fields), decode_response(op, meta) -> tuple (unknown opcode: UNKNOWN_OPCODE).
    MetaWriter (u8/u16/u32/u64/i32/i64/str/bytes/raw/u64_list/node; getvalue(), frame(...)),
    MetaReader(buf, what) (the same reads, plus app/key with the name rules; finish() rejects trailing bytes).

Records (a block's or FETCH response's concatenated records)
    pack_record_header(map_index, attempt, seq, length, checksum) -> bytes (32)
    write_record_header(buf, offset, map_index, attempt, seq, length, checksum) -> None
    unpack_record_header(buf, offset=0) -> (map_index, attempt, seq, length, checksum)
    iter_records(buf, start=0, end=-1) -> iterator of (map_index, attempt, seq, payload_offset, length, checksum)
        (payload_offset is absolute in buf; a torn or foreign record raises BAD_FRAME)
    count_records(buf, start=0, end=-1) -> (records, payload_bytes)
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memchr, memcpy

from rpmp.protocol import (
    DEFAULT_MAX_DATA,
    END_MAP_ALL,
    FLAG_ERROR,
    FLAG_RESPONSE,
    Block,
    ErrorCode,
    Node,
    NodeState,
    Op,
    PartCount,
    ProtocolError,
    validate_app,
    validate_key,
)

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #define RP_LE16(v) __builtin_bswap16(v)
    #define RP_LE32(v) __builtin_bswap32(v)
    #define RP_LE64(v) __builtin_bswap64(v)
    #else
    #define RP_LE16(v) (v)
    #define RP_LE32(v) (v)
    #define RP_LE64(v) (v)
    #endif
    static inline uint16_t rp_ld16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return RP_LE16(v); }
    static inline uint32_t rp_ld32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return RP_LE32(v); }
    static inline uint64_t rp_ld64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return RP_LE64(v); }
    static inline void rp_st16(unsigned char *p, uint16_t v) { v = RP_LE16(v); memcpy(p, &v, 2); }
    static inline void rp_st32(unsigned char *p, uint32_t v) { v = RP_LE32(v); memcpy(p, &v, 4); }
    static inline void rp_st64(unsigned char *p, uint64_t v) { v = RP_LE64(v); memcpy(p, &v, 8); }
    #define rp_clear_view(v) ((v)->obj = NULL)
    """
    uint16_t rp_ld16(const unsigned char* p) noexcept nogil
    uint32_t rp_ld32(const unsigned char* p) noexcept nogil
    uint64_t rp_ld64(const unsigned char* p) noexcept nogil
    void rp_st16(unsigned char* p, uint16_t v) noexcept nogil
    void rp_st32(unsigned char* p, uint32_t v) noexcept nogil
    void rp_st64(unsigned char* p, uint64_t v) noexcept nogil
    void rp_clear_view(Py_buffer* v) noexcept nogil  # PyBuffer_Release of a cleared view is a no-op

cdef extern from *:
    """
    #define XXH_INLINE_ALL
    #include <xxhash.h>
    /* libxxhash's runtime-dispatched XXH3 (SSE2/AVX2/AVX512 picked by CPUID), from xxh_x86dispatch.c */
    XXH64_hash_t XXH3_64bits_dispatch(const void* input, size_t len);
    """
    unsigned long long XXH64(const void* data, size_t length, unsigned long long seed) noexcept nogil
    unsigned long long XXH3_64bits_dispatch(const void* data, size_t length) noexcept nogil


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


# C copies of rpmp.protocol's numbers (protocol.py is the source; a test checks they agree).
cdef enum:
    C_MAGIC = 0x504D5052
    C_VERSION = 2
    C_HEADER = 32
    C_MAX_META = 1048576
    C_APP_MAX = 120
    C_KEY_MAX = 160
    C_STR_MAX = 65535
    C_MAX_PARTITIONS = 16777216
    C_MAX_SEGMENT = 67108864
    C_REC_MAGIC = 0x31474553
    C_REC_HEADER = 32
    C_SLASH = 0x2F

cdef object BAD_FRAME = ErrorCode.BAD_FRAME
cdef object BAD_VERSION = ErrorCode.BAD_VERSION
cdef object TOO_LARGE = ErrorCode.TOO_LARGE
cdef object BAD_REQUEST = ErrorCode.BAD_REQUEST
cdef object UNKNOWN_OPCODE = ErrorCode.UNKNOWN_OPCODE
cdef tuple _STATES = (None, NodeState.ALIVE, NodeState.SUSPECT, NodeState.DEAD)


# ---- reading ---------------------------------------------------------------------------------------

cdef struct Cur:
    const unsigned char* p
    Py_ssize_t n
    Py_ssize_t pos
    const char* what  # message prefix: the opcode name, e.g. "PUSH" or "FETCH response"


cdef inline int _open(Cur* c, object buf, Py_buffer* view, const char* what) except -1:
    """Point `c` at buf's bytes; `view` must be released by the caller (a no-op for bytes)."""
    rp_clear_view(view)
    if type(buf) is bytes:
        c.p = <const unsigned char*>PyBytes_AS_STRING(buf)
        c.n = len(<bytes>buf)
    else:
        PyObject_GetBuffer(buf, view, PyBUF_SIMPLE)
        c.p = <const unsigned char*>view.buf
        c.n = view.len
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
    if n < 1 or n > C_APP_MAX or memchr(p, C_SLASH, n) != NULL or memchr(p, 0, n) != NULL:
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


cdef object r_node(Cur* c):
    node_id = r_str(c, "node.node_id")
    host = r_str(c, "node.host")
    port = r_u16(c, "node.port")
    cdef uint8_t state = r_u8(c, "node.state")
    if state < 1 or state > 3:
        raise ProtocolError(BAD_REQUEST, f"{_s(c.what)}.node.state {state} is not 1 (alive), 2 (suspect) or 3 (dead)")
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


# ---- writing ---------------------------------------------------------------------------------------

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
    if n[0] < 1 or n[0] > C_APP_MAX or memchr(p, C_SLASH, n[0]) != NULL or memchr(p, 0, n[0]) != NULL:
        validate_app(app, field)  # raises with the precise reason
    if not isinstance(app, str):
        validate_app(app, field)  # bytes: check the UTF-8
    return p


cdef inline int _check_meta_size(Py_ssize_t size, str what) except -1:
    if size > C_MAX_META:
        raise ProtocolError(BAD_REQUEST, f"{what} meta would be {size} bytes, above the {C_MAX_META}-byte frame limit")
    return 0


cdef inline bytes _new(Py_ssize_t size):
    return PyBytes_FromStringAndSize(NULL, size)


cdef inline unsigned char* _ptr(bytes b):
    return <unsigned char*>PyBytes_AS_STRING(b)


cdef inline unsigned char* w_str(unsigned char* p, const char* s, Py_ssize_t n) noexcept:
    rp_st16(p, <uint16_t>n)
    memcpy(p + 2, s, n)
    return p + 2 + n


cdef inline int _check_partition(uint32_t p, str field) except -1:
    if p >= C_MAX_PARTITIONS:
        raise ProtocolError(BAD_REQUEST, f"{field} {p} is not below {C_MAX_PARTITIONS}")
    return 0


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
    if state < 1 or state > 3:
        raise ProtocolError(BAD_REQUEST, f"{field}.state {state} is not 1 (alive), 2 (suspect) or 3 (dead)")
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


# ---- frame header ----------------------------------------------------------------------------------

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
    cdef bytes out = _new(C_HEADER)
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
        if offset < 0 or view.len - offset < C_HEADER:
            raise ValueError(f"no room for a {C_HEADER}-byte header at offset {offset} of a {view.len}-byte buffer")
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
    cdef Py_ssize_t n
    cdef uint64_t limit = max_data
    rp_clear_view(&view)
    if type(buf) is bytes:
        p = <const unsigned char*>PyBytes_AS_STRING(buf)
        n = len(<bytes>buf)
    else:
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
        p = <const unsigned char*>view.buf
        n = view.len
    cdef uint32_t magic, reserved, meta_len
    cdef uint64_t request_id, data_len
    cdef uint8_t version, opcode
    cdef uint16_t flags
    try:
        if offset < 0 or n - offset < C_HEADER:
            raise ProtocolError(BAD_FRAME, f"truncated header: {max(n - offset, 0)} bytes, a header is {C_HEADER}")
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
    cdef Py_ssize_t n
    rp_clear_view(&view)
    if type(meta) is bytes:
        m = <const unsigned char*>PyBytes_AS_STRING(meta)
        n = len(<bytes>meta)
    else:
        PyObject_GetBuffer(meta, &view, PyBUF_SIMPLE)
        m = <const unsigned char*>view.buf
        n = view.len
    try:
        if n > C_MAX_META:
            raise ProtocolError(TOO_LARGE, f"meta of {n} bytes exceeds the limit of {C_MAX_META}")
        out = _new(C_HEADER + n)
        _fill_header(_ptr(out), opcode, flags, request_id, <uint32_t>n, data_len)
        memcpy(_ptr(out) + C_HEADER, m, n)
    finally:
        PyBuffer_Release(&view)
    return out


def error_frame(uint8_t opcode, uint64_t request_id, code, message) -> bytes:
    """A complete error response: flags RESPONSE|ERROR, meta ``u16 code, str message``, no data."""
    return frame(opcode, FLAG_RESPONSE | FLAG_ERROR, request_id, encode_error(code, message), 0)


# ---- generic meta writer / reader ------------------------------------------------------------------

cdef class MetaWriter:
    """A growing little-endian buffer for meta, for tools and tests that build frames field by field.

    The opcode encoders below do not use it (they size their output exactly); it is the way to build a
    deliberately odd frame, or a frame of a future opcode. It keeps 32 bytes in front of the meta so that
    ``frame()`` returns header + meta without another copy.
    """

    cdef unsigned char* buf
    cdef Py_ssize_t length  # including the reserved header room
    cdef Py_ssize_t cap

    def __cinit__(self, Py_ssize_t capacity=256):
        self.cap = max(capacity, 64) + C_HEADER
        self.buf = <unsigned char*>malloc(self.cap)
        if self.buf == NULL:
            raise MemoryError()
        self.length = C_HEADER

    def __dealloc__(self):
        free(self.buf)

    cdef unsigned char* _grow(self, Py_ssize_t k) except NULL:
        cdef Py_ssize_t cap = self.cap
        cdef unsigned char* nb
        if self.length + k > cap:
            while self.length + k > cap:
                cap *= 2
            nb = <unsigned char*>realloc(self.buf, cap)
            if nb == NULL:
                raise MemoryError()
            self.buf = nb
            self.cap = cap
        cdef unsigned char* p = self.buf + self.length
        self.length += k
        return p

    def __len__(self) -> int:
        return self.length - C_HEADER

    def u8(self, uint8_t v) -> None:
        self._grow(1)[0] = v

    def u16(self, uint16_t v) -> None:
        rp_st16(self._grow(2), v)

    def u32(self, uint32_t v) -> None:
        rp_st32(self._grow(4), v)

    def u64(self, uint64_t v) -> None:
        rp_st64(self._grow(8), v)

    def i32(self, int v) -> None:
        rp_st32(self._grow(4), <uint32_t>v)

    def i64(self, long long v) -> None:
        rp_st64(self._grow(8), <uint64_t>v)

    def str(self, s) -> None:
        """`u16 length` + UTF-8 bytes (bytes are written as given: for building invalid frames)."""
        cdef Py_ssize_t n
        cdef const char* p = _str_arg(s, &n, "str")
        w_str(self._grow(2 + n), p, n)

    def bytes(self, b) -> None:
        """`u32 length` + the bytes."""
        cdef Py_buffer view
        PyObject_GetBuffer(b, &view, PyBUF_SIMPLE)
        try:
            p = self._grow(4 + view.len)
            rp_st32(p, <uint32_t>view.len)
            memcpy(p + 4, view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def raw(self, b) -> None:
        """Bytes with no length prefix."""
        cdef Py_buffer view
        PyObject_GetBuffer(b, &view, PyBUF_SIMPLE)
        try:
            memcpy(self._grow(view.len), view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    def u64_list(self, values) -> None:
        """`u32 count` + that many u64."""
        cdef list vs = list(values)
        rp_st32(self._grow(4), <uint32_t>len(vs))
        cdef uint64_t v
        for x in vs:
            v = x
            rp_st64(self._grow(8), v)

    def node(self, node) -> None:
        """A `Node` (or a (node_id, host, port, state) tuple)."""
        cdef tuple t = _node_fields(node)
        _w_node(self._grow(_node_size(t, "node")), t, "node")

    def getvalue(self) -> bytes:
        """The meta written so far."""
        return PyBytes_FromStringAndSize(<char*>self.buf + C_HEADER, self.length - C_HEADER)

    def frame(self, uint8_t opcode, uint16_t flags, uint64_t request_id, uint64_t data_len=0) -> bytes:
        """Header + the meta written so far (meta_len is not limited here: tests build oversized frames)."""
        _fill_header(self.buf, opcode, flags, request_id, <uint32_t>(self.length - C_HEADER), data_len)
        return PyBytes_FromStringAndSize(<char*>self.buf, self.length)


cdef class MetaReader:
    """Bounds-checked reads over any buffer, raising ProtocolError like the opcode decoders do.

    ``what`` prefixes error messages (e.g. "PUSH"). The reader holds a buffer export on `buf` until
    ``finish()`` or ``close()`` (a bytearray cannot be resized meanwhile).
    """

    cdef Py_buffer view
    cdef Cur c
    cdef bytes _what
    cdef bint held

    def __cinit__(self, buf, what: str = "meta"):
        self._what = what.encode("ascii", "replace")
        PyObject_GetBuffer(buf, &self.view, PyBUF_SIMPLE)
        self.held = True
        self.c.p = <const unsigned char*>self.view.buf
        self.c.n = self.view.len
        self.c.pos = 0
        self.c.what = self._what

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)

    cdef int _check(self) except -1:
        if not self.held:
            raise ValueError("MetaReader is closed")
        return 0

    @property
    def pos(self) -> int:
        return self.c.pos

    @property
    def remaining(self) -> int:
        return self.c.n - self.c.pos

    def u8(self, field: str = "u8") -> int:
        self._check()
        return self._rd(field, 1)

    def u16(self, field: str = "u16") -> int:
        self._check()
        return self._rd(field, 2)

    def u32(self, field: str = "u32") -> int:
        self._check()
        return self._rd(field, 4)

    def u64(self, field: str = "u64") -> int:
        self._check()
        return self._rd(field, 8)

    def i32(self, field: str = "i32") -> int:
        v = self.u32(field)
        return v - (1 << 32) if v >= (1 << 31) else v

    def i64(self, field: str = "i64") -> int:
        v = self.u64(field)
        return v - (1 << 64) if v >= (1 << 63) else v

    cdef object _rd(self, str field, int size):
        cdef bytes f = field.encode("ascii", "replace")
        if size == 1:
            return r_u8(&self.c, f)
        if size == 2:
            return r_u16(&self.c, f)
        if size == 4:
            return r_u32(&self.c, f)
        return r_u64(&self.c, f)

    def str(self, field: str = "str", strict: bool = True) -> str:
        self._check()
        cdef bytes f = field.encode("ascii", "replace")
        return r_str(&self.c, f, strict)

    def bytes(self, field: str = "bytes") -> bytes:
        self._check()
        cdef bytes f = field.encode("ascii", "replace")
        return r_bytes(&self.c, f)

    def raw(self, Py_ssize_t n, field: str = "raw") -> bytes:
        self._check()
        cdef bytes f = field.encode("ascii", "replace")
        if n < 0:
            raise ValueError("negative length")
        _need(&self.c, n, f)
        b = PyBytes_FromStringAndSize(<char*>(self.c.p + self.c.pos), n)
        self.c.pos += n
        return b

    def u64_list(self, field: str = "list") -> list:
        self._check()
        cdef bytes f = field.encode("ascii", "replace")
        return r_u64_list(&self.c, f)

    def app(self, field: str = "app") -> str:
        """A `str` that must follow the application-name rules (BAD_REQUEST otherwise)."""
        self._check()
        cdef bytes f = field.encode("ascii", "replace")
        return r_app(&self.c, f)

    def key(self, field: str = "key") -> bytes:
        """A `bytes` that must be a valid key, 1..160 bytes (BAD_REQUEST otherwise)."""
        self._check()
        cdef bytes f = field.encode("ascii", "replace")
        return r_key(&self.c, f)

    def node(self) -> Node:
        self._check()
        return r_node(&self.c)

    def close(self) -> None:
        """Release the buffer without checking for trailing bytes."""
        if self.held:
            self.held = False
            PyBuffer_Release(&self.view)

    def finish(self) -> None:
        """Release the buffer; BAD_FRAME if bytes are left over (a meta must be consumed exactly)."""
        self._check()
        try:
            _finish(&self.c)
        finally:
            self.close()


# ---- control ---------------------------------------------------------------------------------------

def decode_empty(meta, what: str = "meta") -> None:
    """Check that a meta that should be empty (PING, STATS, MEMBERS requests, most responses) is."""
    if len(meta) != 0:
        raise ProtocolError(BAD_FRAME, f"trailing bytes: {what} meta must be empty, it is {len(meta)} bytes")


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


# ---- shuffle ---------------------------------------------------------------------------------------

cdef int _check_register(uint32_t num_partitions, uint8_t replicas, str what) except -1:
    if num_partitions < 1 or num_partitions > C_MAX_PARTITIONS:
        raise ProtocolError(BAD_REQUEST, f"{what}.num_partitions {num_partitions} is not in 1..{C_MAX_PARTITIONS}")
    if replicas < 1:
        raise ProtocolError(BAD_REQUEST, f"{what}.replicas is 0, must be at least 1 (the total number of copies)")
    return 0


def encode_register(app, uint32_t shuffle, uint32_t num_partitions, uint8_t replicas) -> bytes:
    cdef Py_ssize_t n
    cdef const char* a = _app_arg(app, &n, "REGISTER_SHUFFLE.app")
    _check_register(num_partitions, replicas, "REGISTER_SHUFFLE")
    cdef bytes out = _new(2 + n + 9)
    cdef unsigned char* p = w_str(_ptr(out), a, n)
    rp_st32(p, shuffle)
    rp_st32(p + 4, num_partitions)
    p[8] = replicas
    return out


cdef tuple _r_register(Cur* c):
    app = r_app(c, "app")
    shuffle = r_u32(c, "shuffle")
    cdef uint32_t num_partitions = r_u32(c, "num_partitions")
    cdef uint8_t replicas = r_u8(c, "replicas")
    _check_register(num_partitions, replicas, _s(c.what))
    return (app, shuffle, num_partitions, replicas)


def decode_register(meta) -> tuple:
    """-> (app, shuffle, num_partitions, replicas); num_partitions in 1..2**24, replicas >= 1."""
    cdef Py_buffer view
    cdef Cur c
    _open(&c, meta, &view, "REGISTER_SHUFFLE")
    try:
        t = _r_register(&c)
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    return t


def encode_register_resp(uint64_t epoch, nodes, prefs) -> bytes:
    """``u64 epoch, list<Node> nodes, u8 L, num_partitions x L u16``.

    ``prefs`` holds one preference list per partition (indices into ``nodes``, primary first), all of the
    same length L (1..255), distinct and < len(nodes).
    """
    cdef list ns = [_node_fields(n) for n in nodes]
    cdef list ps = list(prefs)
    cdef Py_ssize_t nparts = len(ps), nnodes = len(ns)
    cdef Py_ssize_t L = len(ps[0]) if nparts else 0
    if nparts and (L < 1 or L > 255):
        raise ProtocolError(BAD_REQUEST, f"REGISTER_SHUFFLE response: preference lists of {L} nodes (1..255)")
    if nnodes > 65535:
        raise ProtocolError(BAD_REQUEST, f"REGISTER_SHUFFLE response: {nnodes} nodes, u16 indices allow 65535")
    cdef Py_ssize_t size = 8 + _nodes_size(ns, "REGISTER_SHUFFLE response.nodes") + 1 + nparts * L * 2
    _check_meta_size(size, "REGISTER_SHUFFLE response")
    cdef bytes out = _new(size)
    cdef unsigned char* p = _ptr(out)
    rp_st64(p, epoch)
    p = _w_nodes(p + 8, ns, "REGISTER_SHUFFLE response.nodes")
    p[0] = <uint8_t>L
    p += 1
    cdef Py_ssize_t i, j, k
    cdef uint16_t idx[256]
    cdef long v
    for i in range(nparts):
        row = ps[i]
        if len(row) != L:
            raise ProtocolError(BAD_REQUEST, f"REGISTER_SHUFFLE response: prefs[{i}] has {len(row)} nodes, "
                                             f"prefs[0] has {L}")
        for j in range(L):
            v = row[j]
            if v < 0 or v >= nnodes:
                raise ProtocolError(BAD_REQUEST, f"REGISTER_SHUFFLE response: prefs[{i}][{j}] = {v} is not an "
                                                 f"index into {nnodes} nodes")
            for k in range(j):
                if idx[k] == v:
                    raise ProtocolError(BAD_REQUEST, f"REGISTER_SHUFFLE response: prefs[{i}] repeats node {v}")
            idx[j] = <uint16_t>v
            rp_st16(p, <uint16_t>v)
            p += 2
    return out


cdef object _r_register_resp(Cur* c, Py_ssize_t expect_parts, bint build):
    """Parse the REGISTER_SHUFFLE response meta; with build=False only validate (returns None)."""
    epoch = r_u64(c, "epoch")
    nodes = r_nodes(c, "nodes")
    cdef Py_ssize_t nnodes = len(nodes)
    cdef Py_ssize_t L = r_u8(c, "L")
    cdef Py_ssize_t rem = c.n - c.pos, nparts, i, j, k
    if L == 0:
        nparts = 0
        if rem:
            raise ProtocolError(BAD_FRAME, f"trailing bytes: {_s(c.what)} has L = 0 but {rem} bytes of preferences")
    else:
        if rem % (2 * L):
            raise ProtocolError(BAD_FRAME, f"truncated meta: {_s(c.what)}.prefs is {rem} bytes, not a multiple of "
                                           f"2 x L = {2 * L}")
        nparts = rem // (2 * L)
    if nparts and L > nnodes:
        raise ProtocolError(BAD_FRAME, f"{_s(c.what)}: preference lists of L = {L} nodes, but only {nnodes} nodes")
    if expect_parts >= 0 and nparts != expect_parts:
        raise ProtocolError(BAD_FRAME, f"{_s(c.what)}.prefs has {nparts} partitions, expected {expect_parts}")
    cdef uint16_t idx[256]
    cdef list prefs = [] if build else None
    cdef const unsigned char* p = c.p + c.pos
    for i in range(nparts):
        for j in range(L):
            idx[j] = rp_ld16(p + 2 * j)
            if idx[j] >= nnodes:
                raise ProtocolError(BAD_FRAME, f"{_s(c.what)}.prefs[{i}][{j}] = {idx[j]} is not an index into "
                                               f"{nnodes} nodes")
            for k in range(j):
                if idx[k] == idx[j]:
                    raise ProtocolError(BAD_FRAME, f"{_s(c.what)}.prefs[{i}] repeats node {idx[j]}")
        if build:
            prefs.append(tuple([idx[j] for j in range(L)]))
        p += 2 * L
    c.pos = c.n
    if build:
        return (epoch, nodes, prefs)
    return None


def decode_register_resp(meta, num_partitions=None) -> tuple:
    """-> (epoch, [Node, ...], [(index, ...) per partition]); pass num_partitions to check the table's size."""
    cdef Py_buffer view
    cdef Cur c
    cdef Py_ssize_t expect = -1 if num_partitions is None else num_partitions
    _open(&c, meta, &view, "REGISTER_SHUFFLE response")
    try:
        t = _r_register_resp(&c, expect, True)
    finally:
        PyBuffer_Release(&view)
    return t


def encode_register_forwarded(app, uint32_t shuffle, uint32_t num_partitions, uint8_t replicas,
                              placement) -> bytes:
    """REGISTER_SHUFFLE sent with FORWARDED: the request meta followed by the taking node's response meta.

    Every node then stores the placement the taking node computed, even if its own view of the live
    nodes differs for a moment.
    """
    return encode_register(app, shuffle, num_partitions, replicas) + bytes(placement)


def decode_register_forwarded(meta) -> tuple:
    """-> ((app, shuffle, num_partitions, replicas), placement) where placement is the validated response meta."""
    cdef Py_buffer view
    cdef Cur c
    cdef Py_ssize_t start
    _open(&c, meta, &view, "REGISTER_SHUFFLE forwarded")
    try:
        t = _r_register(&c)
        start = c.pos
        _r_register_resp(&c, t[2], False)
        placement = PyBytes_FromStringAndSize(<char*>(c.p + start), c.n - start)
    finally:
        PyBuffer_Release(&view)
    return (t, placement)


cdef bytes _push_meta(app, uint32_t shuffle, uint32_t partition, uint32_t map_index, uint64_t attempt, uint32_t seq,
                      uint64_t checksum, Py_ssize_t head):
    """PUSH meta, preceded by `head` bytes of room (for a header)."""
    cdef Py_ssize_t n
    cdef const char* a = _app_arg(app, &n, "PUSH.app")
    if partition >= C_MAX_PARTITIONS:
        _check_partition(partition, "PUSH.partition")
    cdef bytes out = _new(head + 2 + n + 32)
    cdef unsigned char* p = w_str(_ptr(out) + head, a, n)
    rp_st32(p, shuffle)
    rp_st32(p + 4, partition)
    rp_st32(p + 8, map_index)
    rp_st64(p + 12, attempt)
    rp_st32(p + 20, seq)
    rp_st64(p + 24, checksum)
    return out


def encode_push(app, uint32_t shuffle, uint32_t partition, uint32_t map_index, uint64_t attempt, uint32_t seq,
                uint64_t checksum) -> bytes:
    """PUSH request meta; the payload follows as the frame's data part (checksum = XXH64 seed 0 of it)."""
    return _push_meta(app, shuffle, partition, map_index, attempt, seq, checksum, 0)


def push_frame(uint64_t request_id, app, uint32_t shuffle, uint32_t partition, uint32_t map_index,
               uint64_t attempt, uint32_t seq, uint64_t checksum, uint64_t data_len, uint16_t flags=0) -> bytes:
    """Header + PUSH meta in one allocation (the client's hot path); send the payload right after it."""
    cdef bytes out = _push_meta(app, shuffle, partition, map_index, attempt, seq, checksum, C_HEADER)
    _fill_header(_ptr(out), 0x11, flags, request_id, <uint32_t>(len(out) - C_HEADER), data_len)
    return out


def decode_push(meta) -> tuple:
    """-> (app, shuffle, partition, map_index, attempt, seq, checksum)"""
    cdef Py_buffer view
    cdef Cur c
    _open(&c, meta, &view, "PUSH")
    try:
        app = r_app(&c, "app")
        shuffle = r_u32(&c, "shuffle")
        partition = r_partition(&c, "partition")
        map_index = r_u32(&c, "map_index")
        attempt = r_u64(&c, "attempt")
        seq = r_u32(&c, "seq")
        checksum = r_u64(&c, "checksum")
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    return (app, shuffle, partition, map_index, attempt, seq, checksum)


def encode_map_end(app, uint32_t shuffle, uint32_t map_index, uint64_t attempt, counts) -> bytes:
    """``counts``: (partition, segments, bytes) per partition this node holds for the attempt."""
    cdef Py_ssize_t n
    cdef const char* a = _app_arg(app, &n, "MAP_END.app")
    cdef list cs = list(counts)
    cdef Py_ssize_t size = 2 + n + 20 + 16 * len(cs)
    _check_meta_size(size, "MAP_END")
    cdef bytes out = _new(size)
    cdef unsigned char* p = w_str(_ptr(out), a, n)
    rp_st32(p, shuffle)
    rp_st32(p + 4, map_index)
    rp_st64(p + 8, attempt)
    rp_st32(p + 16, <uint32_t>len(cs))
    p += 20
    cdef uint32_t part, segs
    cdef uint64_t nbytes
    for item in cs:
        part, segs, nbytes = item
        _check_partition(part, "MAP_END.counts.partition")
        rp_st32(p, part)
        rp_st32(p + 4, segs)
        rp_st64(p + 8, nbytes)
        p += 16
    return out


def decode_map_end(meta) -> tuple:
    """-> (app, shuffle, map_index, attempt, [PartCount(partition, segments, bytes), ...])"""
    cdef Py_buffer view
    cdef Cur c
    cdef uint32_t count, i, part
    cdef list counts = []
    _open(&c, meta, &view, "MAP_END")
    try:
        app = r_app(&c, "app")
        shuffle = r_u32(&c, "shuffle")
        map_index = r_u32(&c, "map_index")
        attempt = r_u64(&c, "attempt")
        count = r_u32(&c, "counts")
        _need(&c, <Py_ssize_t>count * 16, "counts")
        for i in range(count):
            part = r_partition(&c, "counts.partition")
            counts.append(PartCount(part, r_u32(&c, "counts.segments"), r_u64(&c, "counts.bytes")))
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    return (app, shuffle, map_index, attempt, counts)


def encode_fetch(app, uint32_t shuffle, uint32_t partition, uint32_t start_map=0, uint32_t end_map=END_MAP_ALL,
                 attempts=()) -> bytes:
    """FETCH request: records with start_map <= map_index < end_map (and attempt in `attempts` if not empty)."""
    cdef Py_ssize_t n
    cdef const char* a = _app_arg(app, &n, "FETCH.app")
    _check_partition(partition, "FETCH.partition")
    if start_map > end_map:
        raise ProtocolError(BAD_REQUEST, f"FETCH.start_map {start_map} is above end_map {end_map}")
    cdef list at = list(attempts)
    cdef Py_ssize_t size = 2 + n + 20 + 8 * len(at)
    _check_meta_size(size, "FETCH")
    cdef bytes out = _new(size)
    cdef unsigned char* p = w_str(_ptr(out), a, n)
    rp_st32(p, shuffle)
    rp_st32(p + 4, partition)
    rp_st32(p + 8, start_map)
    rp_st32(p + 12, end_map)
    rp_st32(p + 16, <uint32_t>len(at))
    p += 20
    cdef uint64_t v
    for x in at:
        v = x
        rp_st64(p, v)
        p += 8
    return out


def decode_fetch(meta) -> tuple:
    """-> (app, shuffle, partition, start_map, end_map, [attempt, ...]); start_map > end_map is BAD_REQUEST."""
    cdef Py_buffer view
    cdef Cur c
    cdef uint32_t start_map, end_map
    _open(&c, meta, &view, "FETCH")
    try:
        app = r_app(&c, "app")
        shuffle = r_u32(&c, "shuffle")
        partition = r_partition(&c, "partition")
        start_map = r_u32(&c, "start_map")
        end_map = r_u32(&c, "end_map")
        attempts = r_u64_list(&c, "attempts")
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    if start_map > end_map:
        raise ProtocolError(BAD_REQUEST, f"FETCH.start_map {start_map} is above end_map {end_map}")
    return (app, shuffle, partition, start_map, end_map, attempts)


def encode_fetch_resp(uint32_t records) -> bytes:
    """FETCH response meta: how many whole records this frame's data holds."""
    cdef bytes out = _new(4)
    rp_st32(_ptr(out), records)
    return out


def decode_fetch_resp(meta) -> int:
    """-> records"""
    cdef Py_buffer view
    cdef Cur c
    _open(&c, meta, &view, "FETCH response")
    try:
        records = r_u32(&c, "records")
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    return records


cdef bytes _app_shuffle_partition(app, uint32_t shuffle, uint32_t partition, str what, bint with_partition):
    cdef Py_ssize_t n
    cdef const char* a = _app_arg(app, &n, what + ".app")
    if with_partition:
        _check_partition(partition, what + ".partition")
    cdef bytes out = _new(2 + n + (8 if with_partition else 4))
    cdef unsigned char* p = w_str(_ptr(out), a, n)
    rp_st32(p, shuffle)
    if with_partition:
        rp_st32(p + 4, partition)
    return out


def encode_partition_info(app, uint32_t shuffle, uint32_t partition) -> bytes:
    return _app_shuffle_partition(app, shuffle, partition, "PARTITION_INFO", True)


def decode_partition_info(meta) -> tuple:
    """-> (app, shuffle, partition)"""
    cdef Py_buffer view
    cdef Cur c
    _open(&c, meta, &view, "PARTITION_INFO")
    try:
        app = r_app(&c, "app")
        shuffle = r_u32(&c, "shuffle")
        partition = r_partition(&c, "partition")
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    return (app, shuffle, partition)


def encode_partition_info_resp(pool_path, uint32_t records, uint64_t nbytes, blocks) -> bytes:
    """``str pool_path, u32 records, u64 bytes, list<Block>``; blocks are Block or (address, file_offset,
    used, sealed) tuples."""
    cdef Py_ssize_t n
    cdef const char* s = _str_arg(pool_path, &n, "PARTITION_INFO response.pool_path")
    cdef list bs = list(blocks)
    cdef Py_ssize_t size = 2 + n + 16 + 25 * len(bs)
    _check_meta_size(size, "PARTITION_INFO response")
    cdef bytes out = _new(size)
    cdef unsigned char* p = w_str(_ptr(out), s, n)
    rp_st32(p, records)
    rp_st64(p + 4, nbytes)
    rp_st32(p + 12, <uint32_t>len(bs))
    p += 16
    cdef uint64_t address, file_offset, used
    for b in bs:
        address, file_offset, used, sealed = b
        rp_st64(p, address)
        rp_st64(p + 8, file_offset)
        rp_st64(p + 16, used)
        p[24] = 1 if sealed else 0
        p += 25
    return out


def decode_partition_info_resp(meta) -> tuple:
    """-> (pool_path, records, bytes, [Block(address, file_offset, used, sealed), ...])"""
    cdef Py_buffer view
    cdef Cur c
    cdef uint32_t count, i
    cdef uint8_t sealed
    cdef list blocks = []
    _open(&c, meta, &view, "PARTITION_INFO response")
    try:
        path = r_str(&c, "pool_path")
        records = r_u32(&c, "records")
        nbytes = r_u64(&c, "bytes")
        count = r_u32(&c, "blocks")
        _need(&c, <Py_ssize_t>count * 25, "blocks")
        for i in range(count):
            address = r_u64(&c, "blocks.address")
            file_offset = r_u64(&c, "blocks.file_offset")
            used = r_u64(&c, "blocks.used")
            sealed = r_u8(&c, "blocks.sealed")
            if sealed > 1:
                raise ProtocolError(BAD_REQUEST, f"PARTITION_INFO response.blocks[{i}].sealed is {sealed}, not 0 or 1")
            blocks.append(Block(address, file_offset, used, sealed == 1))
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    return (path, records, nbytes, blocks)


def encode_delete_shuffle(app, uint32_t shuffle) -> bytes:
    return _app_shuffle_partition(app, shuffle, 0, "DELETE_SHUFFLE", False)


def decode_delete_shuffle(meta) -> tuple:
    """-> (app, shuffle)"""
    cdef Py_buffer view
    cdef Cur c
    _open(&c, meta, &view, "DELETE_SHUFFLE")
    try:
        app = r_app(&c, "app")
        shuffle = r_u32(&c, "shuffle")
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    return (app, shuffle)


def encode_delete_app(app) -> bytes:
    cdef Py_ssize_t n
    cdef const char* a = _app_arg(app, &n, "DELETE_APP.app")
    cdef bytes out = _new(2 + n)
    w_str(_ptr(out), a, n)
    return out


def decode_delete_app(meta) -> str:
    """-> app"""
    cdef Py_buffer view
    cdef Cur c
    _open(&c, meta, &view, "DELETE_APP")
    try:
        app = r_app(&c, "app")
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    return app


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


# ---- pool API --------------------------------------------------------------------------------------

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


# ---- errors ----------------------------------------------------------------------------------------

def encode_error(code, message) -> bytes:
    """Error response meta ``u16 code, str message``; the message is cut (at a character) to fit a str."""
    cdef uint16_t c = code
    cdef bytes m = str(message).encode("utf-8", "replace")
    cdef Py_ssize_t n = len(m)
    cdef const unsigned char* mp = <const unsigned char*>PyBytes_AS_STRING(m)
    if n > C_STR_MAX:
        n = C_STR_MAX
        while n > 0 and (mp[n] & 0xC0) == 0x80:  # do not split a UTF-8 sequence
            n -= 1
    cdef bytes out = _new(4 + n)
    rp_st16(_ptr(out), c)
    w_str(_ptr(out) + 2, <const char*>mp, n)
    return out


def decode_error(meta) -> tuple:
    """-> (code, message); code is an ErrorCode when known, else the int (a newer peer's code).

    Bad UTF-8 in the message is replaced rather than rejected: an error must always be reportable.
    """
    cdef Py_buffer view
    cdef Cur c
    _open(&c, meta, &view, "ERROR")
    try:
        code = r_u16(&c, "code")
        message = r_str(&c, "message", False)
        _finish(&c)
    finally:
        PyBuffer_Release(&view)
    try:
        code = ErrorCode(code)
    except ValueError:
        pass
    return (code, message)


# ---- records ---------------------------------------------------------------------------------------

cdef inline void _fill_record(unsigned char* p, uint32_t map_index, uint64_t attempt, uint32_t seq, uint32_t length,
                              uint64_t checksum) noexcept:
    rp_st32(p, C_REC_MAGIC)
    rp_st32(p + 4, map_index)
    rp_st64(p + 8, attempt)
    rp_st32(p + 16, seq)
    rp_st32(p + 20, length)
    rp_st64(p + 24, checksum)


def pack_record_header(uint32_t map_index, uint64_t attempt, uint32_t seq, uint32_t length,
                       uint64_t checksum) -> bytes:
    """The 32-byte header that precedes a segment's payload in a block (magic b"SEG1")."""
    cdef bytes out = _new(C_REC_HEADER)
    _fill_record(_ptr(out), map_index, attempt, seq, length, checksum)
    return out


def write_record_header(buf, Py_ssize_t offset, uint32_t map_index, uint64_t attempt, uint32_t seq,
                        uint32_t length, uint64_t checksum) -> None:
    """Write a record header into a writable buffer (e.g. reserved pool memory) at `offset`."""
    cdef Py_buffer view
    PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
    try:
        if offset < 0 or view.len - offset < C_REC_HEADER:
            raise ValueError(f"no room for a record header at offset {offset} of a {view.len}-byte buffer")
        _fill_record(<unsigned char*>view.buf + offset, map_index, attempt, seq, length, checksum)
    finally:
        PyBuffer_Release(&view)


cdef int _check_record(const unsigned char* base, Py_ssize_t pos, Py_ssize_t end) except -1:
    """Validate the record at base+pos; returns 0 or raises BAD_FRAME."""
    if end - pos < C_REC_HEADER:
        raise ProtocolError(BAD_FRAME, f"torn record at offset {pos}: {end - pos} bytes left, a record header "
                                       f"needs {C_REC_HEADER}")
    cdef const unsigned char* p = base + pos
    cdef uint32_t magic = rp_ld32(p)
    if magic != C_REC_MAGIC:
        raise ProtocolError(BAD_FRAME, f"bad record magic 0x{magic:08x} at offset {pos} (expected b'SEG1')")
    cdef uint32_t length = rp_ld32(p + 20)
    if length > C_MAX_SEGMENT:
        raise ProtocolError(BAD_FRAME, f"record at offset {pos} claims {length} bytes, above the segment limit "
                                       f"{C_MAX_SEGMENT}")
    if end - pos - C_REC_HEADER < length:
        raise ProtocolError(BAD_FRAME, f"torn record at offset {pos}: payload of {length} bytes runs past the end "
                                       f"({end - pos - C_REC_HEADER} bytes left)")
    return 0


def unpack_record_header(buf, Py_ssize_t offset=0) -> tuple:
    """-> (map_index, attempt, seq, length, checksum) of the record header at `offset` (payload not checked)."""
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef uint32_t magic
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if offset < 0 or view.len - offset < C_REC_HEADER:
            raise ProtocolError(BAD_FRAME, f"torn record header at offset {offset} of a {view.len}-byte buffer")
        p = <const unsigned char*>view.buf + offset
        magic = rp_ld32(p)
        if magic != C_REC_MAGIC:
            raise ProtocolError(BAD_FRAME, f"bad record magic 0x{magic:08x} at offset {offset} (expected b'SEG1')")
        return (rp_ld32(p + 4), rp_ld64(p + 8), rp_ld32(p + 16), rp_ld32(p + 20), rp_ld64(p + 24))
    finally:
        PyBuffer_Release(&view)


cdef class RecordIter:
    """Iterator over concatenated records: (map_index, attempt, seq, payload_offset, length, checksum).

    Holds a buffer export until exhausted or failed. A record that does not fit (torn write, a block freed
    under a one-sided reader) or has a bad magic raises ProtocolError(BAD_FRAME) and ends the iteration.
    """

    cdef Py_buffer view
    cdef bint held
    cdef Py_ssize_t pos
    cdef Py_ssize_t end

    def __cinit__(self, buf, Py_ssize_t start=0, Py_ssize_t end=-1):
        PyObject_GetBuffer(buf, &self.view, PyBUF_SIMPLE)
        self.held = True
        if end < 0 or end > self.view.len:
            end = self.view.len
        if start < 0 or start > end:
            self._release()
            raise ValueError(f"start {start} is outside the buffer range [0, {end}]")
        self.pos = start
        self.end = end

    def __dealloc__(self):
        self._release()

    cdef void _release(self) noexcept:
        if self.held:
            self.held = False
            PyBuffer_Release(&self.view)

    def __iter__(self):
        return self

    def __next__(self):
        if self.pos >= self.end or not self.held:
            self._release()
            raise StopIteration
        cdef const unsigned char* base = <const unsigned char*>self.view.buf
        try:
            _check_record(base, self.pos, self.end)
        except ProtocolError:
            self.pos = self.end
            self._release()
            raise
        cdef const unsigned char* p = base + self.pos
        cdef Py_ssize_t off = self.pos + C_REC_HEADER
        cdef uint32_t length = rp_ld32(p + 20)
        self.pos = off + length
        return (rp_ld32(p + 4), rp_ld64(p + 8), rp_ld32(p + 16), off, length, rp_ld64(p + 24))


def iter_records(buf, Py_ssize_t start=0, Py_ssize_t end=-1) -> RecordIter:
    """Iterate the records in buf[start:end] (end=-1: to the end of buf); offsets are absolute in buf."""
    return RecordIter(buf, start, end)


def count_records(buf, Py_ssize_t start=0, Py_ssize_t end=-1) -> tuple:
    """-> (records, payload_bytes) of buf[start:end], validating every record like iter_records."""
    cdef Py_buffer view
    cdef Py_ssize_t pos, records = 0, total = 0
    cdef uint32_t length
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if end < 0 or end > view.len:
            end = view.len
        if start < 0 or start > end:
            raise ValueError(f"start {start} is outside the buffer range [0, {end}]")
        pos = start
        while pos < end:
            _check_record(<const unsigned char*>view.buf, pos, end)
            length = rp_ld32(<const unsigned char*>view.buf + pos + 20)
            pos += C_REC_HEADER + length
            records += 1
            total += length
    finally:
        PyBuffer_Release(&view)
    return (records, total)


# ---- generic dispatch ------------------------------------------------------------------------------

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
    Op.HEARTBEAT: decode_heartbeat, Op.REGISTER_SHUFFLE: decode_register, Op.PUSH: decode_push,
    Op.MAP_END: decode_map_end, Op.FETCH: decode_fetch, Op.PARTITION_INFO: decode_partition_info,
    Op.DELETE_SHUFFLE: decode_delete_shuffle, Op.DELETE_APP: _one(decode_delete_app), Op.PUT: _one(decode_key),
    Op.GET: _one(decode_key), Op.DELETE: _one(decode_key), Op.ALLOC: _one(decode_alloc), Op.WRITE: decode_write,
    Op.READ: decode_read, Op.FREE: _one(decode_free),
}
_REQUEST_ENCODERS = {
    Op.HELLO: encode_hello, Op.PING: _enc_empty, Op.STATS: _enc_empty, Op.MEMBERS: _enc_empty,
    Op.HEARTBEAT: encode_heartbeat, Op.REGISTER_SHUFFLE: encode_register, Op.PUSH: encode_push,
    Op.MAP_END: encode_map_end, Op.FETCH: encode_fetch, Op.PARTITION_INFO: encode_partition_info,
    Op.DELETE_SHUFFLE: encode_delete_shuffle, Op.DELETE_APP: encode_delete_app, Op.PUT: encode_key,
    Op.GET: encode_key, Op.DELETE: encode_key, Op.ALLOC: encode_alloc, Op.WRITE: encode_write,
    Op.READ: encode_read, Op.FREE: encode_free,
}
_RESPONSE_DECODERS = {
    Op.HELLO: decode_hello_resp, Op.PING: _empty("PING response"), Op.STATS: _empty("STATS response"),
    Op.MEMBERS: decode_members, Op.HEARTBEAT: decode_members, Op.REGISTER_SHUFFLE: decode_register_resp,
    Op.PUSH: _empty("PUSH response"), Op.MAP_END: _empty("MAP_END response"), Op.FETCH: _one(decode_fetch_resp),
    Op.PARTITION_INFO: decode_partition_info_resp, Op.DELETE_SHUFFLE: _one(decode_u64),
    Op.DELETE_APP: _one(decode_u64), Op.PUT: _empty("PUT response"), Op.GET: _empty("GET response"),
    Op.DELETE: _empty("DELETE response"), Op.ALLOC: _one(decode_alloc_resp), Op.WRITE: _empty("WRITE response"),
    Op.READ: _empty("READ response"), Op.FREE: _empty("FREE response"),
}
_RESPONSE_ENCODERS = {
    Op.HELLO: encode_hello_resp, Op.PING: _enc_empty, Op.STATS: _enc_empty, Op.MEMBERS: encode_members,
    Op.HEARTBEAT: encode_members, Op.REGISTER_SHUFFLE: encode_register_resp, Op.PUSH: _enc_empty,
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


# C constants exported for the test that checks they agree with rpmp.protocol
_C_CONSTANTS = {
    "MAGIC": C_MAGIC, "VERSION": C_VERSION, "HEADER_SIZE": C_HEADER, "MAX_META": C_MAX_META,
    "APP_MAX": C_APP_MAX, "KEY_MAX": C_KEY_MAX, "STR_MAX": C_STR_MAX, "MAX_PARTITIONS": C_MAX_PARTITIONS,
    "MAX_SEGMENT": C_MAX_SEGMENT, "RECORD_MAGIC": C_REC_MAGIC, "RECORD_HEADER_SIZE": C_REC_HEADER,
}

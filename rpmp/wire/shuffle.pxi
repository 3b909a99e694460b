# Shuffle operations: REGISTER_SHUFFLE (request, placement response, forwarded form), PUSH (and push_frame,
# the client's header + meta in one allocation), MAP_END, FETCH, PARTITION_INFO, DELETE_SHUFFLE/DELETE_APP.

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


cdef object _register_fields(Cur* c, Py_ssize_t arg):
    app = r_app(c, "app")
    shuffle = r_u32(c, "shuffle")
    cdef uint32_t num_partitions = r_u32(c, "num_partitions")
    cdef uint8_t replicas = r_u8(c, "replicas")
    _check_register(num_partitions, replicas, _s(c.what))
    return (app, shuffle, num_partitions, replicas)


def decode_register(meta) -> tuple:
    """-> (app, shuffle, num_partitions, replicas); num_partitions in 1..2**24, replicas >= 1."""
    return _decode(meta, "REGISTER_SHUFFLE", _register_fields)


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
    """Parse the REGISTER_SHUFFLE response meta to its end; with build=False only validate (returns None)."""
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


cdef object _register_resp_fields(Cur* c, Py_ssize_t expect_parts):
    return _r_register_resp(c, expect_parts, True)


def decode_register_resp(meta, num_partitions=None) -> tuple:
    """-> (epoch, [Node, ...], [(index, ...) per partition]); pass num_partitions to check the table's size."""
    cdef Py_ssize_t expect = -1 if num_partitions is None else num_partitions
    return _decode(meta, "REGISTER_SHUFFLE response", _register_resp_fields, expect)


def encode_register_forwarded(app, uint32_t shuffle, uint32_t num_partitions, uint8_t replicas,
                              placement) -> bytes:
    """REGISTER_SHUFFLE sent with FORWARDED: the request meta followed by the taking node's response meta.

    Every node then stores the placement the taking node computed, even if its own view of the live
    nodes differs for a moment.
    """
    return encode_register(app, shuffle, num_partitions, replicas) + bytes(placement)


cdef object _register_forwarded_fields(Cur* c, Py_ssize_t arg):
    t = _register_fields(c, 0)
    cdef Py_ssize_t start = c.pos
    _r_register_resp(c, t[2], False)
    return (t, PyBytes_FromStringAndSize(<char*>(c.p + start), c.n - start))


def decode_register_forwarded(meta) -> tuple:
    """-> ((app, shuffle, num_partitions, replicas), placement) where placement is the validated response meta."""
    return _decode(meta, "REGISTER_SHUFFLE forwarded", _register_forwarded_fields)


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
    """PUSH request meta; the payload follows as the frame's data part (checksum = XXH3-64 seed 0 of it)."""
    return _push_meta(app, shuffle, partition, map_index, attempt, seq, checksum, 0)


def push_frame(uint64_t request_id, app, uint32_t shuffle, uint32_t partition, uint32_t map_index,
               uint64_t attempt, uint32_t seq, uint64_t checksum, uint64_t data_len, uint16_t flags=0) -> bytes:
    """Header + PUSH meta in one allocation (the client's hot path); send the payload right after it."""
    cdef bytes out = _push_meta(app, shuffle, partition, map_index, attempt, seq, checksum, C_HEADER_SIZE)
    _fill_header(_ptr(out), C_OP_PUSH, flags, request_id, <uint32_t>(len(out) - C_HEADER_SIZE), data_len)
    return out


cdef object _push_fields(Cur* c, Py_ssize_t arg):
    app = r_app(c, "app")
    shuffle = r_u32(c, "shuffle")
    partition = r_partition(c, "partition")
    map_index = r_u32(c, "map_index")
    attempt = r_u64(c, "attempt")
    seq = r_u32(c, "seq")
    checksum = r_u64(c, "checksum")
    return (app, shuffle, partition, map_index, attempt, seq, checksum)


def decode_push(meta) -> tuple:
    """-> (app, shuffle, partition, map_index, attempt, seq, checksum)"""
    return _decode(meta, "PUSH", _push_fields)


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


cdef object _map_end_fields(Cur* c, Py_ssize_t arg):
    cdef uint32_t count, i, part
    cdef list counts = []
    app = r_app(c, "app")
    shuffle = r_u32(c, "shuffle")
    map_index = r_u32(c, "map_index")
    attempt = r_u64(c, "attempt")
    count = r_u32(c, "counts")
    _need(c, <Py_ssize_t>count * 16, "counts")
    for i in range(count):
        part = r_partition(c, "counts.partition")
        counts.append(PartCount(part, r_u32(c, "counts.segments"), r_u64(c, "counts.bytes")))
    return (app, shuffle, map_index, attempt, counts)


def decode_map_end(meta) -> tuple:
    """-> (app, shuffle, map_index, attempt, [PartCount(partition, segments, bytes), ...])"""
    return _decode(meta, "MAP_END", _map_end_fields)


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


cdef object _fetch_fields(Cur* c, Py_ssize_t arg):
    cdef uint32_t start_map, end_map
    app = r_app(c, "app")
    shuffle = r_u32(c, "shuffle")
    partition = r_partition(c, "partition")
    start_map = r_u32(c, "start_map")
    end_map = r_u32(c, "end_map")
    attempts = r_u64_list(c, "attempts")
    _finish(c)  # trailing bytes (BAD_FRAME) before a bad range (BAD_REQUEST)
    if start_map > end_map:
        raise ProtocolError(BAD_REQUEST, f"FETCH.start_map {start_map} is above end_map {end_map}")
    return (app, shuffle, partition, start_map, end_map, attempts)


def decode_fetch(meta) -> tuple:
    """-> (app, shuffle, partition, start_map, end_map, [attempt, ...]); start_map > end_map is BAD_REQUEST."""
    return _decode(meta, "FETCH", _fetch_fields)


def encode_fetch_resp(uint32_t records) -> bytes:
    """FETCH response meta: how many whole records this frame's data holds."""
    cdef bytes out = _new(4)
    rp_st32(_ptr(out), records)
    return out


cdef object _fetch_resp_fields(Cur* c, Py_ssize_t arg):
    return r_u32(c, "records")


def decode_fetch_resp(meta) -> int:
    """-> records"""
    return _decode(meta, "FETCH response", _fetch_resp_fields)


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


cdef object _partition_info_fields(Cur* c, Py_ssize_t arg):
    app = r_app(c, "app")
    shuffle = r_u32(c, "shuffle")
    partition = r_partition(c, "partition")
    return (app, shuffle, partition)


def decode_partition_info(meta) -> tuple:
    """-> (app, shuffle, partition)"""
    return _decode(meta, "PARTITION_INFO", _partition_info_fields)


def encode_partition_info_resp(pool_path, uint32_t records, uint64_t nbytes, blocks, spill_files) -> bytes:
    """``str pool_path, u32 records, u64 bytes, list<Block> blocks, list<str> spill_files``; blocks are Block
    or (address, file_offset, used, sealed, file) tuples, ``file`` 0 naming pool_path and k > 0
    spill_files[k - 1] (such a block must be sealed)."""
    cdef Py_ssize_t n, m, i
    cdef const char* s = _str_arg(pool_path, &n, "PARTITION_INFO response.pool_path")
    cdef list bs = list(blocks)
    cdef list fs = list(spill_files)
    cdef Py_ssize_t nfiles = len(fs)
    if nfiles > 0xFFFF:
        raise ProtocolError(BAD_REQUEST, f"PARTITION_INFO response: {nfiles} spill files, a u16 file index names "
                                         f"at most 65535")
    cdef Py_ssize_t size = 2 + n + 16 + 27 * len(bs) + 4
    for i in range(nfiles):
        _str_arg(fs[i], &m, f"PARTITION_INFO response.spill_files[{i}]")
        size += 2 + m
    _check_meta_size(size, "PARTITION_INFO response")
    cdef bytes out = _new(size)
    cdef unsigned char* p = w_str(_ptr(out), s, n)
    rp_st32(p, records)
    rp_st64(p + 4, nbytes)
    rp_st32(p + 12, <uint32_t>len(bs))
    p += 16
    cdef uint64_t address, file_offset, used
    cdef long f
    for i in range(len(bs)):
        address, file_offset, used, sealed, f = bs[i]
        if f < 0 or f > nfiles:
            raise ProtocolError(BAD_REQUEST, f"PARTITION_INFO response.blocks[{i}].file is {f}, but the response "
                                             f"lists {nfiles} spill files (file 0 is the pool file)")
        if f and not sealed:
            raise ProtocolError(BAD_REQUEST, f"PARTITION_INFO response.blocks[{i}] is in spill file {f} but not "
                                             f"sealed")
        rp_st64(p, address)
        rp_st64(p + 8, file_offset)
        rp_st64(p + 16, used)
        p[24] = 1 if sealed else 0
        rp_st16(p + 25, <uint16_t>f)
        p += 27
    rp_st32(p, <uint32_t>nfiles)
    p += 4
    for i in range(nfiles):
        s = _str_arg(fs[i], &m, "PARTITION_INFO response.spill_files")
        p = w_str(p, s, m)
    return out


cdef object _partition_info_resp_fields(Cur* c, Py_ssize_t arg):
    # Structure first (every field read, the meta consumed exactly), then the values (PROTOCOL.md).
    cdef uint32_t count, nfiles, i
    cdef list raw = []
    cdef list files = []
    path = r_str(c, "pool_path")
    records = r_u32(c, "records")
    nbytes = r_u64(c, "bytes")
    count = r_u32(c, "blocks")
    _need(c, <Py_ssize_t>count * 27, "blocks")
    for i in range(count):
        raw.append((r_u64(c, "blocks.address"), r_u64(c, "blocks.file_offset"), r_u64(c, "blocks.used"),
                    r_u8(c, "blocks.sealed"), r_u16(c, "blocks.file")))
    nfiles = r_u32(c, "spill_files")
    _need(c, <Py_ssize_t>nfiles * 2, "spill_files")  # every str takes at least its u16 length
    for i in range(nfiles):
        files.append(r_str(c, "spill_files"))
    _finish(c)
    cdef list blocks = []
    for i in range(count):
        address, file_offset, used, sealed, f = raw[i]
        if sealed > 1:
            raise ProtocolError(BAD_REQUEST, f"PARTITION_INFO response.blocks[{i}].sealed is {sealed}, not 0 or 1")
        if f > nfiles:
            raise ProtocolError(BAD_REQUEST, f"PARTITION_INFO response.blocks[{i}].file is {f}, but the response "
                                             f"lists {nfiles} spill files (file 0 is the pool file)")
        if f and not sealed:
            raise ProtocolError(BAD_REQUEST, f"PARTITION_INFO response.blocks[{i}] is in spill file {f} but not "
                                             f"sealed")
        blocks.append(Block(address, file_offset, used, sealed == 1, f))
    return (path, records, nbytes, blocks, files)


def decode_partition_info_resp(meta) -> tuple:
    """-> (pool_path, records, bytes, [Block(address, file_offset, used, sealed, file), ...], [spill file, ...]);
    a block's ``file`` is 0 for pool_path, k > 0 for spill_files[k - 1]."""
    return _decode(meta, "PARTITION_INFO response", _partition_info_resp_fields)


def encode_delete_shuffle(app, uint32_t shuffle) -> bytes:
    return _app_shuffle_partition(app, shuffle, 0, "DELETE_SHUFFLE", False)


cdef object _delete_shuffle_fields(Cur* c, Py_ssize_t arg):
    app = r_app(c, "app")
    shuffle = r_u32(c, "shuffle")
    return (app, shuffle)


def decode_delete_shuffle(meta) -> tuple:
    """-> (app, shuffle)"""
    return _decode(meta, "DELETE_SHUFFLE", _delete_shuffle_fields)


def encode_delete_app(app) -> bytes:
    cdef Py_ssize_t n
    cdef const char* a = _app_arg(app, &n, "DELETE_APP.app")
    cdef bytes out = _new(2 + n)
    w_str(_ptr(out), a, n)
    return out


cdef object _delete_app_fields(Cur* c, Py_ssize_t arg):
    return r_app(c, "app")


def decode_delete_app(meta) -> str:
    """-> app"""
    return _decode(meta, "DELETE_APP", _delete_app_fields)


def encode_lease(app) -> bytes:
    """LEASE request: ``str app``."""
    cdef Py_ssize_t n
    cdef const char* a = _app_arg(app, &n, "LEASE.app")
    cdef bytes out = _new(2 + n)
    w_str(_ptr(out), a, n)
    return out


cdef object _lease_fields(Cur* c, Py_ssize_t arg):
    return r_app(c, "app")


def decode_lease(meta) -> str:
    """-> app"""
    return _decode(meta, "LEASE", _lease_fields)


def encode_lease_resp(uint32_t ttl_ms) -> bytes:
    """LEASE response: ``u32 ttl_ms``, the node's app TTL (0: apps never expire there)."""
    cdef bytes out = _new(4)
    rp_st32(_ptr(out), ttl_ms)
    return out


cdef object _lease_resp_fields(Cur* c, Py_ssize_t arg):
    return r_u32(c, "ttl_ms")


def decode_lease_resp(meta) -> int:
    """-> ttl_ms"""
    return _decode(meta, "LEASE response", _lease_resp_fields)

"""The wire codec (rpmp._wire) against docs/PROTOCOL.md: round trips, every error path, test vectors.

Several vectors are rebuilt here by hand with struct.pack straight from PROTOCOL.md's tables, so the
codec and the vectors are checked by a path that shares no code with them.
"""

import json
import os
import struct

import gen_vectors
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpmp import _wire as W
from rpmp import protocol as P
from rpmp.protocol import END_MAP_ALL, Block, ErrorCode, Node, NodeState, Op, PartCount, ProtocolError

VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors")
APP = "app-20261121235131-0001"
HDR = struct.Struct("<IBBHQIIQ")  # PROTOCOL.md "Frame"
REC = struct.Struct("<IIQIIQ")  # PROTOCOL.md "Shuffle segments and records"


def s16(text: str) -> bytes:
    """PROTOCOL.md `str`: u16 byte length + UTF-8."""
    b = text.encode()
    return struct.pack("<H", len(b)) + b


def node_bytes(n: Node) -> bytes:
    return s16(n.node_id) + s16(n.host) + struct.pack("<HB", n.port, n.state)


def raises(code: ErrorCode, fn, *args, match: str | None = None, **kw) -> ProtocolError:
    with pytest.raises(ProtocolError, match=match) as ei:
        fn(*args, **kw)
    assert ei.value.code == code, (ei.value.code, ei.value.message)
    return ei.value


# ---- constants ------------------------------------------------------------------------------------

def test_constants_agree_with_protocol_module():
    # the codec's C copies are generated from rpmp/protocol.py (rpmp/wire/protocol.pxi; test_gen_protocol.py)
    assert struct.pack("<I", P.MAGIC) == b"RPMP"
    assert struct.pack("<I", P.RECORD_MAGIC) == b"SEG1"
    assert P.MAX_META == 1 << 20 and P.DEFAULT_MAX_DATA == 256 << 20 and P.MAX_SEGMENT == 64 << 20
    assert (P.FLAG_RESPONSE, P.FLAG_ERROR, P.FLAG_MORE, P.FLAG_FORWARDED) == (1, 2, 4, 8)
    assert set(P.REQUEST_FIELDS) == set(Op) == set(P.RESPONSE_FIELDS)
    assert [int(c) for c in ErrorCode] == list(range(1, 17))


def test_type_stub_covers_the_module():
    """rpmp/_wire.pyi names every public def and class of the extension, and nothing else."""
    import ast

    with open(os.path.join(os.path.dirname(W.__file__), "_wire.pyi"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    stub = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    stub |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    public = {n for n in dir(W) if not n.startswith("_") and getattr(P, n, None) is not getattr(W, n)}
    assert {n for n in stub if not n.startswith("_")} == public


def test_protocol_error_shape():
    e = ProtocolError(6, "gone")
    assert e.code is ErrorCode.NOT_FOUND and e.message == "gone" and str(e) == "NOT_FOUND: gone"
    e = ProtocolError(999, "future")
    assert e.code == 999 and "999" in str(e)
    assert P.flag_names(P.FLAG_RESPONSE | P.FLAG_MORE | 0x100) == ["RESPONSE", "MORE", "0x0100"]


# ---- header ---------------------------------------------------------------------------------------

def test_header_round_trip_and_layout():
    h = W.pack_header(Op.PUSH, P.FLAG_FORWARDED, 2**64 - 1, 1234, 2**40)
    assert h == HDR.pack(P.MAGIC, P.VERSION, 0x11, 8, 2**64 - 1, 1234, 0, 2**40)
    assert W.unpack_header(h, max_data=2**41) == (0x11, 8, 2**64 - 1, 1234, 2**40)
    for buf in (bytearray(h), memoryview(h), b"xx" + h):
        off = 2 if len(buf) == 34 else 0
        assert W.unpack_header(buf, max_data=2**41, offset=off) == (0x11, 8, 2**64 - 1, 1234, 2**40)
    out = bytearray(40)
    W.pack_header_into(out, 8, Op.GET, 0, 7, 3, 0)
    assert bytes(out[8:]) == W.pack_header(Op.GET, 0, 7, 3, 0)
    with pytest.raises(ValueError):
        W.pack_header_into(out, 9, Op.GET, 0, 7, 3, 0)
    raises(ErrorCode.TOO_LARGE, W.pack_header, 1, 0, 0, P.MAX_META + 1, 0)


def test_header_errors():
    good = HDR.pack(P.MAGIC, P.VERSION, 2, 0, 5, P.MAX_META, 0, P.DEFAULT_MAX_DATA)
    assert W.unpack_header(good) == (2, 0, 5, P.MAX_META, P.DEFAULT_MAX_DATA)  # limits are inclusive
    raises(ErrorCode.BAD_FRAME, W.unpack_header, good[:31], match="truncated header")
    raises(ErrorCode.BAD_FRAME, W.unpack_header, b"")
    raises(ErrorCode.BAD_FRAME, W.unpack_header, good, offset=1, match="truncated header")
    raises(ErrorCode.BAD_FRAME, W.unpack_header, b"PMPR" + good[4:], match="bad magic")
    raises(ErrorCode.BAD_VERSION, W.unpack_header, HDR.pack(P.MAGIC, 3, 2, 0, 5, 0, 0, 0), match="version 3")
    raises(ErrorCode.BAD_VERSION, W.unpack_header, HDR.pack(P.MAGIC, 0, 2, 0, 5, 0, 0, 0))
    raises(ErrorCode.BAD_FRAME, W.unpack_header, HDR.pack(P.MAGIC, P.VERSION, 2, 0, 5, 0, 1, 0), match="reserved")
    raises(ErrorCode.TOO_LARGE, W.unpack_header, HDR.pack(P.MAGIC, P.VERSION, 2, 0, 5, P.MAX_META + 1, 0, 0),
           match="meta")
    raises(ErrorCode.TOO_LARGE, W.unpack_header, HDR.pack(P.MAGIC, P.VERSION, 2, 0, 5, 2**32 - 1, 0, 0))
    raises(ErrorCode.TOO_LARGE, W.unpack_header, HDR.pack(P.MAGIC, P.VERSION, 2, 0, 5, 0, 0, P.DEFAULT_MAX_DATA + 1),
           match="data")
    raises(ErrorCode.TOO_LARGE, W.unpack_header, HDR.pack(P.MAGIC, P.VERSION, 2, 0, 5, 0, 0, 2**64 - 1))
    raises(ErrorCode.TOO_LARGE, W.unpack_header, HDR.pack(P.MAGIC, P.VERSION, 2, 0, 5, 0, 0, 101), max_data=100)
    # unknown opcodes and flags are not the header's business (UNKNOWN_OPCODE is answerable)
    assert W.unpack_header(HDR.pack(P.MAGIC, P.VERSION, 0xEE, 0xFFF0, 5, 0, 0, 0))[:2] == (0xEE, 0xFFF0)


def test_frame():
    meta = W.encode_key(b"k")
    f = W.frame(Op.GET, 0, 9, meta)
    assert f == HDR.pack(P.MAGIC, P.VERSION, 0x21, 0, 9, len(meta), 0, 0) + meta
    put = HDR.pack(P.MAGIC, P.VERSION, 0x20, 0, 9, len(meta), 0, 77) + meta
    assert W.frame(Op.PUT, 0, 9, bytearray(meta), 77) == put
    assert W.frame(Op.PING, 0, 1) == HDR.pack(P.MAGIC, P.VERSION, 2, 0, 1, 0, 0, 0)
    raises(ErrorCode.TOO_LARGE, W.frame, Op.PUT, 0, 1, b"\0" * (P.MAX_META + 1))
    args = (APP, 7, 3, 2, 17, 4, 99)
    assert W.push_frame(5, *args, 4096) == W.frame(Op.PUSH, 0, 5, W.encode_push(*args), 4096)
    assert W.push_frame(5, *args, 4096, flags=P.FLAG_FORWARDED)[6:8] == b"\x08\x00"
    e = W.error_frame(Op.GET, 3, ErrorCode.NOT_FOUND, "nope")
    assert e == HDR.pack(P.MAGIC, P.VERSION, 0x21, 3, 3, 8, 0, 0) + struct.pack("<H", 6) + s16("nope")


# ---- round trips of every encoder/decoder ----------------------------------------------------------

NODES = [Node("10.0.0.1:7070", "10.0.0.1", 7070, NodeState.ALIVE), Node("n2", "host-2", 1, NodeState.SUSPECT),
         Node("ñ3", "", 65535, NodeState.DEAD)]

ROUND_TRIPS = [
    (W.encode_hello, W.decode_hello, (1, "rpmp-java/0.1")),
    (W.encode_hello, W.decode_hello, (0xFFFF, "")),
    (W.encode_hello_resp, W.decode_hello_resp, (1, "10.0.0.1:7070", 2**64 - 1)),
    (W.encode_members, W.decode_members, (2**64 - 1, NODES)),
    (W.encode_members, W.decode_members, (0, [])),
    (W.encode_heartbeat, W.decode_heartbeat, (NODES[1], 41)),
    (W.encode_register, W.decode_register, (APP, 2**32 - 1, P.MAX_PARTITIONS, 255)),
    (W.encode_register, W.decode_register, ("a", 0, 1, 1)),
    (W.encode_register_resp, W.decode_register_resp, (42, NODES, [(0, 1, 2), (2, 1, 0), (1, 0, 2)])),
    (W.encode_register_resp, W.decode_register_resp, (1, NODES[:1], [(0,)] * 5)),
    (W.encode_push, W.decode_push, (APP, 7, 3, 2, 17, 0, 2**64 - 1)),
    (W.encode_push, W.decode_push, ("é" * 60, 2**32 - 1, P.MAX_PARTITIONS - 1, 2**32 - 1, 2**64 - 1, 2**32 - 1, 0)),
    (W.encode_map_end, W.decode_map_end, (APP, 7, 2, 17, [PartCount(0, 2, 4096), PartCount(3, 1, 2**64 - 1)])),
    (W.encode_map_end, W.decode_map_end, (APP, 7, 2, 17, [])),
    (W.encode_fetch, W.decode_fetch, (APP, 7, 3, 0, END_MAP_ALL, [11, 2**64 - 1])),
    (W.encode_fetch, W.decode_fetch, (APP, 7, 3, 5, 5, [])),
    (W.encode_fetch_resp, W.decode_fetch_resp, 3),
    (W.encode_partition_info, W.decode_partition_info, (APP, 7, 3)),
    (W.encode_partition_info_resp, W.decode_partition_info_resp,
     ("/dev/shm/p.pool", 3, 24, [Block(1, 2, 3, True), Block(2**64 - 1, 0, 0, False)], [])),
    (W.encode_partition_info_resp, W.decode_partition_info_resp,
     ("/dev/shm/p.pool", 3, 24, [Block(1, 2, 3, True, 2), Block(5, 4096, 9, False, 0), Block(7, 0, 2**64 - 1, True, 1)],
      ["/d1/a.spill", "/d2/é.spill"])),
    (W.encode_partition_info_resp, W.decode_partition_info_resp, ("", 0, 0, [], ["unused.spill"])),
    (W.encode_delete_shuffle, W.decode_delete_shuffle, (APP, 7)),
    (W.encode_delete_app, W.decode_delete_app, APP),
    (W.encode_lease, W.decode_lease, APP),
    (W.encode_lease, W.decode_lease, "é" * 60),
    (W.encode_lease_resp, W.decode_lease_resp, 0),
    (W.encode_lease_resp, W.decode_lease_resp, 2**32 - 1),
    (W.encode_drain, W.decode_drain, 0),
    (W.encode_drain, W.decode_drain, 2**32 - 1),
    (W.encode_members, W.decode_members, (7, [Node("d", "h", 9, NodeState.DRAINING), *NODES])),
    (W.encode_u64, W.decode_u64, 2**64 - 1),
    (W.encode_key, W.decode_key, b"\0" * 160),
    (W.encode_key, W.decode_key, b"k"),
    (W.encode_alloc, W.decode_alloc, 1),
    (W.encode_alloc_resp, W.decode_alloc_resp, 0x1000440),
    (W.encode_write, W.decode_write, (5, 2**64 - 1)),
    (W.encode_read, W.decode_read, (5, 6, 7)),
    (W.encode_free, W.decode_free, 5),
    (W.encode_error, W.decode_error, (ErrorCode.INCOMPLETE, "réessayez")),
]


@pytest.mark.parametrize("enc,dec,value", ROUND_TRIPS, ids=[f"{e.__name__}-{i}" for i, (e, _, _) in
                                                            enumerate(ROUND_TRIPS)])
def test_round_trip(enc, dec, value):
    args = value if isinstance(value, tuple) else (value,)
    meta = enc(*args)
    for buf in (meta, bytearray(meta), memoryview(meta)):
        got = dec(buf)
        assert got == value
    assert len(meta) <= P.MAX_META


def test_decoded_types():
    epoch, nodes = W.decode_members(W.encode_members(1, [("a", "h", 1, 2)]))  # tuples accepted as nodes
    assert nodes == [Node("a", "h", 1, NodeState.SUSPECT)] and nodes[0].state is NodeState.SUSPECT
    *_, counts = W.decode_map_end(W.encode_map_end(APP, 1, 2, 3, [(4, 5, 6)]))
    assert isinstance(counts[0], PartCount) and counts[0].bytes == 6
    *_, blocks, files = W.decode_partition_info_resp(W.encode_partition_info_resp("p", 0, 0, [(1, 2, 3, 1, 1)],
                                                                                  [b"/s/1.spill"]))
    assert blocks == [Block(1, 2, 3, True, 1)] and blocks[0].sealed is True and blocks[0].file == 1
    assert files == ["/s/1.spill"]
    assert W.decode_push(W.encode_push(APP.encode(), 1, 2, 3, 4, 5, 6))[0] == APP  # bytes app accepted
    assert W.encode_key("ключ") == W.encode_key("ключ".encode())
    assert W.encode_put is W.encode_get is W.encode_delete is W.encode_key
    W.decode_empty(b"")
    raises(ErrorCode.BAD_FRAME, W.decode_empty, b"\0", "PING", match="PING meta must be empty")


def test_push_layout_by_hand():
    meta = W.encode_push(APP, 7, 3, 2, 17, 4, 0x0123456789ABCDEF)
    assert meta == s16(APP) + struct.pack("<IIIQIQ", 7, 3, 2, 17, 4, 0x0123456789ABCDEF)


def test_register_forwarded():
    placement = W.encode_register_resp(42, NODES, [(0, 1), (1, 2), (2, 0)])
    meta = W.encode_register_forwarded(APP, 7, 3, 2, placement)
    assert meta == W.encode_register(APP, 7, 3, 2) + placement
    assert W.decode_register_forwarded(meta) == ((APP, 7, 3, 2), placement)
    assert W.decode_register_forwarded(memoryview(meta)) == ((APP, 7, 3, 2), placement)
    # the table must have exactly num_partitions rows
    raises(ErrorCode.BAD_FRAME, W.decode_register_forwarded, W.encode_register(APP, 7, 4, 2) + placement,
           match="3 partitions, expected 4")
    raises(ErrorCode.BAD_FRAME, W.decode_register_forwarded, W.encode_register(APP, 7, 3, 2))


# ---- meta errors ----------------------------------------------------------------------------------

def test_push_truncated_at_every_cut_point():
    meta = W.encode_push(APP, 7, 3, 2, 17, 4, 99)
    fields = ["app"] * (2 + len(APP)) + ["shuffle"] * 4 + ["partition"] * 4 + ["map_index"] * 4 + \
        ["attempt"] * 8 + ["seq"] * 4 + ["checksum"] * 8
    assert len(fields) == len(meta)
    for cut in range(len(meta)):
        e = raises(ErrorCode.BAD_FRAME, W.decode_push, meta[:cut])
        assert e.message.startswith(f"truncated meta: PUSH.{fields[cut]} needs"), (cut, e.message)
    e = raises(ErrorCode.BAD_FRAME, W.decode_push, meta + b"\0")
    assert e.message.startswith("trailing bytes: PUSH meta has 1 bytes after its last field")


@pytest.mark.parametrize("name", [v["file"][:-4] for v in json.load(open(os.path.join(VECTORS, "vectors.json")))
                                  ["vectors"] if v["kind"] != "invalid" and v["meta_len"]])
def test_every_vector_truncated_and_trailing(name):
    entry, frame = _vector(name)
    meta = frame[32:32 + entry["meta_len"]]
    decode = _decoder(entry)
    for cut in range(len(meta)):
        raises(ErrorCode.BAD_FRAME, decode, meta[:cut])
    raises(ErrorCode.BAD_FRAME, decode, meta + b"\x01")


APP_CASES = [
    ("", "application name is empty"),
    ("x" * 161, "application name is 161 bytes, the limit is 160"),
    ("é" * 81, "application name is 162 bytes, the limit is 160"),
    ("a/b", "contains '/'"),
    ("a\0b", "contains a NUL byte"),
    ("\udc80", "not valid UTF-8"),
]


@pytest.mark.parametrize("app,msg", APP_CASES)
def test_app_validation(app, msg):
    e = raises(ErrorCode.BAD_REQUEST, P.validate_app, app)
    assert e.message.startswith("app: ") and msg in e.message
    e = raises(ErrorCode.BAD_REQUEST, W.encode_push, app, 1, 2, 3, 4, 5, 6)
    assert e.message.startswith("PUSH.app") and msg in e.message
    if app != "\udc80":  # a str with a lone surrogate cannot go on the wire at all
        w = W.MetaWriter()
        w.str(app.encode())
        w.raw(b"\0" * 32)
        e = raises(ErrorCode.BAD_REQUEST, W.decode_push, w.getvalue())
        assert e.message.startswith("PUSH.app: ") and msg in e.message


def test_app_validation_ok_and_bad_utf8():
    assert P.validate_app("é" * 80) == "é" * 80  # 160 bytes (APP_MAX: what a frame may carry)
    assert P.validate_app(b"spark-app") == "spark-app"
    for enc in (W.encode_register, W.encode_delete_shuffle, W.encode_partition_info):
        args = {W.encode_register: (1, 1, 1), W.encode_delete_shuffle: (1,), W.encode_partition_info: (1, 2)}[enc]
        raises(ErrorCode.BAD_REQUEST, enc, "a/b", *args, match="contains '/'")
    raises(ErrorCode.BAD_REQUEST, W.encode_delete_app, b"\xff", match="not valid UTF-8")
    w = W.MetaWriter()
    w.str(b"\xffab")
    w.u32(7)
    e = raises(ErrorCode.BAD_REQUEST, W.decode_delete_shuffle, w.getvalue())
    assert e.message == "DELETE_SHUFFLE.app: application name is not valid UTF-8"


def test_key_validation():
    raises(ErrorCode.BAD_REQUEST, P.validate_key, b"", match="key: key is empty")
    raises(ErrorCode.BAD_REQUEST, P.validate_key, b"k" * 161, match="key is 161 bytes, the limit is 160")
    assert P.validate_key("k" * 160) == b"k" * 160
    raises(ErrorCode.BAD_REQUEST, W.encode_key, b"", match="empty")
    raises(ErrorCode.BAD_REQUEST, W.encode_key, "é" * 81, match="162 bytes")
    for bad, msg in ((b"", "key request.key: key is empty"), (b"k" * 161, "key request.key: key is 161 bytes")):
        w = W.MetaWriter()
        w.bytes(bad)
        e = raises(ErrorCode.BAD_REQUEST, W.decode_key, w.getvalue())
        assert e.message.startswith(msg)
    # structure first: a key length running past the meta is a truncation
    raises(ErrorCode.BAD_FRAME, W.decode_key, struct.pack("<I", 5000) + b"k", match="truncated meta")


def test_field_range_errors():
    big = P.MAX_PARTITIONS
    raises(ErrorCode.BAD_REQUEST, W.encode_push, APP, 1, big, 1, 1, 1, 1, match="PUSH.partition 16777216")
    raises(ErrorCode.BAD_REQUEST, W.decode_push, s16(APP) + struct.pack("<IIIQIQ", 1, big, 1, 1, 1, 1),
           match="PUSH.partition")
    raises(ErrorCode.BAD_REQUEST, W.decode_fetch, s16(APP) + struct.pack("<IIIII", 1, big, 0, 1, 0),
           match="FETCH.partition")
    raises(ErrorCode.BAD_REQUEST, W.decode_partition_info, s16(APP) + struct.pack("<II", 1, big))
    raises(ErrorCode.BAD_REQUEST, W.decode_map_end, s16(APP) + struct.pack("<IIQIIIQ", 1, 2, 3, 1, big, 1, 1),
           match="MAP_END.counts.partition")
    raises(ErrorCode.BAD_REQUEST, W.encode_map_end, APP, 1, 2, 3, [(big, 1, 1)])
    raises(ErrorCode.BAD_REQUEST, W.encode_fetch, APP, 1, 2, 5, 4, match="start_map 5 is above end_map 4")
    raises(ErrorCode.BAD_REQUEST, W.decode_fetch, s16(APP) + struct.pack("<IIIII", 1, 2, 5, 4, 0), match="start_map")
    raises(ErrorCode.BAD_REQUEST, W.encode_register, APP, 1, 0, 1, match="num_partitions 0")
    raises(ErrorCode.BAD_REQUEST, W.encode_register, APP, 1, big + 1, 1, match="num_partitions")
    raises(ErrorCode.BAD_REQUEST, W.encode_register, APP, 1, 1, 0, match="replicas is 0")
    raises(ErrorCode.BAD_REQUEST, W.decode_register, s16(APP) + struct.pack("<IIB", 1, 0, 1),
           match="REGISTER_SHUFFLE.num_partitions 0")
    raises(ErrorCode.BAD_REQUEST, W.decode_register, s16(APP) + struct.pack("<IIB", 1, 1, 0), match="replicas")
    raises(ErrorCode.BAD_REQUEST, W.encode_alloc, 0)
    raises(ErrorCode.BAD_REQUEST, W.decode_alloc, struct.pack("<Q", 0), match="ALLOC.size is 0")
    bad_node = s16("n") + s16("h") + struct.pack("<HB", 1, 5)
    raises(ErrorCode.BAD_REQUEST, W.decode_heartbeat, bad_node + struct.pack("<Q", 1), match="node.state 5")
    raises(ErrorCode.BAD_REQUEST, W.encode_heartbeat, ("n", "h", 1, 5), 1, match="state 5")
    raises(ErrorCode.BAD_REQUEST, W.encode_lease, "a/b", match="contains '/'")
    raises(ErrorCode.BAD_REQUEST, W.decode_lease, s16(""), match="empty")
    raises(ErrorCode.BAD_FRAME, W.decode_drain, struct.pack("<IB", 1, 0))
    raises(ErrorCode.BAD_FRAME, W.decode_lease_resp, struct.pack("<H", 1))
    raises(ErrorCode.BAD_REQUEST, W.encode_heartbeat, ("n", "h", 1, 0), 1, match="state 0")
    raises(ErrorCode.BAD_REQUEST, W.decode_hello, struct.pack("<HH", 1, 2) + b"\xff\xfe",
           match="HELLO.client_name is not valid UTF-8")
    raises(ErrorCode.BAD_REQUEST, W.encode_hello, 1, "x" * 65536, match="at most 65535")
    sealed2 = s16("p") + struct.pack("<IQI", 1, 1, 1) + struct.pack("<QQQBH", 1, 2, 3, 2, 0) + struct.pack("<I", 0)
    raises(ErrorCode.BAD_REQUEST, W.decode_partition_info_resp, sealed2, match="sealed is 2")
    with pytest.raises(OverflowError):
        W.encode_push(APP, -1, 1, 1, 1, 1, 1)
    with pytest.raises(OverflowError):
        W.encode_push(APP, 1, 1, 1, 2**64, 1, 1)


def test_partition_info_resp_names_files_in_range():
    def meta(blocks, files):  # blocks: (sealed, file)
        out = s16("/p") + struct.pack("<IQI", 1, 2, len(blocks))
        out += b"".join(struct.pack("<QQQBH", i, 4096 * i, 10, sealed, f) for i, (sealed, f) in enumerate(blocks))
        return out + struct.pack("<I", len(files)) + b"".join(s16(f) for f in files)

    assert W.decode_partition_info_resp(meta([(1, 2), (0, 0)], ["a", "b"]))[3][0] == Block(0, 0, 10, True, 2)
    raises(ErrorCode.BAD_REQUEST, W.decode_partition_info_resp, meta([(0, 0), (1, 3)], ["a", "b"]),
           match=r"blocks\[1\].file is 3, but the response lists 2 spill files \(file 0 is the pool file\)")
    raises(ErrorCode.BAD_REQUEST, W.decode_partition_info_resp, meta([(1, 1)], []), match="lists 0 spill files")
    raises(ErrorCode.BAD_REQUEST, W.decode_partition_info_resp, meta([(1, 65535)], ["a"]), match="file is 65535")
    raises(ErrorCode.BAD_REQUEST, W.decode_partition_info_resp, meta([(0, 1)], ["a"]),
           match=r"blocks\[0\] is in spill file 1 but not sealed")
    # structure before values: a truncated list of spill files is BAD_FRAME even after a bad file index
    raises(ErrorCode.BAD_FRAME, W.decode_partition_info_resp, meta([(1, 3)], ["a"])[:-1], match="spill_files")
    raises(ErrorCode.BAD_FRAME, W.decode_partition_info_resp, meta([(1, 1)], ["a"]) + b"\0", match="trailing")
    bad_utf8 = s16("/p") + struct.pack("<IQII", 1, 2, 0, 1) + struct.pack("<H", 1) + b"\xff"
    raises(ErrorCode.BAD_REQUEST, W.decode_partition_info_resp, bad_utf8, match="spill_files is not valid UTF-8")
    # the encoder refuses what the decoder would
    raises(ErrorCode.BAD_REQUEST, W.encode_partition_info_resp, "/p", 1, 2, [(1, 2, 3, True, 2)], ["a"],
           match=r"blocks\[0\].file is 2, but the response lists 1 spill files")
    raises(ErrorCode.BAD_REQUEST, W.encode_partition_info_resp, "/p", 1, 2, [(1, 2, 3, False, 1)], ["a"],
           match="not sealed")
    raises(ErrorCode.BAD_REQUEST, W.encode_partition_info_resp, "/p", 1, 2, [], ["x" * 65536], match="at most 65535")
    raises(ErrorCode.BAD_REQUEST, W.encode_partition_info_resp, "/p", 1, 2, [], ["f"] * 65536, match="65536 spill")
    with pytest.raises(ValueError):
        W.encode_partition_info_resp("/p", 1, 2, [(1, 2, 3, True)], [])  # a block names its file


def test_register_resp_errors():
    head = struct.pack("<QI", 1, 2) + node_bytes(NODES[0]) + node_bytes(NODES[1])
    assert W.decode_register_resp(head + struct.pack("<BHH", 2, 0, 1)) == (1, NODES[:2], [(0, 1)])
    assert W.decode_register_resp(head + b"\0") == (1, NODES[:2], [])  # L = 0: no partitions
    raises(ErrorCode.BAD_FRAME, W.decode_register_resp, head + struct.pack("<BHH", 2, 0, 2), match="not an index")
    raises(ErrorCode.BAD_FRAME, W.decode_register_resp, head + struct.pack("<BHH", 2, 1, 1), match="repeats node 1")
    raises(ErrorCode.BAD_FRAME, W.decode_register_resp, head + struct.pack("<BHB", 2, 0, 1), match="multiple")
    raises(ErrorCode.BAD_FRAME, W.decode_register_resp, head + struct.pack("<BHHH", 3, 0, 1, 0), match="L = 3")
    raises(ErrorCode.BAD_FRAME, W.decode_register_resp, head + b"\0\0\0", match="L = 0")
    raises(ErrorCode.BAD_FRAME, W.decode_register_resp, head + struct.pack("<BHH", 1, 0, 1), num_partitions=3,
           match="2 partitions, expected 3")
    raises(ErrorCode.BAD_REQUEST, W.encode_register_resp, 1, NODES, [(0, 1), (0,)], match="prefs\\[1\\] has 1")
    raises(ErrorCode.BAD_REQUEST, W.encode_register_resp, 1, NODES, [(0, 3)], match="not an index")
    raises(ErrorCode.BAD_REQUEST, W.encode_register_resp, 1, NODES, [(0, 0)], match="repeats")
    raises(ErrorCode.BAD_REQUEST, W.encode_register_resp, 1, NODES, [(0, 1, 2)] * 200_000,
           match="above the 1048576-byte frame limit")


def test_lists_with_absurd_counts_are_truncations():
    raises(ErrorCode.BAD_FRAME, W.decode_members, struct.pack("<QI", 1, 2**32 - 1), match="nodes needs")
    raises(ErrorCode.BAD_FRAME, W.decode_fetch, s16(APP) + struct.pack("<IIIII", 1, 2, 0, 1, 2**32 - 1),
           match="FETCH.attempts needs")
    raises(ErrorCode.BAD_FRAME, W.decode_map_end, s16(APP) + struct.pack("<IIQI", 1, 2, 3, 2**31),
           match="MAP_END.counts needs")
    raises(ErrorCode.BAD_FRAME, W.decode_partition_info_resp, s16("p") + struct.pack("<IQI", 1, 1, 2**32 - 1))
    raises(ErrorCode.BAD_FRAME, W.decode_partition_info_resp, s16("p") + struct.pack("<IQII", 1, 1, 0, 2**32 - 1),
           match="spill_files needs")


def test_error_meta():
    meta = W.encode_error(ErrorCode.NOT_FOUND, "no such key")
    assert meta == struct.pack("<H", 6) + s16("no such key")
    assert W.decode_error(meta) == (ErrorCode.NOT_FOUND, "no such key")
    code, msg = W.decode_error(struct.pack("<H", 77) + s16("from the future"))
    assert code == 77 and not isinstance(code, ErrorCode) and msg == "from the future"
    code, msg = W.decode_error(struct.pack("<HH", 5, 3) + b"a\xffb")  # bad UTF-8 is replaced, not fatal
    assert code == ErrorCode.BAD_REQUEST and msg == "a\ufffdb"
    long = "é" * 40000  # 80000 bytes: cut to fit a u16 length, on a character boundary
    code, msg = W.decode_error(W.encode_error(ErrorCode.INTERNAL, long))
    assert msg == "é" * 32767
    assert W.decode_error(W.encode_error(11, "\udc80"))[1] == "?"
    raises(ErrorCode.BAD_FRAME, W.decode_error, b"\x05", match="ERROR.code")


# ---- MetaWriter / MetaReader ----------------------------------------------------------------------

def test_meta_writer_reader():
    w = W.MetaWriter(capacity=1)
    w.u8(255)
    w.u16(65535)
    w.u32(2**32 - 1)
    w.u64(2**64 - 1)
    w.i32(-2)
    w.i64(-3)
    w.str("héllo")
    w.bytes(b"\0\1")
    w.u64_list([1, 2**64 - 1])
    w.node(NODES[2])
    w.raw(b"z" * 1000)  # forces growth
    meta = w.getvalue()
    assert len(w) == len(meta)
    assert w.frame(0x42, 1, 2, 3) == HDR.pack(P.MAGIC, P.VERSION, 0x42, 1, 2, len(meta), 0, 3) + meta
    r = W.MetaReader(bytearray(meta), "TEST")
    assert (r.u8(), r.u16(), r.u32(), r.u64(), r.i32(), r.i64()) == (255, 65535, 2**32 - 1, 2**64 - 1, -2, -3)
    assert r.str() == "héllo" and r.bytes() == b"\0\1" and r.u64_list() == [1, 2**64 - 1]
    assert r.node() == NODES[2]
    assert r.remaining == 1000 and r.raw(999) == b"z" * 999 and r.pos == len(meta) - 1
    e = raises(ErrorCode.BAD_FRAME, r.u16, "tail")
    assert e.message == f"truncated meta: TEST.tail needs 2 bytes at offset {len(meta) - 1}, 1 left"
    raises(ErrorCode.BAD_FRAME, r.finish, match="trailing bytes: TEST meta has 1 bytes")
    with pytest.raises(ValueError):
        r.u8()
    r = W.MetaReader(s16(APP) + struct.pack("<I", 1) + b"k")
    assert r.app() == APP and r.key() == b"k"
    r.finish()
    raises(ErrorCode.BAD_REQUEST, W.MetaReader(s16("a/b")).app, "name", match="name: application")
    buf = bytearray(b"\0\0")
    r = W.MetaReader(buf)
    with pytest.raises(BufferError):  # the reader holds an export until closed
        buf.append(1)
    r.close()
    buf.append(1)


# ---- records --------------------------------------------------------------------------------------

def make_records(items):
    out = bytearray()
    for map_index, attempt, seq, payload in items:
        out += REC.pack(P.RECORD_MAGIC, map_index, attempt, seq, len(payload), xxhash.xxh3_64_intdigest(payload))
        out += payload
    return bytes(out)


ITEMS = [(0, 11, 0, b"alpha"), (1, 12, 0, b"bravo-bravo"), (1, 12, 1, b""), (2**32 - 1, 2**64 - 1, 7, b"x" * 100)]


def test_record_header():
    h = W.pack_record_header(1, 2, 3, 4, 5)
    assert h == REC.pack(P.RECORD_MAGIC, 1, 2, 3, 4, 5) and h[:4] == b"SEG1"
    assert W.unpack_record_header(b"zz" + h, 2) == (1, 2, 3, 4, 5)
    buf = bytearray(40)
    W.write_record_header(buf, 8, 1, 2, 3, 4, 5)
    assert bytes(buf[8:]) == h
    with pytest.raises(ValueError):
        W.write_record_header(buf, 9, 1, 2, 3, 4, 5)
    raises(ErrorCode.BAD_FRAME, W.unpack_record_header, h[:31])
    raises(ErrorCode.BAD_FRAME, W.unpack_record_header, b"SEG2" + h[4:], match="bad record magic")


def test_iter_records():
    data = make_records(ITEMS)
    got = list(W.iter_records(data))
    assert [(m, a, s) for m, a, s, *_ in got] == [(m, a, s) for m, a, s, _ in ITEMS]
    for (_, _, _, off, length, checksum), (*_, payload) in zip(got, ITEMS, strict=True):
        assert data[off:off + length] == payload and checksum == xxhash.xxh3_64_intdigest(payload)
    assert W.count_records(data) == (4, sum(len(p) for *_, p in ITEMS))
    assert list(W.iter_records(b"")) == [] and W.count_records(b"") == (0, 0)
    # a sub-range, with offsets absolute in the buffer (one-sided readers parse [file_offset, +used))
    first = 32 + 5
    prefix = b"\xaa" * 10
    sub = list(W.iter_records(prefix + data, 10 + first, 10 + first + 32 + 11))
    assert sub == [(1, 12, 0, 10 + first + 32, 11, xxhash.xxh3_64_intdigest(b"bravo-bravo"))]
    assert W.count_records(memoryview(prefix + data), 10) == (4, 116)
    with pytest.raises(ValueError):
        W.iter_records(data, 5, 4)


def test_torn_and_foreign_records():
    data = make_records(ITEMS[:2])
    for cut in range(1, len(data)):
        if cut == 37:  # exactly one whole record
            continue
        it = W.iter_records(data[:cut])
        if cut > 37:
            assert next(it)[:3] == (0, 11, 0)
        e = raises(ErrorCode.BAD_FRAME, next, it)
        assert "torn record" in e.message, (cut, e.message)
        with pytest.raises(StopIteration):
            next(it)
        raises(ErrorCode.BAD_FRAME, W.count_records, data[:cut])
    bad = bytearray(data)
    bad[37:41] = b"SEG0"
    raises(ErrorCode.BAD_FRAME, list, W.iter_records(bad), match="bad record magic 0x30474553 at offset 37")
    huge = REC.pack(P.RECORD_MAGIC, 0, 0, 0, P.MAX_SEGMENT + 1, 0)
    raises(ErrorCode.BAD_FRAME, list, W.iter_records(huge), match="segment limit")


# ---- dispatch -------------------------------------------------------------------------------------

def test_generic_dispatch():
    meta = W.encode_request(Op.PUSH, APP, 1, 2, 3, 4, 5, 6)
    assert W.decode_request(Op.PUSH, meta) == (APP, 1, 2, 3, 4, 5, 6)
    assert W.decode_request(Op.GET, W.encode_key(b"k")) == (b"k",)
    assert W.decode_request(Op.PING, b"") == ()
    assert W.decode_response(Op.ALLOC, W.encode_u64(9)) == (9,)
    assert W.encode_response(Op.PUT) == b""
    raises(ErrorCode.UNKNOWN_OPCODE, W.decode_request, 0x7F, b"", match="unknown opcode 0x7f")
    raises(ErrorCode.UNKNOWN_OPCODE, W.encode_response, 0, match="unknown opcode 0x00")
    for op in Op:
        assert len(P.REQUEST_FIELDS[op]) == len(W.decode_request(op, _sample_request_meta(op)))


def _sample_request_meta(op):
    samples = {Op.HELLO: (1, "c"), Op.HEARTBEAT: (NODES[0], 1), Op.REGISTER_SHUFFLE: (APP, 1, 2, 1),
               Op.PUSH: (APP, 1, 2, 3, 4, 5, 6), Op.MAP_END: (APP, 1, 2, 3, [(1, 1, 1)]), Op.FETCH: (APP, 1, 2),
               Op.PARTITION_INFO: (APP, 1, 2), Op.DELETE_SHUFFLE: (APP, 1), Op.DELETE_APP: (APP,),
               Op.LEASE: (APP,), Op.DRAIN: (30,), Op.AUTH: ("acme", bytes(32)), Op.AUTH_PROOF: (bytes(32),),
               Op.PUT: (b"k",), Op.GET: (b"k",), Op.DELETE: (b"k",), Op.ALLOC: (1,), Op.WRITE: (1, 2),
               Op.READ: (1, 2, 3), Op.FREE: (1,)}
    return W.encode_request(op, *samples.get(op, ()))


# ---- test vectors ---------------------------------------------------------------------------------

def _load():
    with open(os.path.join(VECTORS, "vectors.json"), encoding="utf-8") as f:
        return json.load(f)


def _vector(name):
    entry = next(v for v in _load()["vectors"] if v["file"] == name + ".bin")
    with open(os.path.join(VECTORS, entry["file"]), "rb") as f:
        return entry, f.read()


def _decoder(entry):
    if entry["kind"] == "error":
        return W.decode_error
    if entry["kind"] == "response":
        if entry["opcode"] == Op.REGISTER_SHUFFLE:
            n = len(entry["fields"]["prefs"])
            return lambda m: W.decode_register_resp(m, n)
        return lambda m: W.decode_response(entry["opcode"], m)
    if entry["flags"] & P.FLAG_FORWARDED and entry["opcode"] == Op.REGISTER_SHUFFLE:
        return W.decode_register_forwarded
    return lambda m: W.decode_request(entry["opcode"], m)


def _to_json(v):
    """Decoded value -> the JSON convention of vectors.json (written here, not shared with gen_vectors)."""
    if isinstance(v, Node):
        return {"node_id": v.node_id, "host": v.host, "port": v.port, "state": int(v.state)}
    if isinstance(v, PartCount):
        return {"partition": v.partition, "segments": v.segments, "bytes": v.bytes}
    if isinstance(v, Block):
        return {"address": v.address, "file_offset": v.file_offset, "used": v.used, "sealed": v.sealed, "file": v.file}
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, (list, tuple)):
        return [_to_json(x) for x in v]
    return v


def _from_json(name, v):
    if name in ("self",):
        return Node(**v)
    if name == "nodes":
        return [Node(**n) for n in v]
    if name == "counts":
        return [PartCount(**c) for c in v]
    if name == "blocks":
        return [Block(**b) for b in v]
    if name in ("key", "nonce", "proof"):
        return bytes.fromhex(v)
    if name == "prefs":
        return [tuple(row) for row in v]
    return v


def test_vectors_are_fresh_and_deterministic():
    files, doc = gen_vectors.build()
    files2, doc2 = gen_vectors.build()
    assert files == files2 and doc == doc2
    files["vectors.json"] = gen_vectors.render(doc)
    on_disk = sorted(os.listdir(VECTORS))
    assert on_disk == sorted(files), "run: python tests/gen_vectors.py"
    for name, content in files.items():
        with open(os.path.join(VECTORS, name), "rb") as f:
            assert f.read() == content, f"{name} is stale: run python tests/gen_vectors.py"


def test_vector_coverage():
    doc = _load()
    vs = doc["vectors"]
    for op in Op:
        assert any(v["kind"] == "request" and v["opcode"] == op for v in vs), op
        assert any(v["kind"] == "response" and v["opcode"] == op for v in vs), op
    assert sum(v["kind"] == "error" for v in vs) >= 4
    assert sum(v["kind"] == "invalid" for v in vs) >= 8
    fetch = next(v for v in vs if v["file"] == "fetch_resp.bin")
    assert fetch["fields"]["records"] == 3 and len(fetch["records"]) == 3
    reg = next(v for v in vs if v["file"] == "register_shuffle_resp.bin")
    assert len(reg["fields"]["nodes"]) == 3 and len(reg["fields"]["prefs"]) == 4


@pytest.mark.parametrize("entry", [v for v in _load()["vectors"] if v["kind"] != "invalid"], ids=lambda v: v["file"])
def test_vector_decodes_to_its_meaning_and_reencodes(entry):
    with open(os.path.join(VECTORS, entry["file"]), "rb") as f:
        frame = f.read()
    op, flags, rid, meta_len, data_len = W.unpack_header(frame)
    assert (op, flags, rid, meta_len, data_len) == (entry["opcode"], entry["flags"], entry["request_id"],
                                                    entry["meta_len"], entry["data_len"])
    assert P.flag_names(flags) == entry["flag_names"]
    assert len(frame) == 32 + meta_len + data_len
    meta, data = frame[32:32 + meta_len], frame[32 + meta_len:]
    assert data.hex() == entry["data_hex"]
    fields = entry["fields"]
    if entry["kind"] == "error":
        code, message = W.decode_error(meta)
        assert (int(code), code.name, message) == (fields["code"], fields["code_name"], fields["message"])
        assert flags == P.FLAG_RESPONSE | P.FLAG_ERROR
        assert W.error_frame(op, rid, code, message) == frame
        return
    if entry["kind"] == "request" and flags & P.FLAG_FORWARDED and op == Op.REGISTER_SHUFFLE:
        (app, shuffle, nparts, replicas), placement = W.decode_register_forwarded(meta)
        assert (app, shuffle, nparts, replicas) == tuple(fields[k] for k in ("app", "shuffle", "num_partitions",
                                                                             "replicas"))
        epoch, nodes, prefs = W.decode_register_resp(placement, nparts)
        assert {"epoch": epoch, "nodes": _to_json(nodes), "prefs": _to_json(prefs)} == fields["placement"]
        assert W.encode_register_forwarded(app, shuffle, nparts, replicas, placement) == meta
        return
    names = (P.REQUEST_FIELDS if entry["kind"] == "request" else P.RESPONSE_FIELDS)[Op(op)]
    decoded = _decoder(entry)(meta)
    if not isinstance(decoded, tuple):
        decoded = (decoded,)
    assert dict(zip(names, _to_json(list(decoded)), strict=True)) == fields
    args = [_from_json(n, fields[n]) for n in names]
    enc = W.encode_request if entry["kind"] == "request" else W.encode_response
    assert enc(op, *args) == meta
    assert W.frame(op, flags, rid, enc(op, *args), len(data)) + data == frame
    if "records" in entry:
        recs = [{"map_index": m, "attempt": a, "seq": s, "length": n, "checksum": c, "payload_offset": o,
                 "payload_hex": data[o:o + n].hex()} for m, a, s, o, n, c in W.iter_records(data)]
        assert recs == entry["records"] and len(recs) == fields["records"]
        for r in recs:
            assert xxhash.xxh3_64_intdigest(bytes.fromhex(r["payload_hex"])) == r["checksum"]


@pytest.mark.parametrize("entry", [v for v in _load()["vectors"] if v["kind"] == "invalid"], ids=lambda v: v["file"])
def test_invalid_vectors_are_rejected(entry):
    with open(os.path.join(VECTORS, entry["file"]), "rb") as f:
        frame = f.read()

    def receive():
        op, flags, rid, meta_len, data_len = W.unpack_header(frame)
        W.decode_request(op, frame[32:32 + meta_len])

    raises(ErrorCode[entry["expect_error"]], receive)
    assert entry["expect_code"] == ErrorCode[entry["expect_error"]]


# Hand-built frames straight from PROTOCOL.md's tables (struct.pack, no codec).

def _hand(entry, meta: bytes, data: bytes = b"") -> bytes:
    return HDR.pack(0x504D5052, 2, entry["opcode"], entry["flags"], entry["request_id"], len(meta), 0,
                    len(data)) + meta + data


def test_hand_built_hello_and_members():
    e, frame = _vector("hello_req")
    assert frame == _hand(e, struct.pack("<H", 2) + s16("rpmp-java/0.1"))
    e, frame = _vector("hello_resp")
    assert frame == _hand(e, struct.pack("<H", 2) + s16("10.0.0.1:7070") + struct.pack("<Q", 256 << 20))
    e, frame = _vector("members_resp")
    nodes = b"".join(s16(n["node_id"]) + s16(n["host"]) + struct.pack("<HB", n["port"], n["state"])
                     for n in e["fields"]["nodes"])
    assert frame == _hand(e, struct.pack("<QI", 42, 3) + nodes)
    assert [n["state"] for n in e["fields"]["nodes"]] == [1, 2, 3]
    e, frame = _vector("heartbeat_req")
    assert frame == _hand(e, s16("10.0.0.2:7070") + s16("10.0.0.2") + struct.pack("<HBQ", 7070, 1, 41))
    e, frame = _vector("ping_req")
    assert frame == HDR.pack(0x504D5052, 2, 0x02, 0, e["request_id"], 0, 0, 0)


def test_hand_built_lease_and_drain():
    e, frame = _vector("lease_req")
    assert frame == _hand(e, s16(APP))
    e, frame = _vector("lease_forwarded_req")
    assert frame == _hand(e, s16(APP)) and e["flags"] == P.FLAG_FORWARDED
    e, frame = _vector("lease_resp")
    assert frame == _hand(e, struct.pack("<I", 3_600_000))
    e, frame = _vector("drain_req")
    assert frame == _hand(e, struct.pack("<I", 600))
    e, frame = _vector("drain_resp")
    assert frame == _hand(e, b"")
    e, frame = _vector("members_resp_draining")
    assert [n["state"] for n in e["fields"]["nodes"]] == [1, 4, 1]
    assert b"".join(s16(n["node_id"]) + s16(n["host"]) + struct.pack("<HB", n["port"], n["state"])
                    for n in e["fields"]["nodes"]) in frame


def test_hand_built_register():
    e, frame = _vector("register_shuffle_req")
    assert frame == _hand(e, s16(APP) + struct.pack("<IIB", 7, 4, 2))
    e, frame = _vector("register_shuffle_resp")
    f = e["fields"]
    nodes = b"".join(s16(f"10.0.0.{i}:7070") + s16(f"10.0.0.{i}") + struct.pack("<HB", 7070, 1) for i in (1, 2, 3))
    prefs = b"".join(struct.pack("<3H", *row) for row in f["prefs"])
    assert frame == _hand(e, struct.pack("<QI", 42, 3) + nodes + struct.pack("<B", 3) + prefs)
    assert e["flags"] == 1 and len(f["prefs"]) == 4
    assert all(sorted(row) == [0, 1, 2] for row in f["prefs"])  # L = min(3 live, 2 + 1): all distinct


def test_hand_built_push_map_end_fetch():
    e, frame = _vector("push_req")
    payload = b"hello, rpmp shuffle segment\n"
    meta = s16(APP) + struct.pack("<IIIQIQ", 7, 3, 2, 17, 0, xxhash.xxh3_64_intdigest(payload))
    assert frame == _hand(e, meta, payload)
    e, frame = _vector("map_end_req")
    assert frame == _hand(e, s16(APP) + struct.pack("<IIQI", 7, 2, 17, 2) + struct.pack("<IIQ", 0, 2, 4096)
                          + struct.pack("<IIQ", 3, 1, len(payload)))
    e, frame = _vector("fetch_req")
    assert frame == _hand(e, s16(APP) + struct.pack("<IIIII", 7, 3, 0, 0xFFFFFFFF, 2) + struct.pack("<QQ", 11, 12))
    e, frame = _vector("fetch_resp")
    recs = [(0, 11, 0, b"alpha"), (1, 12, 0, b"bravo-bravo"), (1, 12, 1, b"charlie\x00\xff")]
    data = b"".join(struct.pack("<4sIQIIQ", b"SEG1", m, a, s, len(p), xxhash.xxh3_64_intdigest(p)) + p
                    for m, a, s, p in recs)
    assert frame == _hand(e, struct.pack("<I", 3), data)
    e, frame = _vector("fetch_resp_more")
    assert e["flags"] == 1 | 4 and frame[:32] == HDR.pack(0x504D5052, 2, 0x13, 5, e["request_id"], 4, 0, 37 + 43)


def test_hand_built_partition_info_pool_api_and_errors():
    e, frame = _vector("partition_info_resp")
    meta = s16("/dev/shm/rpmp-10.0.0.1-7070.pool") + struct.pack("<IQI", 3, 24, 2) + \
        struct.pack("<QQQBH", 0x3C0410, 0x3C0410, 4 << 20, 1, 0) + \
        struct.pack("<QQQBH", 0x7C0410, 0x7C0410, 88, 0, 0) + \
        struct.pack("<I", 0)
    assert frame == _hand(e, meta)
    e, frame = _vector("partition_info_resp_spilled")
    spill = ["/var/lib/rpmp/spill/rpmp-10.0.0.1-7070.0001.spill", "/mnt/disk2/rpmp/rpmp-10.0.0.1-7070.0002.spill"]
    meta = s16("/dev/shm/rpmp-10.0.0.1-7070.pool") + struct.pack("<IQI", 5, 4200, 4) + \
        struct.pack("<QQQBH", 0x3C0410, 0x3C0410, 88, 0, 0) + \
        struct.pack("<QQQBH", 0x1C00410, 0x200000, 4 << 20, 1, 2) + \
        struct.pack("<QQQBH", 0x5C00410, 0, 4104, 1, 1) + struct.pack("<QQQBH", 0x9C00410, 0x401000, 1 << 20, 1, 2) + \
        struct.pack("<I", 2) + s16(spill[0]) + s16(spill[1])
    assert frame == _hand(e, meta)
    blocks = e["fields"]["blocks"]
    assert [b["file"] for b in blocks] == [0, 2, 1, 2] and e["fields"]["spill_files"] == spill
    e, frame = _vector("error_quota_exceeded")
    assert frame == _hand(e, struct.pack("<H", 14) + s16(e["fields"]["message"]))
    assert e["fields"]["code_name"] == "QUOTA_EXCEEDED"
    e, frame = _vector("put_req")
    assert frame == _hand(e, struct.pack("<I", 15) + b"user/block-0001", b"value bytes \x00\x01\x02")
    e, frame = _vector("read_req")
    assert frame == _hand(e, struct.pack("<QQQ", 0x1000440, 128, 4))
    e, frame = _vector("alloc_resp")
    assert frame == _hand(e, struct.pack("<Q", 0x1000440))
    e, frame = _vector("delete_app_resp")
    assert frame == _hand(e, struct.pack("<Q", 12))
    e, frame = _vector("error_not_found")
    assert frame == _hand(e, struct.pack("<H", 6) + s16("key b'missing' not found"))
    assert e["flags"] == 3


# ---- properties -----------------------------------------------------------------------------------

apps = st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), min_size=1,
               max_size=120).filter(lambda a: len(a.encode()) <= 120)
u8, u16 = st.integers(0, 2**8 - 1), st.integers(0, 2**16 - 1)
u32, u64 = st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)
parts = st.integers(0, P.MAX_PARTITIONS - 1)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
nodes_st = st.builds(Node, texts, texts, u16, st.sampled_from(list(NodeState)))


@given(apps, u32, parts, u32, u64, u32, u64)
def test_prop_push(app, shuffle, partition, map_index, attempt, seq, checksum):
    x = (app, shuffle, partition, map_index, attempt, seq, checksum)
    assert W.decode_push(W.encode_push(*x)) == x
    f = W.push_frame(1, *x, 10)
    assert W.unpack_header(f)[3] == len(f) - 32 and W.decode_push(memoryview(f)[32:]) == x


@given(apps, u32, parts, u32, u32, st.lists(u64, max_size=50))
def test_prop_fetch(app, shuffle, partition, a, b, attempts):
    x = (app, shuffle, partition, min(a, b), max(a, b), attempts)
    assert W.decode_fetch(W.encode_fetch(*x)) == x


@given(apps, u32, u32, u64, st.lists(st.tuples(parts, u32, u64), max_size=50))
def test_prop_map_end(app, shuffle, map_index, attempt, counts):
    x = (app, shuffle, map_index, attempt, counts)
    assert W.decode_map_end(W.encode_map_end(*x)) == x


blocks_st = st.lists(st.tuples(u64, u64, u64, st.booleans(), st.integers(0, 3)), max_size=30)


@given(texts, u32, u64, blocks_st, st.lists(texts, min_size=3, max_size=5))
def test_prop_partition_info_resp(path, records, nbytes, raw, files):
    blocks = [Block(a, o, n, sealed or f > 0, f) for a, o, n, sealed, f in raw]
    x = (path, records, nbytes, blocks, files)
    meta = W.encode_partition_info_resp(*x)
    assert W.decode_partition_info_resp(meta) == x
    assert len(meta) == 2 + len(path.encode()) + 16 + 27 * len(blocks) + 4 + sum(2 + len(f.encode()) for f in files)


@given(u64, st.lists(nodes_st, min_size=1, max_size=8), st.data())
def test_prop_register_resp(epoch, nodes, data):
    L = data.draw(st.integers(1, len(nodes)))
    nparts = data.draw(st.integers(1, 40))
    prefs = [tuple(data.draw(st.permutations(range(len(nodes))))[:L]) for _ in range(nparts)]
    meta = W.encode_register_resp(epoch, nodes, prefs)
    assert W.decode_register_resp(meta) == (epoch, nodes, prefs)
    assert W.decode_register_resp(meta, nparts) == (epoch, nodes, prefs)


@given(u16, texts, u64, nodes_st, st.lists(nodes_st, max_size=5), apps, u32, st.integers(1, P.MAX_PARTITIONS), u8)
def test_prop_control(version, name, n64, node, nodes, app, shuffle, nparts, replicas):
    assert W.decode_hello(W.encode_hello(version, name)) == (version, name)
    assert W.decode_hello_resp(W.encode_hello_resp(version, name, n64)) == (version, name, n64)
    assert W.decode_heartbeat(W.encode_heartbeat(node, n64)) == (node, n64)
    assert W.decode_members(W.encode_members(n64, nodes)) == (n64, nodes)
    replicas = max(replicas, 1)
    assert W.decode_register(W.encode_register(app, shuffle, nparts, replicas)) == (app, shuffle, nparts, replicas)


@given(st.binary(max_size=64), st.integers(0, 2**32 - 1))
def test_prop_random_header_bytes(buf, max_data):
    try:
        op, flags, rid, meta_len, data_len = W.unpack_header(buf, max_data=max_data)
    except ProtocolError as e:
        assert e.code in (ErrorCode.BAD_FRAME, ErrorCode.BAD_VERSION, ErrorCode.TOO_LARGE)
    else:
        assert buf[:5] == b"RPMP\x02" and meta_len <= P.MAX_META and data_len <= max_data


DECODERS = [W.decode_hello, W.decode_hello_resp, W.decode_members, W.decode_heartbeat, W.decode_register,
            W.decode_register_resp, W.decode_register_forwarded, W.decode_push, W.decode_map_end, W.decode_fetch,
            W.decode_fetch_resp, W.decode_partition_info, W.decode_partition_info_resp, W.decode_delete_shuffle,
            W.decode_delete_app, W.decode_lease, W.decode_lease_resp, W.decode_drain, W.decode_u64, W.decode_key,
            W.decode_alloc, W.decode_alloc_resp, W.decode_write,
            W.decode_read, W.decode_free, W.decode_error, W.count_records, lambda b: list(W.iter_records(b)),
            W.unpack_record_header]


def _only_protocol_errors(buf):
    for dec in DECODERS:
        for b in (buf, bytearray(buf), memoryview(buf)):
            try:
                dec(b)
            except ProtocolError as e:
                assert isinstance(e.code, ErrorCode) and e.message
    for op in list(Op) + [0, 0xFF]:
        for dec in (W.decode_request, W.decode_response):
            try:
                dec(op, buf)
            except ProtocolError:
                pass


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_prop_random_bytes_only_raise_protocol_error(buf):
    _only_protocol_errors(buf)


MUTATION_SEEDS = [W.encode_push(APP, 1, 2, 3, 4, 5, 6), W.encode_register_resp(1, NODES, [(0, 1), (2, 1)]),
                  W.encode_map_end(APP, 1, 2, 3, [(1, 2, 3)]), W.encode_fetch(APP, 1, 2, 0, 9, [1, 2]),
                  W.encode_members(3, NODES),
                  W.encode_partition_info_resp("p", 1, 2, [(1, 2, 3, 1, 0), (4, 5, 6, 1, 1)], ["s"]),
                  make_records(ITEMS)]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MUTATION_SEEDS), st.lists(st.tuples(st.integers(0, 400), u8), min_size=1, max_size=4),
       st.integers(0, 400))
def test_prop_mutated_meta_only_raise_protocol_error(seed, flips, cut):
    buf = bytearray(seed)
    for pos, value in flips:
        buf[pos % len(buf)] = value
    _only_protocol_errors(bytes(buf[:cut] if cut < len(buf) else buf))


@pytest.mark.parametrize("size", [0, 1, 31, 32, 33, 65535, 65536, 1 << 20])
def test_checksums_match_the_reference_for_every_buffer_kind(size):
    import pyarrow as pa

    data = bytes((i * 131 + size) & 0xFF for i in range(size + 3))
    for buf in (data[:size], bytearray(data[:size]), memoryview(data)[3:size + 3], pa.py_buffer(data[:size])):
        ref = bytes(memoryview(buf))
        assert W.xxh64(buf) == xxhash.xxh64_intdigest(ref)
        assert W.xxh64(buf, 0x9E3779B97F4A7C15) == xxhash.xxh64_intdigest(ref, 0x9E3779B97F4A7C15)
        assert W.xxh3(buf) == xxhash.xxh3_64_intdigest(ref)

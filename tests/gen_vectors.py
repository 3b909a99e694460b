"""Generate tests/vectors/: byte-exact frames of the RPMP wire protocol and their meaning in JSON.

    python tests/gen_vectors.py          # (re)write tests/vectors/*.bin and vectors.json
    python tests/gen_vectors.py --check  # exit 1 if the files on disk differ from what would be generated

Deterministic: fixed inputs, no clocks, sorted JSON keys, so re-running gives identical bytes. The
frames come from the Python codec (rpmp._wire); tests/test_wire.py checks several of them against
bytes built by hand with struct.pack straight from docs/PROTOCOL.md, and every one of them against
vectors.json, so a codec change that alters the wire shows up as a diff here.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
from typing import Any

import xxhash

HERE = os.path.dirname(os.path.abspath(__file__))

from rpmp import _wire as W  # noqa: E402
from rpmp.auth import client_proof, key_tag, node_proof, qualify_app, qualify_key  # noqa: E402
from rpmp.protocol import (  # noqa: E402
    DEFAULT_MAX_DATA,
    END_MAP_ALL,
    FLAG_ERROR,
    FLAG_FORWARDED,
    FLAG_MORE,
    FLAG_RESPONSE,
    MAGIC,
    MAX_META,
    REQUEST_FIELDS,
    RESPONSE_FIELDS,
    SEQ_LAST,
    VERSION,
    Block,
    ErrorCode,
    Node,
    NodeState,
    Op,
    PartCount,
    flag_names,
)
from rpmp.ring import HashRing  # noqa: E402

VECTOR_DIR = os.path.join(HERE, "vectors")
DATA_HEX_MAX = 4096

CONVENTIONS = {
    "integers": "exact decimal JSON numbers; u64 values may exceed 2^63 (read them as unsigned)",
    "bytes": "fields of type `bytes` (PUT/GET/DELETE key) are lowercase hex strings",
    "data_hex": "the frame's data part as lowercase hex",
    "Node": "{node_id, host, port, state}; state 1 alive, 2 suspect, 3 dead, 4 draining",
    "prefs": "REGISTER_SHUFFLE response: one list of L node indices per partition, partition 0 first",
    "records": "FETCH response data parsed into records; payload_offset is relative to the data part; checksum is "
               "XXH3-64 (seed 0) of the payload, as in PUSH",
    "data_xxh3": "for a data part too long for data_hex: its XXH3-64 (seed 0)",
    "invalid": "kind 'invalid' frames must be rejected with the error named in expect_error",
    "placement_examples": "HashRing results for PROTOCOL.md 'Placement' (64 vnodes, XXH64 seed 0)",
    "seq": "a record's or PUSH's seq is the full u32: bit 31 (SEQ_LAST, 2147483648) marks an attempt's final "
           "segment for a partition, seq & 0x7FFFFFFF is its index",
    "Block": "PARTITION_INFO response: {address, file_offset, used, sealed, file}; file 0 is pool_path, k > 0 "
             "spill_files[k - 1] (a spilled block is sealed; file_offset is where its bytes start in that file)",
    "auth_example": "PROTOCOL.md 'Authentication and tenants' for the auth_* vectors: the secret, both nonces, both "
                    "HMAC-SHA256 proofs, the tenant's key tag (XXH3-64 of its name, u64 LE), a qualified app and key",
    "complete_attempts": "on a FETCH response: the attempts whose records there are whole (indices 0..n-1, "
                         "SEQ_LAST on n-1), per PROTOCOL.md 'Completeness'",
}

APP = "app-20261121235131-0001"
AUTH_TENANT = "acme"
AUTH_SECRET = b"correct horse battery staple"
NODES = [
    Node("10.0.0.1:7070", "10.0.0.1", 7070, 1),
    Node("10.0.0.2:7070", "10.0.0.2", 7070, 1),
    Node("10.0.0.3:7070", "10.0.0.3", 7070, 1),
]
PAYLOAD = b"hello, rpmp shuffle segment\n"
RECORDS = [  # (map_index, attempt, seq, payload)
    (0, 11, 0, b"alpha"),
    (1, 12, 0, b"bravo-bravo"),
    (1, 12, 1, b"charlie\x00\xff"),
]
# Final segments (PROTOCOL.md "The final segment"): attempt 17 ends with data carrying SEQ_LAST; attempt 18's
# data left before its writer knew it was last, so an empty segment carrying SEQ_LAST ends it.
FINAL_RECORDS = [  # (map_index, attempt, seq, payload)
    (2, 17, 0, b"delta"),
    (2, 17, 1 | SEQ_LAST, b"echo, the last of 17"),
    (3, 18, 0, b"foxtrot"),
    (3, 18, 1 | SEQ_LAST, b""),
]


def op_name(op: int | None) -> str | None:
    try:
        return Op(op).name
    except ValueError:
        return None


def to_json(value: Any) -> Any:
    """Decoded values -> plain JSON (Node and named tuples as objects, bytes as hex)."""
    if isinstance(value, Node):
        return {"node_id": value.node_id, "host": value.host, "port": value.port, "state": int(value.state)}
    if isinstance(value, (PartCount, Block)):
        return {k: to_json(v) for k, v in value._asdict().items()}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def records_data(records: list[tuple[int, int, int, bytes]]) -> tuple[bytes, list[dict]]:
    data = bytearray()
    meaning = []
    for map_index, attempt, seq, payload in records:
        checksum = xxhash.xxh3_64_intdigest(payload)
        data += W.pack_record_header(map_index, attempt, seq, len(payload), checksum)
        meaning.append({"map_index": map_index, "attempt": attempt, "seq": seq, "length": len(payload),
                        "checksum": checksum, "payload_offset": len(data), "payload_hex": payload.hex()})
        data += payload
    return bytes(data), meaning


class Builder:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.entries: list[dict] = []
        self.rid = 0

    def _add(self, name: str, op: int, flags: int, meta: bytes, data: bytes, kind: str, **extra: Any) -> None:
        assert name not in self.files, name
        self.rid += 1
        frame = W.frame(op, flags, self.rid, meta, len(data)) + data
        self.files[name + ".bin"] = frame
        entry = {"file": name + ".bin", "kind": kind, "opcode": int(op), "op": op_name(op), "flags": flags,
                 "flag_names": flag_names(flags), "request_id": self.rid, "meta_len": len(meta), "data_len": len(data)}
        if len(data) <= DATA_HEX_MAX:
            entry["data_hex"] = data.hex()
        else:
            entry["data_xxh3"] = xxhash.xxh3_64_intdigest(data)
        entry.update(extra)
        self.entries.append(entry)

    def request(self, name: str, op: Op, fields: tuple, data: bytes = b"", flags: int = 0) -> None:
        meta = W.encode_request(op, *fields)
        self._add(name, op, flags, meta, data, "request",
                  fields={k: to_json(v) for k, v in zip(REQUEST_FIELDS[op], fields, strict=True)})

    def response(self, name: str, op: Op, fields: tuple, data: bytes = b"", flags: int = FLAG_RESPONSE,
                 **extra: Any) -> None:
        meta = W.encode_response(op, *fields)
        self._add(name, op, flags, meta, data, "response",
                  fields={k: to_json(v) for k, v in zip(RESPONSE_FIELDS[op], fields, strict=True)}, **extra)

    def error(self, name: str, op: int, code: ErrorCode, message: str) -> None:
        meta = W.encode_error(code, message)
        self._add(name, op, FLAG_RESPONSE | FLAG_ERROR, meta, b"", "error",
                  fields={"code": int(code), "code_name": code.name, "message": message})

    def invalid(self, name: str, frame: bytes, expect: ErrorCode, why: str, op: int | None = None) -> None:
        """A frame a receiver must reject (built by hand: the codec refuses to make these)."""
        assert name not in self.files, name
        self.files[name + ".bin"] = frame
        self.entries.append({"file": name + ".bin", "kind": "invalid", "expect_error": expect.name,
                             "expect_code": int(expect), "description": why,
                             "opcode": op, "op": op_name(op)})


def raw_header(magic: int = MAGIC, version: int = VERSION, op: int = Op.PING, flags: int = 0, rid: int = 1,
               meta_len: int = 0, reserved: int = 0, data_len: int = 0) -> bytes:
    return struct.pack("<IBBHQIIQ", magic, version, op, flags, rid, meta_len, reserved, data_len)


def _register_frame(app: str) -> bytes:
    """A REGISTER_SHUFFLE built by hand (the codec refuses bad names): `app`, shuffle 7, 4 partitions, 1 replica."""
    w = W.MetaWriter()
    w.str(app)
    w.u32(7)
    w.u32(4)
    w.u8(1)
    return w.frame(Op.REGISTER_SHUFFLE, 0, 1, 0)


def build() -> tuple[dict[str, bytes], dict]:
    """-> ({file name: bytes}, vectors.json content)"""
    b = Builder()
    checksum = xxhash.xxh3_64_intdigest(PAYLOAD)
    ring = HashRing([n.node_id for n in NODES])
    node_ids, prefs = ring.placement_table(APP, 7, 4, 2)
    assert node_ids == [n.node_id for n in NODES]
    placement = W.encode_register_resp(42, NODES, prefs)

    # ---- control
    b.request("hello_req", Op.HELLO, (VERSION, "rpmp-java/0.1"))
    b.response("hello_resp", Op.HELLO, (VERSION, "10.0.0.1:7070", DEFAULT_MAX_DATA))
    b.request("ping_req", Op.PING, ())
    b.response("ping_resp", Op.PING, ())
    b.request("stats_req", Op.STATS, ())
    stats = json.dumps({"node": "10.0.0.1:7070", "pool": {"size": 1 << 30, "used": 8 << 20}, "apps": 1,
                        "shuffles": 1, "bytes": 4096}, sort_keys=True).encode()
    b.response("stats_resp", Op.STATS, (), data=stats)
    b.request("members_req", Op.MEMBERS, ())
    members = [NODES[0], Node("10.0.0.2:7070", "10.0.0.2", 7070, 2), Node("10.0.0.3:7070", "10.0.0.3", 7070, 3)]
    b.response("members_resp", Op.MEMBERS, (42, members))
    b.request("heartbeat_req", Op.HEARTBEAT, (NODES[1], 41))
    b.response("heartbeat_resp", Op.HEARTBEAT, (42, NODES))

    # ---- shuffle
    b.request("register_shuffle_req", Op.REGISTER_SHUFFLE, (APP, 7, 4, 2))
    b.response("register_shuffle_resp", Op.REGISTER_SHUFFLE, (42, NODES, prefs),
               L=len(prefs[0]), node_ids_by_partition=[[node_ids[i] for i in row] for row in prefs])
    fwd = W.encode_register_forwarded(APP, 7, 4, 2, placement)
    b._add("register_shuffle_forwarded_req", Op.REGISTER_SHUFFLE, FLAG_FORWARDED, fwd, b"", "request",
           fields={"app": APP, "shuffle": 7, "num_partitions": 4, "replicas": 2,
                   "placement": {"epoch": 42, "nodes": to_json(NODES), "prefs": to_json(prefs)}})
    b.request("push_req", Op.PUSH, (APP, 7, 3, 2, 17, 0, checksum), data=PAYLOAD)
    b.response("push_resp", Op.PUSH, ())
    b.request("push_forwarded_req", Op.PUSH, (APP, 7, 3, 2, 17, 1, checksum), data=PAYLOAD, flags=FLAG_FORWARDED)
    b.request("map_end_req", Op.MAP_END, (APP, 7, 2, 17, [PartCount(0, 2, 4096), PartCount(3, 1, len(PAYLOAD))]))
    b.response("map_end_resp", Op.MAP_END, ())
    b.request("fetch_req", Op.FETCH, (APP, 7, 3, 0, END_MAP_ALL, [11, 12]))
    b.request("fetch_range_req", Op.FETCH, (APP, 7, 3, 1, 2, []))
    data, meaning = records_data(RECORDS)
    b.response("fetch_resp", Op.FETCH, (3,), data=data, records=meaning)
    data, meaning = records_data(RECORDS[:2])
    b.response("fetch_resp_more", Op.FETCH, (2,), data=data, flags=FLAG_RESPONSE | FLAG_MORE, records=meaning)
    b.response("fetch_resp_last_empty", Op.FETCH, (0,), records=[])
    b.request("partition_info_req", Op.PARTITION_INFO, (APP, 7, 3))
    b.response("partition_info_resp", Op.PARTITION_INFO,
               ("/dev/shm/rpmp-10.0.0.1-7070.pool", 3, 24,
                [Block(0x3C0410, 0x3C0410, 4 << 20, True, 0), Block(0x7C0410, 0x7C0410, 88, False, 0)], []))
    b.request("delete_shuffle_req", Op.DELETE_SHUFFLE, (APP, 7))
    b.response("delete_shuffle_resp", Op.DELETE_SHUFFLE, (5,))
    b.request("delete_app_req", Op.DELETE_APP, (APP,))
    b.response("delete_app_resp", Op.DELETE_APP, (12,))

    # ---- pool API
    key = b"user/block-0001"
    b.request("put_req", Op.PUT, (key,), data=b"value bytes \x00\x01\x02")
    b.response("put_resp", Op.PUT, ())
    b.request("get_req", Op.GET, (key,))
    b.response("get_resp", Op.GET, (), data=b"value bytes \x00\x01\x02")
    b.request("delete_req", Op.DELETE, (key,))
    b.response("delete_resp", Op.DELETE, ())
    b.request("alloc_req", Op.ALLOC, (4096,))
    b.response("alloc_resp", Op.ALLOC, (0x1000440,))
    b.request("write_req", Op.WRITE, (0x1000440, 128), data=b"\xde\xad\xbe\xef")
    b.response("write_resp", Op.WRITE, ())
    b.request("read_req", Op.READ, (0x1000440, 128, 4))
    b.response("read_resp", Op.READ, (), data=b"\xde\xad\xbe\xef")
    b.request("free_req", Op.FREE, (0x1000440,))
    b.response("free_resp", Op.FREE, ())

    # ---- errors
    b.error("error_not_found", Op.GET, ErrorCode.NOT_FOUND, "key b'missing' not found")
    b.error("error_bad_request", Op.PUSH, ErrorCode.BAD_REQUEST, "PUSH.app: application name 'a/b' contains '/'")
    b.error("error_checksum_mismatch", Op.PUSH, ErrorCode.CHECKSUM_MISMATCH,
            "segment (2, 17, 0) of partition 3: payload XXH3 0x0000000000000001 != 0x0000000000000002")
    b.error("error_unknown_opcode", 0x7F, ErrorCode.UNKNOWN_OPCODE, "unknown opcode 0x7f")
    b.error("error_bad_magic", 0x00, ErrorCode.BAD_FRAME, "bad magic 0x00000000 (expected 0x504d5052, b'RPMP')")
    b.error("error_incomplete_utf8", Op.MAP_END, ErrorCode.INCOMPLETE,
            "map 2 attempt 17: partition 3: node has 0 segments, map says 1 — réessayez")

    # ---- final segments and corrupt copies (added after the others, so their request ids stay put)
    b.request("push_last_req", Op.PUSH, (APP, 7, 3, 2, 17, 1 | SEQ_LAST, checksum), data=PAYLOAD)
    b.request("push_last_empty_req", Op.PUSH, (APP, 7, 3, 3, 18, 1 | SEQ_LAST, xxhash.xxh3_64_intdigest(b"")))
    data, meaning = records_data(FINAL_RECORDS)
    b.response("fetch_resp_final_segments", Op.FETCH, (len(FINAL_RECORDS),), data=data, records=meaning,
               complete_attempts=[17, 18])
    b.error("error_corrupt", Op.FETCH, ErrorCode.CORRUPT,
            f"record (2, 17, 1) of shuffle 7 of '{APP}' partition 3 fails its checksum on this node "
            "(block 0x3c0410 offset 37); it is quarantined: read a replica")

    # ---- the disk tier (added after the others, so their request ids stay put): blocks in spill files, and
    # an app over its quota on a node
    b.response("partition_info_resp_spilled", Op.PARTITION_INFO,
               ("/dev/shm/rpmp-10.0.0.1-7070.pool", 5, 4200,
                [Block(0x3C0410, 0x3C0410, 88, False, 0), Block(0x1C00410, 0x200000, 4 << 20, True, 2),
                 Block(0x5C00410, 0, 4104, True, 1), Block(0x9C00410, 0x401000, 1 << 20, True, 2)],
                ["/var/lib/rpmp/spill/rpmp-10.0.0.1-7070.0001.spill", "/mnt/disk2/rpmp/rpmp-10.0.0.1-7070.0002.spill"]))
    b.error("error_quota_exceeded", Op.PUSH, ErrorCode.QUOTA_EXCEEDED,
            f"app '{APP}' would hold 1073745920 bytes on node 10.0.0.1:7070, above its quota of 1073741824 "
            "(--app-quota): delete shuffles or raise the quota")

    # ---- leases and drain (added after the others, so their request ids stay put): LEASE renews an app on
    # every node and answers the node's TTL; DRAIN takes a node out of placement; members show it DRAINING
    b.request("lease_req", Op.LEASE, (APP,))
    b.response("lease_resp", Op.LEASE, (3_600_000,))
    b.request("lease_forwarded_req", Op.LEASE, (APP,), flags=FLAG_FORWARDED)
    b.request("drain_req", Op.DRAIN, (600,))
    b.response("drain_resp", Op.DRAIN, ())
    b.response("members_resp_draining", Op.MEMBERS,
               (43, [NODES[0], Node("10.0.0.2:7070", "10.0.0.2", 7070, NodeState.DRAINING), NODES[2]]))
    b.error("error_unavailable_draining", Op.REGISTER_SHUFFLE, ErrorCode.UNAVAILABLE,
            "node 10.0.0.2:7070 is draining: it takes no new shuffles; register through another node")

    # ---- authentication (PROTOCOL.md "Authentication and tenants"): one whole exchange for tenant AUTH_TENANT
    cn, nn = bytes(range(32)), bytes(range(0x80, 0xA0))
    n_proof = node_proof(AUTH_SECRET, AUTH_TENANT, cn, nn)
    c_proof = client_proof(AUTH_SECRET, AUTH_TENANT, cn, nn)
    b.request("auth_req", Op.AUTH, (AUTH_TENANT, cn))
    b.response("auth_resp", Op.AUTH, (nn, n_proof))
    b.request("auth_proof_req", Op.AUTH_PROOF, (c_proof,))
    b.response("auth_proof_resp", Op.AUTH_PROOF, ())
    b.error("error_auth_failed", Op.AUTH_PROOF, ErrorCode.AUTH_FAILED, "authentication failed")
    b.error("error_forbidden", Op.HEARTBEAT, ErrorCode.FORBIDDEN, "only nodes (@cluster) may send HEARTBEAT")
    auth_example = {"tenant": AUTH_TENANT, "secret": AUTH_SECRET.decode(), "client_nonce": cn.hex(),
                    "node_nonce": nn.hex(), "node_proof": n_proof.hex(), "client_proof": c_proof.hex(),
                    "key_tag": key_tag(AUTH_TENANT).hex(), "qualified_app": qualify_app(AUTH_TENANT, APP),
                    "qualified_key_of_6b6579": qualify_key(AUTH_TENANT, b"key").hex()}

    # ---- frames a receiver must reject
    good_push = W.encode_push(APP, 7, 3, 2, 17, 0, checksum)
    b.invalid("invalid_bad_magic", raw_header(magic=0x52504D50), ErrorCode.BAD_FRAME, "magic bytes 'PMPR'")
    b.invalid("invalid_bad_version", raw_header(version=3), ErrorCode.BAD_VERSION, "version 3")
    b.invalid("invalid_reserved", raw_header(reserved=1), ErrorCode.BAD_FRAME, "reserved field = 1")
    b.invalid("invalid_meta_too_large", raw_header(op=Op.PUSH, meta_len=MAX_META + 1), ErrorCode.TOO_LARGE,
              "meta_len = 1 MiB + 1 (header only)", Op.PUSH)
    b.invalid("invalid_data_too_large", raw_header(op=Op.PUT, meta_len=0, data_len=DEFAULT_MAX_DATA + 1),
              ErrorCode.TOO_LARGE, "data_len = 256 MiB + 1 with the default max_data (header only)", Op.PUT)
    cut = good_push[:20]
    b.invalid("invalid_push_truncated_meta", raw_header(op=Op.PUSH, meta_len=len(cut)) + cut, ErrorCode.BAD_FRAME,
              "PUSH meta cut inside shuffle/partition", Op.PUSH)
    b.invalid("invalid_push_trailing_meta", raw_header(op=Op.PUSH, meta_len=len(good_push) + 1) + good_push + b"\0",
              ErrorCode.BAD_FRAME, "PUSH meta with one byte after checksum", Op.PUSH)
    w = W.MetaWriter()
    w.str("a/b")
    w.raw(good_push[2 + len(APP):])
    b.invalid("invalid_push_app_slash", w.frame(Op.PUSH, 0, 1, 0), ErrorCode.BAD_REQUEST, "app 'a/b'", Op.PUSH)
    w = W.MetaWriter()
    w.bytes(b"k" * 161)
    b.invalid("invalid_get_key_too_long", w.frame(Op.GET, 0, 1, 0), ErrorCode.BAD_REQUEST, "161-byte key", Op.GET)
    w = W.MetaWriter()
    w.str(APP)
    w.u32(7)
    w.u32(0)
    w.u8(2)
    b.invalid("invalid_register_zero_partitions", w.frame(Op.REGISTER_SHUFFLE, 0, 1, 0), ErrorCode.BAD_REQUEST,
              "num_partitions = 0", Op.REGISTER_SHUFFLE)

    w = W.MetaWriter()
    w.str(AUTH_TENANT)
    w.bytes(cn[:31])
    b.invalid("invalid_auth_short_nonce", w.frame(Op.AUTH, 0, 1, 0), ErrorCode.BAD_REQUEST, "31-byte nonce", Op.AUTH)
    w = W.MetaWriter()
    w.bytes(c_proof + b"\0")
    b.invalid("invalid_auth_proof_long", w.frame(Op.AUTH_PROOF, 0, 1, 0), ErrorCode.BAD_REQUEST, "33-byte proof",
              Op.AUTH_PROOF)
    cut = W.encode_auth(AUTH_TENANT, cn)[:-1]
    b.invalid("invalid_auth_truncated", raw_header(op=Op.AUTH, meta_len=len(cut)) + cut, ErrorCode.BAD_FRAME,
              "AUTH meta cut inside the nonce (the length says 32, 31 bytes follow)", Op.AUTH)
    w = W.MetaWriter()
    w.str("")
    w.bytes(cn)
    b.invalid("invalid_auth_empty_tenant", w.frame(Op.AUTH, 0, 1, 0), ErrorCode.BAD_REQUEST, "empty tenant", Op.AUTH)
    b.invalid("invalid_register_app_161", _register_frame("x" * 161), ErrorCode.BAD_REQUEST,
              "161-byte app (above APP_MAX, 160)", Op.REGISTER_SHUFFLE)

    examples = []
    for nodes, app, shuffle, nparts, replicas in [
        ([n.node_id for n in NODES], APP, 7, 4, 2),
        (["a:1", "b:2", "c:3", "d:4"], "app-x", 0, 8, 1),
        (["solo:7070"], "app-y", 3, 3, 3),
    ]:
        examples.append({"nodes": nodes, "app": app, "shuffle": shuffle, "num_partitions": nparts,
                         "replicas": replicas, "placement": HashRing(nodes).placement(app, shuffle, nparts, replicas)})

    doc = {"protocol_version": VERSION, "conventions": CONVENTIONS, "vectors": b.entries,
           "placement_examples": examples, "auth_example": auth_example}
    return b.files, doc


def render(doc: dict) -> bytes:
    return (json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the files on disk, write nothing")
    args = ap.parse_args()
    files, doc = build()
    files["vectors.json"] = render(doc)
    stale = []
    for name, content in sorted(files.items()):
        path = os.path.join(VECTOR_DIR, name)
        old = open(path, "rb").read() if os.path.exists(path) else None
        if old != content:
            stale.append(name)
            if not args.check:
                os.makedirs(VECTOR_DIR, exist_ok=True)
                with open(path, "wb") as f:
                    f.write(content)
    extra = sorted(set(os.listdir(VECTOR_DIR)) - set(files)) if os.path.isdir(VECTOR_DIR) else []
    if args.check:
        for name in stale:
            print(f"stale: {name}")
        for name in extra:
            print(f"not generated: {name}")
        return 1 if stale or extra else 0
    for name in extra:
        print(f"warning: {name} is in {VECTOR_DIR} but not generated", file=sys.stderr)
    print(f"{len(files)} files, {len(stale)} written")
    return 0


if __name__ == "__main__":
    sys.exit(main())

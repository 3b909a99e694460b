"""RPMP wire protocol v2: constants, codes and small records shared by the node, clients and tests.

docs/PROTOCOL.md is the contract; this module is its vocabulary in Python, with no I/O and no
dependencies, so anything (server, client, CLI, tests) can import it cheaply. The byte-level codec
lives in the Cython module ``rpmp._wire``; placement in ``rpmp.ring``.

Public names:

- frame: ``MAGIC``, ``VERSION``, ``HEADER_SIZE``, flag bits ``FLAG_RESPONSE``, ``FLAG_ERROR``,
  ``FLAG_MORE``, ``FLAG_FORWARDED`` (and ``FLAGS_KNOWN``), ``Op`` (opcodes), ``ErrorCode``.
- limits: ``MAX_META``, ``DEFAULT_MAX_DATA``, ``MAX_SEGMENT``, ``APP_MAX``, ``KEY_MAX``, ``STR_MAX``,
  ``MAX_PARTITIONS``, ``END_MAP_ALL``.
- records: ``RECORD_MAGIC``, ``RECORD_HEADER_SIZE``, ``SEQ_LAST`` / ``SEQ_INDEX`` (the final-segment bit).
- ``ProtocolError(code, message)``: the one exception of the codec; ``code`` says which error frame to send.
- records: ``Node`` (dataclass), ``NodeState``, ``Block`` and ``PartCount`` (named tuples, so they compare
  equal to plain tuples), ``REQUEST_FIELDS`` / ``RESPONSE_FIELDS`` (names of the decoded tuple members).
- ``validate_app(app, field)``, ``validate_key(key, field)``: the name rules, raising BAD_REQUEST.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

MAGIC = 0x504D5052  # b"RPMP" as a little-endian u32
VERSION = 2
HEADER_SIZE = 32

FLAG_RESPONSE = 1 << 0
FLAG_ERROR = 1 << 1
FLAG_MORE = 1 << 2
FLAG_FORWARDED = 1 << 3
FLAGS_KNOWN = FLAG_RESPONSE | FLAG_ERROR | FLAG_MORE | FLAG_FORWARDED

MAX_META = 1 << 20
DEFAULT_MAX_DATA = 256 << 20
MAX_SEGMENT = 64 << 20
APP_MAX = 160  # what a frame may carry: nodes forward apps by qualified name (tenant U+001F app)
CLIENT_APP_MAX = 120  # what a client may name
TENANT_MAX = 32
NONCE_SIZE = 32  # AUTH nonces
PROOF_SIZE = 32  # HMAC-SHA256
KEY_MAX = 160
STR_MAX = 0xFFFF  # a `str` carries a u16 length
MAX_PARTITIONS = 1 << 24
END_MAP_ALL = 0xFFFFFFFF

RECORD_MAGIC = 0x31474553  # b"SEG1" as a little-endian u32
RECORD_HEADER_SIZE = 32
SEQ_LAST = 1 << 31  # set in `seq` on the final segment of a map attempt for a partition
SEQ_INDEX = SEQ_LAST - 1  # the segment's index is seq & SEQ_INDEX


class Op(IntEnum):
    """Opcodes; a response repeats its request's opcode."""

    HELLO = 0x01
    PING = 0x02
    STATS = 0x03
    MEMBERS = 0x04
    HEARTBEAT = 0x05
    DRAIN = 0x06
    AUTH = 0x07
    AUTH_PROOF = 0x08
    REGISTER_SHUFFLE = 0x10
    PUSH = 0x11
    MAP_END = 0x12
    FETCH = 0x13
    PARTITION_INFO = 0x14
    DELETE_SHUFFLE = 0x15
    DELETE_APP = 0x16
    LEASE = 0x17
    PUT = 0x20
    GET = 0x21
    DELETE = 0x22
    ALLOC = 0x23
    WRITE = 0x24
    READ = 0x25
    FREE = 0x26


class ErrorCode(IntEnum):
    """Codes carried by error frames (PROTOCOL.md "Error codes")."""

    BAD_FRAME = 1
    BAD_VERSION = 2
    UNKNOWN_OPCODE = 3
    TOO_LARGE = 4
    BAD_REQUEST = 5
    NOT_FOUND = 6
    CHECKSUM_MISMATCH = 7
    POOL_FULL = 8
    CONFLICT = 9
    UNAVAILABLE = 10
    INTERNAL = 11
    INCOMPLETE = 12
    CORRUPT = 13
    QUOTA_EXCEEDED = 14
    AUTH_FAILED = 15
    FORBIDDEN = 16


#: Error codes after which the sender closes the connection (the byte stream can no longer be trusted).
FATAL_ERRORS = frozenset({ErrorCode.BAD_FRAME, ErrorCode.BAD_VERSION, ErrorCode.TOO_LARGE, ErrorCode.AUTH_FAILED})


class ProtocolError(Exception):
    """A frame or request that breaks the protocol; ``code`` is the ErrorCode to answer with.

    ``code`` is an ``ErrorCode`` when known, else the raw int (a newer peer's code), so that decoding an
    error frame never fails.
    """

    def __init__(self, code: int, message: str):
        try:
            code = ErrorCode(code)
        except ValueError:
            pass
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        name = self.code.name if isinstance(self.code, ErrorCode) else f"error {self.code}"
        return f"{name}: {self.message}"


class NodeState(IntEnum):
    """A member's state as MEMBERS and HEARTBEAT carry it (a u8); decoders hand back these members."""

    ALIVE = 1
    SUSPECT = 2
    DEAD = 3
    DRAINING = 4  # up and serving what it holds, but takes no new shuffles (DRAIN); placement skips it


@dataclass(frozen=True, slots=True)
class Node:
    """A member of the cluster as the wire carries it; ``node_id`` is ``host:port`` unless configured."""

    node_id: str
    host: str
    port: int
    state: NodeState = NodeState.ALIVE


class PartCount(NamedTuple):
    """MAP_END: what a map attempt pushed to one partition (payload bytes, record headers excluded)."""

    partition: int
    segments: int
    bytes: int


class Block(NamedTuple):
    """PARTITION_INFO: where a block of the partition sits: ``file`` 0 is the node's pool file, k > 0 the
    response's ``spill_files[k - 1]`` (a spilled block is sealed; ``file_offset`` is where its bytes start)."""

    address: int
    file_offset: int
    used: int
    sealed: bool
    file: int = 0


#: Names of the members of the tuple each ``rpmp._wire.decode_*`` request decoder returns (as in PROTOCOL.md).
REQUEST_FIELDS: dict[Op, tuple[str, ...]] = {
    Op.HELLO: ("version", "client_name"),
    Op.PING: (),
    Op.STATS: (),
    Op.MEMBERS: (),
    Op.HEARTBEAT: ("self", "known_epoch"),
    Op.DRAIN: ("timeout_s",),
    Op.AUTH: ("tenant", "nonce"),
    Op.AUTH_PROOF: ("proof",),
    Op.REGISTER_SHUFFLE: ("app", "shuffle", "num_partitions", "replicas"),
    Op.PUSH: ("app", "shuffle", "partition", "map_index", "attempt", "seq", "checksum"),
    Op.MAP_END: ("app", "shuffle", "map_index", "attempt", "counts"),
    Op.FETCH: ("app", "shuffle", "partition", "start_map", "end_map", "attempts"),
    Op.PARTITION_INFO: ("app", "shuffle", "partition"),
    Op.DELETE_SHUFFLE: ("app", "shuffle"),
    Op.DELETE_APP: ("app",),
    Op.LEASE: ("app",),
    Op.PUT: ("key",),
    Op.GET: ("key",),
    Op.DELETE: ("key",),
    Op.ALLOC: ("size",),
    Op.WRITE: ("address", "offset"),
    Op.READ: ("address", "offset", "length"),
    Op.FREE: ("address",),
}

#: Names of the members of each (non-error) response's decoded meta.
RESPONSE_FIELDS: dict[Op, tuple[str, ...]] = {
    Op.HELLO: ("version", "node_id", "max_data"),
    Op.PING: (),
    Op.STATS: (),
    Op.MEMBERS: ("epoch", "nodes"),
    Op.HEARTBEAT: ("epoch", "nodes"),
    Op.DRAIN: (),
    Op.AUTH: ("nonce", "proof"),
    Op.AUTH_PROOF: (),
    Op.REGISTER_SHUFFLE: ("epoch", "nodes", "prefs"),
    Op.PUSH: (),
    Op.MAP_END: (),
    Op.FETCH: ("records",),
    Op.PARTITION_INFO: ("pool_path", "records", "bytes", "blocks", "spill_files"),
    Op.DELETE_SHUFFLE: ("blocks_freed",),
    Op.DELETE_APP: ("blocks_freed",),
    Op.LEASE: ("ttl_ms",),
    Op.PUT: (),
    Op.GET: (),
    Op.DELETE: (),
    Op.ALLOC: ("address",),
    Op.WRITE: (),
    Op.READ: (),
    Op.FREE: (),
}

ERROR_FIELDS = ("code", "message")


def validate_app(app: str | bytes, field: str = "app") -> str:
    """Check the application-name rules (1..120 UTF-8 bytes, no '/', no NUL) and return the name as str.

    '/' is excluded because the placement key is "{app}/{shuffle}/{partition}"; NUL because pool keys
    and logs treat names as C strings. ``field`` names the offending field in the message.
    """
    if isinstance(app, str):
        try:
            raw = app.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{field}: application name is not valid UTF-8") from None
    else:
        raw = bytes(app)
        try:
            app = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{field}: application name is not valid UTF-8") from None
    if not raw:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{field}: application name is empty")
    if len(raw) > APP_MAX:
        raise ProtocolError(ErrorCode.BAD_REQUEST,
                            f"{field}: application name is {len(raw)} bytes, the limit is {APP_MAX}")
    if b"/" in raw:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{field}: application name {app!r} contains '/'")
    if b"\0" in raw:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{field}: application name {app!r} contains a NUL byte")
    return app


def validate_key(key: str | bytes, field: str = "key") -> bytes:
    """Check a PUT/GET/DELETE key (1..160 bytes, any bytes; str is taken as UTF-8) and return it as bytes."""
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if not raw:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{field}: key is empty")
    if len(raw) > KEY_MAX:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{field}: key is {len(raw)} bytes, the limit is {KEY_MAX}")
    return raw


def flag_names(flags: int) -> list[str]:
    """Names of the set flag bits, for logs and test vectors."""
    names = [(FLAG_RESPONSE, "RESPONSE"), (FLAG_ERROR, "ERROR"), (FLAG_MORE, "MORE"), (FLAG_FORWARDED, "FORWARDED")]
    out = [n for bit, n in names if flags & bit]
    if flags & ~FLAGS_KNOWN & 0xFFFF:
        out.append(f"0x{flags & ~FLAGS_KNOWN & 0xFFFF:04x}")
    return out

package org.rpmp.shuffle;

/** Constants of the RPMP wire protocol, version 2 (docs/PROTOCOL.md is the contract). */
public final class Protocol {
    private Protocol() {}

    public static final int MAGIC = 0x504D5052;          // "RPMP" little-endian
    public static final int VERSION = 2;
    public static final int HEADER_SIZE = 32;

    public static final int FLAG_RESPONSE = 1;
    public static final int FLAG_ERROR = 1 << 1;
    public static final int FLAG_MORE = 1 << 2;
    public static final int FLAG_FORWARDED = 1 << 3;
    public static final int FLAGS_KNOWN = FLAG_RESPONSE | FLAG_ERROR | FLAG_MORE | FLAG_FORWARDED;

    public static final int MAX_META = 1 << 20;
    public static final long DEFAULT_MAX_DATA = 256L << 20;
    public static final int MAX_SEGMENT = 64 << 20;
    public static final int APP_MAX = 120;
    public static final int MAX_PARTITIONS = 1 << 24;
    /** FETCH end_map meaning "no upper bound" (0xFFFFFFFF as a u32). */
    public static final int END_MAP_ALL = 0xFFFFFFFF;

    public static final int RECORD_MAGIC = 0x31474553;   // "SEG1" little-endian
    public static final int RECORD_HEADER_SIZE = 32;
    /** Bit 31 of a segment's seq: the last segment a map attempt pushes for a partition (PROTOCOL.md "The final segment"). */
    public static final int SEQ_LAST = 1 << 31;
    /** seq & SEQ_INDEX is the segment's index (0, 1, ..., n-1 per attempt and partition). */
    public static final int SEQ_INDEX = SEQ_LAST - 1;

    // Opcodes: a response repeats its request's opcode.
    public static final int OP_HELLO = 0x01;
    public static final int OP_PING = 0x02;
    public static final int OP_STATS = 0x03;
    public static final int OP_MEMBERS = 0x04;
    public static final int OP_HEARTBEAT = 0x05;
    public static final int OP_REGISTER_SHUFFLE = 0x10;
    public static final int OP_PUSH = 0x11;
    public static final int OP_MAP_END = 0x12;
    public static final int OP_FETCH = 0x13;
    public static final int OP_PARTITION_INFO = 0x14;
    public static final int OP_DELETE_SHUFFLE = 0x15;
    public static final int OP_DELETE_APP = 0x16;
    public static final int OP_PUT = 0x20;
    public static final int OP_GET = 0x21;
    public static final int OP_DELETE = 0x22;
    public static final int OP_ALLOC = 0x23;
    public static final int OP_WRITE = 0x24;
    public static final int OP_READ = 0x25;
    public static final int OP_FREE = 0x26;

    // Error codes carried by error frames.
    public static final int BAD_FRAME = 1;
    public static final int BAD_VERSION = 2;
    public static final int UNKNOWN_OPCODE = 3;
    public static final int TOO_LARGE = 4;
    public static final int BAD_REQUEST = 5;
    public static final int NOT_FOUND = 6;
    public static final int CHECKSUM_MISMATCH = 7;
    public static final int POOL_FULL = 8;
    public static final int CONFLICT = 9;
    public static final int UNAVAILABLE = 10;
    public static final int INTERNAL = 11;
    public static final int INCOMPLETE = 12;
    public static final int CORRUPT = 13;

    private static final String[] ERROR_NAMES = {
        "OK", "BAD_FRAME", "BAD_VERSION", "UNKNOWN_OPCODE", "TOO_LARGE", "BAD_REQUEST", "NOT_FOUND",
        "CHECKSUM_MISMATCH", "POOL_FULL", "CONFLICT", "UNAVAILABLE", "INTERNAL", "INCOMPLETE", "CORRUPT"};

    public static String errorName(int code) {
        return code > 0 && code < ERROR_NAMES.length ? ERROR_NAMES[code] : "ERROR_" + code;
    }

    /** The index of a segment (its seq without SEQ_LAST). */
    public static int seqIndex(int seq) { return seq & SEQ_INDEX; }

    /** Whether a seq carries SEQ_LAST. */
    public static boolean isLast(int seq) { return (seq & SEQ_LAST) != 0; }

    /** A seq for humans: "3" or "3+LAST". */
    public static String seqName(int seq) { return seqIndex(seq) + (isLast(seq) ? "+LAST" : ""); }

    /** Errors after which the node closes the connection: the byte stream cannot be trusted any more. */
    public static boolean isFatal(int code) {
        return code == BAD_FRAME || code == BAD_VERSION || code == TOO_LARGE;
    }

    public static String opName(int op) {
        switch (op) {
            case OP_HELLO: return "HELLO";
            case OP_PING: return "PING";
            case OP_STATS: return "STATS";
            case OP_MEMBERS: return "MEMBERS";
            case OP_HEARTBEAT: return "HEARTBEAT";
            case OP_REGISTER_SHUFFLE: return "REGISTER_SHUFFLE";
            case OP_PUSH: return "PUSH";
            case OP_MAP_END: return "MAP_END";
            case OP_FETCH: return "FETCH";
            case OP_PARTITION_INFO: return "PARTITION_INFO";
            case OP_DELETE_SHUFFLE: return "DELETE_SHUFFLE";
            case OP_DELETE_APP: return "DELETE_APP";
            case OP_PUT: return "PUT";
            case OP_GET: return "GET";
            case OP_DELETE: return "DELETE";
            case OP_ALLOC: return "ALLOC";
            case OP_WRITE: return "WRITE";
            case OP_READ: return "READ";
            case OP_FREE: return "FREE";
            default: return String.format("0x%02x", op);
        }
    }
}

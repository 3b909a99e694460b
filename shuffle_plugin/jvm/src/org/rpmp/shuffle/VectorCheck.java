package org.rpmp.shuffle;

import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * Checks the JVM codec against the protocol's byte-exact test vectors (tests/vectors/vectors.json and its
 * .bin files, produced from the Python codec): every request is re-encoded by the Java encoders and must
 * match byte for byte; every response and error frame is decoded by the Java decoders and must mean what
 * vectors.json says; every invalid frame must be rejected with the expected error code.
 *
 * <p>Usage: {@code java -cp rpmp-shuffle.jar:<spark jars> org.rpmp.shuffle.VectorCheck [tests/vectors]}.
 * Exit status 0 when everything matched, 1 on any mismatch, 2 when the vectors are missing.
 */
public final class VectorCheck {
    private int passed;
    private int skipped;
    private final List<String> failures = new ArrayList<>();

    public static void main(String[] args) throws Exception {
        Path dir = Paths.get(args.length > 0 ? args[0] : "tests/vectors");
        Path json = dir.resolve("vectors.json");
        if (!Files.isRegularFile(json)) {
            System.err.println("VectorCheck: no " + json + " (the protocol test vectors are missing)");
            System.exit(2);
        }
        VectorCheck check = new VectorCheck();
        Map<String, Object> root = map(MiniJson.parse(new String(Files.readAllBytes(json), StandardCharsets.UTF_8)));
        if (integer(root.get("protocol_version")) != Protocol.VERSION) {
            System.err.println("VectorCheck: vectors are for protocol version " + root.get("protocol_version"));
            System.exit(1);
        }
        List<Object> vectors = list(root.get("vectors"));
        for (Object o : vectors) check.run(dir, map(o));
        for (String f : check.failures) System.out.println("FAIL " + f);
        System.out.println("VectorCheck: " + vectors.size() + " vectors: " + check.passed + " passed, "
            + check.failures.size() + " failed, " + check.skipped + " skipped");
        System.exit(check.failures.isEmpty() && check.passed > 0 ? 0 : 1);
    }

    private void run(Path dir, Map<String, Object> v) {
        String file = (String) v.get("file");
        try {
            byte[] bytes = Files.readAllBytes(dir.resolve(file));
            String kind = (String) v.get("kind");
            boolean done;
            switch (kind) {
                case "request": done = checkRequest(v, bytes); break;
                case "response": done = checkResponse(v, bytes); break;
                case "error": done = checkError(v, bytes); break;
                case "invalid": done = checkInvalid(v, bytes); break;
                default: throw new Mismatch("unknown kind " + kind);
            }
            if (done) {
                passed++;
            } else {
                skipped++;
                System.out.println("skip " + file + " (" + kind + " " + v.get("op") + ")");
            }
        } catch (Exception | Mismatch e) {
            failures.add(file + ": " + e);
        }
    }

    // ---- requests: the Java encoders must produce the same bytes ----------------------------------------

    private boolean checkRequest(Map<String, Object> v, byte[] expected) throws Exception {
        Map<String, Object> f = map(v.get("fields"));
        int opcode = (int) integer(v.get("opcode"));
        int flags = (int) integer(v.get("flags"));
        byte[] data = hex((String) v.get("data_hex"));
        byte[] meta;
        switch (opcode) {
            case Protocol.OP_HELLO:
                equal("version", Protocol.VERSION, integer(f.get("version")));
                meta = Requests.hello((String) f.get("client_name"));
                break;
            case Protocol.OP_PING:
            case Protocol.OP_STATS:
            case Protocol.OP_MEMBERS:
                meta = Requests.empty();
                break;
            case Protocol.OP_HEARTBEAT:
                meta = Requests.heartbeat(node(f.get("self")), u64(f.get("known_epoch")));
                break;
            case Protocol.OP_REGISTER_SHUFFLE: {
                String app = (String) f.get("app");
                int shuffle = (int) u64(f.get("shuffle"));
                int parts = (int) integer(f.get("num_partitions"));
                int replicas = (int) integer(f.get("replicas"));
                meta = (flags & Protocol.FLAG_FORWARDED) != 0
                    ? Requests.registerShuffleForwarded(app, shuffle, parts, replicas, placement(map(f.get("placement"))))
                    : Requests.registerShuffle(app, shuffle, parts, replicas);
                break;
            }
            case Protocol.OP_PUSH: {
                long checksum = u64(f.get("checksum"));
                equal("XXH3 of the payload", checksum, Checksums.xxh3(data, 0, data.length));
                meta = Requests.push((String) f.get("app"), (int) u64(f.get("shuffle")), (int) u64(f.get("partition")),
                    (int) u64(f.get("map_index")), u64(f.get("attempt")), (int) u64(f.get("seq")), checksum);
                break;
            }
            case Protocol.OP_MAP_END: {
                List<PartCount> counts = new ArrayList<>();
                for (Object o : list(f.get("counts"))) {
                    Map<String, Object> c = map(o);
                    counts.add(new PartCount((int) u64(c.get("partition")), (int) u64(c.get("segments")), u64(c.get("bytes"))));
                }
                meta = Requests.mapEnd((String) f.get("app"), (int) u64(f.get("shuffle")), (int) u64(f.get("map_index")),
                    u64(f.get("attempt")), counts);
                break;
            }
            case Protocol.OP_FETCH: {
                List<Object> a = list(f.get("attempts"));
                long[] attempts = new long[a.size()];
                for (int i = 0; i < attempts.length; i++) attempts[i] = u64(a.get(i));
                meta = Requests.fetch((String) f.get("app"), (int) u64(f.get("shuffle")), (int) u64(f.get("partition")),
                    (int) u64(f.get("start_map")), (int) u64(f.get("end_map")), attempts);
                break;
            }
            case Protocol.OP_PARTITION_INFO:
                meta = Requests.partitionInfo((String) f.get("app"), (int) u64(f.get("shuffle")), (int) u64(f.get("partition")));
                break;
            case Protocol.OP_DELETE_SHUFFLE:
                meta = Requests.deleteShuffle((String) f.get("app"), (int) u64(f.get("shuffle")));
                break;
            case Protocol.OP_DELETE_APP:
                meta = Requests.deleteApp((String) f.get("app"));
                break;
            case Protocol.OP_PUT:
            case Protocol.OP_GET:
            case Protocol.OP_DELETE:
                meta = Requests.key(hex((String) f.get("key")));
                break;
            case Protocol.OP_ALLOC:
                meta = Requests.alloc(u64(f.get("size")));
                break;
            case Protocol.OP_WRITE:
                meta = Requests.write(u64(f.get("address")), u64(f.get("offset")));
                break;
            case Protocol.OP_READ:
                meta = Requests.read(u64(f.get("address")), u64(f.get("offset")), u64(f.get("length")));
                break;
            case Protocol.OP_FREE:
                meta = Requests.free(u64(f.get("address")));
                break;
            default:
                return false;
        }
        byte[] head = Requests.frame(opcode, flags, u64(v.get("request_id")), meta, data.length);
        byte[] frame = Arrays.copyOf(head, head.length + data.length);
        System.arraycopy(data, 0, frame, head.length, data.length);
        if (!Arrays.equals(frame, expected)) {
            throw new Mismatch("encoded " + toHex(frame) + "\n     expected " + toHex(expected));
        }
        return true;
    }

    // ---- responses: the Java decoders must read the same meaning -----------------------------------------

    private FrameHeader header(Map<String, Object> v, byte[] bytes) throws RpmpException {
        FrameHeader h = FrameHeader.decode(le(bytes, 0, Protocol.HEADER_SIZE), Protocol.DEFAULT_MAX_DATA, "vector");
        equal("opcode", integer(v.get("opcode")), h.opcode);
        equal("flags", integer(v.get("flags")), h.flags);
        equal("request_id", u64(v.get("request_id")), h.requestId);
        equal("meta_len", integer(v.get("meta_len")), h.metaLen);
        equal("data_len", integer(v.get("data_len")), h.dataLen);
        equal("frame length", (long) Protocol.HEADER_SIZE + h.metaLen + h.dataLen, bytes.length);
        if (!h.isResponse()) throw new Mismatch("RESPONSE flag not set");
        return h;
    }

    private boolean checkResponse(Map<String, Object> v, byte[] bytes) throws Exception {
        FrameHeader h = header(v, bytes);
        Map<String, Object> f = map(v.get("fields"));
        MetaReader r = new MetaReader(bytes, Protocol.HEADER_SIZE, h.metaLen, "vector");
        int dataOff = Protocol.HEADER_SIZE + h.metaLen;
        byte[] data = Arrays.copyOfRange(bytes, dataOff, bytes.length);
        equal("data", v.get("data_hex"), toHex(data));
        switch (h.opcode) {
            case Protocol.OP_HELLO: {
                Responses.Hello hello = Responses.hello(r);
                equal("version", integer(f.get("version")), hello.version);
                equal("node_id", f.get("node_id"), hello.nodeId);
                equal("max_data", u64(f.get("max_data")), hello.maxData);
                break;
            }
            case Protocol.OP_MEMBERS:
            case Protocol.OP_HEARTBEAT: {
                Responses.Members m = Responses.members(r);
                equal("epoch", u64(f.get("epoch")), m.epoch);
                equal("nodes", nodes(f.get("nodes")), m.nodes);
                break;
            }
            case Protocol.OP_REGISTER_SHUFFLE: {
                Placement p = Placement.decode(r, -1);
                Placement want = placement(f);
                equal("epoch", want.epoch, p.epoch);
                equal("nodes", want.nodes(), p.nodes());
                equal("L", integer(v.get("L")), p.prefLength());
                equal("prefs", prefs(want), prefs(p));
                break;
            }
            case Protocol.OP_FETCH: {
                long n = Responses.fetchRecords(r);
                equal("records", integer(f.get("records")), n);
                List<SegmentRecord> recs = SegmentRecord.parseAll(data, 0, data.length, "vector");
                List<Object> want = list(v.get("records"));
                equal("record count", (long) want.size(), recs.size());
                for (int i = 0; i < recs.size(); i++) {
                    Map<String, Object> w = map(want.get(i));
                    SegmentRecord s = recs.get(i);
                    equal("map_index", u64(w.get("map_index")), s.mapIndexUnsigned());
                    equal("attempt", u64(w.get("attempt")), s.attempt);
                    equal("seq", u64(w.get("seq")), s.seq & 0xFFFFFFFFL);
                    equal("length", integer(w.get("length")), s.payload.length);
                    equal("checksum", u64(w.get("checksum")), s.checksum);
                    equal("payload", w.get("payload_hex"), toHex(s.payload));
                    if (!s.checksumOk()) throw new Mismatch("record " + i + " fails its XXH3 checksum");
                }
                if (v.containsKey("complete_attempts")) checkCompleteness(recs, list(v.get("complete_attempts")));
                break;
            }
            case Protocol.OP_PARTITION_INFO: {
                Responses.PartitionInfo pi = Responses.partitionInfo(r);
                equal("pool_path", f.get("pool_path"), pi.poolPath);
                equal("records", integer(f.get("records")), pi.records);
                equal("bytes", u64(f.get("bytes")), pi.bytes);
                List<Object> want = list(f.get("blocks"));
                equal("block count", (long) want.size(), pi.blocks.size());
                for (int i = 0; i < want.size(); i++) {
                    Map<String, Object> w = map(want.get(i));
                    long[] b = pi.blocks.get(i);
                    equal("address", u64(w.get("address")), b[0]);
                    equal("file_offset", u64(w.get("file_offset")), b[1]);
                    equal("used", u64(w.get("used")), b[2]);
                    equal("sealed", Boolean.TRUE.equals(w.get("sealed")) ? 1L : 0L, b[3]);
                }
                break;
            }
            case Protocol.OP_DELETE_SHUFFLE:
            case Protocol.OP_DELETE_APP:
                equal("blocks_freed", u64(f.get("blocks_freed")), Responses.blocksFreed(r));
                break;
            case Protocol.OP_ALLOC:
                equal("address", u64(f.get("address")), Responses.address(r));
                break;
            default:
                Responses.empty(r, h.opcode);
                if (!f.isEmpty()) throw new Mismatch("vector has fields the Java side does not decode: " + f.keySet());
        }
        return true;
    }

    /** The attempts a reader finds whole in these records (PROTOCOL.md "Completeness") are the vector's. */
    private static void checkCompleteness(List<SegmentRecord> recs, List<Object> want) {
        Map<Long, Integer> committed = new java.util.HashMap<>();
        for (SegmentRecord s : recs) committed.put(s.attempt, s.mapIndex);
        RecordFilter filter = new RecordFilter(committed, 0, Protocol.END_MAP_ALL);
        for (SegmentRecord s : recs) {
            if (!filter.accept(s)) throw new Mismatch("record " + s + " not accepted");
        }
        java.util.Set<Long> complete = new java.util.TreeSet<>();
        for (long attempt : committed.keySet()) {
            if (filter.isComplete(attempt)) complete.add(attempt);
        }
        java.util.Set<Long> expected = new java.util.TreeSet<>();
        for (Object o : want) expected.add(u64(o));
        equal("complete attempts", expected, complete);
        // Dropping any one record (a lost tail, a lost middle) must make its attempt incomplete.
        for (int skip = 0; skip < recs.size(); skip++) {
            RecordFilter f = new RecordFilter(committed, 0, Protocol.END_MAP_ALL);
            for (int i = 0; i < recs.size(); i++) {
                if (i != skip) f.accept(recs.get(i));
            }
            if (f.isComplete(recs.get(skip).attempt)) {
                throw new Mismatch("attempt " + recs.get(skip).attempt + " complete without " + recs.get(skip));
            }
        }
    }

    private boolean checkError(Map<String, Object> v, byte[] bytes) throws Exception {
        FrameHeader h = header(v, bytes);
        if (!h.isError()) throw new Mismatch("ERROR flag not set");
        Map<String, Object> f = map(v.get("fields"));
        RpmpException e = Responses.error(new MetaReader(bytes, Protocol.HEADER_SIZE, h.metaLen, "vector"), null);
        equal("code", integer(f.get("code")), e.code());
        equal("code name", f.get("code_name"), Protocol.errorName(e.code()));
        equal("message", f.get("message"), e.nodeMessage());
        return true;
    }

    // ---- invalid frames: must be rejected with the expected code -----------------------------------------

    private boolean checkInvalid(Map<String, Object> v, byte[] bytes) throws Exception {
        int want = (int) integer(v.get("expect_code"));
        int got;
        try {
            FrameHeader h = FrameHeader.decode(le(bytes, 0, Protocol.HEADER_SIZE), Protocol.DEFAULT_MAX_DATA, "vector");
            MetaReader r = new MetaReader(bytes, Protocol.HEADER_SIZE, Math.min(h.metaLen, bytes.length - Protocol.HEADER_SIZE), "vector");
            got = requestMetaError(h.opcode, r);
        } catch (RpmpException e) {
            got = e.code();
        }
        if (got == 0) throw new Mismatch("accepted, expected " + v.get("expect_error"));
        equal("error code", (long) want, got);
        return true;
    }

    /**
     * The error a node would answer to a request meta (0 = valid), for the opcodes of the invalid vectors.
     * The JVM side never decodes requests; this only checks it agrees on what the layouts and limits are.
     */
    private static int requestMetaError(int opcode, MetaReader r) throws RpmpException {
        try {
            switch (opcode) {
                case Protocol.OP_PUSH: {
                    String app = r.str("app");
                    r.u32("shuffle");
                    r.u32("partition");
                    r.u32("map_index");
                    r.u64("attempt");
                    r.u32("seq");
                    r.u64("checksum");
                    r.end("PUSH");
                    Requests.checkApp(app);
                    return 0;
                }
                case Protocol.OP_GET: {
                    int n = r.count("key", 1);
                    for (int i = 0; i < n; i++) r.u8("key");
                    r.end("GET");
                    return n < 1 || n > 160 ? Protocol.BAD_REQUEST : 0;
                }
                case Protocol.OP_REGISTER_SHUFFLE: {
                    String app = r.str("app");
                    int shuffle = (int) r.u32("shuffle");
                    int parts = r.u32Int("num_partitions");
                    int replicas = r.u8("replicas");
                    r.end("REGISTER_SHUFFLE");
                    Requests.registerShuffle(app, shuffle, parts, replicas);
                    return 0;
                }
                default:
                    throw new Mismatch("no request check for opcode " + Protocol.opName(opcode));
            }
        } catch (IllegalArgumentException e) {
            return Protocol.BAD_REQUEST;
        }
    }

    // ---- helpers ------------------------------------------------------------------------------------------

    /** A vector disagreement (an Error, so nothing in between swallows it as an exception). */
    private static final class Mismatch extends Error {
        private static final long serialVersionUID = 1L;

        Mismatch(String message) {
            super(message);
        }

        @Override
        public String toString() { return getMessage(); }
    }

    private static void equal(String what, Object want, Object got) {
        if (want instanceof Number && got instanceof Number) {
            if (((Number) want).longValue() != ((Number) got).longValue()) {
                throw new Mismatch(what + ": expected " + want + ", got " + got);
            }
        } else if (want == null ? got != null : !want.equals(got)) {
            throw new Mismatch(what + ": expected " + want + ", got " + got);
        }
    }

    private static ByteBuffer le(byte[] b, int off, int len) {
        if (b.length < off + len) throw new Mismatch("file shorter than a frame header");
        return ByteBuffer.wrap(b, off, len).order(ByteOrder.LITTLE_ENDIAN);
    }

    @SuppressWarnings("unchecked")
    private static Map<String, Object> map(Object o) { return (Map<String, Object>) o; }

    @SuppressWarnings("unchecked")
    private static List<Object> list(Object o) { return (List<Object>) o; }

    private static long integer(Object o) { return ((BigInteger) o).longValueExact(); }

    /** A u64 (possibly >= 2^63) as the long with the same 64 bits. */
    private static long u64(Object o) { return ((BigInteger) o).longValue(); }

    private static NodeInfo node(Object o) {
        Map<String, Object> m = map(o);
        return new NodeInfo((String) m.get("node_id"), (String) m.get("host"), (int) integer(m.get("port")),
            (int) integer(m.get("state")));
    }

    private static List<NodeInfo> nodes(Object o) {
        List<NodeInfo> out = new ArrayList<>();
        for (Object n : list(o)) out.add(node(n));
        return out;
    }

    /** A placement from {epoch, nodes, prefs: [[index...] per partition]}. */
    private static Placement placement(Map<String, Object> m) {
        List<Object> rows = list(m.get("prefs"));
        int len = rows.isEmpty() ? 0 : list(rows.get(0)).size();
        short[] prefs = new short[rows.size() * len];
        for (int p = 0; p < rows.size(); p++) {
            List<Object> row = list(rows.get(p));
            for (int i = 0; i < len; i++) prefs[p * len + i] = (short) integer(row.get(i));
        }
        return new Placement(u64(m.get("epoch")), nodes(m.get("nodes")), len, prefs);
    }

    private static List<List<Integer>> prefs(Placement p) {
        List<List<Integer>> out = new ArrayList<>();
        for (int part = 0; part < p.numPartitions(); part++) {
            List<Integer> row = new ArrayList<>();
            for (int i = 0; i < p.prefLength(); i++) row.add(p.nodeIndex(part, i));
            out.add(row);
        }
        return out;
    }

    private static byte[] hex(String s) {
        if (s == null) return new byte[0];
        byte[] out = new byte[s.length() / 2];
        for (int i = 0; i < out.length; i++) out[i] = (byte) Integer.parseInt(s.substring(2 * i, 2 * i + 2), 16);
        return out;
    }

    private static String toHex(byte[] b) {
        StringBuilder sb = new StringBuilder(b.length * 2);
        for (byte x : b) sb.append(String.format("%02x", x & 0xFF));
        return sb.toString();
    }
}

package org.rpmp.client;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.function.Consumer;

import org.junit.jupiter.api.Assumptions;

/**
 * What the JUnit tests share: assertions in the style of the checks, fake nodes, pushes and reads. The
 * assertions are public: the Spark-side tests (org.rpmp.shuffle) use them too.
 */
public final class TestSupport {
    private TestSupport() {}

    /** host and port of the live node the tests use (-Drpmp.node=host:port or RPMP_NODE); skips the test without. */
    static String[] liveNode() {
        String v = setting("rpmp.node", "RPMP_NODE");
        Assumptions.assumeTrue(v != null, "no live RPMP node given (-Drpmp.node=host:port or RPMP_NODE)");
        return hostPort(v);
    }

    /** Two nodes of one cluster (-Drpmp.pair=host:port,host:port or RPMP_PAIR); skips the test without. */
    static String[][] nodePair() {
        String v = setting("rpmp.pair", "RPMP_PAIR");
        Assumptions.assumeTrue(v != null, "no RPMP node pair given (-Drpmp.pair=host:port,host:port or RPMP_PAIR)");
        String[] two = v.split(",");
        if (two.length != 2) throw new IllegalArgumentException("rpmp.pair: two host:port, got " + v);
        return new String[][] {hostPort(two[0]), hostPort(two[1])};
    }

    /** A live node with a short app TTL (-Drpmp.ttlNode=host:port or RPMP_TTL_NODE: rpmp server --app-ttl 2). */
    static String[] ttlNode() {
        String v = setting("rpmp.ttlNode", "RPMP_TTL_NODE");
        Assumptions.assumeTrue(v != null, "no short-TTL RPMP node given (-Drpmp.ttlNode=host:port or RPMP_TTL_NODE)");
        return hostPort(v);
    }

    static boolean hasNode() {
        return setting("rpmp.node", "RPMP_NODE") != null;
    }

    static boolean hasPair() {
        return setting("rpmp.pair", "RPMP_PAIR") != null;
    }

    private static String setting(String property, String env) {
        String v = System.getProperty(property);
        if (v == null || v.isBlank()) v = System.getenv(env);
        return v == null || v.isBlank() ? null : v.trim();
    }

    private static String[] hostPort(String v) {
        int colon = v.lastIndexOf(':');
        if (colon <= 0) throw new IllegalArgumentException("expected host:port, got " + v);
        return new String[] {v.substring(0, colon), v.substring(colon + 1)};
    }

    public interface Check {
        void run() throws Exception;
    }

    public static void expect(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    static int expectError(Check c) throws Exception {
        try {
            c.run();
        } catch (RpmpException e) {
            return e.code();
        }
        throw new AssertionError("expected an RpmpException");
    }

    static SegmentRecord rec(long attempt, int seq, int len) {
        byte[] p = new byte[len];
        return new SegmentRecord(0, attempt, seq, Checksums.xxh3(p, 0, len), p);
    }

    public static <T extends Throwable> T expectThrows(Class<T> type, Check c) throws Exception {
        try {
            c.run();
        } catch (Throwable t) {
            if (type.isInstance(t)) return (T) t;
            throw new AssertionError("expected " + type.getSimpleName() + ", got " + t, t);
        }
        throw new AssertionError("expected " + type.getSimpleName());
    }

    // ---- a real node --------------------------------------------------------------------------------------

    public static byte[] payload(Random rnd, int len) {
        byte[] b = new byte[len];
        rnd.nextBytes(b);
        return b;
    }

    static Map<Integer, byte[]> pushAttempt(ShuffleRef ref, ConnectionPool pool, int mapIndex, long attempt,
                                                    int partition, int segments, boolean emptyFinal, Random rnd)
            throws IOException {
        SegmentPusher pusher = new SegmentPusher(ref, pool, mapIndex, attempt, 2, 100);
        Map<Integer, byte[]> sent = new HashMap<>();
        for (int i = 0; i < segments; i++) {
            byte[] p = payload(rnd, 3000 + 100 * i);
            sent.put(i, p);
            pusher.push(partition, ByteBuffer.wrap(p), !emptyFinal && i == segments - 1);
        }
        if (emptyFinal) pusher.push(partition, ByteBuffer.allocate(0), true);
        pusher.finish();   // MAP_END: the node must count the empty final segment too
        return sent;
    }

    /** Pushes raw segments (index -> payload; a negative key is the index with SEQ_LAST) with the client. */
    static void pushRaw(RpmpClient c, String app, int shuffle, int partition, int mapIndex, long attempt,
                                Map<Integer, byte[]> segs) throws IOException {
        for (Map.Entry<Integer, byte[]> e : segs.entrySet()) {
            int seq = e.getKey() < 0 ? (-1 - e.getKey()) | Protocol.SEQ_LAST : e.getKey();
            byte[] p = e.getValue();
            c.push(app, shuffle, partition, mapIndex, attempt, seq, Checksums.xxh3(p, 0, p.length), p, 0, p.length);
        }
        c.awaitPushes();
    }

    /** Every record a fetcher hands out, keyed "attempt/index" (a duplicate fails the check). */
    static Map<String, byte[]> readAll(PartitionFetcher f) throws IOException {
        Map<String, byte[]> got = new HashMap<>();
        try {
            for (SegmentRecord r = f.next(); r != null; r = f.next()) {
                expect(r.payload().length > 0, "an empty segment was handed out: " + r);
                expect(got.put(r.attempt() + "/" + Protocol.seqIndex(r.seq()), r.payload()) == null, "duplicate " + r);
            }
        } finally {
            f.close();
        }
        return got;
    }

    static void expectPayloads(Map<String, byte[]> got, long attempt, Map<Integer, byte[]> sent) {
        Map<String, byte[]> want = new HashMap<>();
        for (Map.Entry<Integer, byte[]> e : sent.entrySet()) want.put(attempt + "/" + e.getKey(), e.getValue());
        expect(got.keySet().equals(want.keySet()), "records " + new java.util.TreeSet<>(got.keySet()) + " != pushed "
            + new java.util.TreeSet<>(want.keySet()));
        for (Map.Entry<String, byte[]> e : want.entrySet()) {
            expect(java.util.Arrays.equals(e.getValue(), got.get(e.getKey())), "payload of " + e.getKey() + " differs");
        }
    }

    /**
     * Flips one payload byte of the record (attempt, index) of a partition in the node's pool file, found via
     * PARTITION_INFO (the node keeps serving from its mapping of the same file). Returns the record's file offset.
     */
    static long flipPayloadByte(RpmpClient c, String app, int shuffle, int partition, long attempt, int index)
            throws IOException {
        Responses.PartitionInfo info = c.partitionInfo(app, shuffle, partition);
        try (java.nio.channels.FileChannel f = java.nio.channels.FileChannel.open(java.nio.file.Paths.get(info.poolPath()),
                java.nio.file.StandardOpenOption.READ, java.nio.file.StandardOpenOption.WRITE)) {
            ByteBuffer h = ByteBuffer.allocate(Protocol.RECORD_HEADER_SIZE).order(ByteOrder.LITTLE_ENDIAN);
            for (long[] b : info.blocks()) {
                if (b[Responses.PartitionInfo.FILE] != 0) continue;   // in a spill file, not the pool file
                for (long pos = b[1]; pos + Protocol.RECORD_HEADER_SIZE <= b[1] + b[2]; ) {
                    h.clear();
                    f.read(h, pos);
                    h.flip();
                    SegmentRecord.Header r = SegmentRecord.readHeader(h, b[1] + b[2] - pos - Protocol.RECORD_HEADER_SIZE, "pool");
                    if (r.attempt() == attempt && Protocol.seqIndex(r.seq()) == index && r.length() > 0) {
                        long at = pos + Protocol.RECORD_HEADER_SIZE + r.length() / 2;
                        ByteBuffer one = ByteBuffer.allocate(1);
                        f.read(one, at);
                        one.put(0, (byte) (one.get(0) ^ 0x5A)).rewind();
                        f.write(one, at);
                        return pos;
                    }
                    pos += Protocol.RECORD_HEADER_SIZE + r.length();
                }
            }
        }
        throw new AssertionError("no record (attempt " + attempt + ", index " + index + ") in " + info.poolPath());
    }

    static PartitionFetcher fetcher(ShuffleRef ref, ConnectionPool pool, LocalPools local, int partition,
                                            Map<Long, Integer> expected) {
        return new PartitionFetcher(ref, pool, local, partition, 0, Protocol.END_MAP_ALL, expected);
    }

    static List<SegmentRecord> fetchAll(RpmpClient c, String app, int shuffle, int partition, int startMap,
                                                 int endMap, long[] attempts) throws IOException {
        List<SegmentRecord> out = new ArrayList<>();
        RpmpClient.FetchStream s = c.fetch(app, shuffle, partition, startMap, endMap, attempts);
        for (SegmentRecord r = s.next(); r != null; r = s.next()) out.add(r);
        expect(s.completed(), "stream completed");
        return out;
    }

    static void verifyCommitted(List<SegmentRecord> recs, Map<String, byte[]> sent, Map<Long, Integer> committed) {
        RecordFilter filter = new RecordFilter(committed, 0, Protocol.END_MAP_ALL);
        Map<String, byte[]> got = new HashMap<>();
        for (SegmentRecord r : recs) {
            expect(r.checksumOk(), "checksum of " + r);
            if (filter.accept(r)) {
                expect(got.put(r.attempt() + "/" + r.seq(), r.payload()) == null, "duplicate " + r);
            }
        }
        expect(got.keySet().equals(sent.keySet()), "records " + got.keySet() + " != pushed " + sent.keySet());
        for (Map.Entry<String, byte[]> e : sent.entrySet()) {
            expect(java.util.Arrays.equals(e.getValue(), got.get(e.getKey())), "payload of " + e.getKey());
        }
        for (long attempt : committed.keySet()) expect(!filter.hasGaps(attempt), "gaps in attempt " + attempt);
    }

    // ---- fake nodes that misbehave -----------------------------------------------------------------------

    /** Serves one connection with the given behaviour on a loopback port. */
    static final class FakeNode implements AutoCloseable {
        final ServerSocket server;
        final Thread thread;

        FakeNode(Consumer<Socket> behaviour) throws IOException {
            this(new ServerSocket(0, 1, InetAddress.getLoopbackAddress()), behaviour);
        }

        /** Serves one connection of `server` (a plain or a TLS server socket) with `behaviour`. */
        FakeNode(ServerSocket server, Consumer<Socket> behaviour) {
            this.server = server;
            thread = new Thread(() -> {
                try (Socket s = server.accept()) {
                    behaviour.accept(s);
                } catch (IOException ignored) {
                    // the client went away
                }
            });
            thread.setDaemon(true);
            thread.start();
        }

        int port() { return server.getLocalPort(); }

        @Override
        public void close() throws IOException {
            server.close();
        }
    }

    static byte[] readFrame(InputStream in) throws IOException {
        byte[] h = in.readNBytes(Protocol.HEADER_SIZE);
        ByteBuffer b = ByteBuffer.wrap(h).order(ByteOrder.LITTLE_ENDIAN);
        int meta = b.getInt(16);
        long data = b.getLong(24);
        in.readNBytes((int) (meta + data));
        return h;
    }

    static byte[] response(byte[] request, int flags, byte[] meta, long dataLen) {
        ByteBuffer req = ByteBuffer.wrap(request).order(ByteOrder.LITTLE_ENDIAN);
        return Requests.frame(request[5] & 0xFF, flags, req.getLong(8), meta, dataLen);
    }

    /** Answers HELLO properly, then runs the rest of the behaviour. */
    static Consumer<Socket> afterHello(Consumer<Socket> rest) {
        return s -> {
            try {
                InputStream in = s.getInputStream();
                OutputStream out = s.getOutputStream();
                byte[] hello = readFrame(in);
                byte[] meta = new MetaWriter().u16(Protocol.VERSION).str("fake:1").u64(Protocol.DEFAULT_MAX_DATA).toByteArray();
                out.write(response(hello, Protocol.FLAG_RESPONSE, meta, 0));
                out.flush();
                rest.accept(s);
            } catch (IOException ignored) {
                // client went away
            }
        };
    }

    static RpmpClient.Options quick() {
        RpmpClient.Options o = new RpmpClient.Options();
        o.readTimeoutMs = 1500;
        o.connectTimeoutMs = 1500;
        return o;
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}

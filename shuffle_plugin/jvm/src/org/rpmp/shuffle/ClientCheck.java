package org.rpmp.shuffle;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.function.Consumer;

/**
 * Exercises RpmpClient end to end: against a live RPMP node (register, pipelined pushes, duplicates,
 * MAP_END, filtered and unfiltered FETCH through RecordFilter, multi-frame FETCH, error frames that keep
 * the connection usable, deletes) and against fake nodes in this process that misbehave (silence,
 * garbage, huge announced lengths, early close), which must end in a clear exception, quickly.
 *
 * <p>Usage: {@code java -cp ... org.rpmp.shuffle.ClientCheck [host port]}; without a node only the
 * fake-node checks run. Prints one line per check; exit status 1 if any failed.
 */
public final class ClientCheck {
    private int passed;
    private final List<String> failures = new ArrayList<>();

    interface Check {
        void run() throws Exception;
    }

    private void check(String name, Check c) {
        long t0 = System.nanoTime();
        try {
            c.run();
            passed++;
            System.out.printf("ok   %-58s %6d ms%n", name, (System.nanoTime() - t0) / 1_000_000);
        } catch (Throwable e) {
            failures.add(name + ": " + e);
            System.out.printf("FAIL %-58s %s%n", name, e);
        }
    }

    private static void expect(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    private static int expectError(Check c) throws Exception {
        try {
            c.run();
        } catch (RpmpException e) {
            return e.code();
        }
        throw new AssertionError("expected an RpmpException");
    }

    public static void main(String[] args) throws Exception {
        ClientCheck cc = new ClientCheck();
        if (args.length >= 2) cc.liveNode(args[0], Integer.parseInt(args[1]));
        cc.segmentBuffers();
        cc.segmentBufferBound();
        cc.fakeNodes();
        System.out.println("ClientCheck: " + cc.passed + " passed, " + cc.failures.size() + " failed");
        System.exit(cc.failures.isEmpty() ? 0 : 1);
    }

    // ---- segment buffers (no node) ---------------------------------------------------------------------

    private void segmentBuffers() {
        check("SegmentMemory: power-of-two classes from 32 KiB, reuse of the last released", () -> {
            SegmentMemory m = new SegmentMemory(true, 1 << 20);
            expect(SegmentMemory.capacityFor(1) == 32 << 10, "1 byte -> 32 KiB");
            expect(SegmentMemory.capacityFor((32 << 10) + 1) == 64 << 10, "32 KiB + 1 -> 64 KiB");
            expect(SegmentMemory.capacityFor(Protocol.MAX_SEGMENT) == Protocol.MAX_SEGMENT, "the limit is a class");
            ByteBuffer a = m.acquire(0);
            expect(a.isDirect() && a.capacity() == 32 << 10 && a.position() == 0, "a cleared direct 32 KiB buffer");
            ByteBuffer b = m.acquire(100_000);
            expect(b.capacity() == 128 << 10, "100000 -> 128 KiB, got " + b.capacity());
            a.put((byte) 1);
            m.release(a);
            ByteBuffer again = m.acquire(10);
            expect(again == a && again.position() == 0, "the released buffer comes back cleared");
            expect(m.allocations() == 2, "2 allocations, got " + m.allocations());
            m.release(again);
            m.release(b);
            expect(m.retainedBytes() == (160 << 10), "both kept: " + m.retainedBytes());
            m.close();
            expect(m.retainedBytes() == 0 && m.allocatedBytes() == 0, "close frees all");
            expectThrows(IllegalArgumentException.class, () -> m.acquire(Protocol.MAX_SEGMENT + 1));
        });
        check("SegmentMemory frees what it may not keep", () -> {
            SegmentMemory m = new SegmentMemory(true, 64 << 10);
            ByteBuffer a = m.acquire(0);
            ByteBuffer b = m.acquire(0);
            ByteBuffer c = m.acquire(0);
            m.release(a);
            m.release(b);
            m.release(c);   // over the 64 KiB it keeps
            expect(m.retainedBytes() == 64 << 10 && m.allocatedBytes() == 64 << 10, "2 kept, 1 freed: "
                + m.retainedBytes() + "/" + m.allocatedBytes());
            SegmentMemory heap = new SegmentMemory(false, 0);
            expect(!heap.acquire(0).isDirect(), "push.offHeap=false gives heap buffers");
        });
        check("ByteSink grows through the classes and keeps every byte", () -> {
            SegmentMemory m = new SegmentMemory(true, 16 << 20);
            ByteSink sink = new ByteSink(m, m.acquire(0), "shuffle 1 partition 2");
            Random r = new Random(7);
            java.io.ByteArrayOutputStream want = new java.io.ByteArrayOutputStream();
            while (want.size() < 3_000_000) {
                byte[] chunk = payload(r, r.nextInt(40_000));
                sink.write(chunk, 0, chunk.length);
                want.write(chunk, 0, chunk.length);
                sink.write(chunk.length & 0xFF);
                want.write(chunk.length & 0xFF);
            }
            expect(sink.capacity() == 4 << 20, "grown to 4 MiB, got " + sink.capacity());
            ByteBuffer seg = sink.detach();
            byte[] got = new byte[seg.remaining()];
            seg.duplicate().get(got);
            expect(java.util.Arrays.equals(got, want.toByteArray()), "bytes differ after growth");
            expect(m.allocatedBytes() - m.retainedBytes() == 4 << 20, "only the segment's buffer is in use, the "
                + "outgrown ones went back: " + m.allocatedBytes() + " - " + m.retainedBytes());
            sink.reset(m.acquire(0));
            expect(sink.size() == 0, "reset starts empty");
            sink.discard();
            m.release(seg);
            expect(m.allocatedBytes() == m.retainedBytes(), "nothing in use");
            ByteSink huge = new ByteSink(m, m.acquire(0), "shuffle 1 partition 2");
            IOException e = expectThrows(IOException.class, () -> huge.write(new byte[Protocol.MAX_SEGMENT + 1], 0,
                Protocol.MAX_SEGMENT + 1));
            expect(e.getMessage().contains("a segment of shuffle 1 partition 2 grew to")
                && e.getMessage().contains("a single record is too large"), e.getMessage());
        });
    }

    /** A SegmentOutput that decodes every segment at once, counts its records and hands the buffer back. */
    private static final class DecodingOutput implements SegmentOutput {
        final org.apache.spark.serializer.SerializerInstance serializer;
        final org.apache.spark.serializer.SerializerManager manager;
        final long[] records;
        final long[] keySums;
        long segments;
        java.util.function.Consumer<ByteBuffer> recycler;

        DecodingOutput(org.apache.spark.serializer.SerializerInstance serializer,
                       org.apache.spark.serializer.SerializerManager manager, int partitions) {
            this.serializer = serializer;
            this.manager = manager;
            this.records = new long[partitions];
            this.keySums = new long[partitions];
        }

        @Override
        public void onAcknowledged(java.util.function.Consumer<ByteBuffer> recycler) { this.recycler = recycler; }

        @Override
        public void push(int partition, ByteBuffer segment) throws IOException {
            byte[] bytes = new byte[segment.limit()];
            segment.duplicate().get(bytes);
            java.io.InputStream in = manager.wrapStream(new org.apache.spark.storage.ShuffleBlockId(0, 0, partition),
                new java.io.ByteArrayInputStream(bytes));
            scala.collection.Iterator<scala.Tuple2<Object, Object>> it = serializer.deserializeStream(in).asKeyValueIterator();
            while (it.hasNext()) {
                scala.Tuple2<Object, Object> kv = it.next();
                records[partition]++;
                keySums[partition] += (Integer) kv._1();
            }
            segments++;
            recycler.accept(segment);
        }
    }

    private void segmentBufferBound() {
        check("SegmentBuffers: every record arrives once; open buffers stay within 2 x push.memory", () -> {
            org.apache.spark.SparkConf conf = new org.apache.spark.SparkConf(false);
            org.apache.spark.serializer.JavaSerializer js = new org.apache.spark.serializer.JavaSerializer(conf);
            org.apache.spark.serializer.SerializerManager sm = new org.apache.spark.serializer.SerializerManager(js, conf);
            int partitions = 200;
            int pushSize = 512 << 10;
            long pushMemory = 4 << 20;
            SegmentMemory m = new SegmentMemory(true, 0);   // keeps nothing: allocatedBytes is what is in use
            DecodingOutput out = new DecodingOutput(js.newInstance(), sm, partitions);
            SegmentBuffers b = new SegmentBuffers(partitions, js.newInstance(), sm, out, m, 0, 0, pushSize, pushMemory);
            Random r = new Random(3);
            long[] want = new long[partitions];
            long[] wantKeys = new long[partitions];
            long peak = 0;
            // Phase 1: each partition in turn gets enough incompressible data to fill push.size (so its next
            // buffer would start large); phase 2: small records spread over all partitions.
            for (int p = 0; p < partitions; p++) {
                for (int i = 0; i < 150; i++) {
                    b.write(p, i, payload(r, 4000));   // distinct arrays: no back-references, no compression
                    want[p]++;
                    wantKeys[p] += i;
                    peak = Math.max(peak, m.allocatedBytes());
                }
            }
            byte[] small = payload(r, 100);
            for (int i = 0; i < 200_000; i++) {
                int p = r.nextInt(partitions);
                b.write(p, i, small);
                want[p]++;
                wantKeys[p] += i;
                peak = Math.max(peak, m.allocatedBytes());
            }
            b.flushAll();
            long bound = 2 * pushMemory + (long) partitions * (32 << 10) + 2L * SegmentMemory.capacityFor(pushSize + 65536);
            expect(peak <= bound, "peak " + peak + " bytes of buffers above the bound " + bound);
            expect(java.util.Arrays.equals(out.records, want), "records per partition differ");
            expect(java.util.Arrays.equals(out.keySums, wantKeys), "keys per partition differ");
            long pushed = 0;
            for (long len : b.partitionLengths()) pushed += len;
            expect(pushed > 200L * 150 * 4000, "the lengths add up to more than the raw phase-1 data: " + pushed);
            expect(m.allocatedBytes() == 0, "every buffer came back: " + m.allocatedBytes());
            System.out.printf("     (%d segments, peak %d KiB of buffers, bound %d KiB)%n", out.segments, peak >> 10,
                bound >> 10);
        });
    }

    @SuppressWarnings("unchecked")
    private static <T extends Throwable> T expectThrows(Class<T> type, Check c) throws Exception {
        try {
            c.run();
        } catch (Throwable t) {
            if (type.isInstance(t)) return (T) t;
            throw new AssertionError("expected " + type.getSimpleName() + ", got " + t, t);
        }
        throw new AssertionError("expected " + type.getSimpleName());
    }

    // ---- a real node --------------------------------------------------------------------------------------

    private static byte[] payload(Random rnd, int len) {
        byte[] b = new byte[len];
        rnd.nextBytes(b);
        return b;
    }

    private void liveNode(String host, int port) throws Exception {
        RpmpClient.Options opts = new RpmpClient.Options();
        opts.readTimeoutMs = 20_000;
        opts.maxInflight = 4;
        String app = "java-check-" + System.nanoTime();
        Random rnd = new Random(42);
        try (RpmpClient c = RpmpClient.connect(host, port, opts)) {
            check("HELLO gives node id and max_data", () -> {
                expect(c.helloInfo().nodeId.length() > 0, "node id");
                expect(c.maxData() > 0, "max_data");
            });
            check("PING", c::ping);
            Placement[] placement = new Placement[1];
            check("REGISTER_SHUFFLE returns a placement for every partition", () -> {
                placement[0] = c.registerShuffle(app, 1, 4, 1);
                expect(placement[0].numPartitions() == 4, "4 partitions, got " + placement[0]);
                expect(placement[0].prefLength() >= 1, "L >= 1");
                Placement again = c.registerShuffle(app, 1, 4, 1);
                expect(again.nodeIndex(3, 0) == placement[0].nodeIndex(3, 0), "same placement on re-register");
            });
            check("REGISTER_SHUFFLE with another partition count is CONFLICT", () -> {
                expect(expectError(() -> c.registerShuffle(app, 1, 5, 1)) == Protocol.CONFLICT, "CONFLICT");
                c.ping();
            });

            // Map 0: committed attempt 100 (3 segments, one pushed twice), a failed attempt 101.
            // Map 1: committed attempt 200 (20 pipelined segments).
            Map<String, byte[]> sent = new HashMap<>();
            check("pipelined PUSH with duplicates and a non-committed attempt", () -> {
                for (int seq = 0; seq < 3; seq++) {
                    byte[] p = payload(rnd, 1000 + seq);
                    sent.put("100/" + seq, p);
                    c.push(app, 1, 2, 0, 100, seq, Checksums.xxh3(p, 0, p.length), p, 0, p.length);
                }
                byte[] dup = sent.get("100/1");
                c.push(app, 1, 2, 0, 100, 1, Checksums.xxh3(dup, 0, dup.length), dup, 0, dup.length);
                byte[] lost = payload(rnd, 77);
                c.push(app, 1, 2, 0, 101, 0, Checksums.xxh3(lost, 0, lost.length), lost, 0, lost.length);
                for (int seq = 0; seq < 20; seq++) {
                    byte[] p = payload(rnd, 5000 + seq);
                    sent.put("200/" + seq, p);
                    c.push(app, 1, 2, 1, 200, seq, Checksums.xxh3(p, 0, p.length), p, 0, p.length);
                    expect(c.pendingPushes() <= 4, "at most 4 pushes in flight");
                }
                c.awaitPushes();
                expect(c.pendingPushes() == 0, "all acked");
            });
            check("MAP_END with the right counts", () -> {
                long bytes = 0;
                for (int seq = 0; seq < 3; seq++) bytes += sent.get("100/" + seq).length;
                c.mapEnd(app, 1, 0, 100, List.of(new PartCount(2, 3, bytes)));
            });
            check("MAP_END with wrong counts is INCOMPLETE, connection stays usable", () -> {
                int code = expectError(() -> c.mapEnd(app, 1, 1, 200, List.of(new PartCount(2, 19, 1))));
                expect(code == Protocol.INCOMPLETE, "INCOMPLETE, got " + code);
                c.ping();
            });
            check("PUSH with a wrong checksum is CHECKSUM_MISMATCH", () -> {
                byte[] p = payload(rnd, 64);
                c.push(app, 1, 3, 0, 100, 0, 12345L, p, 0, p.length);
                expect(expectError(c::awaitPushes) == Protocol.CHECKSUM_MISMATCH, "CHECKSUM_MISMATCH");
                c.ping();
            });
            check("FETCH filtered by the node returns committed records once", () -> {
                List<SegmentRecord> recs = fetchAll(c, app, 1, 2, 0, Protocol.END_MAP_ALL, new long[] {100, 200});
                verifyCommitted(recs, sent, Map.of(100L, 0, 200L, 1));
            });
            check("FETCH unfiltered + RecordFilter drops duplicates and attempt 101", () -> {
                List<SegmentRecord> recs = fetchAll(c, app, 1, 2, 0, Protocol.END_MAP_ALL, new long[0]);
                expect(recs.stream().anyMatch(r -> r.attempt == 101), "node keeps attempt 101 without a filter");
                verifyCommitted(recs, sent, Map.of(100L, 0, 200L, 1));
            });
            check("PARTITION_INFO + one-sided read of the pool file give the same records", () -> {
                Responses.PartitionInfo info = c.partitionInfo(app, 1, 2);
                expect(!info.blocks.isEmpty(), "blocks");
                LocalPools local = new LocalPools();
                expect(local.isLocal(host), host + " is local");
                java.nio.channels.FileChannel file = local.open(info.poolPath);
                expect(file != null, "pool file " + info.poolPath + " readable");
                LocalPoolSource src = new LocalPoolSource(file, info.blocks, c.address());
                List<SegmentRecord> recs = new ArrayList<>();
                for (SegmentRecord.Header h = src.nextHeader(); h != null; h = src.nextHeader()) {
                    recs.add(new SegmentRecord(h.mapIndex, h.attempt, h.seq, h.checksum, src.payload()));
                }
                expect(src.completed(), "all blocks read");
                verifyCommitted(recs, sent, Map.of(100L, 0, 200L, 1));
                local.close();
            });
            check("FETCH of a map range", () -> {
                List<SegmentRecord> recs = fetchAll(c, app, 1, 2, 1, 2, new long[0]);
                expect(!recs.isEmpty() && recs.stream().allMatch(r -> r.mapIndex == 1), "only map 1");
            });
            check("FETCH of an empty partition is empty", () -> {
                expect(fetchAll(c, app, 1, 0, 0, Protocol.END_MAP_ALL, new long[0]).isEmpty(), "empty");
            });
            check("FETCH of an unknown shuffle is NOT_FOUND, connection usable", () -> {
                expect(expectError(() -> fetchAll(c, app, 99, 0, 0, Protocol.END_MAP_ALL, new long[0]))
                    == Protocol.NOT_FOUND, "NOT_FOUND");
                c.ping();
            });
            check("8 x 6 MiB segments (half from direct buffers) round-trip through multi-frame FETCH", () -> {
                c.registerShuffle(app, 2, 1, 1);
                Map<String, byte[]> big = new HashMap<>();
                for (int seq = 0; seq < 8; seq++) {
                    byte[] p = payload(rnd, 6 << 20);
                    big.put("7/" + seq, p);
                    if (seq % 2 == 0) {
                        c.push(app, 2, 0, 0, 7, seq, Checksums.xxh3(p, 0, p.length), p, 0, p.length);
                    } else {
                        // As the writer sends: a direct buffer, [0, limit) of a larger capacity, hashed in place.
                        ByteBuffer d = ByteBuffer.allocateDirect(8 << 20);
                        d.put(p).flip();
                        long sum = Checksums.xxh3(d, 0, d.limit());
                        expect(sum == Checksums.xxh3(p, 0, p.length), "XXH3 of a direct buffer = of the array");
                        c.push(app, 2, 0, 0, 7, seq, sum, d.duplicate());
                        expect(d.position() == 0 && d.limit() == p.length, "the caller's buffer is untouched");
                    }
                }
                c.awaitPushes();
                verifyCommitted(fetchAll(c, app, 2, 0, 0, Protocol.END_MAP_ALL, new long[] {7}), big, Map.of(7L, 0));
            });
            check("a pooled connection is reused and survives a node error", () -> {
                ConnectionPool pool = new ConnectionPool(opts);
                RpmpClient a = pool.borrow(host, port);
                expectError(() -> fetchAll(a, "no-such-app-" + System.nanoTime(), 5, 0, 0, Protocol.END_MAP_ALL, new long[0]));
                pool.release(a);
                RpmpClient b = pool.borrow(host, port);
                expect(a == b, "same connection back");
                b.ping();
                pool.close();
            });
            check("DELETE_SHUFFLE frees blocks, then FETCH is NOT_FOUND", () -> {
                expect(c.deleteShuffle(app, 1) > 0, "blocks freed");
                expect(expectError(() -> fetchAll(c, app, 1, 2, 0, Protocol.END_MAP_ALL, new long[0]))
                    == Protocol.NOT_FOUND, "NOT_FOUND after delete");
            });
            check("DELETE_APP", () -> {
                expect(c.deleteApp(app) >= 1, "app blocks freed");
                c.ping();
            });
        }
    }

    private static List<SegmentRecord> fetchAll(RpmpClient c, String app, int shuffle, int partition, int startMap,
                                                 int endMap, long[] attempts) throws IOException {
        List<SegmentRecord> out = new ArrayList<>();
        RpmpClient.FetchStream s = c.fetch(app, shuffle, partition, startMap, endMap, attempts);
        for (SegmentRecord r = s.next(); r != null; r = s.next()) out.add(r);
        expect(s.completed(), "stream completed");
        return out;
    }

    private static void verifyCommitted(List<SegmentRecord> recs, Map<String, byte[]> sent, Map<Long, Integer> committed) {
        RecordFilter filter = new RecordFilter(committed, 0, Protocol.END_MAP_ALL);
        Map<String, byte[]> got = new HashMap<>();
        for (SegmentRecord r : recs) {
            expect(r.checksumOk(), "checksum of " + r);
            if (filter.accept(r)) {
                expect(got.put(r.attempt + "/" + r.seq, r.payload) == null, "duplicate " + r);
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
    private static final class FakeNode implements AutoCloseable {
        final ServerSocket server;
        final Thread thread;

        FakeNode(Consumer<Socket> behaviour) throws IOException {
            server = new ServerSocket(0, 1, InetAddress.getLoopbackAddress());
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

    private static byte[] readFrame(InputStream in) throws IOException {
        byte[] h = in.readNBytes(Protocol.HEADER_SIZE);
        ByteBuffer b = ByteBuffer.wrap(h).order(ByteOrder.LITTLE_ENDIAN);
        int meta = b.getInt(16);
        long data = b.getLong(24);
        in.readNBytes((int) (meta + data));
        return h;
    }

    private static byte[] response(byte[] request, int flags, byte[] meta, long dataLen) {
        ByteBuffer req = ByteBuffer.wrap(request).order(ByteOrder.LITTLE_ENDIAN);
        return Requests.frame(request[5] & 0xFF, flags, req.getLong(8), meta, dataLen);
    }

    /** Answers HELLO properly, then runs the rest of the behaviour. */
    private static Consumer<Socket> afterHello(Consumer<Socket> rest) {
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

    private static RpmpClient.Options quick() {
        RpmpClient.Options o = new RpmpClient.Options();
        o.readTimeoutMs = 1500;
        o.connectTimeoutMs = 1500;
        return o;
    }

    private void fakeNodes() throws Exception {
        check("a node that never answers HELLO times out", () -> {
            try (FakeNode n = new FakeNode(s -> sleep(10_000))) {
                long t0 = System.nanoTime();
                try {
                    RpmpClient.connect("127.0.0.1", n.port(), quick()).close();
                    throw new AssertionError("connected");
                } catch (SocketTimeoutException e) {
                    long ms = (System.nanoTime() - t0) / 1_000_000;
                    expect(ms >= 1400 && ms < 5000, "timed out after " + ms + " ms");
                }
            }
        });
        check("a node that goes silent mid-FETCH times out, connection broken", () -> {
            try (FakeNode n = new FakeNode(afterHello(s -> {
                try {
                    byte[] req = readFrame(s.getInputStream());
                    // One frame announcing a record, then only half of it.
                    byte[] rec = new SegmentRecord(0, 1, 0, Checksums.xxh3(new byte[100], 0, 100), new byte[100]).encode();
                    OutputStream out = s.getOutputStream();
                    out.write(response(req, Protocol.FLAG_RESPONSE, new MetaWriter().u32(1).toByteArray(), rec.length));
                    out.write(rec, 0, 50);
                    out.flush();
                    sleep(10_000);
                } catch (IOException ignored) {
                    // client went away
                }
            }))) {
                RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(), quick());
                RpmpClient.FetchStream st = c.fetch("a", 1, 0, 0, Protocol.END_MAP_ALL, new long[0]);
                try {
                    st.next();
                    throw new AssertionError("read a half record");
                } catch (SocketTimeoutException e) {
                    expect(!c.isReusable(), "broken after a timeout");
                }
                c.close();
            }
        });
        check("garbage instead of a frame is BAD_FRAME", () -> {
            try (FakeNode n = new FakeNode(afterHello(s -> {
                try {
                    readFrame(s.getInputStream());
                    byte[] junk = new byte[64];
                    java.util.Arrays.fill(junk, (byte) 'x');
                    s.getOutputStream().write(junk);
                    s.getOutputStream().flush();
                    sleep(2000);
                } catch (IOException ignored) {
                    // client went away
                }
            }))) {
                RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(), quick());
                expect(expectError(c::ping) == Protocol.BAD_FRAME, "BAD_FRAME");
                expect(!c.isReusable(), "broken");
                c.close();
            }
        });
        check("a 1 TiB data_len is refused before any allocation", () -> {
            try (FakeNode n = new FakeNode(afterHello(s -> {
                try {
                    byte[] req = readFrame(s.getInputStream());
                    s.getOutputStream().write(response(req, Protocol.FLAG_RESPONSE, new MetaWriter().u32(1).toByteArray(), 1L << 40));
                    s.getOutputStream().flush();
                    sleep(2000);
                } catch (IOException ignored) {
                    // client went away
                }
            }))) {
                RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(), quick());
                RpmpClient.FetchStream st = c.fetch("a", 1, 0, 0, Protocol.END_MAP_ALL, new long[0]);
                expect(expectError(st::next) == Protocol.TOO_LARGE, "TOO_LARGE");
                c.close();
            }
        });
        check("a record claiming 1 GiB inside a small frame is BAD_FRAME", () -> {
            try (FakeNode n = new FakeNode(afterHello(s -> {
                try {
                    byte[] req = readFrame(s.getInputStream());
                    ByteBuffer rec = ByteBuffer.allocate(64).order(ByteOrder.LITTLE_ENDIAN);
                    rec.putInt(Protocol.RECORD_MAGIC).putInt(0).putLong(1).putInt(0).putInt(1 << 30).putLong(0);
                    OutputStream out = s.getOutputStream();
                    out.write(response(req, Protocol.FLAG_RESPONSE, new MetaWriter().u32(1).toByteArray(), 64));
                    out.write(rec.array());
                    out.flush();
                    sleep(2000);
                } catch (IOException ignored) {
                    // client went away
                }
            }))) {
                RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(), quick());
                RpmpClient.FetchStream st = c.fetch("a", 1, 0, 0, Protocol.END_MAP_ALL, new long[0]);
                expect(expectError(st::next) == Protocol.BAD_FRAME, "BAD_FRAME");
                c.close();
            }
        });
        check("a response for another request id is BAD_FRAME", () -> {
            try (FakeNode n = new FakeNode(afterHello(s -> {
                try {
                    byte[] req = readFrame(s.getInputStream());
                    ByteBuffer.wrap(req).order(ByteOrder.LITTLE_ENDIAN).putLong(8, 999);
                    s.getOutputStream().write(response(req, Protocol.FLAG_RESPONSE, new byte[0], 0));
                    s.getOutputStream().flush();
                    sleep(2000);
                } catch (IOException ignored) {
                    // client went away
                }
            }))) {
                RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(), quick());
                expect(expectError(c::ping) == Protocol.BAD_FRAME, "BAD_FRAME");
                c.close();
            }
        });
        check("a node closing the connection is an EOF, not a hang", () -> {
            try (FakeNode n = new FakeNode(afterHello(s -> {
                try {
                    readFrame(s.getInputStream());
                } catch (IOException ignored) {
                    // closing
                }
            }))) {
                RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(), quick());
                try {
                    c.ping();
                    throw new AssertionError("ping answered");
                } catch (java.io.EOFException e) {
                    expect(!c.isReusable(), "broken");
                }
                c.close();
            }
        });
        check("an error frame with invalid UTF-8 still decodes", () -> {
            try (FakeNode n = new FakeNode(afterHello(s -> {
                try {
                    byte[] req = readFrame(s.getInputStream());
                    byte[] meta = new MetaWriter().u16(Protocol.POOL_FULL).u16(3).toByteArray();
                    byte[] all = java.util.Arrays.copyOf(meta, meta.length + 3);
                    all[meta.length] = (byte) 0xff;
                    all[meta.length + 1] = 'o';
                    all[meta.length + 2] = 'k';
                    s.getOutputStream().write(response(req, Protocol.FLAG_RESPONSE | Protocol.FLAG_ERROR, all, 0));
                    s.getOutputStream().flush();
                    sleep(2000);
                } catch (IOException ignored) {
                    // client went away
                }
            }))) {
                RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(), quick());
                try {
                    c.ping();
                    throw new AssertionError("no error");
                } catch (RpmpException e) {
                    expect(e.code() == Protocol.POOL_FULL && e.nodeMessage().endsWith("ok"), e.toString());
                    expect(c.isReusable(), "a clean error frame keeps the connection");
                }
                c.close();
            }
        });
        check("unknown error codes are kept as numbers", () -> {
            RpmpException e = new RpmpException(77, "x", null);
            expect(e.code() == 77 && e.getMessage().contains("ERROR_77"), e.getMessage());
            expect(new String("é".getBytes(StandardCharsets.UTF_8), StandardCharsets.UTF_8).equals("é"), "utf8");
        });
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}

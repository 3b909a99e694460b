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
        if (args.length >= 5 && args[0].equals("--pair")) {
            // Two nodes of one cluster: replicas and failover between them.
            cc.nodePair(args[1], Integer.parseInt(args[2]), args[3], Integer.parseInt(args[4]));
            System.out.println("ClientCheck: " + cc.passed + " passed, " + cc.failures.size() + " failed");
            System.exit(cc.failures.isEmpty() ? 0 : 1);
        }
        if (args.length >= 2) {
            cc.liveNode(args[0], Integer.parseInt(args[1]));
            cc.integrity(args[0], Integer.parseInt(args[1]));
        }
        cc.segmentBuffers();
        cc.segmentBufferBound();
        cc.finalSegments();
        cc.completeness();
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

        /** Per partition: segments pushed, and how many carried last (must be 1, on the final one). */
        final java.util.Map<Integer, List<Integer>> pushes = new java.util.TreeMap<>();

        @Override
        public void push(int partition, ByteBuffer segment, boolean last) throws IOException {
            List<Integer> seen = pushes.computeIfAbsent(partition, k -> new ArrayList<>());
            if (!seen.isEmpty() && seen.get(seen.size() - 1) < 0) {
                throw new AssertionError("partition " + partition + " got a segment after its final one");
            }
            seen.add(last ? -1 - segment.limit() : segment.limit());   // negative: the final segment
            segments++;
            if (segment.limit() == 0) {
                if (!last) throw new AssertionError("an empty segment that is not the final one");
                recycler.accept(segment);
                return;
            }
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
            recycler.accept(segment);
        }

        /** Every partition pushed to ended with exactly one final segment. */
        void expectFinals() {
            for (java.util.Map.Entry<Integer, List<Integer>> e : pushes.entrySet()) {
                List<Integer> l = e.getValue();
                long finals = l.stream().filter(x -> x < 0).count();
                expect(finals == 1 && l.get(l.size() - 1) < 0, "partition " + e.getKey() + " segments " + l
                    + ": the last one (negative) must be the only final one");
            }
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
            out.expectFinals();
            expect(out.pushes.size() == partitions, "every partition pushed to");
            System.out.printf("     (%d segments, peak %d KiB of buffers, bound %d KiB)%n", out.segments, peak >> 10,
                bound >> 10);
        });
    }

    private static SegmentBuffers javaBuffers(SegmentOutput out, SegmentMemory m, int partitions, int pushSize,
                                              long pushMemory) {
        org.apache.spark.SparkConf conf = new org.apache.spark.SparkConf(false);
        org.apache.spark.serializer.JavaSerializer js = new org.apache.spark.serializer.JavaSerializer(conf);
        org.apache.spark.serializer.SerializerManager sm = new org.apache.spark.serializer.SerializerManager(js, conf);
        return new SegmentBuffers(partitions, js.newInstance(), sm, out, m, 0, 0, pushSize, pushMemory);
    }

    private static DecodingOutput decodingOutput(int partitions) {
        org.apache.spark.SparkConf conf = new org.apache.spark.SparkConf(false);
        org.apache.spark.serializer.JavaSerializer js = new org.apache.spark.serializer.JavaSerializer(conf);
        return new DecodingOutput(js.newInstance(), new org.apache.spark.serializer.SerializerManager(js, conf),
            partitions);
    }

    private void finalSegments() {
        check("SegmentBuffers: the final segment is marked; an empty one when the data already left", () -> {
            SegmentMemory m = new SegmentMemory(true, 0);
            DecodingOutput out = decodingOutput(4);
            SegmentBuffers b = javaBuffers(out, m, 4, 1024, 1 << 20);
            Random r = new Random(5);
            // Partition 0: its last record fills push.size, so its data leaves before the writer knows it is last.
            while (!out.pushes.containsKey(0)) b.write(0, 1, payload(r, 600));
            b.write(1, 2, payload(r, 100));   // partition 1: one small open segment at the end
            b.write(3, 3, payload(r, 100));   // partition 3: finished early (as a map-side combine does)
            b.finish(3);
            expectThrows(IllegalStateException.class, () -> b.write(3, 4, payload(r, 10)));
            b.flushAll();
            out.expectFinals();
            List<Integer> p0 = out.pushes.get(0);
            expect(p0.size() == 2 && p0.get(0) > 0 && p0.get(1) == -1, "partition 0: data, then an empty final: " + p0);
            List<Integer> p1 = out.pushes.get(1);
            expect(p1.size() == 1 && p1.get(0) < -1, "partition 1: one final segment with data: " + p1);
            expect(!out.pushes.containsKey(2), "partition 2 never written: no segment");
            long[] lengths = b.partitionLengths();
            expect(lengths[0] == p0.get(0) && lengths[1] == -1 - p1.get(0) && lengths[2] == 0,
                "MapStatus lengths are the payload bytes: " + java.util.Arrays.toString(lengths));
            expect(m.allocatedBytes() == 0, "the empty final segment's buffer came back too");
        });
    }

    private static SegmentRecord rec(long attempt, int seq, int len) {
        byte[] p = new byte[len];
        return new SegmentRecord(0, attempt, seq, Checksums.xxh3(p, 0, len), p);
    }

    private void completeness() {
        check("RecordFilter: complete only with 0..n-1 and SEQ_LAST on n-1", () -> {
            int last = Protocol.SEQ_LAST;
            RecordFilter f = new RecordFilter(Map.of(1L, 0, 2L, 0), 0, Protocol.END_MAP_ALL);
            expect(!f.isComplete(1) && f.describe(1).contains("no segment"), f.describe(1));
            f.accept(rec(1, 1, 5));
            f.accept(rec(1, 0, 5));
            expect(!f.isComplete(1) && f.describe(1).contains("lost tail"), "no final segment yet: " + f.describe(1));
            expect(!f.accept(rec(1, 0, 5)), "a duplicate is dropped");
            f.accept(rec(1, 2 | last, 0));
            expect(f.isComplete(1) && !f.hasGaps(1) && f.segmentsOf(1) == 3, "complete: " + f.describe(1));
            RecordFilter g = new RecordFilter(Map.of(1L, 0), 0, Protocol.END_MAP_ALL);
            g.accept(rec(1, 0, 5));
            g.accept(rec(1, 2 | last, 5));
            expect(!g.isComplete(1) && g.hasGaps(1) && g.describe(1).contains("holes"), "a hole: " + g.describe(1));
            RecordFilter h = new RecordFilter(Map.of(1L, 0), 0, Protocol.END_MAP_ALL);
            h.accept(rec(1, 0 | last, 5));
            h.accept(rec(1, 1, 5));
            expect(!h.isComplete(1) && h.describe(1).contains("not the highest"), "a segment after the final one: "
                + h.describe(1));
            RecordFilter k = new RecordFilter(Map.of(1L, 0), 0, Protocol.END_MAP_ALL);
            k.accept(rec(1, 0 | last, 5));
            expect(k.isComplete(1), "one final segment alone is complete");
            expect(k.accept(rec(1, 0, 5)) && !k.isComplete(1), "index 0 twice (with and without the flag) is not");
            expect(Protocol.errorName(Protocol.CORRUPT).equals("CORRUPT") && Protocol.CORRUPT == 13, "CORRUPT = 13");
            expect(Protocol.seqIndex(5 | last) == 5 && Protocol.isLast(5 | last) && !Protocol.isLast(5), "seq bits");
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

    // ---- integrity: final segments, completeness, corrupt copies (real nodes) -------------------------------

    /** Pushes one attempt's segments to a partition through the SegmentPusher; returns index -> payload. */
    private static Map<Integer, byte[]> pushAttempt(ShuffleRef ref, ConnectionPool pool, int mapIndex, long attempt,
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
    private static void pushRaw(RpmpClient c, String app, int shuffle, int partition, int mapIndex, long attempt,
                                Map<Integer, byte[]> segs) throws IOException {
        for (Map.Entry<Integer, byte[]> e : segs.entrySet()) {
            int seq = e.getKey() < 0 ? (-1 - e.getKey()) | Protocol.SEQ_LAST : e.getKey();
            byte[] p = e.getValue();
            c.push(app, shuffle, partition, mapIndex, attempt, seq, Checksums.xxh3(p, 0, p.length), p, 0, p.length);
        }
        c.awaitPushes();
    }

    /** Every record a fetcher hands out, keyed "attempt/index" (a duplicate fails the check). */
    private static Map<String, byte[]> readAll(PartitionFetcher f) throws IOException {
        Map<String, byte[]> got = new HashMap<>();
        try {
            for (SegmentRecord r = f.next(); r != null; r = f.next()) {
                expect(r.payload.length > 0, "an empty segment was handed out: " + r);
                expect(got.put(r.attempt + "/" + Protocol.seqIndex(r.seq), r.payload) == null, "duplicate " + r);
            }
        } finally {
            f.close();
        }
        return got;
    }

    private static void expectPayloads(Map<String, byte[]> got, long attempt, Map<Integer, byte[]> sent) {
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
    private static long flipPayloadByte(RpmpClient c, String app, int shuffle, int partition, long attempt, int index)
            throws IOException {
        Responses.PartitionInfo info = c.partitionInfo(app, shuffle, partition);
        try (java.nio.channels.FileChannel f = java.nio.channels.FileChannel.open(java.nio.file.Paths.get(info.poolPath),
                java.nio.file.StandardOpenOption.READ, java.nio.file.StandardOpenOption.WRITE)) {
            ByteBuffer h = ByteBuffer.allocate(Protocol.RECORD_HEADER_SIZE).order(ByteOrder.LITTLE_ENDIAN);
            for (long[] b : info.blocks) {
                for (long pos = b[1]; pos + Protocol.RECORD_HEADER_SIZE <= b[1] + b[2]; ) {
                    h.clear();
                    f.read(h, pos);
                    h.flip();
                    SegmentRecord.Header r = SegmentRecord.readHeader(h, b[1] + b[2] - pos - Protocol.RECORD_HEADER_SIZE, "pool");
                    if (r.attempt == attempt && Protocol.seqIndex(r.seq) == index && r.length > 0) {
                        long at = pos + Protocol.RECORD_HEADER_SIZE + r.length / 2;
                        ByteBuffer one = ByteBuffer.allocate(1);
                        f.read(one, at);
                        one.put(0, (byte) (one.get(0) ^ 0x5A)).rewind();
                        f.write(one, at);
                        return pos;
                    }
                    pos += Protocol.RECORD_HEADER_SIZE + r.length;
                }
            }
        }
        throw new AssertionError("no record (attempt " + attempt + ", index " + index + ") in " + info.poolPath);
    }

    private static PartitionFetcher fetcher(ShuffleRef ref, ConnectionPool pool, LocalPools local, int partition,
                                            Map<Long, Integer> expected) {
        return new PartitionFetcher(ref, pool, local, partition, 0, Protocol.END_MAP_ALL, expected);
    }

    private void integrity(String host, int port) throws Exception {
        RpmpClient.Options opts = new RpmpClient.Options();
        opts.readTimeoutMs = 20_000;
        String app = "java-integrity-" + System.nanoTime();
        Random rnd = new Random(13);
        ConnectionPool pool = new ConnectionPool(opts);
        LocalPools local = new LocalPools();
        try (RpmpClient c = RpmpClient.connect(host, port, opts)) {
            String node = c.address();
            ShuffleRef ref = new ShuffleRef(app, 1, 4, 1, c.registerShuffle(app, 1, 4, 1));
            Map<Integer, byte[]> a10 = new HashMap<>();
            Map<Integer, byte[]> a11 = new HashMap<>();
            check("the pusher marks final segments (an empty one too) and MAP_END counts it", () -> {
                a10.putAll(pushAttempt(ref, pool, 0, 10, 1, 3, false, rnd));
                a11.putAll(pushAttempt(ref, pool, 1, 11, 1, 2, true, rnd));
                Map<String, Integer> seqs = new java.util.TreeMap<>();
                for (SegmentRecord r : fetchAll(c, app, 1, 1, 0, Protocol.END_MAP_ALL, new long[0])) {
                    seqs.put(r.attempt + "/" + Protocol.seqName(r.seq), r.payload.length);
                }
                expect(seqs.keySet().equals(java.util.Set.of("10/0", "10/1", "10/2+LAST", "11/0", "11/1", "11/2+LAST")),
                    "records on the node: " + seqs);
                expect(seqs.get("11/2+LAST") == 0, "the empty final segment: " + seqs);
            });
            for (boolean oneSided : new boolean[] {true, false}) {
                String how = oneSided ? " (pool file)" : " (FETCH)";
                check("complete attempts read whole, the empty final segment not handed out" + how, () -> {
                    Map<String, byte[]> got = readAll(fetcher(ref, pool, oneSided ? local : null, 1, Map.of(10L, 0, 11L, 1)));
                    Map<String, byte[]> want10 = new HashMap<>(got);
                    want10.keySet().removeIf(k -> !k.startsWith("10/"));
                    expectPayloads(want10, 10, a10);
                    got.keySet().removeIf(k -> !k.startsWith("11/"));
                    expectPayloads(got, 11, a11);
                });
            }
            check("setup: a lost tail (no final segment) and a hole, pushed raw", () -> {
                pushRaw(c, app, 1, 2, 2, 20, Map.of(0, payload(rnd, 100), 1, payload(rnd, 100)));
                pushRaw(c, app, 1, 2, 3, 21, Map.of(0, payload(rnd, 100), -3, payload(rnd, 100)));
            });
            for (boolean oneSided : new boolean[] {true, false}) {
                String how = oneSided ? " (pool file)" : " (FETCH)";
                check("a lost tail is never returned short: it fails naming the node" + how, () -> {
                    PartitionFetcher.MissingDataException e = expectThrows(PartitionFetcher.MissingDataException.class,
                        () -> readAll(fetcher(ref, pool, oneSided ? local : null, 2, Map.of(20L, 2))));
                    expect(e.getMessage().contains("no final segment") && e.getMessage().contains(node)
                        && e.attempt == 20 && e.mapIndex == 2, e.getMessage());
                });
                check("a hole in the segment indices fails naming the node" + how, () -> {
                    PartitionFetcher.MissingDataException e = expectThrows(PartitionFetcher.MissingDataException.class,
                        () -> readAll(fetcher(ref, pool, oneSided ? local : null, 2, Map.of(21L, 3))));
                    expect(e.getMessage().contains("holes") && e.getMessage().contains(node), e.getMessage());
                });
            }
            check("a flipped payload byte: pool file and FETCH both fail, the error names the node", () -> {
                pushAttempt(ref, pool, 0, 30, 3, 3, false, rnd);
                flipPayloadByte(c, app, 1, 3, 30, 1);
                PartitionFetcher f = fetcher(ref, pool, local, 3, Map.of(30L, 0));
                PartitionFetcher.MissingDataException e = expectThrows(PartitionFetcher.MissingDataException.class,
                    () -> readAll(f));
                String m = e.getMessage();
                expect(m.contains(node + " (pool file): corrupt copy") && m.contains(node + ": corrupt copy"), m);
                expect(f.outcomes().size() == 2, "the pool file, then FETCH from the node: " + f.outcomes());
                PartitionFetcher t = fetcher(ref, pool, null, 3, Map.of(30L, 0));
                e = expectThrows(PartitionFetcher.MissingDataException.class, () -> readAll(t));
                expect(e.getMessage().contains(node + ": corrupt copy"), e.getMessage());
                System.out.println("     (" + e.getMessage() + ")");
            });
            c.deleteApp(app);
        } finally {
            pool.close();
            local.close();
        }
    }

    /** Two nodes of one cluster: a corrupt copy or a lost tail on the primary is read from the other node. */
    private void nodePair(String host1, int port1, String host2, int port2) throws Exception {
        RpmpClient.Options opts = new RpmpClient.Options();
        opts.readTimeoutMs = 20_000;
        String app = "java-pair-" + System.nanoTime();
        Random rnd = new Random(17);
        ConnectionPool pool = new ConnectionPool(opts);
        LocalPools local = new LocalPools();
        try (RpmpClient c1 = RpmpClient.connect(host1, port1, opts); RpmpClient c2 = RpmpClient.connect(host2, port2, opts)) {
            Placement placement = c1.registerShuffle(app, 1, 8, 2);
            check("replicas=2 places every partition on both nodes", () -> {
                expect(placement.numNodes() == 2 && placement.prefLength() == 2, placement.toString());
            });
            ShuffleRef ref = new ShuffleRef(app, 1, 8, 2, placement);
            for (int variant = 0; variant < 2; variant++) {
                boolean oneSided = variant == 0;
                int partition = variant;   // a fresh partition per variant: a node may quarantine the bad record
                String how = oneSided ? " (pool file)" : " (FETCH)";
                check("replicas=2: a corrupt record on the primary is read from the replica" + how, () -> {
                    long attempt = 40 + partition;
                    Map<Integer, byte[]> sent = pushAttempt(ref, pool, 0, attempt, partition, 3, true, rnd);
                    NodeInfo primary = placement.preferred(partition, 0);
                    NodeInfo replica = placement.preferred(partition, 1);
                    RpmpClient pc = primary.port == c1.port() ? c1 : c2;
                    flipPayloadByte(pc, app, 1, partition, attempt, 1);
                    PartitionFetcher f = fetcher(ref, pool, oneSided ? local : null, partition, Map.of(attempt, 0));
                    expectPayloads(readAll(f), attempt, sent);
                    List<String> o = f.outcomes();
                    String last = o.get(o.size() - 1);
                    expect(o.get(0).startsWith(primary.address() + (oneSided ? " (pool file)" : "") + ": corrupt copy")
                        && last.startsWith(replica.address()) && last.endsWith("complete"), "sources: " + o);
                    expect(f.fallbacks() == o.size() - 1, f.fallbacks() + " fallbacks for " + o);
                    System.out.println("     (" + o + ")");
                });
            }
            // Hand-made placement over the same two nodes, data pushed raw to each (replicas=1: no copies).
            Placement both = c1.registerShuffle(app, 2, 1, 1);
            int i1 = both.node(0).port == port1 ? 0 : 1;
            Placement order = new Placement(both.epoch, both.nodes(), 2, new short[] {(short) i1, (short) (1 - i1)});
            ShuffleRef ref2 = new ShuffleRef(app, 2, 1, 1, order);
            Map<Integer, byte[]> whole = new java.util.TreeMap<>();
            for (boolean oneSided : new boolean[] {true, false}) {
                String how = oneSided ? " (pool file)" : " (FETCH)";
                check("a lost tail on the first node is completed from the second" + how, () -> {
                    if (whole.isEmpty()) {
                        whole.put(0, payload(rnd, 500));
                        whole.put(1, payload(rnd, 600));
                        whole.put(-3, payload(rnd, 700));   // index 2 with SEQ_LAST
                        pushRaw(c1, app, 2, 0, 0, 50, Map.of(0, whole.get(0), 1, whole.get(1)));
                        pushRaw(c2, app, 2, 0, 0, 50, whole);
                        pushRaw(c1, app, 2, 0, 1, 51, Map.of(0, payload(rnd, 10)));
                        pushRaw(c2, app, 2, 0, 1, 51, Map.of(0, payload(rnd, 10), 1, payload(rnd, 10)));
                    }
                    PartitionFetcher f = fetcher(ref2, pool, oneSided ? local : null, 0, Map.of(50L, 0));
                    Map<String, byte[]> got = readAll(f);
                    expectPayloads(got, 50, Map.of(0, whole.get(0), 1, whole.get(1), 2, whole.get(-3)));
                    List<String> o = f.outcomes();
                    expect(o.get(0).startsWith(c1.address()) && o.get(0).contains("no final segment")
                        && o.get(o.size() - 1).startsWith(c2.address()), "sources: " + o);
                });
                check("no node has the attempt whole: the error names both" + how, () -> {
                    PartitionFetcher.MissingDataException e = expectThrows(PartitionFetcher.MissingDataException.class,
                        () -> readAll(fetcher(ref2, pool, oneSided ? local : null, 0, Map.of(50L, 0, 51L, 1))));
                    String m = e.getMessage();
                    expect(m.contains("map 1 (attempt 51)") && m.contains(c1.address() + (oneSided ? " (pool file)" : ""))
                        && m.contains(c2.address()) && !m.substring(0, m.indexOf("RPMP sources tried")).contains("attempt 50)"), m);
                });
            }
            c1.deleteApp(app);
        } finally {
            pool.close();
            local.close();
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
        check("a FETCH record failing its checksum fails that node's copy (a node that does not verify)", () -> {
            byte[] good = new byte[100];
            try (FakeNode n = new FakeNode(afterHello(s -> {
                try {
                    byte[] req = readFrame(s.getInputStream());
                    // The final segment of attempt 7, its checksum off by one: what a flipped byte looks like.
                    byte[] rec = new SegmentRecord(0, 7, Protocol.SEQ_LAST, Checksums.xxh3(good, 0, 100) + 1, good).encode();
                    OutputStream out = s.getOutputStream();
                    out.write(response(req, Protocol.FLAG_RESPONSE, new MetaWriter().u32(1).toByteArray(), rec.length));
                    out.write(rec);
                    out.flush();
                    sleep(2000);
                } catch (IOException ignored) {
                    // client went away
                }
            }))) {
                NodeInfo fake = new NodeInfo("127.0.0.1:" + n.port(), "127.0.0.1", n.port(), 1);
                ShuffleRef ref = new ShuffleRef("a", 1, 1, 1, new Placement(1, List.of(fake), 1, new short[] {0}));
                ConnectionPool pool = new ConnectionPool(quick());
                PartitionFetcher f = new PartitionFetcher(ref, pool, null, 0, 0, Protocol.END_MAP_ALL, Map.of(7L, 0));
                PartitionFetcher.MissingDataException e = expectThrows(PartitionFetcher.MissingDataException.class,
                    () -> readAll(f));
                expect(e.getMessage().contains(fake.address() + ": corrupt copy: CHECKSUM_MISMATCH")
                    && e.getCause() instanceof RpmpException, e.getMessage());
                pool.close();
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

package org.rpmp.client;

import static org.rpmp.client.TestSupport.*;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
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

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * RpmpClient against a live RPMP node (-Drpmp.node=host:port or RPMP_NODE; skipped without one): register,
 * pipelined pushes, duplicates, MAP_END, filtered and unfiltered FETCH through RecordFilter, multi-frame FETCH,
 * error frames that keep the connection usable, deletes. The steps build on each other, in order.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
@SuppressWarnings({"unused", "resource"})
class LiveNodeTest {
    private String host;
    private int port;
    private RpmpClient.Options opts;
    private RpmpClient c;
    private final String app = "java-check-" + System.nanoTime();
    private final Random rnd = new Random(42);
    private final Placement[] placement = new Placement[1];
    // Map 0: committed attempt 100 (3 segments, one pushed twice), a failed attempt 101.
    // Map 1: committed attempt 200 (20 pipelined segments).
    private final Map<String, byte[]> sent = new HashMap<>();

    /** Each test is reported skipped (not silently absent) when no node is given. */
    @BeforeEach
    void needsNode() {
        liveNode();
    }

    @BeforeAll
    void connect() throws IOException {
        if (!hasNode()) return;
        String[] node = liveNode();
        host = node[0];
        port = Integer.parseInt(node[1]);
        opts = new RpmpClient.Options();
        opts.readTimeoutMs = 20_000;
        opts.maxInflight = 4;
        c = RpmpClient.connect(host, port, opts);
    }

    @AfterAll
    void close() {
        if (c != null) c.close();
    }

    @Order(1)
    @Test
    @DisplayName("HELLO gives node id and max_data")
    void helloGivesNodeIdAndMaxData() throws Exception {
        expect(c.helloInfo().nodeId().length() > 0, "node id");
        expect(c.maxData() > 0, "max_data");
    }

    @Order(2)
    @Test
    @DisplayName("PING")
    void ping() throws Exception {
        c.ping();
    }

    @Order(3)
    @Test
    @DisplayName("REGISTER_SHUFFLE returns a placement for every partition")
    void registerShuffleReturnsPlacement() throws Exception {
        placement[0] = c.registerShuffle(app, 1, 4, 1);
        expect(placement[0].numPartitions() == 4, "4 partitions, got " + placement[0]);
        expect(placement[0].prefLength() >= 1, "L >= 1");
        Placement again = c.registerShuffle(app, 1, 4, 1);
        expect(again.nodeIndex(3, 0) == placement[0].nodeIndex(3, 0), "same placement on re-register");
    }

    @Order(4)
    @Test
    @DisplayName("REGISTER_SHUFFLE with another partition count is CONFLICT")
    void registerWithOtherPartitionCountIsConflict() throws Exception {
        expect(expectError(() -> c.registerShuffle(app, 1, 5, 1)) == Protocol.CONFLICT, "CONFLICT");
        c.ping();
    }

    @Order(5)
    @Test
    @DisplayName("pipelined PUSH with duplicates and a non-committed attempt")
    void pipelinedPushWithDuplicates() throws Exception {
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
    }

    @Order(6)
    @Test
    @DisplayName("MAP_END with the right counts")
    void mapEndWithRightCounts() throws Exception {
        long bytes = 0;
        for (int seq = 0; seq < 3; seq++) bytes += sent.get("100/" + seq).length;
        c.mapEnd(app, 1, 0, 100, List.of(new PartCount(2, 3, bytes)));
    }

    @Order(7)
    @Test
    @DisplayName("MAP_END with wrong counts is INCOMPLETE, connection stays usable")
    void mapEndWithWrongCountsIsIncomplete() throws Exception {
        int code = expectError(() -> c.mapEnd(app, 1, 1, 200, List.of(new PartCount(2, 19, 1))));
        expect(code == Protocol.INCOMPLETE, "INCOMPLETE, got " + code);
        c.ping();
    }

    @Order(8)
    @Test
    @DisplayName("PUSH with a wrong checksum is CHECKSUM_MISMATCH")
    void pushWithWrongChecksum() throws Exception {
        byte[] p = payload(rnd, 64);
        c.push(app, 1, 3, 0, 100, 0, 12345L, p, 0, p.length);
        expect(expectError(c::awaitPushes) == Protocol.CHECKSUM_MISMATCH, "CHECKSUM_MISMATCH");
        c.ping();
    }

    @Order(9)
    @Test
    @DisplayName("FETCH filtered by the node returns committed records once")
    void fetchFilteredByNode() throws Exception {
        List<SegmentRecord> recs = fetchAll(c, app, 1, 2, 0, Protocol.END_MAP_ALL, new long[] {100, 200});
        verifyCommitted(recs, sent, Map.of(100L, 0, 200L, 1));
    }

    @Order(10)
    @Test
    @DisplayName("FETCH unfiltered + RecordFilter drops duplicates and attempt 101")
    void fetchUnfilteredThroughRecordFilter() throws Exception {
        List<SegmentRecord> recs = fetchAll(c, app, 1, 2, 0, Protocol.END_MAP_ALL, new long[0]);
        expect(recs.stream().anyMatch(r -> r.attempt() == 101), "node keeps attempt 101 without a filter");
        verifyCommitted(recs, sent, Map.of(100L, 0, 200L, 1));
    }

    @Order(11)
    @Test
    @DisplayName("PARTITION_INFO + one-sided read of the pool file give the same records")
    void partitionInfoAndPoolFileRead() throws Exception {
        Responses.PartitionInfo info = c.partitionInfo(app, 1, 2);
        expect(!info.blocks().isEmpty(), "blocks");
        LocalPools local = new LocalPools();
        expect(local.isLocal(host), host + " is local");
        LocalPoolSource src = LocalPoolSource.open(local, info, c.address());
        expect(src != null, "pool file " + info.poolPath() + " and spill files " + info.spillFiles() + " readable");
        List<SegmentRecord> recs = new ArrayList<>();
        for (SegmentRecord.Header h = src.nextHeader(); h != null; h = src.nextHeader()) {
            recs.add(new SegmentRecord(h.mapIndex(), h.attempt(), h.seq(), h.checksum(), src.payload()));
        }
        expect(src.completed(), "all blocks read");
        verifyCommitted(recs, sent, Map.of(100L, 0, 200L, 1));
        local.close();
    }

    @Order(12)
    @Test
    @DisplayName("FETCH of a map range")
    void fetchMapRange() throws Exception {
        List<SegmentRecord> recs = fetchAll(c, app, 1, 2, 1, 2, new long[0]);
        expect(!recs.isEmpty() && recs.stream().allMatch(r -> r.mapIndex() == 1), "only map 1");
    }

    @Order(13)
    @Test
    @DisplayName("FETCH of an empty partition is empty")
    void fetchEmptyPartition() throws Exception {
        expect(fetchAll(c, app, 1, 0, 0, Protocol.END_MAP_ALL, new long[0]).isEmpty(), "empty");
    }

    @Order(14)
    @Test
    @DisplayName("FETCH of an unknown shuffle is NOT_FOUND, connection usable")
    void fetchUnknownShuffleIsNotFound() throws Exception {
        expect(expectError(() -> fetchAll(c, app, 99, 0, 0, Protocol.END_MAP_ALL, new long[0]))
            == Protocol.NOT_FOUND, "NOT_FOUND");
        c.ping();
    }

    @Order(15)
    @Test
    @DisplayName("8 x 6 MiB segments (half from direct buffers) round-trip through multi-frame FETCH")
    void bigSegmentsThroughMultiFrameFetch() throws Exception {
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
    }

    @Order(16)
    @Test
    @DisplayName("a pooled connection is reused and survives a node error")
    void pooledConnectionReused() throws Exception {
        ConnectionPool pool = new ConnectionPool(opts);
        RpmpClient a = pool.borrow(host, port);
        expectError(() -> fetchAll(a, "no-such-app-" + System.nanoTime(), 5, 0, 0, Protocol.END_MAP_ALL, new long[0]));
        pool.release(a);
        RpmpClient b = pool.borrow(host, port);
        expect(a == b, "same connection back");
        b.ping();
        pool.close();
    }

    @Order(16)
    @Test
    @DisplayName("LEASE answers the node's app TTL; LeaseKeeper renews through the node until released")
    void leaseAndKeeper() throws Exception {
        long ttl = c.lease(app);
        expect(ttl > 0, "the node's app TTL in ms: " + ttl);
        expect(c.lease("never-registered-" + System.nanoTime()) == ttl, "same TTL for an app the node lacks");
        ConnectionPool pool = new ConnectionPool(opts);
        java.util.List<String> asked = java.util.Collections.synchronizedList(new ArrayList<>());
        try (LeaseKeeper keeper = new LeaseKeeper(a -> {
            asked.add(a);
            RpmpClient k = pool.borrow(host, port);
            try {
                return k.lease(a);
            } finally {
                pool.release(k);
            }
        })) {
            keeper.hold(app);
            keeper.hold(app);  // held once
            long deadline = System.nanoTime() + 10_000_000_000L;
            while (keeper.renewals() < 1 && System.nanoTime() < deadline) Thread.sleep(10);
            expect(keeper.renewals() == 1 && keeper.failures() == 0, "one renewal at once: " + keeper.renewals()
                + " ok, " + keeper.failures() + " failed (" + keeper.lastError() + ")");
            expect(keeper.ttlMs() == ttl, "the keeper learned the TTL");
            expect(asked.equals(List.of(app)), "renewed the held app: " + asked);
            keeper.release(app);
            expect(!keeper.holds(app), "released");
        }
        pool.close();
        c.ping();
    }

    @Order(17)
    @Test
    @DisplayName("DELETE_SHUFFLE frees blocks, then FETCH is NOT_FOUND")
    void deleteShuffle() throws Exception {
        expect(c.deleteShuffle(app, 1) > 0, "blocks freed");
        expect(expectError(() -> fetchAll(c, app, 1, 2, 0, Protocol.END_MAP_ALL, new long[0]))
            == Protocol.NOT_FOUND, "NOT_FOUND after delete");
    }

    @Order(18)
    @Test
    @DisplayName("DELETE_APP")
    void deleteApp() throws Exception {
        expect(c.deleteApp(app) >= 1, "app blocks freed");
        c.ping();
    }
}

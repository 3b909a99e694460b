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
 * Final segments, the reader's completeness rule and corrupt copies against a live node (-Drpmp.node or RPMP_NODE;
 * skipped without one), read both from the node's pool file (one-sided) and by FETCH. Steps in order.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
@SuppressWarnings({"unused", "resource"})
class IntegrityTest {
    private final String app = "java-integrity-" + System.nanoTime();
    private final Random rnd = new Random(13);
    private ConnectionPool pool;
    private LocalPools local;
    private RpmpClient c;
    private String node;
    private ShuffleRef ref;
    private final Map<Integer, byte[]> a10 = new HashMap<>();
    private final Map<Integer, byte[]> a11 = new HashMap<>();

    /** Each test is reported skipped (not silently absent) when no node is given. */
    @BeforeEach
    void needsNode() {
        liveNode();
    }

    @BeforeAll
    void connect() throws IOException {
        if (!hasNode()) return;
        String[] n = liveNode();
        RpmpClient.Options opts = new RpmpClient.Options();
        opts.readTimeoutMs = 20_000;
        pool = new ConnectionPool(opts);
        local = new LocalPools();
        c = RpmpClient.connect(n[0], Integer.parseInt(n[1]), opts);
        node = c.address();
        ref = new ShuffleRef(app, 1, 4, 1, c.registerShuffle(app, 1, 4, 1));
    }

    @AfterAll
    void close() throws IOException {
        if (c != null) {
            c.deleteApp(app);
            c.close();
        }
        if (pool != null) pool.close();
        if (local != null) local.close();
    }

    @Order(1)
    @Test
    @DisplayName("the pusher marks final segments (an empty one too) and MAP_END counts it")
    void pusherMarksFinalSegments() throws Exception {
        a10.putAll(pushAttempt(ref, pool, 0, 10, 1, 3, false, rnd));
        a11.putAll(pushAttempt(ref, pool, 1, 11, 1, 2, true, rnd));
        Map<String, Integer> seqs = new java.util.TreeMap<>();
        for (SegmentRecord r : fetchAll(c, app, 1, 1, 0, Protocol.END_MAP_ALL, new long[0])) {
            seqs.put(r.attempt() + "/" + Protocol.seqName(r.seq()), r.payload().length);
        }
        expect(seqs.keySet().equals(java.util.Set.of("10/0", "10/1", "10/2+LAST", "11/0", "11/1", "11/2+LAST")),
            "records on the node: " + seqs);
        expect(seqs.get("11/2+LAST") == 0, "the empty final segment: " + seqs);
    }

    @Order(2)
    @ParameterizedTest(name = "{displayName}, one-sided = {0}")
    @ValueSource(booleans = {true, false})
    @DisplayName("complete attempts read whole, the empty final segment not handed out")
    void completeAttemptsReadWhole(boolean oneSided) throws Exception {
        Map<String, byte[]> got = readAll(fetcher(ref, pool, oneSided ? local : null, 1, Map.of(10L, 0, 11L, 1)));
        Map<String, byte[]> want10 = new HashMap<>(got);
        want10.keySet().removeIf(k -> !k.startsWith("10/"));
        expectPayloads(want10, 10, a10);
        got.keySet().removeIf(k -> !k.startsWith("11/"));
        expectPayloads(got, 11, a11);
    }

    @Order(3)
    @Test
    @DisplayName("setup: a lost tail (no final segment) and a hole, pushed raw")
    void setupLostTailAndHole() throws Exception {
        pushRaw(c, app, 1, 2, 2, 20, Map.of(0, payload(rnd, 100), 1, payload(rnd, 100)));
        pushRaw(c, app, 1, 2, 3, 21, Map.of(0, payload(rnd, 100), -3, payload(rnd, 100)));
    }

    @Order(4)
    @ParameterizedTest(name = "{displayName}, one-sided = {0}")
    @ValueSource(booleans = {true, false})
    @DisplayName("a lost tail is never returned short: it fails naming the node")
    void lostTailFailsNamingTheNode(boolean oneSided) throws Exception {
        MissingDataException e = expectThrows(MissingDataException.class,
            () -> readAll(fetcher(ref, pool, oneSided ? local : null, 2, Map.of(20L, 2))));
        expect(e.getMessage().contains("no final segment") && e.getMessage().contains(node)
            && e.attempt() == 20 && e.mapIndex() == 2, e.getMessage());
    }

    @Order(5)
    @ParameterizedTest(name = "{displayName}, one-sided = {0}")
    @ValueSource(booleans = {true, false})
    @DisplayName("a hole in the segment indices fails naming the node")
    void holeFailsNamingTheNode(boolean oneSided) throws Exception {
        MissingDataException e = expectThrows(MissingDataException.class,
            () -> readAll(fetcher(ref, pool, oneSided ? local : null, 2, Map.of(21L, 3))));
        expect(e.getMessage().contains("holes") && e.getMessage().contains(node), e.getMessage());
    }

    @Order(6)
    @Test
    @DisplayName("a flipped payload byte: pool file and FETCH both fail, the error names the node")
    void flippedPayloadByteFails() throws Exception {
        pushAttempt(ref, pool, 0, 30, 3, 3, false, rnd);
        flipPayloadByte(c, app, 1, 3, 30, 1);
        PartitionFetcher f = fetcher(ref, pool, local, 3, Map.of(30L, 0));
        MissingDataException e = expectThrows(MissingDataException.class,
            () -> readAll(f));
        String m = e.getMessage();
        expect(m.contains(node + " (pool file): corrupt copy") && m.contains(node + ": corrupt copy"), m);
        expect(f.outcomes().size() == 2, "the pool file, then FETCH from the node: " + f.outcomes());
        PartitionFetcher t = fetcher(ref, pool, null, 3, Map.of(30L, 0));
        e = expectThrows(MissingDataException.class, () -> readAll(t));
        expect(e.getMessage().contains(node + ": corrupt copy"), e.getMessage());
        System.out.println("     (" + e.getMessage() + ")");
    }
}

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
 * Two nodes of one cluster (-Drpmp.pair=host:port,host:port or RPMP_PAIR; skipped without them): a corrupt copy
 * or a lost tail on the primary is read from the other node. Steps in order.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
@SuppressWarnings({"unused", "resource"})
class NodePairTest {
    private final String app = "java-pair-" + System.nanoTime();
    private final Random rnd = new Random(17);
    private ConnectionPool pool;
    private LocalPools local;
    private RpmpClient c1;
    private RpmpClient c2;
    private int port1;
    private Placement placement;
    private ShuffleRef ref;
    private ShuffleRef ref2;
    // Hand-made placement over the same two nodes, data pushed raw to each (replicas=1: no copies).
    private final Map<Integer, byte[]> whole = new java.util.TreeMap<>();

    /** Each test is reported skipped (not silently absent) when no node is given. */
    @BeforeEach
    void needsNode() {
        nodePair();
    }

    @BeforeAll
    void connect() throws IOException {
        if (!hasPair()) return;
        String[][] nodes = nodePair();
        RpmpClient.Options opts = new RpmpClient.Options();
        opts.readTimeoutMs = 20_000;
        pool = new ConnectionPool(opts);
        local = new LocalPools();
        port1 = Integer.parseInt(nodes[0][1]);
        c1 = RpmpClient.connect(nodes[0][0], port1, opts);
        c2 = RpmpClient.connect(nodes[1][0], Integer.parseInt(nodes[1][1]), opts);
        placement = c1.registerShuffle(app, 1, 8, 2);
        ref = new ShuffleRef(app, 1, 8, 2, placement);
        Placement both = c1.registerShuffle(app, 2, 1, 1);
        int i1 = both.node(0).port() == port1 ? 0 : 1;
        Placement order = new Placement(both.epoch, both.nodes(), 2, new short[] {(short) i1, (short) (1 - i1)});
        ref2 = new ShuffleRef(app, 2, 1, 1, order);
    }

    @AfterAll
    void close() throws IOException {
        if (c1 != null) {
            c1.deleteApp(app);
            c1.close();
        }
        if (c2 != null) c2.close();
        if (pool != null) pool.close();
        if (local != null) local.close();
    }

    @Order(1)
    @Test
    @DisplayName("replicas=2 places every partition on both nodes")
    void replicasPlaceEveryPartitionOnBothNodes() throws Exception {
        expect(placement.numNodes() == 2 && placement.prefLength() == 2, placement.toString());
    }

    @Order(2)
    @ParameterizedTest(name = "{displayName}, one-sided = {0}")
    @ValueSource(booleans = {true, false})
    @DisplayName("replicas=2: a corrupt record on the primary is read from the replica")
    void corruptPrimaryReadFromReplica(boolean oneSided) throws Exception {
        int partition = oneSided ? 0 : 1;   // a fresh partition per variant: a node may quarantine the bad record
        long attempt = 40 + partition;
        Map<Integer, byte[]> sent = pushAttempt(ref, pool, 0, attempt, partition, 3, true, rnd);
        NodeInfo primary = placement.preferred(partition, 0);
        NodeInfo replica = placement.preferred(partition, 1);
        RpmpClient pc = primary.port() == c1.port() ? c1 : c2;
        flipPayloadByte(pc, app, 1, partition, attempt, 1);
        PartitionFetcher f = fetcher(ref, pool, oneSided ? local : null, partition, Map.of(attempt, 0));
        expectPayloads(readAll(f), attempt, sent);
        List<String> o = f.outcomes();
        String last = o.get(o.size() - 1);
        expect(o.get(0).startsWith(primary.address() + (oneSided ? " (pool file)" : "") + ": corrupt copy")
            && last.startsWith(replica.address()) && last.endsWith("complete"), "sources: " + o);
        expect(f.fallbacks() == o.size() - 1, f.fallbacks() + " fallbacks for " + o);
        System.out.println("     (" + o + ")");
    }

    @Order(3)
    @ParameterizedTest(name = "{displayName}, one-sided = {0}")
    @ValueSource(booleans = {true, false})
    @DisplayName("a lost tail on the first node is completed from the second")
    void lostTailCompletedFromSecondNode(boolean oneSided) throws Exception {
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
    }

    @Order(4)
    @ParameterizedTest(name = "{displayName}, one-sided = {0}")
    @ValueSource(booleans = {true, false})
    @DisplayName("no node has the attempt whole: the error names both")
    void noNodeWholeNamesBoth(boolean oneSided) throws Exception {
        MissingDataException e = expectThrows(MissingDataException.class,
            () -> readAll(fetcher(ref2, pool, oneSided ? local : null, 0, Map.of(50L, 0, 51L, 1))));
        String m = e.getMessage();
        expect(m.contains("map 1 (attempt 51)") && m.contains(c1.address() + (oneSided ? " (pool file)" : ""))
            && m.contains(c2.address()) && !m.substring(0, m.indexOf("RPMP sources tried")).contains("attempt 50)"), m);
    }
}

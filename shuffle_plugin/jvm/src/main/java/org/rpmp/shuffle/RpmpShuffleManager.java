package org.rpmp.shuffle;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.apache.spark.ShuffleDependency;
import org.apache.spark.SparkConf;
import org.apache.spark.SparkContext;
import org.apache.spark.TaskContext;
import org.apache.spark.shuffle.ShuffleHandle;
import org.apache.spark.shuffle.ShuffleReadMetricsReporter;
import org.apache.spark.shuffle.ShuffleReader;
import org.apache.spark.shuffle.ShuffleWriteMetricsReporter;
import org.apache.spark.shuffle.ShuffleWriter;
import org.apache.spark.shuffle.sort.SortShuffleManager;
import org.apache.spark.storage.BlockManagerId;
import org.apache.spark.storage.BlockManagerId$;
import org.rpmp.client.ConnectionPool;
import org.rpmp.client.LeaseKeeper;
import org.rpmp.client.LocalPools;
import org.rpmp.client.Placement;
import org.rpmp.client.Protocol;
import org.rpmp.client.RpmpClient;
import org.rpmp.client.RpmpException;
import scala.Option;

/**
 * Spark's ShuffleManager for RPMP: {@code spark.shuffle.manager=org.rpmp.shuffle.RpmpShuffleManager}.
 *
 * <p>It extends SortShuffleManager for two reasons: Spark 4.3 requires the configured manager to be a
 * BlockingShuffleManager (SortShuffleManager is one, and its block resolver serves the nothing we keep on
 * local disk), and Spark SQL skips its defensive per-row copy before a shuffle only for a
 * SortShuffleManager; our writer serializes each row at once, so the copy would be pure waste.
 *
 * <p>Driver: registerShuffle asks any seed node for the placement (the node registers the shuffle on every
 * live node), unregisterShuffle deletes the shuffle's data, stop deletes the application's data. From its first
 * shuffle on, the driver holds a lease on its application (LEASE through any seed, every third of the nodes' app
 * TTL, from a daemon thread: LeaseKeeper) until stop: a driver that dies without stop leaves its data on the nodes
 * for at most that TTL.
 * Executors: writers push, readers fetch, both through a per-JVM connection pool.
 *
 * <p>Map outputs are registered at a per-shuffle pseudo location ("rpmp-shuffle-N") rather than at the
 * executor that wrote them: the data lives on the RPMP nodes, so losing an executor must not make Spark
 * recompute its map outputs; and a reader's FetchFailedException names that pseudo location, so Spark
 * then recomputes exactly this shuffle's map outputs (its data is what is missing), nothing else.
 *
 * <p>Fallback (spark.rpmp.fallback, see FallbackPolicy): a shuffle no RPMP node registers within
 * spark.rpmp.register.timeout (or every shuffle, with {@code always}) gets SortShuffleManager's handle and is
 * written and read by Spark's sort shuffle: its writers report the executor's own BlockManagerId, nothing of
 * it is on RPMP (no counters, no delete). getWriter / getReader / unregisterShuffle dispatch on the handle.
 */
public class RpmpShuffleManager extends SortShuffleManager {
    private static final Logger LOG = LogManager.getLogger(RpmpShuffleManager.class);
    private static final String LOCATION_PREFIX = "rpmp-shuffle-";
    private static final int LOCATION_PORT = 1;

    private final boolean isDriver;
    private final RpmpConf conf;
    private final ConnectionPool pool;
    /** Readers' background fetch threads (daemons, created on demand, idle ones expire). */
    private final ExecutorService fetchThreads;
    /** Map tasks' segment buffers (off-heap unless spark.rpmp.push.offHeap=false), reused across tasks. */
    private final SegmentMemory segmentMemory;
    /** Pool files of nodes on this host, read one-sided (null when spark.rpmp.fetch.local is off). */
    private final LocalPools localPools;
    /** Driver: shuffles registered and not yet removed -> RPMP application name. */
    private final Map<Integer, String> registered = new ConcurrentHashMap<>();
    private volatile String app;
    /** Driver: renews the application's lease on the nodes (created with the first RPMP shuffle). */
    private volatile LeaseKeeper leases;
    /** Driver: the last registration fell back because no node took it; the next one tries one round only. */
    private volatile boolean nodesDown;

    public RpmpShuffleManager(SparkConf sparkConf, boolean isDriver) {
        super(sparkConf);
        this.isDriver = isDriver;
        this.conf = new RpmpConf(sparkConf);
        this.pool = new ConnectionPool(conf.clientOptions(isDriver ? "rpmp-spark-driver"
            : "rpmp-spark-executor-" + sparkConf.get("spark.executor.id", "?")));
        this.localPools = conf.fetchLocal ? new LocalPools() : null;
        this.segmentMemory = new SegmentMemory(conf.pushOffHeap, 2 * conf.pushMemory);
        AtomicInteger threadCount = new AtomicInteger();
        this.fetchThreads = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r, "rpmp-fetch-" + threadCount.incrementAndGet());
            t.setDaemon(true);
            return t;
        });
        if (isDriver) {
            if (conf.nodes.isEmpty() && conf.fallback.triesRpmp()) {
                throw new IllegalArgumentException(RpmpConf.NODES + " is not set: name at least one RPMP node "
                    + "(host:port) for " + getClass().getName());
            }
            RpmpMetrics.reset();
            if (conf.fallback.triesRpmp()) sqlDefaults(sparkConf);
            // The executors authenticate as the driver's tenant, whatever user their JVMs run as.
            if (conf.authEnabled()) sparkConf.setIfMissing(RpmpConf.AUTH_TENANT, conf.tenant());
            LOG.info("RPMP shuffle manager on the driver: nodes {}, replicas {}, push size {}, push memory {}, "
                + "fallback {}, {}, {}", conf.nodes, conf.replicas, conf.pushSize, conf.pushMemory, conf.fallback,
                conf.authEnabled() ? "authenticated as tenant " + conf.tenant() : "no authentication",
                conf.tlsEnabled ? "TLS" : "no TLS");
        }
    }

    /** Spark SQL settings that suit RPMP, where the user set none (SQLConf reads them from this conf later). */
    static final String LOCAL_SHUFFLE_READER = "spark.sql.adaptive.localShuffleReader.enabled";

    /**
     * AQE's local shuffle reader reads one map's output across all partitions, which pays off where map output
     * sits on the reducer's own disk. On RPMP it only turns a handful of partition FETCHes into one per map
     * and partition (1,610 of ~60 KiB instead of 50 of ~2 MiB in bench/README.md "AQE reads": query +6 to
     * +51 %, node CPU +3 to +31 %), so it is off unless the user turned it on (as Celeborn and Uniffle do).
     */
    static void sqlDefaults(SparkConf sparkConf) {
        sparkConf.setIfMissing(LOCAL_SHUFFLE_READER, "false");
    }

    public RpmpShuffleManager(SparkConf sparkConf) {
        this(sparkConf, "driver".equals(sparkConf.get("spark.executor.id", "driver")));
    }

    public RpmpConf conf() { return conf; }

    ConnectionPool pool() { return pool; }

    ExecutorService fetchThreads() { return fetchThreads; }

    LocalPools localPools() { return localPools; }

    SegmentMemory segmentMemory() { return segmentMemory; }

    /** Where MapStatus says a map output of this shuffle lives (see the class comment). */
    BlockManagerId mapStatusLocation(int shuffleId) {
        String id = LOCATION_PREFIX + shuffleId;
        return BlockManagerId$.MODULE$.apply(id, id, LOCATION_PORT, Option.empty());
    }

    @Override
    public <K, V, C> ShuffleHandle registerShuffle(int shuffleId, ShuffleDependency<K, V, C> dependency) {
        if (!conf.fallback.triesRpmp()) {
            RpmpMetrics.sortShuffle(shuffleId);
            return super.registerShuffle(shuffleId, dependency);
        }
        SparkContext sc = dependency.rdd().sparkContext();
        String appName = appName(sc.applicationId());
        int numPartitions = dependency.partitioner().numPartitions();
        // A shuffle without partitions (an empty RDD) has nothing to place; RPMP refuses 0 partitions.
        Placement placement;
        if (numPartitions == 0) {
            placement = new Placement(0, java.util.List.of(), 0, new short[0]);
        } else {
            RuntimeException failure;
            try {
                placement = registerWithAnyNode(appName, shuffleId, numPartitions, !nodesDown);
                failure = null;
            } catch (RuntimeException e) {
                placement = null;
                failure = e;
            }
            // A refused tenant or secret, or a TLS failure, is a configuration error: falling back to the sort
            // shuffle would hide it (and, with a wrong secret, every later shuffle would fall back too).
            if (failure != null && isSecurityFailure(failure.getCause())) throw failure;
            switch (conf.fallback.route(placement != null)) {
                case FAIL:
                    throw failure;
                case SORT:
                    nodesDown = true;
                    LOG.warn("RPMP: no node of {} took shuffle {} ({}); it is written by Spark's sort shuffle "
                        + "({}=auto)", conf.nodes, shuffleId, failure.getMessage(), RpmpConf.FALLBACK);
                    RpmpMetrics.sortShuffle(shuffleId);
                    return super.registerShuffle(shuffleId, dependency);
                default:
                    nodesDown = false;
            }
        }
        ShuffleCounters counters = new ShuffleCounters(shuffleId);
        counters.register(sc);
        RpmpMetrics.register(counters);
        app = appName;
        holdLease(appName);
        registered.put(shuffleId, appName);
        LOG.info("RPMP registered shuffle {} of {}: {} partitions on {} nodes, {} replicas", shuffleId, appName,
            numPartitions, placement.numNodes(), conf.replicas);
        return new RpmpShuffleHandle<>(shuffleId, dependency, appName, placement, conf.replicas, counters);
    }

    /**
     * REGISTER_SHUFFLE through the first seed that takes it. A node that just died is only dropped from the
     * live set after missed heartbeats, and until then registration fails (UNAVAILABLE: not every live
     * node took it), so failed rounds are retried for up to spark.rpmp.register.timeout (only one round when
     * {@code retry} is false: the previous registration already waited that long for nodes that were down).
     */
    private Placement registerWithAnyNode(String appName, int shuffleId, int numPartitions, boolean retry) {
        long deadline = System.nanoTime() + conf.registerTimeoutMs * 1_000_000L;
        IOException last = null;
        for (int round = 1; ; round++) {
            for (RpmpConf.Address seed : conf.nodes) {
                RpmpClient c = null;
                try {
                    c = pool.borrow(seed.host(), seed.port());
                    Placement p = c.registerShuffle(appName, shuffleId, numPartitions, conf.replicas);
                    pool.release(c);
                    return p;
                } catch (RpmpException e) {
                    pool.release(c);
                    if (e.code() == Protocol.CONFLICT || e.code() == Protocol.BAD_REQUEST) {
                        throw new IllegalStateException("RPMP refused shuffle " + shuffleId + ": " + e.getMessage(), e);
                    }
                    if (isSecurityFailure(e)) {
                        throw new IllegalStateException("RPMP node " + seed + " refused this application: " + e.getMessage(), e);
                    }
                    last = e;
                } catch (javax.net.ssl.SSLException e) {
                    pool.discard(c);
                    throw new IllegalStateException("TLS with RPMP node " + seed + " failed (check "
                        + RpmpConf.TLS_TRUST_STORE + " / " + RpmpConf.TLS_CA_PEM + " and the node's certificate): " + e, e);
                } catch (IOException e) {
                    pool.discard(c);
                    last = e;
                }
                // INFO, not WARN: the outcome (a fallback or an error) is reported once, by the caller.
                LOG.info("RPMP node {} could not register shuffle {}: {}", seed, shuffleId, last.toString());
            }
            if (!retry) break;
            long waitMs = Math.min(1000, 200L * round);
            if (System.nanoTime() + waitMs * 1_000_000L > deadline) break;
            try {
                Thread.sleep(waitMs);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                break;
            }
        }
        throw new IllegalStateException("no RPMP node of " + conf.nodes + " could register shuffle " + shuffleId
            + (retry ? " within " + conf.registerTimeoutMs + " ms" : " (nodes were down for an earlier shuffle)")
            + ": " + last, last);
    }

    /** AUTH_FAILED, FORBIDDEN or a TLS failure: retrying or falling back cannot help, the settings must change. */
    static boolean isSecurityFailure(Throwable e) {
        if (e instanceof javax.net.ssl.SSLException) return true;
        return e instanceof RpmpException r && (r.code() == Protocol.AUTH_FAILED || r.code() == Protocol.FORBIDDEN);
    }

    private synchronized void holdLease(String appName) {
        if (leases == null) leases = new LeaseKeeper(this::leaseOnAnyNode);
        leases.hold(appName);
    }

    /** LEASE through the first seed that answers (the node forwards it to every live node); the nodes' TTL in ms. */
    private long leaseOnAnyNode(String appName) throws IOException {
        IOException last = null;
        for (RpmpConf.Address seed : conf.nodes) {
            RpmpClient c = null;
            try {
                c = pool.borrow(seed.host(), seed.port());
                long ttl = c.lease(appName);
                pool.release(c);
                return ttl;
            } catch (RpmpException e) {
                pool.release(c);
                last = e;
            } catch (IOException e) {
                pool.discard(c);
                last = e;
            }
        }
        LOG.warn("RPMP: no node of {} renewed the lease of {}: {}", conf.nodes, appName, String.valueOf(last));
        throw last != null ? last : new IOException("no RPMP node configured");
    }

    /** The application id as an RPMP app name: 1..120 UTF-8 bytes, no '/', NUL or U+001F. */
    static String appName(String applicationId) {
        String s = applicationId == null || applicationId.isEmpty() ? "spark-app" : applicationId;
        s = s.replace('/', '_').replace('\0', '_').replace('\u001F', '_');
        while (s.getBytes(StandardCharsets.UTF_8).length > Protocol.CLIENT_APP_MAX) s = s.substring(0, s.length() - 1);
        return s;
    }

    @Override
    @SuppressWarnings("unchecked")
    public <K, V> ShuffleWriter<K, V> getWriter(ShuffleHandle handle, long mapId, TaskContext context,
                                                ShuffleWriteMetricsReporter metrics) {
        if (!(handle instanceof RpmpShuffleHandle)) return super.getWriter(handle, mapId, context, metrics);
        return new RpmpShuffleWriter<>((RpmpShuffleHandle<K, V, Object>) handle, mapId, context, metrics, this);
    }

    @Override
    @SuppressWarnings("unchecked")
    public <K, C> ShuffleReader<K, C> getReader(ShuffleHandle handle, int startMapIndex, int endMapIndex,
                                                int startPartition, int endPartition, TaskContext context,
                                                ShuffleReadMetricsReporter metrics) {
        if (!(handle instanceof RpmpShuffleHandle)) {
            return super.getReader(handle, startMapIndex, endMapIndex, startPartition, endPartition, context, metrics);
        }
        return new RpmpShuffleReader<>((RpmpShuffleHandle<K, ?, C>) handle, startMapIndex, endMapIndex, startPartition,
            endPartition, context, metrics, this);
    }

    @Override
    public boolean unregisterShuffle(int shuffleId) {
        String appName = isDriver ? registered.remove(shuffleId) : null;
        if (appName != null) {
            RpmpMetrics.unregistered(shuffleId);
            long freed = deleteOnAnyNode(shuffleId, appName);
            LOG.info("RPMP removed shuffle {} of {}: {} blocks freed", shuffleId, appName, freed);
        }
        return super.unregisterShuffle(shuffleId);
    }

    /** DELETE_SHUFFLE (shuffleId >= 0) or DELETE_APP through any seed; the node forwards to all. -1 if none answered. */
    private long deleteOnAnyNode(int shuffleId, String appName) {
        for (RpmpConf.Address seed : conf.nodes) {
            RpmpClient c = null;
            try {
                c = pool.borrow(seed.host(), seed.port());
                long freed = shuffleId >= 0 ? c.deleteShuffle(appName, shuffleId) : c.deleteApp(appName);
                pool.release(c);
                return freed;
            } catch (IOException e) {
                pool.discard(c);
                LOG.warn("RPMP node {} could not delete {} of {}: {}", seed,
                    shuffleId >= 0 ? "shuffle " + shuffleId : "the data", appName, e.toString());
            }
        }
        return -1;
    }

    @Override
    public void stop() {
        try {
            String appName = app;
            LeaseKeeper keeper = leases;
            if (keeper != null) keeper.close();  // the app is deleted next: nothing left to renew
            if (isDriver && appName != null) {
                registered.clear();
                long freed = deleteOnAnyNode(-1, appName);
                LOG.info("RPMP removed application {}: {} blocks freed", appName, freed);
            }
        } finally {
            fetchThreads.shutdownNow();
            if (localPools != null) localPools.close();
            segmentMemory.close();
            pool.close();
            super.stop();
        }
    }
}

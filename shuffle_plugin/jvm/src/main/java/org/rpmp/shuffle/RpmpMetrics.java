package org.rpmp.shuffle;

import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentSkipListMap;
import java.util.concurrent.TimeoutException;

import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.spark.SparkContext;
import org.apache.spark.SparkEnv;
import org.apache.spark.status.AppStatusStore;
import org.apache.spark.status.api.v1.StageData;
import org.apache.spark.util.LongAccumulator;
import scala.collection.Iterator;

/**
 * Driver-side registry of the plugin's per-shuffle counters, for the PySpark side through py4j:
 * {@code spark._jvm.org.rpmp.shuffle.RpmpMetrics.snapshotJson()}.
 *
 * <p>Counters reach the driver as Spark accumulators (see ShuffleCounters): a shuffle's numbers are final
 * once the tasks of the stages that write and read it have finished. Entries stay after the shuffle is
 * unregistered (its data deleted) so a job's numbers can be read after Spark cleaned it up (the oldest
 * beyond 10,000 removed shuffles are dropped); a new driver-side ShuffleManager starts from zero.
 *
 * <p>The JSON is built as a tree of Spark's own Jackson (the plugin does not bundle one), which
 * JsonNode.toString() writes compactly; Python parses it, so its keys and nesting are an interface.
 */
public final class RpmpMetrics {
    private RpmpMetrics() {}

    private static final Map<Integer, ShuffleCounters> SHUFFLES = new ConcurrentSkipListMap<>();
    private static final Map<Integer, Boolean> ACTIVE = new ConcurrentSkipListMap<>();
    /** Shuffles Spark's sort shuffle wrote (spark.rpmp.fallback): the newest MAX_REMOVED ids, and the count. */
    private static final java.util.NavigableSet<Integer> SORT_SHUFFLES =
        new java.util.concurrent.ConcurrentSkipListSet<>();
    private static final java.util.concurrent.atomic.AtomicLong SORT_COUNT = new java.util.concurrent.atomic.AtomicLong();

    /** Removed shuffles kept for reading at most; a long-running application must not grow without bound. */
    private static final int MAX_REMOVED = 10_000;

    static void register(ShuffleCounters c) {
        SHUFFLES.put(c.shuffleId, c);
        ACTIVE.put(c.shuffleId, Boolean.TRUE);
        int removed = SHUFFLES.size() - (int) ACTIVE.values().stream().filter(Boolean::booleanValue).count();
        for (Map.Entry<Integer, Boolean> e : ACTIVE.entrySet()) {
            if (removed <= MAX_REMOVED) break;
            if (!e.getValue()) {
                SHUFFLES.remove(e.getKey());
                ACTIVE.remove(e.getKey());
                removed--;
            }
        }
    }

    static void unregistered(int shuffleId) {
        ACTIVE.computeIfPresent(shuffleId, (k, v) -> Boolean.FALSE);
    }

    /** A shuffle went to Spark's sort shuffle (fallback auto with no node taking it, or always). */
    static void sortShuffle(int shuffleId) {
        if (SORT_SHUFFLES.add(shuffleId)) SORT_COUNT.incrementAndGet();
        while (SORT_SHUFFLES.size() > MAX_REMOVED) SORT_SHUFFLES.pollFirst();
    }

    /** Forgets everything (the manager stopped; a new SparkContext starts from zero). */
    public static void reset() {
        SHUFFLES.clear();
        ACTIVE.clear();
        SORT_SHUFFLES.clear();
        SORT_COUNT.set(0);
    }

    public static ShuffleCounters get(int shuffleId) { return SHUFFLES.get(shuffleId); }

    /**
     * {"shuffles": {"<id>": {"active": bool, "bytesPushed": n, ...}}, "totals": {..., "sortShuffles": n},
     * "sortShuffles": [id, ...]} with every counter of every shuffle registered since the manager started,
     * and the shuffles Spark's sort shuffle wrote instead (spark.rpmp.fallback; the newest 10,000 ids).
     */
    public static String snapshotJson() {
        ObjectNode root = JsonNodeFactory.instance.objectNode();
        ObjectNode shuffles = root.putObject("shuffles");
        long[] totals = new long[ShuffleCounters.NAMES.size()];
        for (Map.Entry<Integer, ShuffleCounters> e : SHUFFLES.entrySet()) {
            ObjectNode shuffle = shuffles.putObject(e.getKey().toString());
            shuffle.put("active", ACTIVE.getOrDefault(e.getKey(), false));
            List<LongAccumulator> counters = e.getValue().accumulators();
            for (int i = 0; i < totals.length; i++) {
                long v = counters.get(i).sum();
                shuffle.put(ShuffleCounters.NAMES.get(i), v);
                totals[i] += v;
            }
        }
        ObjectNode total = root.putObject("totals");
        for (int i = 0; i < totals.length; i++) total.put(ShuffleCounters.NAMES.get(i), totals[i]);
        total.put("sortShuffles", SORT_COUNT.get());
        com.fasterxml.jackson.databind.node.ArrayNode sorted = root.putArray("sortShuffles");
        for (int id : SORT_SHUFFLES) sorted.add(id);
        return root.toString();
    }

    /** The class of the shuffle manager this JVM runs (py4j cannot reflect on SparkEnv itself in 4.3). */
    public static String activeShuffleManager() {
        SparkEnv env = SparkEnv.get();
        return env == null ? null : SparkEnvShim.configuredShuffleManager(env).getClass().getName();
    }

    /**
     * Spark's own view of shuffle traffic, summed over every stage so far, from the driver's status store
     * (after the listener bus drained): {"writeBytes", "writeRecords", "readBytes", "readRecords",
     * "localReadBytes"} (local: read one-sided from a co-located node's pool file). What the plugin reports
     * to ShuffleWriteMetrics/ShuffleReadMetrics shows up here and in the UI.
     */
    public static String sparkShuffleTotalsJson() throws TimeoutException {
        SparkContext sc = SparkContext.getOrCreate();
        sc.listenerBus().waitUntilEmpty(30_000L);
        AppStatusStore store = sc.statusStore();
        Iterator<StageData> stages = store.stageList(Collections.emptyList(), false, false,
            store.stageList$default$4(), Collections.emptyList()).iterator();
        long wb = 0, wr = 0, rb = 0, rr = 0, lb = 0;
        while (stages.hasNext()) {
            StageData d = stages.next();
            wb += d.shuffleWriteBytes();
            wr += d.shuffleWriteRecords();
            rb += d.shuffleReadBytes();
            rr += d.shuffleReadRecords();
            lb += d.shuffleLocalBytesRead();
        }
        ObjectNode totals = JsonNodeFactory.instance.objectNode();
        totals.put("writeBytes", wb).put("writeRecords", wr).put("readBytes", rb).put("readRecords", rr)
            .put("localReadBytes", lb);
        return totals.toString();
    }
}

package org.rpmp.shuffle;

import java.io.Serializable;
import java.util.List;

import org.apache.spark.SparkContext;
import org.apache.spark.util.LongAccumulator;

/**
 * Per-shuffle counters of the plugin, as Spark accumulators.
 *
 * <p>Why accumulators: they are the one channel Spark already has from executors to the driver. The
 * driver registers them when the shuffle is registered and they travel inside the ShuffleHandle; every
 * task that deserializes the handle gets zeroed copies registered with its TaskContext, and Spark merges
 * the copies' values into the driver's objects when the task succeeds (values of failed attempts are
 * dropped, so retries do not double-count). Nothing else is needed: no RPC of our own, no polling.
 */
public final class ShuffleCounters implements Serializable {
    private static final long serialVersionUID = 1L;

    public final int shuffleId;
    public final LongAccumulator bytesPushed = new LongAccumulator();
    public final LongAccumulator segmentsPushed = new LongAccumulator();
    public final LongAccumulator recordsWritten = new LongAccumulator();
    public final LongAccumulator pushTimeNs = new LongAccumulator();
    public final LongAccumulator bytesFetched = new LongAccumulator();
    public final LongAccumulator segmentsFetched = new LongAccumulator();
    public final LongAccumulator recordsRead = new LongAccumulator();
    public final LongAccumulator fetchTimeNs = new LongAccumulator();
    public final LongAccumulator fetchFallbacks = new LongAccumulator();

    public ShuffleCounters(int shuffleId) {
        this.shuffleId = shuffleId;
    }

    /** The counters' names: the accumulators' (after "rpmp.shuffle.<id>.") and RpmpMetrics' JSON keys, in order. */
    static final List<String> NAMES = List.of("bytesPushed", "segmentsPushed", "recordsWritten", "pushTimeNs",
        "bytesFetched", "segmentsFetched", "recordsRead", "fetchTimeNs", "fetchFallbacks");

    /** The accumulators in the order of NAMES. */
    List<LongAccumulator> accumulators() {
        return List.of(bytesPushed, segmentsPushed, recordsWritten, pushTimeNs, bytesFetched, segmentsFetched,
            recordsRead, fetchTimeNs, fetchFallbacks);
    }

    /** Registers the accumulators with the driver's SparkContext (before the handle is first serialized). */
    public void register(SparkContext sc) {
        String prefix = "rpmp.shuffle." + shuffleId + ".";
        List<LongAccumulator> accumulators = accumulators();
        for (int i = 0; i < NAMES.size(); i++) sc.register(accumulators.get(i), prefix + NAMES.get(i));
    }
}

package org.rpmp.shuffle;

import java.io.Serializable;

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

    /** Registers the accumulators with the driver's SparkContext (before the handle is first serialized). */
    public void register(SparkContext sc) {
        String p = "rpmp.shuffle." + shuffleId + ".";
        sc.register(bytesPushed, p + "bytesPushed");
        sc.register(segmentsPushed, p + "segmentsPushed");
        sc.register(recordsWritten, p + "recordsWritten");
        sc.register(pushTimeNs, p + "pushTimeNs");
        sc.register(bytesFetched, p + "bytesFetched");
        sc.register(segmentsFetched, p + "segmentsFetched");
        sc.register(recordsRead, p + "recordsRead");
        sc.register(fetchTimeNs, p + "fetchTimeNs");
        sc.register(fetchFallbacks, p + "fetchFallbacks");
    }

    void appendJson(StringBuilder sb) {
        sb.append("{\"bytesPushed\":").append(bytesPushed.sum())
            .append(",\"segmentsPushed\":").append(segmentsPushed.sum())
            .append(",\"recordsWritten\":").append(recordsWritten.sum())
            .append(",\"pushTimeNs\":").append(pushTimeNs.sum())
            .append(",\"bytesFetched\":").append(bytesFetched.sum())
            .append(",\"segmentsFetched\":").append(segmentsFetched.sum())
            .append(",\"recordsRead\":").append(recordsRead.sum())
            .append(",\"fetchTimeNs\":").append(fetchTimeNs.sum())
            .append(",\"fetchFallbacks\":").append(fetchFallbacks.sum())
            .append('}');
    }
}

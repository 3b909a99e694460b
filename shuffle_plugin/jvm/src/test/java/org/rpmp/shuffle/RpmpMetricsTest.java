package org.rpmp.shuffle;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;

import org.apache.spark.util.LongAccumulator;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/** snapshotJson is read by Python (shuffle_plugin/session.py, the Spark tests): its text must not change. */
class RpmpMetricsTest {
    private static final String ZEROS = "\"bytesPushed\":0,\"segmentsPushed\":0,\"recordsWritten\":0,\"pushTimeNs\":0,"
        + "\"bytesFetched\":0,\"segmentsFetched\":0,\"recordsRead\":0,\"fetchTimeNs\":0,\"fetchFallbacks\":0";

    @AfterEach
    void reset() {
        RpmpMetrics.reset();
    }

    @Test
    @DisplayName("snapshotJson without shuffles: every total, zero")
    void empty() {
        RpmpMetrics.reset();
        assertEquals("{\"shuffles\":{},\"totals\":{" + ZEROS + ",\"sortShuffles\":0},\"sortShuffles\":[]}",
            RpmpMetrics.snapshotJson());
    }

    @Test
    @DisplayName("snapshotJson: each shuffle's counters after its active flag, in order, and their totals")
    void shufflesAndTotals() {
        RpmpMetrics.reset();
        ShuffleCounters a = new ShuffleCounters(12);
        ShuffleCounters b = new ShuffleCounters(3);
        List<LongAccumulator> av = a.accumulators();
        List<LongAccumulator> bv = b.accumulators();
        for (int i = 0; i < av.size(); i++) {
            av.get(i).add(i + 1);
            bv.get(i).add(100L * (i + 1));
        }
        RpmpMetrics.register(a);
        RpmpMetrics.register(b);
        RpmpMetrics.unregistered(3);
        assertEquals("{\"shuffles\":{"
            + "\"3\":{\"active\":false,\"bytesPushed\":100,\"segmentsPushed\":200,\"recordsWritten\":300,"
            + "\"pushTimeNs\":400,\"bytesFetched\":500,\"segmentsFetched\":600,\"recordsRead\":700,\"fetchTimeNs\":800,"
            + "\"fetchFallbacks\":900},"
            + "\"12\":{\"active\":true,\"bytesPushed\":1,\"segmentsPushed\":2,\"recordsWritten\":3,\"pushTimeNs\":4,"
            + "\"bytesFetched\":5,\"segmentsFetched\":6,\"recordsRead\":7,\"fetchTimeNs\":8,\"fetchFallbacks\":9}},"
            + "\"totals\":{\"bytesPushed\":101,\"segmentsPushed\":202,\"recordsWritten\":303,\"pushTimeNs\":404,"
            + "\"bytesFetched\":505,\"segmentsFetched\":606,\"recordsRead\":707,\"fetchTimeNs\":808,\"fetchFallbacks\":909,"
            + "\"sortShuffles\":0},\"sortShuffles\":[]}",
            RpmpMetrics.snapshotJson());
    }

    @Test
    @DisplayName("snapshotJson: shuffles the sort shuffle wrote, counted once each, listed in order")
    void sortShuffles() {
        RpmpMetrics.reset();
        RpmpMetrics.sortShuffle(7);
        RpmpMetrics.sortShuffle(2);
        RpmpMetrics.sortShuffle(7);
        assertEquals("{\"shuffles\":{},\"totals\":{" + ZEROS + ",\"sortShuffles\":2},\"sortShuffles\":[2,7]}",
            RpmpMetrics.snapshotJson());
    }
}

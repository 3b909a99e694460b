package org.rpmp.shuffle;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.apache.spark.scheduler.MapStatus;
import org.apache.spark.storage.BlockManagerId;
import org.apache.spark.storage.BlockManagerId$;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;
import scala.Option;

/** The map-output shim of the line under test (compiled and run per Spark line: -P spark-X.Y). */
class MapOutputShimTest {
    private static final BlockManagerId LOCATION = BlockManagerId$.MODULE$.apply("rpmp-shuffle-7", "rpmp-shuffle-7", 1,
        Option.empty());

    @Test
    @DisplayName("MapStatus: the placeholder location, the attempt id as mapId, sizes within Spark's 10 % encoding")
    void mapStatusCarriesLocationMapIdAndSizes() {
        long[] lengths = {0, 1, 1000, 123_456_789L, 0, 4 << 20};
        MapStatus status = MapOutputShim.mapStatus(LOCATION, lengths, 4242L, null);
        assertEquals(LOCATION, status.location());
        assertEquals(4242L, status.mapId());
        for (int p = 0; p < lengths.length; p++) {
            long got = status.getSizeForBlock(p);
            if (lengths[p] == 0) {
                assertEquals(0, got, "an empty partition stays empty (readers skip it): partition " + p);
            } else {
                assertTrue(got >= lengths[p] && got <= lengths[p] * 1.1 + 1,
                    "partition " + p + ": " + lengths[p] + " bytes reported as " + got);
            }
        }
    }

    @Test
    @DisplayName("MapStatus: the row-based checksum where the line has one (4.1+), none before")
    void mapStatusCarriesTheChecksumWhereTheLineHasOne() throws Exception {
        RowChecksums fixed = new RowChecksums() {
            @Override
            void update(int partition, Object key, Object value) {}

            @Override
            long value() { return 0x5eed_cafeL; }
        };
        MapStatus status = MapOutputShim.mapStatus(LOCATION, new long[] {10, 20}, 1L, fixed);
        boolean hasChecksum;
        try {
            MapStatus.class.getMethod("checksumValue");
            hasChecksum = true;
        } catch (NoSuchMethodException e) {
            hasChecksum = false;
        }
        assertEquals(hasChecksum, MapOutputShim.ROW_CHECKSUMS, "the shim of another line was compiled in");
        if (hasChecksum) {
            assertEquals(0x5eed_cafeL, (long) MapStatus.class.getMethod("checksumValue").invoke(status));
            MapStatus none = MapOutputShim.mapStatus(LOCATION, new long[] {10, 20}, 1L, null);
            assertEquals(0L, (long) MapStatus.class.getMethod("checksumValue").invoke(none));
        }
    }
}

package org.rpmp.shuffle;

import org.apache.spark.Aggregator;
import org.apache.spark.Partitioner;
import org.apache.spark.ShuffleDependency;
import org.apache.spark.TaskContext;
import org.apache.spark.scheduler.MapStatus;
import org.apache.spark.scheduler.MapStatus$;
import org.apache.spark.serializer.Serializer;
import org.apache.spark.shuffle.checksum.RowBasedChecksum;
import org.apache.spark.storage.BlockManagerId;
import org.apache.spark.util.collection.ExternalSorter;
import scala.Option;
import scala.math.Ordering;

/**
 * Map output on Spark 4.1 and later: a shuffle may ask for row-based checksums
 * (ShuffleDependency.rowBasedChecksums), which the writer feeds, the map-side-combine sorter takes and the
 * MapStatus carries. Each src/shims/map-output-* folder has this class with these methods; a Spark line's
 * profile in the pom compiles one of them.
 */
final class MapOutputShim {
    /** Whether this line's MapStatus carries a row-based checksum. */
    static final boolean ROW_CHECKSUMS = true;

    private MapOutputShim() {}

    private static final class Rows extends RowChecksums {
        final RowBasedChecksum[] checksums;

        Rows(RowBasedChecksum[] checksums) {
            this.checksums = checksums;
        }

        @Override
        void update(int partition, Object key, Object value) {
            checksums[partition].update(key, value);
        }

        @Override
        long value() {
            return RowBasedChecksum.getAggregatedChecksumValue(checksums);
        }
    }

    static RowChecksums rowChecksums(ShuffleDependency<?, ?, ?> dep) {
        RowBasedChecksum[] checksums = dep.rowBasedChecksums();
        return checksums == null || checksums.length == 0 ? null : new Rows(checksums);
    }

    static MapStatus mapStatus(BlockManagerId location, long[] partitionLengths, long mapId, RowChecksums checksums) {
        return MapStatus$.MODULE$.apply(location, partitionLengths, mapId, checksums == null ? 0 : checksums.value());
    }

    static <K, V, C> ExternalSorter<K, V, C> sorter(TaskContext context, Option<Aggregator<K, V, C>> aggregator,
                                                   Option<Partitioner> partitioner, Option<Ordering<K>> ordering,
                                                   Serializer serializer, RowChecksums checksums) {
        RowBasedChecksum[] rows = checksums instanceof Rows ? ((Rows) checksums).checksums
            : ExternalSorter.$lessinit$greater$default$6();
        return new ExternalSorter<>(context, aggregator, partitioner, ordering, serializer, rows);
    }
}

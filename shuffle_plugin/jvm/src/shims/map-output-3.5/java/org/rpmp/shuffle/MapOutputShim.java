package org.rpmp.shuffle;

import org.apache.spark.Aggregator;
import org.apache.spark.Partitioner;
import org.apache.spark.ShuffleDependency;
import org.apache.spark.TaskContext;
import org.apache.spark.scheduler.MapStatus;
import org.apache.spark.scheduler.MapStatus$;
import org.apache.spark.serializer.Serializer;
import org.apache.spark.storage.BlockManagerId;
import org.apache.spark.util.collection.ExternalSorter;
import scala.Option;
import scala.math.Ordering;

/**
 * Map output on Spark 3.5 and 4.0: no row-based checksums, so a MapStatus of (location, sizes, map id) and an
 * ExternalSorter of five arguments. Each src/shims/map-output-* folder has this class with these methods;
 * a Spark line's profile in the pom compiles one of them.
 */
final class MapOutputShim {
    /** Whether this line's MapStatus carries a row-based checksum. */
    static final boolean ROW_CHECKSUMS = false;

    private MapOutputShim() {}

    static RowChecksums rowChecksums(ShuffleDependency<?, ?, ?> dep) {
        return null;
    }

    static MapStatus mapStatus(BlockManagerId location, long[] partitionLengths, long mapId, RowChecksums checksums) {
        return MapStatus$.MODULE$.apply(location, partitionLengths, mapId);
    }

    static <K, V, C> ExternalSorter<K, V, C> sorter(TaskContext context, Option<Aggregator<K, V, C>> aggregator,
                                                   Option<Partitioner> partitioner, Option<Ordering<K>> ordering,
                                                   Serializer serializer, RowChecksums checksums) {
        return new ExternalSorter<>(context, aggregator, partitioner, ordering, serializer);
    }
}

package org.rpmp.shuffle;

/**
 * A map task's row-based checksums, where the Spark line has them (4.1 and later: the writer feeds every
 * record to its partition's checksum and the MapStatus carries the aggregate, so that Spark can tell a
 * retried map task whose output differs from the first attempt's). Made and consumed by MapOutputShim only;
 * null where the line or the shuffle has none.
 */
abstract class RowChecksums {
    /** Adds one record of partition {@code partition}. */
    abstract void update(int partition, Object key, Object value);

    /** The aggregate over all partitions, for the MapStatus. */
    abstract long value();
}

package org.rpmp.shuffle;

import java.io.IOException;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;
import org.apache.spark.Partitioner;
import org.apache.spark.ShuffleDependency;
import org.apache.spark.SparkEnv;
import org.apache.spark.TaskContext;
import org.apache.spark.scheduler.MapStatus;
import org.apache.spark.shuffle.ShuffleWriteMetricsReporter;
import org.apache.spark.shuffle.ShuffleWriter;
import org.apache.spark.util.collection.ExternalSorter;
import org.rpmp.client.SegmentPusher;
import scala.Option;
import scala.Product2;
import scala.Tuple2;
import scala.collection.Iterator;

/**
 * Writes one map task's output to RPMP: records are partitioned and serialized at once into per-partition
 * segments (SegmentBuffers), segments are pushed as they fill (SegmentPusher), the last one of each
 * partition marked final (SEQ_LAST; an empty one when the data already left), and the task ends with
 * MAP_END to every node it pushed to (counting every segment, empty final ones included). The MapStatus carries the real pushed bytes per partition and the
 * task attempt id as mapId, which is how readers tell committed attempts from retried or speculative ones.
 */
final class RpmpShuffleWriter<K, V, C> extends ShuffleWriter<K, V> {
    private static final Logger LOG = LogManager.getLogger(RpmpShuffleWriter.class);

    private final RpmpShuffleHandle<K, V, C> handle;
    private final ShuffleDependency<K, V, C> dep;
    private final long mapId;
    private final TaskContext context;
    private final ShuffleWriteMetricsReporter metrics;
    private final RpmpShuffleManager manager;
    private final SegmentPusher pusher;
    private SegmentBuffers buffers;
    private long[] partitionLengths = new long[0];
    private MapStatus mapStatus;
    private boolean stopping;

    RpmpShuffleWriter(RpmpShuffleHandle<K, V, C> handle, long mapId, TaskContext context,
                      ShuffleWriteMetricsReporter metrics, RpmpShuffleManager manager) {
        this.handle = handle;
        this.dep = handle.dependency();
        this.mapId = mapId;
        this.context = context;
        this.metrics = metrics;
        this.manager = manager;
        // The map index is the task's partition; mapId is Spark's task attempt id (unique per attempt).
        this.pusher = new SegmentPusher(handle.ref(), manager.pool(), context.partitionId(), mapId, manager.conf().pushRetries,
            manager.conf().pushRetryWaitMs);
        // Whatever path the task takes out (failure before stop, kill), its connections are not reused:
        // acks may still be on the way. After a normal finish the pusher holds none and this is a no-op.
        context.addTaskCompletionListener((org.apache.spark.util.TaskCompletionListener) ctx -> pusher.abort());
    }

    @Override
    public void write(Iterator<Product2<K, V>> records) throws IOException {
        buffers = new SegmentBuffers(handle.numPartitions(), dep.serializer().newInstance(),
            SparkEnv.get().serializerManager(), pusher, manager.segmentMemory(), handle.shuffleId(), mapId,
            manager.conf().pushSize, manager.conf().pushMemory);
        long recordsWritten = 0;
        RowChecksums checksums = MapOutputShim.rowChecksums(dep);
        if (dep.mapSideCombine()) {
            recordsWritten = writeCombined(records, checksums);
        } else {
            Partitioner partitioner = dep.partitioner();
            while (records.hasNext()) {
                Product2<K, V> r = records.next();
                int p = partitioner.getPartition(r._1());
                if (checksums != null) checksums.update(p, r._1(), r._2());
                buffers.write(p, r._1(), r._2());
                recordsWritten++;
            }
        }
        buffers.flushAll();
        pusher.finish();
        partitionLengths = buffers.partitionLengths();

        metrics.incRecordsWritten(recordsWritten);
        metrics.incBytesWritten(pusher.bytesPushed());
        metrics.incWriteTime(pusher.pushNanos());
        ShuffleCounters counters = handle.counters();
        if (counters != null) {
            counters.bytesPushed.add(pusher.bytesPushed());
            counters.segmentsPushed.add(pusher.segments());
            counters.recordsWritten.add(recordsWritten);
            counters.pushTimeNs.add(pusher.pushNanos());
        }
        mapStatus = MapOutputShim.mapStatus(manager.mapStatusLocation(handle.shuffleId()), partitionLengths, mapId,
            checksums);
        if (LOG.isDebugEnabled()) {
            LOG.debug("map {} attempt {} of shuffle {}: {} records, {} bytes in {} segments", context.partitionId(), mapId,
                handle.shuffleId(), recordsWritten, pusher.bytesPushed(), pusher.segments());
        }
    }

    /** Map-side combine through Spark's ExternalSorter (it spills), then one partition after the other. */
    private long writeCombined(Iterator<Product2<K, V>> records, RowChecksums checksums) throws IOException {
        if (!dep.aggregator().isDefined()) throw new IllegalStateException("map-side combine without an aggregator");
        ExternalSorter<K, V, C> sorter = MapOutputShim.sorter(context, dep.aggregator(), Option.apply(dep.partitioner()),
            Option.empty(), dep.serializer(), checksums);
        long n = 0;
        try {
            sorter.insertAll(records);
            Iterator<Tuple2<Object, Iterator<Product2<K, C>>>> parts = sorter.partitionedIterator();
            while (parts.hasNext()) {
                Tuple2<Object, Iterator<Product2<K, C>>> part = parts.next();
                int p = (Integer) part._1();
                Iterator<Product2<K, C>> it = part._2();
                while (it.hasNext()) {
                    Product2<K, C> r = it.next();
                    buffers.write(p, r._1(), r._2());
                    n++;
                }
                // The sorter yields each partition once: its open segment is the final one (SEQ_LAST) and
                // leaves now instead of waiting in memory for the other partitions.
                buffers.finish(p);
            }
            // What Spark's SortShuffleWriter reports for its sorter, so the UI shows combine spills.
            context.taskMetrics().incMemoryBytesSpilled(sorter.memoryBytesSpilled());
            context.taskMetrics().incDiskBytesSpilled(sorter.diskBytesSpilled());
            context.taskMetrics().incPeakExecutionMemory(sorter.peakMemoryUsedBytes());
        } finally {
            sorter.stop();
        }
        return n;
    }

    @Override
    public Option<MapStatus> stop(boolean success) {
        if (stopping) return Option.empty();
        stopping = true;
        if (success && mapStatus != null) return Option.apply(mapStatus);
        if (buffers != null) buffers.discard();
        pusher.abort();
        return Option.empty();
    }

    @Override
    public long[] getPartitionLengths() { return partitionLengths; }
}

package org.rpmp.shuffle;

import java.io.ByteArrayInputStream;
import java.io.InputStream;
import java.util.HashMap;
import java.util.Map;
import java.util.NoSuchElementException;

import org.apache.spark.Aggregator;
import org.apache.spark.InterruptibleIterator;
import org.apache.spark.MapOutputTracker;
import org.apache.spark.ShuffleDependency;
import org.apache.spark.SparkEnv;
import org.apache.spark.TaskContext;
import org.apache.spark.serializer.SerializerInstance;
import org.apache.spark.serializer.SerializerManager;
import org.apache.spark.shuffle.FetchFailedException;
import org.apache.spark.shuffle.ShuffleReadMetricsReporter;
import org.apache.spark.shuffle.ShuffleReader;
import org.apache.spark.storage.BlockId;
import org.apache.spark.storage.BlockManagerId;
import org.apache.spark.storage.ShuffleBlockBatchId;
import org.apache.spark.storage.ShuffleBlockId;
import org.apache.spark.util.CompletionIterator$;
import org.apache.spark.util.collection.ExternalSorter;
import org.rpmp.client.MissingDataException;
import org.rpmp.client.Protocol;
import org.rpmp.client.SegmentPrefetcher;
import scala.Function1;
import scala.Option;
import scala.Product2;
import scala.Tuple2;
import scala.Tuple3;
import scala.collection.Iterator;
import scala.math.Ordering;
import scala.runtime.BoxedUnit;

/**
 * Reads reduce partitions [startPartition, endPartition) written by map indices [startMapIndex, endMapIndex)
 * from RPMP: the committed attempts come from the MapOutputTracker, each partition is fetched (with
 * fallback) by a PartitionFetcher, each segment is decoded with Spark's wrapStream and the dependency's
 * serializer. Aggregation and key ordering follow Spark's own BlockStoreShuffleReader; a partition that
 * cannot be read completely is a FetchFailedException, so Spark re-runs the map stage.
 */
final class RpmpShuffleReader<K, C> implements ShuffleReader<K, C> {
    private final RpmpShuffleHandle<K, ?, C> handle;
    private final ShuffleDependency<K, ?, C> dep;
    private final int startMapIndex;
    private final int endMapIndex;
    private final int startPartition;
    private final int endPartition;
    private final TaskContext context;
    private final ShuffleReadMetricsReporter metrics;
    private final RpmpShuffleManager manager;

    RpmpShuffleReader(RpmpShuffleHandle<K, ?, C> handle, int startMapIndex, int endMapIndex, int startPartition,
                      int endPartition, TaskContext context, ShuffleReadMetricsReporter metrics,
                      RpmpShuffleManager manager) {
        this.handle = handle;
        this.dep = handle.dependency();
        this.startMapIndex = startMapIndex;
        this.endMapIndex = endMapIndex;
        this.startPartition = startPartition;
        this.endPartition = endPartition;
        this.context = context;
        this.metrics = metrics;
        this.manager = manager;
    }

    @Override
    @SuppressWarnings({"unchecked", "rawtypes"})
    public Iterator<Product2<K, C>> read() {
        Map<Integer, Map<Long, Integer>> committed = committedAttempts();
        RecordIterator records = new RecordIterator(committed);
        // A task that stops early (limit, failure) still reports its counters and drops a half-read stream.
        context.addTaskCompletionListener(ctx -> {
            records.close();
            records.reportMetrics();
        });

        Iterator<Product2<K, C>> completion = CompletionIterator$.MODULE$.apply((Iterator) records, () -> {
            records.reportMetrics();
            context.taskMetrics().mergeShuffleReadMetrics();
            return BoxedUnit.UNIT;
        });
        Iterator<Product2<K, C>> interruptible = new InterruptibleIterator<>(context, completion);

        Iterator<Product2<K, C>> result;
        Option<Aggregator<K, ?, C>> agg = (Option) dep.aggregator();
        if (dep.keyOrdering().isDefined()) {
            // Sort (and combine, if there is an aggregator) in one ExternalSorter pass, as Spark does.
            Option<Aggregator<K, Object, C>> sortAgg;
            if (agg.isDefined() && dep.mapSideCombine()) {
                scala.Function2<C, C, C> merge = agg.get().mergeCombiners();
                Function1<C, C> identity = c -> c;
                sortAgg = Option.apply(new Aggregator(identity, merge, merge));
            } else {
                sortAgg = (Option) agg;
            }
            Option<Ordering<K>> ordering = (Option) dep.keyOrdering();
            ExternalSorter<K, Object, C> sorter = MapOutputShim.sorter(context, sortAgg, Option.empty(), ordering,
                dep.serializer(), null);
            result = sorter.insertAllAndUpdateMetrics((Iterator) interruptible);
        } else if (agg.isDefined()) {
            Aggregator<K, Object, C> a = (Aggregator) agg.get();
            result = dep.mapSideCombine()
                ? (Iterator) a.combineCombinersByKey((Iterator) interruptible, context)
                : (Iterator) a.combineValuesByKey((Iterator) interruptible, context);
        } else {
            result = interruptible;
        }
        return result instanceof InterruptibleIterator ? result : new InterruptibleIterator<>(context, result);
    }

    /** Reduce partition -> (committed attempt id -> map index), for the blocks with data. */
    private Map<Integer, Map<Long, Integer>> committedAttempts() {
        MapOutputTracker tracker = SparkEnv.get().mapOutputTracker();
        Map<Integer, Map<Long, Integer>> out = new HashMap<>();
        Iterator<Tuple2<BlockManagerId, scala.collection.Seq<Tuple3<BlockId, Object, Object>>>> byLocation =
            tracker.getMapSizesByExecutorId(handle.shuffleId(), startMapIndex, endMapIndex, startPartition, endPartition);
        while (byLocation.hasNext()) {
            Iterator<Tuple3<BlockId, Object, Object>> blocks = byLocation.next()._2().iterator();
            while (blocks.hasNext()) {
                Tuple3<BlockId, Object, Object> b = blocks.next();
                long size = (Long) b._2();
                int mapIndex = (Integer) b._3();
                if (size <= 0) continue;
                BlockId id = b._1();
                if (id instanceof ShuffleBlockId) {
                    ShuffleBlockId s = (ShuffleBlockId) id;
                    out.computeIfAbsent(s.reduceId(), k -> new HashMap<>()).put(s.mapId(), mapIndex);
                } else if (id instanceof ShuffleBlockBatchId) {
                    ShuffleBlockBatchId s = (ShuffleBlockBatchId) id;
                    for (int p = s.startReduceId(); p < s.endReduceId(); p++) {
                        out.computeIfAbsent(p, k -> new HashMap<>()).put(s.mapId(), mapIndex);
                    }
                } else {
                    throw new IllegalStateException("unexpected block " + id + " for an RPMP shuffle");
                }
            }
        }
        return out;
    }

    /**
     * Key-value pairs of every partition of the range, decoded segment by segment as a SegmentPrefetcher
     * delivers them. Runs on the task thread: Spark's read metrics and FetchFailedException are made here.
     */
    private final class RecordIterator extends scala.collection.AbstractIterator<Product2<Object, Object>> {
        private final SerializerInstance serializer = dep.serializer().newInstance();
        private final SerializerManager serializerManager = SparkEnv.get().serializerManager();
        private final SegmentPrefetcher prefetcher;
        private Iterator<Tuple2<Object, Object>> current;
        private long waitNanos;
        private long reportedWaitMs;
        private long bytes;
        private long segments;
        private long recordsRead;
        private boolean done;
        private boolean closed;
        private boolean reported;

        RecordIterator(Map<Integer, Map<Long, Integer>> committed) {
            int endMapWire = endMapIndex == Integer.MAX_VALUE ? Protocol.END_MAP_ALL : endMapIndex;
            prefetcher = new SegmentPrefetcher(handle.ref(), manager.pool(), manager.localPools(), committed, startPartition,
                endPartition, startMapIndex, endMapWire, manager.conf().fetchBuffer);
            prefetcher.start(manager.fetchThreads());
        }

        @Override
        public boolean hasNext() {
            while (current == null || !current.hasNext()) {
                SegmentPrefetcher.Item item = nextSegment();
                if (item == null) return false;
                current = decode(item);
            }
            return true;
        }

        @Override
        public Product2<Object, Object> next() {
            if (!hasNext()) throw new NoSuchElementException();
            recordsRead++;
            metrics.incRecordsRead(1);
            return current.next();
        }

        private SegmentPrefetcher.Item nextSegment() {
            if (done || closed) return null;
            long start = System.nanoTime();
            SegmentPrefetcher.Item item;
            try {
                item = prefetcher.take();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                close();
                throw Sneaky.rethrow(new java.io.InterruptedIOException("interrupted while fetching from RPMP"));
            } finally {
                waitNanos += System.nanoTime() - start;
                long waitMs = waitNanos / 1_000_000L;
                metrics.incFetchWaitTime(waitMs - reportedWaitMs);
                reportedWaitMs = waitMs;
            }
            if (item.failure() != null) throw fetchFailed(item.partition(), item.failure());
            if (item.isEnd()) {
                done = true;
                return null;
            }
            bytes += item.segment().payload().length;
            segments++;
            if (item.local()) {
                metrics.incLocalBytesRead(item.segment().payload().length);
                metrics.incLocalBlocksFetched(1);
            } else {
                metrics.incRemoteBytesRead(item.segment().payload().length);
                metrics.incRemoteBlocksFetched(1);
            }
            return item;
        }

        private Iterator<Tuple2<Object, Object>> decode(SegmentPrefetcher.Item item) {
            BlockId id = new ShuffleBlockId(handle.shuffleId(), item.segment().attempt(), item.partition());
            InputStream in = serializerManager.wrapStream(id, new ByteArrayInputStream(item.segment().payload()));
            return serializer.deserializeStream(in).asKeyValueIterator();
        }

        private RuntimeException fetchFailed(int partition, MissingDataException e) {
            close();
            FetchFailedException ffe = new FetchFailedException(manager.mapStatusLocation(handle.shuffleId()),
                handle.shuffleId(), e.attempt(), e.mapIndex(), partition, e.getMessage(), e.getCause() != null ? e.getCause() : e);
            return Sneaky.rethrow(ffe);
        }

        /** Adds this reader's numbers to the shuffle's counters, once (completion or task end). */
        void reportMetrics() {
            if (reported) return;
            reported = true;
            ShuffleCounters c = handle.counters();
            if (c != null) {
                c.bytesFetched.add(bytes);
                c.segmentsFetched.add(segments);
                c.recordsRead.add(recordsRead);
                c.fetchTimeNs.add(prefetcher.fetchNanos());
                c.fetchFallbacks.add(prefetcher.fallbacks());
            }
        }

        void close() {
            if (closed) return;
            closed = true;
            prefetcher.close();
        }
    }
}

package org.rpmp.client;

import java.io.IOException;
import java.util.ArrayDeque;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Future;

/**
 * Fetches a reader's partitions on a background thread, one after the other, into a queue bounded by
 * bytes, so that waiting for the network overlaps the task thread's deserialization (Spark's own reader
 * does the same with spark.reducer.maxSizeInFlight). The task thread alone touches Spark's metrics and
 * builds FetchFailedExceptions (they register with the current TaskContext); this thread only moves bytes.
 */
public final class SegmentPrefetcher {
    /** One queue entry: a segment of a partition (local: read from a co-located pool file), a failure, or the end. */
    public record Item(int partition, SegmentRecord segment, boolean local, MissingDataException failure) {
        public boolean isEnd() { return segment == null && failure == null; }
    }

    private static final Item END = new Item(-1, null, false, null);

    private final ShuffleRef shuffle;
    private final ConnectionPool pool;
    private final LocalPools localPools;
    private final Map<Integer, Map<Long, Integer>> committed;
    private final int startPartition;
    private final int endPartition;
    private final int startMap;
    private final int endMap;
    private final long maxBytes;
    private final ArrayDeque<Item> queue = new ArrayDeque<>();
    private long queuedBytes;
    private boolean closed;
    private Future<?> task;
    // Written by the fetch thread, read by the task thread after END (through the queue's lock).
    private long fetchNanos;
    private long fallbacks;

    /**
     * committed: reduce partition -> (committed attempt -> map index); endMap is exclusive (Protocol.END_MAP_ALL:
     * no bound); localPools null reads every node with FETCH.
     */
    public SegmentPrefetcher(ShuffleRef shuffle, ConnectionPool pool, LocalPools localPools,
                             Map<Integer, Map<Long, Integer>> committed, int startPartition, int endPartition,
                             int startMap, int endMap, long maxBytes) {
        this.shuffle = shuffle;
        this.pool = pool;
        this.localPools = localPools;
        this.committed = committed;
        this.startPartition = startPartition;
        this.endPartition = endPartition;
        this.startMap = startMap;
        this.endMap = endMap;
        this.maxBytes = Math.max(1, maxBytes);
    }

    public void start(ExecutorService threads) {
        task = threads.submit(this::fetchAll);
    }

    private void fetchAll() {
        try {
            Item last = fetchPartitions();
            if (last != null) put(last);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();   // closed by the task: nobody waits for more
        }
    }

    /** Queues every segment; returns what ends the stream (END or the failure), null once closed. */
    private Item fetchPartitions() throws InterruptedException {
        PartitionFetcher fetcher = null;
        int partition = startPartition;
        try {
            for (; partition < endPartition; partition++) {
                Map<Long, Integer> expected = committed.get(partition);
                if (expected == null || expected.isEmpty()) continue;   // nobody wrote to it
                fetcher = new PartitionFetcher(shuffle, pool, localPools, partition, startMap, endMap, expected);
                try {
                    for (SegmentRecord r = fetcher.next(); r != null; r = fetcher.next()) {
                        if (!put(new Item(partition, r, fetcher.lastWasLocal(), null))) return null;
                    }
                } finally {
                    synchronized (this) {
                        fetchNanos += fetcher.fetchNanos();
                        fallbacks += fetcher.fallbacks();
                    }
                }
                fetcher = null;
            }
            return END;
        } catch (MissingDataException e) {
            return new Item(partition, null, false, e);
        } catch (IOException | RuntimeException e) {
            return new Item(partition, null, false, new MissingDataException(e.toString(), -1, -1, e));
        } finally {
            if (fetcher != null) fetcher.close();
        }
    }

    /** Queues an item, waiting while the queue holds maxBytes (one item always fits); false once closed. */
    private synchronized boolean put(Item item) throws InterruptedException {
        long size = item.segment() == null ? 0 : item.segment().payload().length;
        while (!closed && !queue.isEmpty() && queuedBytes + size > maxBytes) wait();
        if (closed) return false;
        queue.addLast(item);
        queuedBytes += size;
        notifyAll();
        return true;
    }

    /** The next item (blocking); END after the last segment. */
    public synchronized Item take() throws InterruptedException {
        while (queue.isEmpty() && !closed) wait();
        if (closed) return END;
        Item item = queue.pollFirst();
        if (item.segment() != null) queuedBytes -= item.segment().payload().length;
        notifyAll();
        return item;
    }

    public synchronized long fetchNanos() { return fetchNanos; }

    public synchronized long fallbacks() { return fallbacks; }

    /** Stops fetching (task ended early or failed) and drops what was queued. */
    public void close() {
        synchronized (this) {
            if (closed) return;
            closed = true;
            queue.clear();
            queuedBytes = 0;
            notifyAll();
        }
        // Interrupts a fetch blocked on the network; the fetch thread then drops its connection.
        if (task != null) task.cancel(true);
    }
}

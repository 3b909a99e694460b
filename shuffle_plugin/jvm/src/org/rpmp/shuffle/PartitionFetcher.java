package org.rpmp.shuffle;

import java.io.IOException;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;

/**
 * The verified records of one reduce partition, from the committed map attempts of a map-index range.
 *
 * <p>FETCH goes to the partition's primary first, then along the preference list. A map attempt counts as
 * complete once a node's stream ended normally and carried records of it: the writer sends all segments of
 * an (attempt, partition) to one node, so that node has them all. The next node is only asked for the
 * attempts still missing, and records already handed out are dropped by (attempt, seq), so a stream that
 * breaks in the middle can be resumed elsewhere without duplicates. A record whose payload does not match
 * its XXH64 counts as a failure of the node that sent it.
 */
final class PartitionFetcher {
    private static final Logger LOG = LogManager.getLogger(PartitionFetcher.class);

    /** Why a partition could not be read completely; the reader turns it into a FetchFailedException. */
    static final class MissingDataException extends IOException {
        private static final long serialVersionUID = 1L;
        final long attempt;
        final int mapIndex;

        MissingDataException(String message, long attempt, int mapIndex, Throwable cause) {
            super(message, cause);
            this.attempt = attempt;
            this.mapIndex = mapIndex;
        }
    }

    private final RpmpShuffleHandle<?, ?, ?> handle;
    private final ConnectionPool pool;
    private final int partition;
    private final int startMap;
    private final int endMap;
    private final Map<Long, Integer> expected;
    private final RecordFilter filter;
    private final Set<Long> complete = new HashSet<>();
    private final Set<Long> inStream = new HashSet<>();
    private int nodeCursor;
    private RpmpClient client;
    private RpmpClient.FetchStream stream;
    private IOException lastError;
    private boolean finished;
    private long fetchNanos;
    private int fallbacks;

    /** expected: committed attempt -> map index, for the attempts that wrote to this partition. */
    PartitionFetcher(RpmpShuffleHandle<?, ?, ?> handle, ConnectionPool pool, int partition, int startMap, int endMap,
                     Map<Long, Integer> expected) {
        this.handle = handle;
        this.pool = pool;
        this.partition = partition;
        this.startMap = startMap;
        this.endMap = endMap;
        this.expected = expected;
        this.filter = new RecordFilter(expected, startMap, endMap);
    }

    /** The next record to deserialize, or null when the partition is done. */
    SegmentRecord next() throws IOException {
        long start = System.nanoTime();
        try {
            return advance();
        } finally {
            fetchNanos += System.nanoTime() - start;
        }
    }

    private SegmentRecord advance() throws IOException {
        while (!finished) {
            if (stream == null && !openNextNode()) {
                finish();
                return null;
            }
            SegmentRecord r;
            try {
                r = stream.next();
            } catch (IOException e) {
                if (Thread.currentThread().isInterrupted()) throw e;   // the reader was closed: no fallback
                failNode(e);
                continue;
            }
            if (r == null) {
                endOfStream();
                continue;
            }
            if (!filter.isCommitted(r) || complete.contains(r.attempt)) continue;
            if (!r.checksumOk()) {
                failNode(new RpmpException(Protocol.CHECKSUM_MISMATCH, r + " does not match its XXH64", client.address()));
                continue;
            }
            inStream.add(r.attempt);
            if (filter.accept(r)) return r;
        }
        return null;
    }

    private boolean openNextNode() throws IOException {
        if (complete.size() >= expected.size()) return false;
        TreeSet<Long> missing = new TreeSet<>(expected.keySet());
        missing.removeAll(complete);
        long[] attempts = missing.stream().mapToLong(Long::longValue).toArray();
        Placement placement = handle.placement();
        while (nodeCursor < placement.prefLength()) {
            NodeInfo node = placement.preferred(partition, nodeCursor++);
            try {
                client = pool.borrow(node.host, node.port);
                stream = client.fetch(handle.app(), handle.shuffleId(), partition, startMap, endMap, attempts);
                inStream.clear();
                if (nodeCursor > 1) fallbacks++;
                return true;
            } catch (IOException e) {
                if (Thread.currentThread().isInterrupted()) throw e;
                failNode(e);
            }
        }
        return false;
    }

    private void endOfStream() {
        complete.addAll(inStream);
        pool.release(client);
        if (complete.size() < expected.size()) {
            LOG.info("RPMP node {} lacks {} of {} map outputs of shuffle {} partition {}; trying the next node",
                client.address(), expected.size() - complete.size(), expected.size(), handle.shuffleId(), partition);
        }
        client = null;
        stream = null;
    }

    private void failNode(IOException e) {
        String node = client != null ? client.address() : "?";
        LOG.warn("fetch of shuffle {} partition {} from RPMP node {} failed: {}", handle.shuffleId(), partition, node,
            e.toString());
        if (stream != null) stream.close();
        pool.discard(client);
        client = null;
        stream = null;
        if (lastError != null && lastError != e) e.addSuppressed(lastError);
        lastError = e;
    }

    /** Every expected attempt must be complete, with its segments numbered 0..n-1 without holes. */
    private void finish() throws MissingDataException {
        finished = true;
        for (Map.Entry<Long, Integer> e : expected.entrySet()) {
            long attempt = e.getKey();
            String problem = null;
            if (!complete.contains(attempt)) {
                problem = "no reachable RPMP node has the output of map " + e.getValue() + " (attempt " + attempt + ")";
            } else if (filter.hasGaps(attempt)) {
                problem = "segments of map " + e.getValue() + " (attempt " + attempt + ") are missing";
            }
            if (problem != null) {
                throw new MissingDataException(problem + " for shuffle " + handle.shuffleId() + " partition " + partition,
                    attempt, e.getValue(), lastError);
            }
        }
    }

    /** Drops the connection of an unfinished stream (task ended early). */
    void close() {
        if (stream != null) stream.close();
        if (client != null) pool.discard(client);
        client = null;
        stream = null;
        finished = true;
    }

    long fetchNanos() { return fetchNanos; }

    int fallbacks() { return fallbacks; }
}

package org.rpmp.shuffle;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;

/**
 * The verified records of one reduce partition, from the committed map attempts of a map-index range.
 *
 * <p>Sources are tried in the partition's preference order: the primary first, then replicas and spares.
 * A node on this host is read one-sided from its pool file (PARTITION_INFO, then positional reads),
 * falling back to FETCH from the same node if that fails; other nodes are read with FETCH.
 *
 * <p>A map attempt counts as complete once a source ended normally and carried records of it: the writer
 * sends all segments of an (attempt, partition) to one node, so that node has them all. The next source
 * is only asked for the attempts still missing, and records already handed out are dropped by
 * (attempt, seq), so a source that breaks in the middle can be resumed elsewhere without duplicates. A
 * record whose payload does not match its XXH3 checksum counts as a failure of the source that gave it.
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
    private final LocalPools localPools;   // null: one-sided reads disabled
    private final int partition;
    private final int startMap;
    private final int endMap;
    private final Map<Long, Integer> expected;
    private final RecordFilter filter;
    private final Set<Long> complete = new HashSet<>();
    private final Set<Long> inSource = new HashSet<>();
    /** The node of the preference list being read, and whether its next source is FETCH (local read done). */
    private int nodeCursor;
    private boolean tcpNext;
    private String currentNode = "?";
    /** Nodes a source was opened on (or tried), in order: named when the partition cannot be read. */
    private final Set<String> tried = new LinkedHashSet<>();
    /** The last source failed or lacked data: the next one opened is a fallback. */
    private boolean movedOn;
    private RecordSource source;
    /** Records of the open source handed out (new ones, not duplicates). */
    private long acceptedFromSource;
    private IOException lastError;
    private boolean finished;
    private boolean lastLocal;
    private long fetchNanos;
    private int fallbacks;

    /** expected: committed attempt -> map index, for the attempts that wrote to this partition. */
    PartitionFetcher(RpmpShuffleHandle<?, ?, ?> handle, ConnectionPool pool, LocalPools localPools, int partition,
                     int startMap, int endMap, Map<Long, Integer> expected) {
        this.handle = handle;
        this.pool = pool;
        this.localPools = localPools;
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
            if (source == null && !openNextSource()) {
                finish();
                return null;
            }
            SegmentRecord.Header h;
            byte[] payload = null;
            try {
                h = source.nextHeader();
                if (h != null && wanted(h)) payload = source.payload();
            } catch (IOException e) {
                if (Thread.currentThread().isInterrupted()) throw e;   // the reader was closed: no fallback
                failSource(e);
                continue;
            }
            if (h == null) {
                endOfSource();
                continue;
            }
            if (payload == null) continue;
            SegmentRecord r = new SegmentRecord(h.mapIndex, h.attempt, h.seq, h.checksum, payload);
            if (!r.checksumOk()) {
                failSource(new RpmpException(Protocol.CHECKSUM_MISMATCH, r + " does not match its XXH3 checksum", source.address()));
                continue;
            }
            if (filter.accept(r)) {
                lastLocal = source.isLocal();
                acceptedFromSource++;
                return r;
            }
        }
        return null;
    }

    /** Notes a committed attempt's presence; true if the payload is needed (not handed out yet). */
    private boolean wanted(SegmentRecord.Header h) {
        if (!filter.isCommitted(h.mapIndex, h.attempt) || complete.contains(h.attempt)) return false;
        inSource.add(h.attempt);
        return filter.isNew(h.attempt, h.seq);
    }

    private boolean openNextSource() throws IOException {
        if (complete.size() >= expected.size()) return false;
        Placement placement = handle.placement();
        while (nodeCursor < placement.prefLength()) {
            if (movedOn) {
                fallbacks++;
                movedOn = false;
            }
            NodeInfo node = placement.preferred(partition, nodeCursor);
            boolean local = !tcpNext && localPools != null && localPools.isLocal(node.host);
            if (local) {
                tcpNext = true;          // if the pool file fails us, FETCH from the same node
            } else {
                nodeCursor++;            // FETCH is the last way to read this node
                tcpNext = false;
            }
            currentNode = node.address();
            tried.add(currentNode);
            RpmpClient client = null;
            try {
                client = pool.borrow(node.host, node.port);
                if (local) {
                    Responses.PartitionInfo info = client.partitionInfo(handle.app(), handle.shuffleId(), partition);
                    pool.release(client);
                    client = null;
                    FileChannel file = localPools.open(info.poolPath);
                    if (file == null) continue;
                    source = new LocalPoolSource(file, info.blocks, node.address());
                } else {
                    source = new TcpRecordSource(client, client.fetch(handle.app(), handle.shuffleId(), partition,
                        startMap, endMap, missingAttempts()));
                }
                inSource.clear();
                acceptedFromSource = 0;
                return true;
            } catch (IOException e) {
                if (Thread.currentThread().isInterrupted()) throw e;
                if (client != null) pool.release(client);
                failSource(e);
            }
        }
        return false;
    }

    private long[] missingAttempts() {
        TreeSet<Long> missing = new TreeSet<>(expected.keySet());
        missing.removeAll(complete);
        return missing.stream().mapToLong(Long::longValue).toArray();
    }

    private void endOfSource() {
        complete.addAll(inSource);
        if (source.isLocal()) {
            nodeCursor++;                // the pool file had all of this node's records: no FETCH from it
            tcpNext = false;
        }
        String from = source.address();
        source.close(pool);
        source = null;
        if (complete.size() < expected.size()) {
            movedOn = true;
            LOG.info("RPMP {} lacks {} of {} map outputs of shuffle {} partition {}; trying the next source",
                from, expected.size() - complete.size(), expected.size(), handle.shuffleId(), partition);
        }
    }

    private void failSource(IOException e) {
        String from = source != null ? source.address() : "node " + currentNode;
        // A FETCH that broke after handing out new records is asked again from the same node (for the attempts
        // still missing; what was handed out is dropped as duplicates): a node drops a reader that took nothing
        // for its send timeout, e.g. a slow reduce task with a full fetch buffer, and the node still has the
        // data. Each such retry must make progress, so a node that is gone is soon left behind.
        boolean again = source != null && !source.isLocal() && acceptedFromSource > 0;
        LOG.warn("reading shuffle {} partition {} from RPMP {} failed{}: {}", handle.shuffleId(), partition, from,
            again ? " (reading on from the same node)" : "", e.toString());
        if (again) {
            nodeCursor--;          // openNextSource reopens this node with FETCH
            tcpNext = true;
        }
        if (source != null) source.close(pool);
        source = null;
        movedOn = true;
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
                throw new MissingDataException(problem + " for shuffle " + handle.shuffleId() + " partition " + partition
                    + " (RPMP nodes tried: " + (tried.isEmpty() ? "none" : String.join(", ", tried))
                    + (lastError != null ? "; last error: " + lastError : "") + ")", attempt, e.getValue(), lastError);
            }
        }
    }

    /** Drops an unfinished source (task ended early). */
    void close() {
        if (source != null) source.close(pool);
        source = null;
        finished = true;
    }

    /** Whether the record returned last came from a co-located pool file. */
    boolean lastWasLocal() { return lastLocal; }

    long fetchNanos() { return fetchNanos; }

    /** Sources opened because an earlier one failed or lacked data. */
    int fallbacks() { return fallbacks; }
}

package org.rpmp.client;

import java.io.IOException;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;

/**
 * The verified records of one reduce partition, from the committed map attempts of a map-index range.
 *
 * <p>Sources are tried in the partition's preference order: the primary first, then replicas and spares.
 * A node on this host is read one-sided from its pool file and spill files (PARTITION_INFO, then positional
 * reads), falling back to FETCH from the same node if that fails; other nodes are read with FETCH.
 *
 * <p>A map attempt is complete only when its records prove it (PROTOCOL.md "Completeness"): the segment
 * indices 0..n-1 without a hole and SEQ_LAST on n-1 (RecordFilter). A source that ends, or fails, without
 * making an attempt complete leaves it missing, and the next source is asked for the attempts still
 * missing; records already handed out are dropped by (attempt, seq), so a source that broke or lost a tail
 * is resumed elsewhere without duplicates. A record whose payload does not match its XXH3 checksum, and a
 * FETCH the node answers with CORRUPT, are failures of the copy that source holds: the reader moves on to
 * the next source (for a co-located node: its pool file, then FETCH from it, which lets the node find and
 * quarantine the bad record, then the replica) and names that node in its log and, if no source has the
 * attempt whole, in the error. It never returns fewer records than the writer pushed.
 */
final class PartitionFetcher {
    private static final Logger LOG = LogManager.getLogger(PartitionFetcher.class);
    /** Attempts named in one source's outcome at most. */
    private static final int NAMED_ATTEMPTS = 3;

    private final ShuffleRef shuffle;
    private final ConnectionPool pool;
    private final LocalPools localPools;   // null: one-sided reads disabled
    private final int partition;
    private final int startMap;
    private final int endMap;
    private final Map<Long, Integer> expected;
    private final RecordFilter filter;
    /** Expected attempts whose records are all handed out (RecordFilter.isComplete). */
    private final Set<Long> complete = new HashSet<>();
    /** The node of the preference list being read, and whether its next source is FETCH (local read done). */
    private int nodeCursor;
    private boolean tcpNext;
    private String currentNode = "?";
    /** Every source opened (or tried), in order, with what came of it: named when the partition cannot be read. */
    private final List<String> outcomes = new ArrayList<>();
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
    PartitionFetcher(ShuffleRef shuffle, ConnectionPool pool, LocalPools localPools, int partition,
                     int startMap, int endMap, Map<Long, Integer> expected) {
        this.shuffle = shuffle;
        this.pool = pool;
        this.localPools = localPools;
        this.partition = partition;
        this.startMap = startMap;
        this.endMap = endMap;
        this.expected = expected;
        this.filter = new RecordFilter(expected, startMap, endMap);
    }

    /** The next record to deserialize (never an empty one), or null when the partition is done. */
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
            SegmentRecord r = new SegmentRecord(h.mapIndex(), h.attempt(), h.seq(), h.checksum(), payload);
            if (!r.checksumOk()) {
                failSource(new RpmpException(Protocol.CHECKSUM_MISMATCH, r + " of partition " + partition
                    + " fails its XXH3 checksum: the copy on " + source.address() + " is corrupt", source.address()));
                continue;
            }
            if (filter.accept(r)) {
                if (filter.isComplete(r.attempt())) complete.add(r.attempt());
                if (payload.length == 0) continue;   // an empty final segment: nothing to deserialize
                lastLocal = source.isLocal();
                acceptedFromSource++;
                return r;
            }
        }
        return null;
    }

    /** Whether the record's payload is needed: a committed attempt not complete yet, (attempt, seq) not handed out. */
    private boolean wanted(SegmentRecord.Header h) {
        return filter.isCommitted(h.mapIndex(), h.attempt()) && !complete.contains(h.attempt()) && filter.isNew(h.attempt(), h.seq());
    }

    private boolean openNextSource() throws IOException {
        if (complete.size() >= expected.size()) return false;
        Placement placement = shuffle.placement();
        while (nodeCursor < placement.prefLength()) {
            if (movedOn) {
                fallbacks++;
                movedOn = false;
            }
            NodeInfo node = placement.preferred(partition, nodeCursor);
            boolean local = !tcpNext && localPools != null && localPools.isLocal(node.host());
            if (local) {
                tcpNext = true;          // if the pool file fails us, FETCH from the same node
            } else {
                nodeCursor++;            // FETCH is the last way to read this node
                tcpNext = false;
            }
            currentNode = node.address();
            RpmpClient client = null;
            try {
                client = pool.borrow(node.host(), node.port());
                if (local) {
                    Responses.PartitionInfo info = client.partitionInfo(shuffle.app(), shuffle.shuffleId(), partition);
                    pool.release(client);
                    client = null;
                    // null: a file (the pool file, or a spill file a block is in) is not readable here
                    source = LocalPoolSource.open(localPools, info, node.address());
                    if (source == null) continue;
                } else {
                    source = new TcpRecordSource(client, client.fetch(shuffle.app(), shuffle.shuffleId(), partition,
                        startMap, endMap, missingAttempts()));
                }
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

    /** The expected attempts not complete yet and what was found of them, for logs and errors. */
    private String missingSummary() {
        StringBuilder sb = new StringBuilder();
        int named = 0;
        int missing = 0;
        for (long attempt : missingAttempts()) {
            missing++;
            if (named++ >= NAMED_ATTEMPTS) continue;
            sb.append(sb.length() == 0 ? "" : "; ").append("map ").append(expected.get(attempt)).append(" (attempt ")
                .append(attempt).append("): ").append(filter.describe(attempt));
        }
        if (missing > NAMED_ATTEMPTS) sb.append("; and ").append(missing - NAMED_ATTEMPTS).append(" more");
        return sb.toString();
    }

    private void endOfSource() {
        if (source.isLocal()) {
            nodeCursor++;                // the pool file had all of this node's records: no FETCH from it
            tcpNext = false;
        }
        String from = source.address();
        source.close(pool);
        source = null;
        if (complete.size() < expected.size()) {
            movedOn = true;
            int missing = expected.size() - complete.size();
            String what = "ended without the whole output of " + missing + " of " + expected.size() + " map attempts: "
                + missingSummary();
            outcomes.add(from + ": " + what);
            LOG.warn("RPMP {} {} (shuffle {} partition {}); trying the next source", from, what, shuffle.shuffleId(),
                partition);
        } else {
            outcomes.add(from + ": complete");
        }
    }

    /** A record of the source's copy failed its checksum, or the node said its copy is corrupt. */
    private static boolean corruptCopy(IOException e) {
        if (!(e instanceof RpmpException)) return false;
        int code = ((RpmpException) e).code();
        return code == Protocol.CHECKSUM_MISMATCH || code == Protocol.CORRUPT;
    }

    private void failSource(IOException e) {
        String from = source != null ? source.address() : currentNode;
        // A FETCH whose connection broke after handing out new records is asked again from the same node (for
        // the attempts still missing; what was handed out is dropped as duplicates): a node drops a reader that
        // took nothing for its send timeout, e.g. a slow reduce task with a full fetch buffer, and the node
        // still has the data. Each such retry must make progress, so a node that is gone is soon left behind.
        // An answer of the node (an error frame, a bad record, a corrupt copy) is not retried there.
        boolean again = source != null && !source.isLocal() && acceptedFromSource > 0 && !(e instanceof RpmpException);
        if (corruptCopy(e)) {
            LOG.error("RPMP {} holds a corrupt copy of shuffle {} partition {}: {}; reading it from the next source",
                from, shuffle.shuffleId(), partition, e.getMessage());
        } else {
            LOG.warn("reading shuffle {} partition {} from RPMP {} failed{}: {}", shuffle.shuffleId(), partition, from,
                again ? " (reading on from the same node)" : "", e.toString());
        }
        outcomes.add(from + ": " + (corruptCopy(e) ? "corrupt copy: " : "failed: ") + e.getMessage());
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

    /** Every expected attempt must be complete: indices 0..n-1, no hole, SEQ_LAST on n-1. */
    private void finish() throws MissingDataException {
        finished = true;
        for (Map.Entry<Long, Integer> e : expected.entrySet()) {
            long attempt = e.getKey();
            if (complete.contains(attempt)) continue;
            String tried = outcomes.isEmpty() ? "none" : String.join("; ", outcomes);
            throw new MissingDataException("no RPMP node has the whole output of shuffle " + shuffle.shuffleId()
                + " partition " + partition + ": " + missingSummary() + " (RPMP sources tried: " + tried + ")",
                attempt, e.getValue(), lastError);
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

    /** Each source opened or tried so far with what came of it ("host:port (pool file): corrupt copy: ..."). */
    List<String> outcomes() { return new ArrayList<>(outcomes); }
}

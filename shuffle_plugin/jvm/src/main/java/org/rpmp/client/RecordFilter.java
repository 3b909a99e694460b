package org.rpmp.client;

import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;

/**
 * Keeps the records a reader may use: those of the committed attempt of each map index in the requested
 * range, each (attempt, seq) once. Retries, speculative attempts, replicas and failover re-reads can
 * therefore never double-count or mix in output of an attempt Spark did not commit.
 *
 * <p>It also proves completeness (PROTOCOL.md "Completeness"): an attempt's records for the partition are
 * whole only with the indices 0..n-1 (index = seq & SEQ_INDEX), no hole, and exactly one SEQ_LAST, on n-1.
 * Segment numbering alone cannot show a lost tail; the final segment's flag can.
 */
final class RecordFilter {
    /** The committed attempt (Spark's mapId = task attempt id) of each map index. */
    private final Map<Long, Integer> committed;
    private final long startMap;
    private final long endMap;
    private final Set<SegKey> seen = new HashSet<>();
    /** attempt -> what was kept of it. */
    private final Map<Long, Kept> perAttempt = new HashMap<>();

    private static final class Kept {
        long segments;
        long highest = -1;     // highest index kept
        long last = -1;        // index of the SEQ_LAST segment kept (-1: none yet)
        int lasts;             // SEQ_LAST segments kept (more than one: a broken writer or stream)
    }

    private record SegKey(long attempt, int seq) {}

    /** endMap is exclusive; pass Protocol.END_MAP_ALL (as an unsigned 0xFFFFFFFF) for no bound. */
    RecordFilter(Map<Long, Integer> committedAttemptToMapIndex, int startMap, int endMap) {
        this.committed = new HashMap<>(committedAttemptToMapIndex);
        this.startMap = startMap & 0xFFFFFFFFL;
        this.endMap = endMap & 0xFFFFFFFFL;
    }

    /** Whether the attempt is the committed one of its map index, in range (ignoring duplicates). */
    boolean isCommitted(int mapIndex, long attempt) {
        long m = mapIndex & 0xFFFFFFFFL;
        if (m < startMap || m >= endMap) return false;
        Integer idx = committed.get(attempt);
        return idx != null && (idx & 0xFFFFFFFFL) == m;
    }

    boolean isCommitted(SegmentRecord r) { return isCommitted(r.mapIndex(), r.attempt()); }

    /** Whether (attempt, seq) was not accepted yet (seq with its SEQ_LAST bit: the flag is part of the identity). */
    boolean isNew(long attempt, int seq) { return !seen.contains(new SegKey(attempt, seq)); }

    /** True the first time a committed (attempt, seq) is offered, false for everything else. */
    boolean accept(SegmentRecord r) {
        if (!isCommitted(r) || !seen.add(new SegKey(r.attempt(), r.seq()))) return false;
        Kept k = perAttempt.computeIfAbsent(r.attempt(), a -> new Kept());
        long index = Protocol.seqIndex(r.seq());
        k.segments++;
        k.highest = Math.max(k.highest, index);
        if (Protocol.isLast(r.seq())) {
            k.lasts++;
            k.last = index;
        }
        return true;
    }

    /** Whether the attempt's kept segments are its whole output: 0..n-1, no hole, one SEQ_LAST, on n-1. */
    boolean isComplete(long attempt) {
        Kept k = perAttempt.get(attempt);
        return k != null && k.lasts == 1 && k.last == k.highest && k.segments == k.highest + 1;
    }

    /** Whether the kept segments of an attempt skip an index (a segment is missing before the highest one). */
    boolean hasGaps(long attempt) {
        Kept k = perAttempt.get(attempt);
        return k != null && k.segments != k.highest + 1;
    }

    /** Segments kept so far of an attempt. */
    long segmentsOf(long attempt) {
        Kept k = perAttempt.get(attempt);
        return k == null ? 0 : k.segments;
    }

    /** What is wrong with an attempt's kept segments, for error messages ("complete" if nothing). */
    String describe(long attempt) {
        Kept k = perAttempt.get(attempt);
        if (k == null) return "no segment found";
        if (isComplete(attempt)) return "complete (" + k.segments + " segments)";
        StringBuilder sb = new StringBuilder();
        sb.append(k.segments).append(" segment").append(k.segments == 1 ? "" : "s").append(" up to index ")
            .append(k.highest);
        if (k.segments != k.highest + 1) sb.append(", with holes");
        if (k.lasts == 0) {
            sb.append(", no final segment (lost tail)");
        } else if (k.lasts > 1) {
            sb.append(", ").append(k.lasts).append(" final segments");
        } else if (k.last != k.highest) {
            sb.append(", final segment ").append(k.last).append(" is not the highest");
        }
        return sb.toString();
    }
}

package org.rpmp.shuffle;

import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;

/**
 * Keeps the records a reader may use: those of the committed attempt of each map index in the requested
 * range, each (attempt, seq) once. Retries, speculative attempts, replicas and failover re-reads can
 * therefore never double-count or mix in output of an attempt Spark did not commit.
 */
public final class RecordFilter {
    /** The committed attempt (Spark's mapId = task attempt id) of each map index. */
    private final Map<Long, Integer> committed;
    private final long startMap;
    private final long endMap;
    private final Set<SegKey> seen = new HashSet<>();
    /** attempt -> {segments kept, highest seq kept}: seqs run 0..n-1, so a hole means lost data. */
    private final Map<Long, long[]> perAttempt = new HashMap<>();

    private static final class SegKey {
        final long attempt;
        final int seq;

        SegKey(long attempt, int seq) {
            this.attempt = attempt;
            this.seq = seq;
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof SegKey && ((SegKey) o).attempt == attempt && ((SegKey) o).seq == seq;
        }

        @Override
        public int hashCode() { return Long.hashCode(attempt * 31 + seq); }
    }

    /** endMap is exclusive; pass Protocol.END_MAP_ALL (as an unsigned 0xFFFFFFFF) for no bound. */
    public RecordFilter(Map<Long, Integer> committedAttemptToMapIndex, int startMap, int endMap) {
        this.committed = new HashMap<>(committedAttemptToMapIndex);
        this.startMap = startMap & 0xFFFFFFFFL;
        this.endMap = endMap & 0xFFFFFFFFL;
    }

    /** Whether the attempt is the committed one of its map index, in range (ignoring duplicates). */
    public boolean isCommitted(int mapIndex, long attempt) {
        long m = mapIndex & 0xFFFFFFFFL;
        if (m < startMap || m >= endMap) return false;
        Integer idx = committed.get(attempt);
        return idx != null && (idx & 0xFFFFFFFFL) == m;
    }

    public boolean isCommitted(SegmentRecord r) { return isCommitted(r.mapIndex, r.attempt); }

    /** Whether (attempt, seq) was not accepted yet. */
    public boolean isNew(long attempt, int seq) { return !seen.contains(new SegKey(attempt, seq)); }

    /** True the first time a committed (attempt, seq) is offered, false for everything else. */
    public boolean accept(SegmentRecord r) {
        if (!isCommitted(r) || !seen.add(new SegKey(r.attempt, r.seq))) return false;
        long[] s = perAttempt.computeIfAbsent(r.attempt, k -> new long[] {0, -1});
        s[0]++;
        s[1] = Math.max(s[1], r.seq & 0xFFFFFFFFL);
        return true;
    }

    /** Whether the kept segments of an attempt skip a seq (a segment is missing before the highest one). */
    public boolean hasGaps(long attempt) {
        long[] s = perAttempt.get(attempt);
        return s != null && s[0] != s[1] + 1;
    }

    /** Segments kept so far of an attempt. */
    public long segmentsOf(long attempt) {
        long[] s = perAttempt.get(attempt);
        return s == null ? 0 : s[0];
    }
}

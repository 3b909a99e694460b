package org.rpmp.shuffle;

/** MAP_END: what one map attempt pushed to one partition (payload bytes, record headers excluded). */
public final class PartCount {
    public final int partition;
    public final int segments;
    public final long bytes;

    public PartCount(int partition, int segments, long bytes) {
        this.partition = partition;
        this.segments = segments;
        this.bytes = bytes;
    }

    @Override
    public String toString() { return "(" + partition + ", " + segments + ", " + bytes + ")"; }
}

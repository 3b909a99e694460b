package org.rpmp.client;

/** MAP_END: what one map attempt pushed to one partition (payload bytes, record headers excluded). */
public record PartCount(int partition, int segments, long bytes) {
    @Override
    public String toString() { return "(" + partition + ", " + segments + ", " + bytes + ")"; }
}

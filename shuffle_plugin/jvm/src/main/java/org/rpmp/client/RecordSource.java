package org.rpmp.client;

import java.io.IOException;

/**
 * Where a PartitionFetcher reads one node's records of a partition from: a FETCH stream over TCP, or the
 * node's pool file when the node runs on this host. Headers come first, so a reader that will drop a
 * record (other attempt, duplicate) need not copy its payload.
 */
interface RecordSource {
    /** The next record's header, or null when the node has no more. */
    SegmentRecord.Header nextHeader() throws IOException;

    /** The payload of the record whose header was returned last. */
    byte[] payload() throws IOException;

    /** Whether the source ended normally (every record of the node was offered). */
    boolean completed();

    /** True for reads of a co-located node's pool file. */
    boolean isLocal();

    String address();

    /** Ends the source; returns its connection to the pool if the byte stream is in sync. */
    void close(ConnectionPool pool);
}

package org.rpmp.client;

import java.io.IOException;

/** A FETCH over TCP: the node streams whole records, already filtered by map range and attempts. */
final class TcpRecordSource implements RecordSource {
    private final RpmpClient client;
    private final RpmpClient.FetchStream stream;
    private SegmentRecord current;

    TcpRecordSource(RpmpClient client, RpmpClient.FetchStream stream) {
        this.client = client;
        this.stream = stream;
    }

    @Override
    public SegmentRecord.Header nextHeader() throws IOException {
        current = stream.next();
        if (current == null) return null;
        return new SegmentRecord.Header(current.mapIndex(), current.attempt(), current.seq(), current.payload().length,
            current.checksum());
    }

    @Override
    public byte[] payload() { return current.payload(); }

    @Override
    public boolean completed() { return stream.completed(); }

    @Override
    public boolean isLocal() { return false; }

    @Override
    public String address() { return client.address(); }

    @Override
    public void close(ConnectionPool pool) {
        stream.close();
        pool.release(client);   // kept only if the stream ended cleanly
    }
}

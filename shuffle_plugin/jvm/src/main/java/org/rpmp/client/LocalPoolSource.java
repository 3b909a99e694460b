package org.rpmp.client;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.util.List;

/**
 * One-sided read of a co-located node's partition: the node names the blocks (PARTITION_INFO) and the
 * records are copied straight out of its pool file, with no node CPU on the data path. A block can be
 * freed and reused while it is read (a delete), so every record header is validated and every kept
 * payload is checked against its XXH3 checksum after the copy; any inconsistency fails this source and the
 * reader falls back to FETCH.
 */
final class LocalPoolSource implements RecordSource {
    private final FileChannel file;
    private final List<long[]> blocks;   // {address, file_offset, used, sealed}
    private final String address;
    private final ByteBuffer header = ByteBuffer.allocate(Protocol.RECORD_HEADER_SIZE).order(ByteOrder.LITTLE_ENDIAN);
    private int block = -1;
    private long pos;
    private long blockEnd;
    private long payloadPos;
    private int payloadLen;
    private boolean completed;

    LocalPoolSource(FileChannel file, List<long[]> blocks, String address) throws IOException {
        this.file = file;
        this.blocks = blocks;
        this.address = address + " (pool file)";
        long size = file.size();
        for (long[] b : blocks) {
            if (b[1] < 0 || b[2] < 0 || b[1] + b[2] > size) {
                throw new RpmpException(Protocol.BAD_FRAME, "block at " + b[1] + "+" + b[2] + " outside the pool file", this.address);
            }
        }
    }

    @Override
    public SegmentRecord.Header nextHeader() throws IOException {
        while (block < 0 || pos == blockEnd) {
            if (++block >= blocks.size()) {
                completed = true;
                return null;
            }
            pos = blocks.get(block)[1];
            blockEnd = pos + blocks.get(block)[2];
        }
        if (blockEnd - pos < Protocol.RECORD_HEADER_SIZE) {
            throw new RpmpException(Protocol.BAD_FRAME, "truncated record header in a block", address);
        }
        header.clear();
        readFully(header, pos);
        header.flip();
        SegmentRecord.Header h = SegmentRecord.readHeader(header, blockEnd - pos - Protocol.RECORD_HEADER_SIZE, address);
        payloadPos = pos + Protocol.RECORD_HEADER_SIZE;
        payloadLen = h.length();
        pos = payloadPos + h.length();
        return h;
    }

    @Override
    public byte[] payload() throws IOException {
        byte[] out = new byte[payloadLen];
        readFully(ByteBuffer.wrap(out), payloadPos);
        return out;
    }

    private void readFully(ByteBuffer dst, long at) throws IOException {
        while (dst.hasRemaining()) {
            int n = file.read(dst, at);
            if (n < 0) throw new EOFException("pool file ends inside a block");
            at += n;
        }
    }

    @Override
    public boolean completed() { return completed; }

    @Override
    public boolean isLocal() { return true; }

    @Override
    public String address() { return address; }

    @Override
    public void close(ConnectionPool pool) {
        // The file channel is shared (LocalPools); nothing to release.
    }
}

package org.rpmp.client;

import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.util.ArrayList;
import java.util.List;

/**
 * One-sided read of a co-located node's partition: the node names the blocks and the file each is in
 * (PARTITION_INFO: its pool file, or one of its spill files for blocks its disk tier moved to disk) and
 * the records are copied straight out of those files, with no node CPU on the data path. A block can be
 * freed and reused while it is read (a delete), so every record header is validated and every kept
 * payload is checked against its XXH3 checksum after the copy; any inconsistency fails this source and the
 * reader falls back to FETCH.
 */
final class LocalPoolSource implements RecordSource {
    private final List<FileChannel> files;   // by file number: 0 the pool file, k > 0 spill file k
    private final List<String> names;
    private final List<long[]> blocks;   // {address, file_offset, used, sealed, file}
    private final String address;
    private final ByteBuffer header = ByteBuffer.allocate(Protocol.RECORD_HEADER_SIZE).order(ByteOrder.LITTLE_ENDIAN);
    private int block = -1;
    private FileChannel file;   // the current block's
    private long pos;
    private long blockEnd;
    private long payloadPos;
    private int payloadLen;
    private boolean completed;

    /**
     * The source for a PARTITION_INFO answer, its files opened through pools (cached, read-only); null when
     * one of them cannot be opened here (the reader then FETCHes the partition from the node).
     */
    static LocalPoolSource open(LocalPools pools, Responses.PartitionInfo info, String address) throws IOException {
        List<String> names = info.files();
        List<FileChannel> files = new ArrayList<>(names.size());
        for (int i = 0; i < names.size(); i++) files.add(null);
        files.set(0, pools.open(info.poolPath()));   // always: a pool file unreadable here means FETCH, as ever
        if (files.get(0) == null) return null;
        for (long[] b : info.blocks()) {
            int f = (int) b[Responses.PartitionInfo.FILE];
            if (f < files.size() && files.get(f) == null) {
                FileChannel ch = pools.open(names.get(f));
                if (ch == null) return null;
                files.set(f, ch);
            }
        }
        return new LocalPoolSource(files, names, info.blocks(), address);
    }

    /** files and names by file number (a file no block names may be null); blocks as PARTITION_INFO gives them. */
    LocalPoolSource(List<FileChannel> files, List<String> names, List<long[]> blocks, String address) throws IOException {
        this.files = files;
        this.names = names;
        this.blocks = blocks;
        boolean spilled = blocks.stream().anyMatch(b -> b[Responses.PartitionInfo.FILE] != 0);
        this.address = address + (spilled ? " (pool and spill files)" : " (pool file)");
        long[] sizes = new long[files.size()];
        for (int i = 0; i < sizes.length; i++) sizes[i] = files.get(i) == null ? -1 : files.get(i).size();
        for (long[] b : blocks) {
            long f = b[Responses.PartitionInfo.FILE];
            if (f < 0 || f >= files.size() || files.get((int) f) == null) {
                throw new RpmpException(Protocol.BAD_FRAME, "block " + Long.toHexString(b[0]) + " names file " + f
                    + ", which is not open", this.address);
            }
            if (b[1] < 0 || b[2] < 0 || b[1] + b[2] > sizes[(int) f]) {
                throw new RpmpException(Protocol.BAD_FRAME, "block at " + b[1] + "+" + b[2] + " outside "
                    + names.get((int) f) + " (" + sizes[(int) f] + " bytes)", this.address);
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
            long[] b = blocks.get(block);
            file = files.get((int) b[Responses.PartitionInfo.FILE]);
            pos = b[1];
            blockEnd = pos + b[2];
        }
        if (blockEnd - pos < Protocol.RECORD_HEADER_SIZE) {
            throw new RpmpException(Protocol.BAD_FRAME, "truncated record header in a block of " + fileName(), address);
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

    private String fileName() {
        return names.get((int) blocks.get(block)[Responses.PartitionInfo.FILE]);
    }

    private void readFully(ByteBuffer dst, long at) throws IOException {
        while (dst.hasRemaining()) {
            int n = file.read(dst, at);
            if (n < 0) throw new EOFException(fileName() + " ends inside a block");
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
        // The file channels are shared (LocalPools); nothing to release.
    }
}

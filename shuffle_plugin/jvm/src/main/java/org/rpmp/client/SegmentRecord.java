package org.rpmp.client;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;

/**
 * One stored segment as FETCH and one-sided readers return it: a 32-byte SEG1 header
 * ({@code magic, u32 map_index, u64 attempt, u32 seq, u32 length, u64 checksum}) and the payload.
 * The payload array is not copied (a segment is up to 64 MiB): nobody may change it once it is in a record.
 */
public record SegmentRecord(int mapIndex, long attempt, int seq, long checksum, byte[] payload) {
    /** map_index as the unsigned value the wire carries. */
    public long mapIndexUnsigned() { return mapIndex & 0xFFFFFFFFL; }

    public boolean checksumOk() {
        return Checksums.xxh3(payload, 0, payload.length) == checksum;
    }

    /** The header fields before the payload, as parsed and validated by {@link #readHeader}. */
    public record Header(int mapIndex, long attempt, int seq, int length, long checksum) {}

    /** Parses a header from src (little-endian, 32 bytes remaining); the payload must fit in available bytes. */
    static Header readHeader(ByteBuffer src, long available, String node) throws RpmpException {
        int magic = src.getInt();
        int mapIndex = src.getInt();
        long attempt = src.getLong();
        int seq = src.getInt();
        long length = src.getInt() & 0xFFFFFFFFL;
        long checksum = src.getLong();
        if (magic != Protocol.RECORD_MAGIC) {
            throw new RpmpException(Protocol.BAD_FRAME, String.format("bad record magic 0x%08x", magic), node);
        }
        if (length > Protocol.MAX_SEGMENT || length > available) {
            throw new RpmpException(Protocol.BAD_FRAME, "record length " + length + " exceeds "
                + Math.min(available, Protocol.MAX_SEGMENT) + " bytes", node);
        }
        return new Header(mapIndex, attempt, seq, (int) length, checksum);
    }

    /** Parses the whole records in buf[off, off+len) (a FETCH data part or a block of a mapped pool). */
    public static List<SegmentRecord> parseAll(byte[] buf, int off, int len, String node) throws RpmpException {
        ByteBuffer b = ByteBuffer.wrap(buf, off, len).order(ByteOrder.LITTLE_ENDIAN);
        List<SegmentRecord> out = new ArrayList<>();
        while (b.hasRemaining()) {
            if (b.remaining() < Protocol.RECORD_HEADER_SIZE) {
                throw new RpmpException(Protocol.BAD_FRAME, b.remaining() + " bytes of a truncated record header", node);
            }
            Header h = readHeader(b, b.remaining() - Protocol.RECORD_HEADER_SIZE, node);
            byte[] payload = new byte[h.length()];
            b.get(payload);
            out.add(new SegmentRecord(h.mapIndex(), h.attempt(), h.seq(), h.checksum(), payload));
        }
        return out;
    }

    /** The record as stored: header + payload. */
    public byte[] encode() {
        ByteBuffer b = ByteBuffer.allocate(Protocol.RECORD_HEADER_SIZE + payload.length).order(ByteOrder.LITTLE_ENDIAN);
        b.putInt(Protocol.RECORD_MAGIC).putInt(mapIndex).putLong(attempt).putInt(seq).putInt(payload.length)
            .putLong(checksum).put(payload);
        return b.array();
    }

    @Override
    public String toString() {
        return "SegmentRecord(map=" + mapIndexUnsigned() + ", attempt=" + attempt + ", seq=" + Protocol.seqName(seq)
            + ", length=" + payload.length + ")";
    }
}

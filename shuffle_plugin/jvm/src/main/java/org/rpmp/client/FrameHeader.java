package org.rpmp.client;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/** The 32-byte frame header: encoding, and decoding with every field validated. */
public record FrameHeader(int opcode, int flags, long requestId, int metaLen, long dataLen) {
    public boolean isResponse() { return (flags & Protocol.FLAG_RESPONSE) != 0; }

    public boolean isError() { return (flags & Protocol.FLAG_ERROR) != 0; }

    public boolean hasMore() { return (flags & Protocol.FLAG_MORE) != 0; }

    /** Writes the header at dst's position (dst must be little-endian with 32 bytes free). */
    public static void encode(ByteBuffer dst, int opcode, int flags, long requestId, int metaLen, long dataLen) {
        dst.putInt(Protocol.MAGIC);
        dst.put((byte) Protocol.VERSION);
        dst.put((byte) opcode);
        dst.putShort((short) flags);
        dst.putLong(requestId);
        dst.putInt(metaLen);
        dst.putInt(0);
        dst.putLong(dataLen);
    }

    public static byte[] encode(int opcode, int flags, long requestId, int metaLen, long dataLen) {
        ByteBuffer b = ByteBuffer.allocate(Protocol.HEADER_SIZE).order(ByteOrder.LITTLE_ENDIAN);
        encode(b, opcode, flags, requestId, metaLen, dataLen);
        return b.array();
    }

    /**
     * Reads and validates a header from src (little-endian, 32 bytes remaining). maxData bounds data_len:
     * a frame announcing more than the client accepts is rejected before anything is allocated.
     */
    public static FrameHeader decode(ByteBuffer src, long maxData, String node) throws RpmpException {
        int magic = src.getInt();
        int version = src.get() & 0xFF;
        int opcode = src.get() & 0xFF;
        int flags = src.getShort() & 0xFFFF;
        long requestId = src.getLong();
        long metaLen = src.getInt() & 0xFFFFFFFFL;
        int reserved = src.getInt();
        long dataLen = src.getLong();
        if (magic != Protocol.MAGIC) {
            throw new RpmpException(Protocol.BAD_FRAME, String.format("bad magic 0x%08x", magic), node);
        }
        if (version != Protocol.VERSION) {
            throw new RpmpException(Protocol.BAD_VERSION,
                    "frame version " + version + ", expected " + Protocol.VERSION, node);
        }
        if (reserved != 0) throw new RpmpException(Protocol.BAD_FRAME, "reserved field is not 0", node);
        if (metaLen > Protocol.MAX_META) {
            throw new RpmpException(Protocol.TOO_LARGE, "meta_len " + metaLen + " above 1 MiB", node);
        }
        if (dataLen < 0 || dataLen > maxData) {
            throw new RpmpException(Protocol.TOO_LARGE,
                "data_len " + Long.toUnsignedString(dataLen) + " above the limit " + maxData, node);
        }
        return new FrameHeader(opcode, flags, requestId, (int) metaLen, dataLen);
    }

    @Override
    public String toString() {
        return Protocol.opName(opcode) + " flags=" + flags + " id=" + requestId + " meta=" + metaLen + " data=" + dataLen;
    }
}

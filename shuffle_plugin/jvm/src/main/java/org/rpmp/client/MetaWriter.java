package org.rpmp.client;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/** Builds the little-endian meta part of a frame (PROTOCOL.md conventions: str = u16 len + UTF-8, list = u32 count). */
public final class MetaWriter {
    private byte[] buf;
    private int len;

    public MetaWriter() { this(64); }

    public MetaWriter(int capacity) { buf = new byte[Math.max(16, capacity)]; }

    private void ensure(int n) {
        if (len + n > buf.length) {
            long want = Math.max((long) buf.length * 2, (long) len + n);
            if (want > Protocol.MAX_META) {
                if ((long) len + n > Protocol.MAX_META) {
                    throw new IllegalArgumentException("request meta would exceed " + Protocol.MAX_META + " bytes");
                }
                want = Protocol.MAX_META;
            }
            buf = Arrays.copyOf(buf, (int) want);
        }
    }

    public MetaWriter u8(int v) {
        ensure(1);
        buf[len++] = (byte) v;
        return this;
    }

    public MetaWriter u16(int v) {
        ensure(2);
        buf[len++] = (byte) v;
        buf[len++] = (byte) (v >>> 8);
        return this;
    }

    public MetaWriter u32(long v) {
        ensure(4);
        for (int i = 0; i < 4; i++) buf[len++] = (byte) (v >>> (8 * i));
        return this;
    }

    public MetaWriter u64(long v) {
        ensure(8);
        for (int i = 0; i < 8; i++) buf[len++] = (byte) (v >>> (8 * i));
        return this;
    }

    public MetaWriter str(String s) {
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        if (b.length > Protocol.STR_MAX) {
            throw new IllegalArgumentException("string longer than " + Protocol.STR_MAX + " UTF-8 bytes");
        }
        u16(b.length);
        ensure(b.length);
        System.arraycopy(b, 0, buf, len, b.length);
        len += b.length;
        return this;
    }

    public MetaWriter bytes(byte[] b) {
        u32(b.length);
        ensure(b.length);
        System.arraycopy(b, 0, buf, len, b.length);
        len += b.length;
        return this;
    }

    public int length() { return len; }

    public byte[] toByteArray() { return Arrays.copyOf(buf, len); }
}

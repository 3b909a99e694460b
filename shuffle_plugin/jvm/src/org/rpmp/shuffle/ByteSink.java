package org.rpmp.shuffle;

import java.io.OutputStream;
import java.util.Arrays;

/**
 * A growable byte buffer that hands its array over when the segment is complete, so pushing it copies
 * nothing and the pusher can keep it until the node acknowledged it. After detach it holds no array
 * until reset gives it one (a recycled array of an acknowledged segment).
 */
final class ByteSink extends OutputStream {
    private byte[] buf;
    private int size;

    ByteSink(byte[] buf) {
        this.buf = buf;
    }

    private void ensure(int extra) {
        long need = (long) size + extra;
        if (need > buf.length) {
            if (need > Integer.MAX_VALUE - 16) throw new OutOfMemoryError("segment buffer above 2 GiB");
            buf = Arrays.copyOf(buf, (int) Math.min(Integer.MAX_VALUE - 16, Math.max(need, (long) buf.length * 2)));
        }
    }

    @Override
    public void write(int b) {
        ensure(1);
        buf[size++] = (byte) b;
    }

    @Override
    public void write(byte[] b, int off, int len) {
        ensure(len);
        System.arraycopy(b, off, buf, size, len);
        size += len;
    }

    /** Closing the serializer stream on top must not lose the bytes: close() keeps them. */
    @Override
    public void close() {}

    byte[] array() { return buf; }

    int size() { return size; }

    int capacity() { return buf.length; }

    /** Hands the bytes over: the caller owns the array now; reset must come before the next write. */
    byte[] detach() {
        byte[] out = buf;
        buf = null;
        size = 0;
        return out;
    }

    /** Starts a new segment in buf (its old contents are overwritten). */
    void reset(byte[] buf) {
        this.buf = buf;
        size = 0;
    }
}

package org.rpmp.shuffle;

import java.io.OutputStream;
import java.util.Arrays;

/** A growable byte buffer that exposes its array (the segment being built), so pushing it copies nothing. */
final class ByteSink extends OutputStream {
    private byte[] buf;
    private int size;

    ByteSink(int initialCapacity) {
        buf = new byte[initialCapacity];
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

    /** Empties the buffer; a buffer grown large is dropped so idle partitions do not pin memory. */
    void reset(int keepCapacity) {
        size = 0;
        if (buf.length > keepCapacity) buf = new byte[keepCapacity];
    }
}

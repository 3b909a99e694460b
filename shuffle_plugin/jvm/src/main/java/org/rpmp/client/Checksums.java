package org.rpmp.client;

import java.lang.reflect.Field;
import java.nio.Buffer;
import java.nio.ByteBuffer;

import net.openhft.hashing.LongHashFunction;
import sun.misc.Unsafe;

/**
 * XXH3-64 with seed 0, the segment checksum (PROTOCOL.md), from OpenHFT's zero-allocation-hashing (bundled
 * into the plugin jar by shuffle_plugin/jar.py). XXH3 rather than XXH64: the node verifies every pushed byte
 * on its own cores, and XXH3 costs it a quarter of XXH64's CPU.
 */
public final class Checksums {
    private Checksums() {}

    private static final LongHashFunction HASH = LongHashFunction.xx3();

    /**
     * Reads java.nio.Buffer's address field: a direct buffer's memory, without Spark's Platform (whose
     * getDirectBufferAddress only 4.x has, and the client does not depend on Spark) and without exporting
     * sun.nio.ch (which OpenHFT's own ByteBuffer path needs).
     */
    private static final Unsafe UNSAFE;
    private static final long ADDRESS_OFFSET;

    static {
        try {
            Field f = Unsafe.class.getDeclaredField("theUnsafe");
            f.setAccessible(true);
            UNSAFE = (Unsafe) f.get(null);
            ADDRESS_OFFSET = UNSAFE.objectFieldOffset(Buffer.class.getDeclaredField("address"));
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    public static long xxh3(byte[] buf, int off, int len) {
        return HASH.hashBytes(buf, off, len);
    }

    /** Of buf's [off, off+len), direct or heap, without moving its position; a direct buffer is hashed in place. */
    public static long xxh3(ByteBuffer buf, int off, int len) {
        if (off < 0 || len < 0 || off + len > buf.limit()) {
            throw new IndexOutOfBoundsException("[" + off + ", " + off + "+" + len + ") of a buffer limited at " + buf.limit());
        }
        if (buf.isDirect()) {
            long sum = HASH.hashMemory(UNSAFE.getLong(buf, ADDRESS_OFFSET) + off, len);
            java.lang.ref.Reference.reachabilityFence(buf);   // its memory must outlive the hash
            return sum;
        }
        return HASH.hashBytes(buf.array(), buf.arrayOffset() + off, len);
    }
}

package org.rpmp.shuffle;

import net.openhft.hashing.LongHashFunction;

/**
 * XXH3-64 with seed 0, the segment checksum (PROTOCOL.md), from OpenHFT's zero-allocation-hashing (bundled
 * into the plugin jar by shuffle_plugin/jar.py). XXH3 rather than XXH64: the node verifies every pushed byte
 * on its own cores, and XXH3 costs it a quarter of XXH64's CPU.
 */
public final class Checksums {
    private Checksums() {}

    private static final LongHashFunction HASH = LongHashFunction.xx3();

    public static long xxh3(byte[] buf, int off, int len) {
        return HASH.hashBytes(buf, off, len);
    }
}

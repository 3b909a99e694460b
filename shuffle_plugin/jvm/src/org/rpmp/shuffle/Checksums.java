package org.rpmp.shuffle;

import net.jpountz.xxhash.XXHash64;
import net.jpountz.xxhash.XXHashFactory;

/** XXH64 with seed 0, the segment checksum, from lz4-java (shipped in Spark's jars). */
public final class Checksums {
    private Checksums() {}

    private static final XXHash64 HASH = XXHashFactory.fastestInstance().hash64();

    public static long xxh64(byte[] buf, int off, int len) {
        return HASH.hash(buf, off, len, 0L);
    }
}

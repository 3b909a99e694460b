package org.rpmp.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.nio.ByteBuffer;
import java.util.Random;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/** The pusher hashes direct buffers at their address: that must be the XXH3 of the same bytes on the heap. */
class ChecksumsTest {
    @Test
    @DisplayName("XXH3 of a direct buffer's range equals the array's, and leaves the buffer as it was")
    void directEqualsHeap() {
        byte[] bytes = new byte[100_003];
        new Random(11).nextBytes(bytes);
        ByteBuffer direct = ByteBuffer.allocateDirect(bytes.length).put(bytes).flip();
        direct.position(5);
        for (int[] range : new int[][] {{0, 0}, {0, bytes.length}, {7, 1}, {1000, 65_536}, {bytes.length - 3, 3}}) {
            long want = Checksums.xxh3(bytes, range[0], range[1]);
            assertEquals(want, Checksums.xxh3(direct, range[0], range[1]), "direct " + range[0] + "+" + range[1]);
            assertEquals(want, Checksums.xxh3(ByteBuffer.wrap(bytes), range[0], range[1]), "heap " + range[0] + "+" + range[1]);
        }
        assertEquals(5, direct.position());
        assertThrows(IndexOutOfBoundsException.class, () -> Checksums.xxh3(direct, 1, bytes.length));
    }
}

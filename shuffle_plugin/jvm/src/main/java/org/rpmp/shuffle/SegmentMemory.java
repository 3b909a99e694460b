package org.rpmp.shuffle;

import java.nio.ByteBuffer;
import java.util.ArrayDeque;

import org.apache.spark.storage.StorageUtils;
import org.rpmp.client.Protocol;

/**
 * The buffers map tasks build segments in: direct (off-heap) ByteBuffers in power-of-two sizes from 32 KiB
 * to MAX_SEGMENT, shared by the executor's tasks and reused from segment to segment and task to task.
 *
 * <p>Why off the heap: a map task holds up to spark.rpmp.push.memory of half-built segments, in buffers
 * of a few hundred KiB (below G1's humongous size), so on the heap every young collection copied them
 * again until they were old (TeraSort: 0.7-0.9 s of map-stage GC against 0.2-0.4 s for Spark's shuffle,
 * whose pages are humongous). Direct buffers are also written to the socket as they are, where a heap
 * array is first copied into a direct one, and XXH3 reads them in place.
 *
 * <p>A running task uses at most about 2 x push.memory + 32 KiB per open partition here (SegmentBuffers
 * bounds the capacity it holds) plus the push.inflight segments being acknowledged; idle buffers beyond
 * {@code retainBytes} are freed at once.
 * With push.offHeap=false the same buffers are heap ByteBuffers (memory the executor's heap accounts for).
 */
final class SegmentMemory {
    static final int MIN_SHIFT = 15;   // 32 KiB
    private static final int MAX_SHIFT = Integer.numberOfTrailingZeros(Protocol.MAX_SEGMENT);   // a power of two

    private final boolean direct;
    private final long retainBytes;
    @SuppressWarnings("unchecked")
    private final ArrayDeque<ByteBuffer>[] free = new ArrayDeque[MAX_SHIFT + 1];
    private long retained;
    private long allocated;
    private long allocations;
    private boolean closed;

    SegmentMemory(boolean direct, long retainBytes) {
        this.direct = direct;
        this.retainBytes = Math.max(0, retainBytes);
        for (int s = MIN_SHIFT; s <= MAX_SHIFT; s++) free[s] = new ArrayDeque<>();
    }

    /** The smallest size class holding n bytes (n up to MAX_SEGMENT). */
    static int capacityFor(int n) {
        if (n > Protocol.MAX_SEGMENT) throw new IllegalArgumentException(n + " bytes is above the segment limit");
        return 1 << shiftFor(n);
    }

    private static int shiftFor(int n) {
        return n <= (1 << MIN_SHIFT) ? MIN_SHIFT : 32 - Integer.numberOfLeadingZeros(n - 1);
    }

    /** A cleared buffer of at least minCapacity bytes: the most recently released one of its class, else new. */
    synchronized ByteBuffer acquire(int minCapacity) {
        int shift = shiftFor(Math.max(1, minCapacity));
        if (shift > MAX_SHIFT) throw new IllegalArgumentException(minCapacity + " bytes is above the segment limit");
        ByteBuffer b = closed ? null : free[shift].pollFirst();
        if (b != null) {
            retained -= b.capacity();
            b.clear();
            return b;
        }
        int cap = 1 << shift;
        allocated += cap;
        allocations++;
        return direct ? ByteBuffer.allocateDirect(cap) : ByteBuffer.allocate(cap);
    }

    /** Gives a buffer back (the caller must not touch it again): kept for reuse, or freed beyond retainBytes. */
    synchronized void release(ByteBuffer b) {
        if (b == null) return;
        int cap = b.capacity();
        int shift = shiftFor(cap);
        if (!closed && cap == 1 << shift && shift <= MAX_SHIFT && retained + cap <= retainBytes) {
            free[shift].addFirst(b);
            retained += cap;
        } else {
            allocated -= cap;
            StorageUtils.dispose(b);
        }
    }

    /** Bytes of buffers alive (in use or kept), for tests and logs. */
    synchronized long allocatedBytes() { return allocated; }

    /** Buffers allocated so far (reuse keeps this flat across tasks). */
    synchronized long allocations() { return allocations; }

    synchronized long retainedBytes() { return retained; }

    /** Frees every kept buffer; buffers released later are freed too. */
    synchronized void close() {
        closed = true;
        for (int s = MIN_SHIFT; s <= MAX_SHIFT; s++) {
            for (ByteBuffer b : free[s]) {
                allocated -= b.capacity();
                StorageUtils.dispose(b);
            }
            free[s].clear();
        }
        retained = 0;
    }
}

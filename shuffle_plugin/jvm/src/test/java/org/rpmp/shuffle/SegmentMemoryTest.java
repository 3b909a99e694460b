package org.rpmp.shuffle;

import static org.rpmp.client.TestSupport.*;
import static org.rpmp.shuffle.TestSupport.*;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.rpmp.client.Protocol;

/** SegmentMemory's buffer classes and reuse, and ByteSink's growth (no node, no Spark). */
@SuppressWarnings({"unused", "resource"})
class SegmentMemoryTest {
    @Test
    @DisplayName("SegmentMemory: power-of-two classes from 32 KiB, reuse of the last released")
    void powerOfTwoClassesAndReuse() throws Exception {
        SegmentMemory m = new SegmentMemory(true, 1 << 20);
        expect(SegmentMemory.capacityFor(1) == 32 << 10, "1 byte -> 32 KiB");
        expect(SegmentMemory.capacityFor((32 << 10) + 1) == 64 << 10, "32 KiB + 1 -> 64 KiB");
        expect(SegmentMemory.capacityFor(Protocol.MAX_SEGMENT) == Protocol.MAX_SEGMENT, "the limit is a class");
        ByteBuffer a = m.acquire(0);
        expect(a.isDirect() && a.capacity() == 32 << 10 && a.position() == 0, "a cleared direct 32 KiB buffer");
        ByteBuffer b = m.acquire(100_000);
        expect(b.capacity() == 128 << 10, "100000 -> 128 KiB, got " + b.capacity());
        a.put((byte) 1);
        m.release(a);
        ByteBuffer again = m.acquire(10);
        expect(again == a && again.position() == 0, "the released buffer comes back cleared");
        expect(m.allocations() == 2, "2 allocations, got " + m.allocations());
        m.release(again);
        m.release(b);
        expect(m.retainedBytes() == (160 << 10), "both kept: " + m.retainedBytes());
        m.close();
        expect(m.retainedBytes() == 0 && m.allocatedBytes() == 0, "close frees all");
        expectThrows(IllegalArgumentException.class, () -> m.acquire(Protocol.MAX_SEGMENT + 1));
    }

    @Test
    @DisplayName("SegmentMemory frees what it may not keep")
    void freesWhatItMayNotKeep() throws Exception {
        SegmentMemory m = new SegmentMemory(true, 64 << 10);
        ByteBuffer a = m.acquire(0);
        ByteBuffer b = m.acquire(0);
        ByteBuffer c = m.acquire(0);
        m.release(a);
        m.release(b);
        m.release(c);   // over the 64 KiB it keeps
        expect(m.retainedBytes() == 64 << 10 && m.allocatedBytes() == 64 << 10, "2 kept, 1 freed: "
            + m.retainedBytes() + "/" + m.allocatedBytes());
        SegmentMemory heap = new SegmentMemory(false, 0);
        expect(!heap.acquire(0).isDirect(), "push.offHeap=false gives heap buffers");
    }

    @Test
    @DisplayName("ByteSink grows through the classes and keeps every byte")
    void byteSinkGrowsAndKeepsEveryByte() throws Exception {
        SegmentMemory m = new SegmentMemory(true, 16 << 20);
        ByteSink sink = new ByteSink(m, m.acquire(0), "shuffle 1 partition 2");
        Random r = new Random(7);
        java.io.ByteArrayOutputStream want = new java.io.ByteArrayOutputStream();
        while (want.size() < 3_000_000) {
            byte[] chunk = payload(r, r.nextInt(40_000));
            sink.write(chunk, 0, chunk.length);
            want.write(chunk, 0, chunk.length);
            sink.write(chunk.length & 0xFF);
            want.write(chunk.length & 0xFF);
        }
        expect(sink.capacity() == 4 << 20, "grown to 4 MiB, got " + sink.capacity());
        ByteBuffer seg = sink.detach();
        byte[] got = new byte[seg.remaining()];
        seg.duplicate().get(got);
        expect(java.util.Arrays.equals(got, want.toByteArray()), "bytes differ after growth");
        expect(m.allocatedBytes() - m.retainedBytes() == 4 << 20, "only the segment's buffer is in use, the "
            + "outgrown ones went back: " + m.allocatedBytes() + " - " + m.retainedBytes());
        sink.reset(m.acquire(0));
        expect(sink.size() == 0, "reset starts empty");
        sink.discard();
        m.release(seg);
        expect(m.allocatedBytes() == m.retainedBytes(), "nothing in use");
        ByteSink huge = new ByteSink(m, m.acquire(0), "shuffle 1 partition 2");
        IOException e = expectThrows(IOException.class, () -> huge.write(new byte[Protocol.MAX_SEGMENT + 1], 0,
            Protocol.MAX_SEGMENT + 1));
        expect(e.getMessage().contains("a segment of shuffle 1 partition 2 grew to")
            && e.getMessage().contains("a single record is too large"), e.getMessage());
    }
}

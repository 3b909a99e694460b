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

/** The writer's per-partition segments, decoded with Spark's serializer (no node). */
@SuppressWarnings({"unused", "resource"})
class SegmentBuffersTest {
    @Test
    @DisplayName("SegmentBuffers: every record arrives once; open buffers stay within 2 x push.memory")
    void everyRecordOnceWithinTheMemoryBound() throws Exception {
        org.apache.spark.SparkConf conf = new org.apache.spark.SparkConf(false);
        org.apache.spark.serializer.JavaSerializer js = new org.apache.spark.serializer.JavaSerializer(conf);
        org.apache.spark.serializer.SerializerManager sm = new org.apache.spark.serializer.SerializerManager(js, conf);
        int partitions = 200;
        int pushSize = 512 << 10;
        long pushMemory = 4 << 20;
        SegmentMemory m = new SegmentMemory(true, 0);   // keeps nothing: allocatedBytes is what is in use
        DecodingOutput out = new DecodingOutput(js.newInstance(), sm, partitions);
        SegmentBuffers b = new SegmentBuffers(partitions, js.newInstance(), sm, out, m, 0, 0, pushSize, pushMemory);
        Random r = new Random(3);
        long[] want = new long[partitions];
        long[] wantKeys = new long[partitions];
        long peak = 0;
        // Phase 1: each partition in turn gets enough incompressible data to fill push.size (so its next
        // buffer would start large); phase 2: small records spread over all partitions.
        for (int p = 0; p < partitions; p++) {
            for (int i = 0; i < 150; i++) {
                b.write(p, i, payload(r, 4000));   // distinct arrays: no back-references, no compression
                want[p]++;
                wantKeys[p] += i;
                peak = Math.max(peak, m.allocatedBytes());
            }
        }
        byte[] small = payload(r, 100);
        for (int i = 0; i < 200_000; i++) {
            int p = r.nextInt(partitions);
            b.write(p, i, small);
            want[p]++;
            wantKeys[p] += i;
            peak = Math.max(peak, m.allocatedBytes());
        }
        b.flushAll();
        long bound = 2 * pushMemory + (long) partitions * (32 << 10) + 2L * SegmentMemory.capacityFor(pushSize + 65536);
        expect(peak <= bound, "peak " + peak + " bytes of buffers above the bound " + bound);
        expect(java.util.Arrays.equals(out.records, want), "records per partition differ");
        expect(java.util.Arrays.equals(out.keySums, wantKeys), "keys per partition differ");
        long pushed = 0;
        for (long len : b.partitionLengths()) pushed += len;
        expect(pushed > 200L * 150 * 4000, "the lengths add up to more than the raw phase-1 data: " + pushed);
        expect(m.allocatedBytes() == 0, "every buffer came back: " + m.allocatedBytes());
        out.expectFinals();
        expect(out.pushes.size() == partitions, "every partition pushed to");
        System.out.printf("     (%d segments, peak %d KiB of buffers, bound %d KiB)%n", out.segments, peak >> 10,
            bound >> 10);
    }

    @Test
    @DisplayName("SegmentBuffers: the final segment is marked; an empty one when the data already left")
    void finalSegmentMarked() throws Exception {
        SegmentMemory m = new SegmentMemory(true, 0);
        DecodingOutput out = decodingOutput(4);
        SegmentBuffers b = javaBuffers(out, m, 4, 1024, 1 << 20);
        Random r = new Random(5);
        // Partition 0: its last record fills push.size, so its data leaves before the writer knows it is last.
        while (!out.pushes.containsKey(0)) b.write(0, 1, payload(r, 600));
        b.write(1, 2, payload(r, 100));   // partition 1: one small open segment at the end
        b.write(3, 3, payload(r, 100));   // partition 3: finished early (as a map-side combine does)
        b.finish(3);
        expectThrows(IllegalStateException.class, () -> b.write(3, 4, payload(r, 10)));
        b.flushAll();
        out.expectFinals();
        List<Integer> p0 = out.pushes.get(0);
        expect(p0.size() == 2 && p0.get(0) > 0 && p0.get(1) == -1, "partition 0: data, then an empty final: " + p0);
        List<Integer> p1 = out.pushes.get(1);
        expect(p1.size() == 1 && p1.get(0) < -1, "partition 1: one final segment with data: " + p1);
        expect(!out.pushes.containsKey(2), "partition 2 never written: no segment");
        long[] lengths = b.partitionLengths();
        expect(lengths[0] == p0.get(0) && lengths[1] == -1 - p1.get(0) && lengths[2] == 0,
            "MapStatus lengths are the payload bytes: " + java.util.Arrays.toString(lengths));
        expect(m.allocatedBytes() == 0, "the empty final segment's buffer came back too");
    }
}

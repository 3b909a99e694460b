package org.rpmp.shuffle;

import static org.rpmp.client.TestSupport.*;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

import org.rpmp.client.SegmentOutput;

/** What the Spark-side JUnit tests share beyond org.rpmp.client.TestSupport's assertions: a decoding segment output. */
final class TestSupport {
    private TestSupport() {}

    static final class DecodingOutput implements SegmentOutput {
        final org.apache.spark.serializer.SerializerInstance serializer;
        final org.apache.spark.serializer.SerializerManager manager;
        final long[] records;
        final long[] keySums;
        long segments;
        java.util.function.Consumer<ByteBuffer> recycler;

        DecodingOutput(org.apache.spark.serializer.SerializerInstance serializer,
                       org.apache.spark.serializer.SerializerManager manager, int partitions) {
            this.serializer = serializer;
            this.manager = manager;
            this.records = new long[partitions];
            this.keySums = new long[partitions];
        }

        @Override
        public void onAcknowledged(java.util.function.Consumer<ByteBuffer> recycler) { this.recycler = recycler; }

        /** Per partition: segments pushed, and how many carried last (must be 1, on the final one). */
        final java.util.Map<Integer, List<Integer>> pushes = new java.util.TreeMap<>();

        @Override
        public void push(int partition, ByteBuffer segment, boolean last) throws IOException {
            List<Integer> seen = pushes.computeIfAbsent(partition, k -> new ArrayList<>());
            if (!seen.isEmpty() && seen.get(seen.size() - 1) < 0) {
                throw new AssertionError("partition " + partition + " got a segment after its final one");
            }
            seen.add(last ? -1 - segment.limit() : segment.limit());   // negative: the final segment
            segments++;
            if (segment.limit() == 0) {
                if (!last) throw new AssertionError("an empty segment that is not the final one");
                recycler.accept(segment);
                return;
            }
            byte[] bytes = new byte[segment.limit()];
            segment.duplicate().get(bytes);
            java.io.InputStream in = manager.wrapStream(new org.apache.spark.storage.ShuffleBlockId(0, 0, partition),
                new java.io.ByteArrayInputStream(bytes));
            scala.collection.Iterator<scala.Tuple2<Object, Object>> it = serializer.deserializeStream(in).asKeyValueIterator();
            while (it.hasNext()) {
                scala.Tuple2<Object, Object> kv = it.next();
                records[partition]++;
                keySums[partition] += (Integer) kv._1();
            }
            recycler.accept(segment);
        }

        /** Every partition pushed to ended with exactly one final segment. */
        void expectFinals() {
            for (java.util.Map.Entry<Integer, List<Integer>> e : pushes.entrySet()) {
                List<Integer> l = e.getValue();
                long finals = l.stream().filter(x -> x < 0).count();
                expect(finals == 1 && l.get(l.size() - 1) < 0, "partition " + e.getKey() + " segments " + l
                    + ": the last one (negative) must be the only final one");
            }
        }
    }

    static SegmentBuffers javaBuffers(SegmentOutput out, SegmentMemory m, int partitions, int pushSize,
                                              long pushMemory) {
        org.apache.spark.SparkConf conf = new org.apache.spark.SparkConf(false);
        org.apache.spark.serializer.JavaSerializer js = new org.apache.spark.serializer.JavaSerializer(conf);
        org.apache.spark.serializer.SerializerManager sm = new org.apache.spark.serializer.SerializerManager(js, conf);
        return new SegmentBuffers(partitions, js.newInstance(), sm, out, m, 0, 0, pushSize, pushMemory);
    }

    static DecodingOutput decodingOutput(int partitions) {
        org.apache.spark.SparkConf conf = new org.apache.spark.SparkConf(false);
        org.apache.spark.serializer.JavaSerializer js = new org.apache.spark.serializer.JavaSerializer(conf);
        return new DecodingOutput(js.newInstance(), new org.apache.spark.serializer.SerializerManager(js, conf),
            partitions);
    }
}

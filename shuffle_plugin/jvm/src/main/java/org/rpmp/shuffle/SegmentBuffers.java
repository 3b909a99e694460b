package org.rpmp.shuffle;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;

import org.apache.spark.serializer.SerializationStream;
import org.apache.spark.serializer.SerializerInstance;
import org.apache.spark.serializer.SerializerManager;
import org.apache.spark.storage.ShuffleBlockId;
import org.rpmp.client.SegmentOutput;
import scala.reflect.ClassTag;
import scala.reflect.ClassTag$;

/**
 * A map task's output being built: one open segment per partition, each a serializer stream over
 * Spark's wrapStream (compression, encryption) over a byte buffer. Records are serialized the moment they
 * arrive, so the task never holds deserialized objects (and Spark SQL need not copy rows).
 *
 * <p>A segment is closed and pushed when it reaches spark.rpmp.push.size, and when the task's buffers
 * reach spark.rpmp.push.memory the largest ones are pushed early. Each segment is a complete serializer
 * and compression stream, so a reader decodes any segment on its own, in any order.
 *
 * <p>push.memory bounds the serialized bytes held; each open segment also holds its compression and
 * serializer buffers (tens of KiB, like one of Spark's BypassMergeSortShuffleWriter files), which are not
 * counted: counting them would make a task with many partitions push one-record segments.
 *
 * <p>Buffers come from the executor's SegmentMemory (off the heap) and go back to it when the node
 * acknowledged their segment. A partition's next segment starts in a buffer of the size its last one
 * needed, so a segment is copied into a bigger buffer at most once or twice instead of at every doubling
 * from 32 KiB; the capacity held is bounded too (pushLargest).
 *
 * <p>The last segment of each partition written to carries SEQ_LAST (PROTOCOL.md "The final segment"), so a
 * reader can tell a complete attempt from one that lost its tail: {@link #finish} seals a partition's open
 * segment as the final one, or, when its data already left (pushed at push.size or early under push.memory,
 * before the writer knew it was the last), pushes an empty final segment.
 */
final class SegmentBuffers {
    private static final int MIN_CAPACITY = 1 << SegmentMemory.MIN_SHIFT;
    private static final ClassTag<Object> ANY = ClassTag$.MODULE$.Any();

    private final SerializerInstance serializer;
    private final SerializerManager serializerManager;
    private final SegmentOutput pusher;
    private final int shuffleId;
    private final long mapId;
    private final int pushSize;
    private final long pushMemory;
    private final SegmentMemory memory;
    private final ByteSink[] sinks;
    /** Per partition, the buffer size its last segment needed (0: none yet). */
    private final int[] lastCapacity;
    private final SerializationStream[] streams;
    private final long[] lengths;
    /** Per partition: segments pushed so far, and whether its final segment went (no more writes). */
    private final int[] pushed;
    private final boolean[] finished;
    private int openStreams;
    private long bufferedBytes;
    /** Capacity of the open segments' buffers beyond the 32 KiB each starts with (bounded: see pushLargest). */
    private long extraCapacity;

    SegmentBuffers(int numPartitions, SerializerInstance serializer, SerializerManager serializerManager,
                   SegmentOutput pusher, SegmentMemory memory, int shuffleId, long mapId, int pushSize,
                   long pushMemory) {
        this.serializer = serializer;
        this.serializerManager = serializerManager;
        this.pusher = pusher;
        this.memory = memory;
        this.shuffleId = shuffleId;
        this.mapId = mapId;
        this.pushSize = pushSize;
        this.pushMemory = pushMemory;
        this.sinks = new ByteSink[numPartitions];
        this.streams = new SerializationStream[numPartitions];
        this.lengths = new long[numPartitions];
        this.lastCapacity = new int[numPartitions];
        this.pushed = new int[numPartitions];
        this.finished = new boolean[numPartitions];
        pusher.onAcknowledged(memory::release);
    }

    /** A buffer for the partition's next segment, as large as its last segment needed. */
    private ByteBuffer fresh(int partition) {
        return memory.acquire(lastCapacity[partition]);
    }

    void write(int partition, Object key, Object value) throws IOException {
        if (finished[partition]) {
            throw new IllegalStateException("partition " + partition + " of shuffle " + shuffleId + " was finished");
        }
        SerializationStream s = streams[partition];
        if (s == null) s = open(partition);
        ByteSink sink = sinks[partition];
        int before = sink.size();
        int capacityBefore = sink.capacity();
        s.writeKey(key, ANY);
        s.writeValue(value, ANY);
        bufferedBytes += sink.size() - before;
        extraCapacity += sink.capacity() - capacityBefore;
        // Checked after every record, not only when the sink grew: opening a segment takes capacity too.
        if (sink.size() >= pushSize) {
            seal(partition, false);
        } else if (bufferedBytes >= pushMemory || extraCapacity > 2 * pushMemory) {
            pushLargest();
        }
    }

    private SerializationStream open(int partition) {
        ByteSink sink = sinks[partition];
        if (sink == null) {
            // The sink refuses to grow past one PUSH (MAX_SEGMENT), so a sealed segment always fits one.
            sink = new ByteSink(memory, fresh(partition), "shuffle " + shuffleId + " partition " + partition);
            sinks[partition] = sink;
        } else if (!sink.hasBuffer()) {
            sink.reset(fresh(partition));
        }
        extraCapacity += sink.capacity() - MIN_CAPACITY;
        OutputStream wrapped = serializerManager.wrapStream(new ShuffleBlockId(shuffleId, mapId, partition), sink);
        SerializationStream s = serializer.serializeStream(wrapped);
        streams[partition] = s;
        openStreams++;
        return s;
    }

    /**
     * Closes the partition's segment (flushing compression) and pushes it, as the final one if last. Returns
     * whether a segment was pushed.
     */
    private boolean seal(int partition, boolean last) throws IOException {
        SerializationStream s = streams[partition];
        if (s == null) return false;
        ByteSink sink = sinks[partition];
        int before = sink.size();
        extraCapacity -= sink.capacity() - MIN_CAPACITY;
        s.close();
        streams[partition] = null;
        openStreams--;
        int len = sink.size();
        bufferedBytes += len - before;
        bufferedBytes -= len;
        lastCapacity[partition] = SegmentMemory.capacityFor(Math.max(1, len));
        ByteBuffer bytes = sink.detach();   // [0, len); the pusher gives it back to memory once acknowledged
        if (len > 0) {
            pusher.push(partition, bytes, last);
            pushed[partition]++;
            lengths[partition] += len;
            return true;
        }
        memory.release(bytes);
        return false;
    }

    /**
     * Ends a partition for this map attempt: its open segment is pushed as the final one; if it has none (or
     * it came out empty) but segments went before, an empty final segment (length 0, SEQ_LAST) follows them.
     * A partition never pushed to stays without segments. Writing to it afterwards is an error.
     */
    void finish(int partition) throws IOException {
        if (finished[partition]) return;
        finished[partition] = true;
        if (seal(partition, true) || pushed[partition] == 0) return;
        ByteBuffer empty = memory.acquire(0);
        empty.flip();   // [0, 0)
        pusher.push(partition, empty, true);
        pushed[partition]++;
    }

    /**
     * Pushes the largest open segments until the bytes held are back under half of push.memory and the
     * buffers' capacity beyond their first 32 KiB under push.memory. The capacity bound matters because a
     * partition's next buffer is sized by its last segment: without it, many partitions that once filled
     * push.size could all hold big, nearly empty buffers at once. So a task's open buffers stay within
     * about 2 x push.memory + 32 KiB per open partition.
     */
    private void pushLargest() throws IOException {
        List<Integer> open = new ArrayList<>(openStreams);
        for (int p = 0; p < streams.length; p++) {
            if (streams[p] != null) open.add(p);
        }
        boolean byCapacity = bufferedBytes < pushMemory;   // the capacity bound triggered this
        open.sort((a, b) -> byCapacity ? Integer.compare(sinks[b].capacity(), sinks[a].capacity())
            : Integer.compare(sinks[b].size(), sinks[a].size()));
        long target = pushMemory / 2;
        for (int p : open) {
            if (bufferedBytes <= target && extraCapacity <= pushMemory) break;
            seal(p, false);
        }
    }

    /** Ends every partition (finish): the task wrote all its records. */
    void flushAll() throws IOException {
        for (int p = 0; p < streams.length; p++) finish(p);
    }

    /** Payload bytes pushed per partition: the MapStatus sizes (what a reader will fetch). */
    long[] partitionLengths() { return lengths; }

    /** Drops everything unsent (task failed) and gives the buffers back. */
    void discard() {
        for (int p = 0; p < streams.length; p++) {
            streams[p] = null;
            if (sinks[p] != null && sinks[p].hasBuffer()) sinks[p].discard();
            sinks[p] = null;
        }
        openStreams = 0;
        bufferedBytes = 0;
        extraCapacity = 0;
    }
}

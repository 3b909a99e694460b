package org.rpmp.client;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.function.Consumer;

/** Where SegmentBuffers sends complete segments: the SegmentPusher (or a check's stand-in). */
public interface SegmentOutput {
    /**
     * Takes the segment buffer's [0, limit); it is handed to the recycler once done with. last: this is the
     * final segment of the partition for this map attempt (its seq carries SEQ_LAST); it may be empty.
     */
    void push(int partition, ByteBuffer segment, boolean last) throws IOException;

    /** Who gets each pushed buffer back. */
    void onAcknowledged(Consumer<ByteBuffer> recycler);
}

package org.rpmp.shuffle;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;

import org.rpmp.client.Protocol;

/**
 * One segment being written: a growable buffer from SegmentMemory that is handed over whole when the
 * segment is complete, so pushing it copies nothing and the pusher keeps it until the node acknowledged
 * it. Growing takes the next size class and gives the old buffer back. After detach it holds no buffer
 * until reset gives it one.
 */
final class ByteSink extends OutputStream {
    private final SegmentMemory memory;
    private final String what;   // names the segment in the error message, e.g. "shuffle 3 partition 7"
    private ByteBuffer buf;      // bytes written are [0, position)

    ByteSink(SegmentMemory memory, ByteBuffer buf, String what) {
        this.memory = memory;
        this.buf = buf;
        this.what = what;
    }

    private void ensure(int extra) throws IOException {
        long need = (long) buf.position() + extra;
        if (need <= buf.capacity()) return;
        if (need > Protocol.MAX_SEGMENT) {
            throw new IOException("a segment of " + what + " grew to " + need + " bytes, above the "
                + Protocol.MAX_SEGMENT + "-byte PUSH limit: a single record is too large");
        }
        ByteBuffer bigger = memory.acquire((int) Math.min(Protocol.MAX_SEGMENT, Math.max(need, (long) buf.capacity() * 2)));
        buf.flip();
        bigger.put(buf);
        memory.release(buf);
        buf = bigger;
    }

    @Override
    public void write(int b) throws IOException {
        ensure(1);
        buf.put((byte) b);
    }

    @Override
    public void write(byte[] b, int off, int len) throws IOException {
        ensure(len);
        buf.put(b, off, len);
    }

    /** Closing the serializer stream on top must not lose the bytes: close() keeps them. */
    @Override
    public void close() {}

    boolean hasBuffer() { return buf != null; }

    int size() { return buf.position(); }

    int capacity() { return buf.capacity(); }

    /** Hands the bytes over as [0, limit): the caller owns the buffer now; reset must come before the next write. */
    ByteBuffer detach() {
        ByteBuffer out = buf;
        out.flip();
        buf = null;
        return out;
    }

    /** Starts a new segment in buf (cleared; its old contents are overwritten). */
    void reset(ByteBuffer buf) {
        buf.clear();
        this.buf = buf;
    }

    /** Gives the buffer back unsent (task failed). */
    void discard() {
        memory.release(buf);
        buf = null;
    }
}

package org.rpmp.client;

import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;

/**
 * Bounds-checked little-endian reader of a frame's meta part. Every read checks what is left, and list
 * counts are checked against the bytes that remain before anything is allocated, so a bad node cannot make
 * the client allocate more than the (already bounded) meta it sent. Violations are BAD_FRAME errors.
 */
public final class MetaReader {
    private final byte[] buf;
    private final int end;
    private final String node;
    private int pos;

    public MetaReader(byte[] buf, String node) { this(buf, 0, buf.length, node); }

    public MetaReader(byte[] buf, int off, int len, String node) {
        this.buf = buf;
        this.pos = off;
        this.end = off + len;
        this.node = node;
    }

    public int remaining() { return end - pos; }

    /** host:port of the node the meta came from (for error messages), or null. */
    public String node() { return node; }

    private void need(int n, String what) throws RpmpException {
        if (n < 0 || end - pos < n) {
            throw new RpmpException(Protocol.BAD_FRAME, "truncated meta reading " + what, node);
        }
    }

    public int u8(String what) throws RpmpException {
        need(1, what);
        return buf[pos++] & 0xFF;
    }

    public int u16(String what) throws RpmpException {
        need(2, what);
        int v = (buf[pos] & 0xFF) | (buf[pos + 1] & 0xFF) << 8;
        pos += 2;
        return v;
    }

    /** A u32 as a non-negative long. */
    public long u32(String what) throws RpmpException {
        need(4, what);
        long v = 0;
        for (int i = 3; i >= 0; i--) v = (v << 8) | (buf[pos + i] & 0xFF);
        pos += 4;
        return v;
    }

    /** A u32 that must fit an int (counts, indices); larger values are a BAD_FRAME. */
    public int u32Int(String what) throws RpmpException {
        long v = u32(what);
        if (v > Integer.MAX_VALUE) throw new RpmpException(Protocol.BAD_FRAME, what + " out of range: " + v, node);
        return (int) v;
    }

    public long u64(String what) throws RpmpException {
        need(8, what);
        long v = 0;
        for (int i = 7; i >= 0; i--) v = (v << 8) | (buf[pos + i] & 0xFF);
        pos += 8;
        return v;
    }

    public String str(String what) throws RpmpException {
        int n = u16(what + " length");
        need(n, what);
        try {
            CharBuffer cb = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT)
                .decode(ByteBuffer.wrap(buf, pos, n));
            pos += n;
            return cb.toString();
        } catch (CharacterCodingException e) {
            throw new RpmpException(Protocol.BAD_FRAME, what + " is not valid UTF-8", node);
        }
    }

    /** A str decoded leniently (malformed UTF-8 replaced): for error messages, which must always decode. */
    public String lenientStr(String what) throws RpmpException {
        int n = u16(what + " length");
        need(n, what);
        String v = new String(buf, pos, n, StandardCharsets.UTF_8);
        pos += n;
        return v;
    }

    /** A list count whose items take at least minItemSize bytes each: checked against what is left. */
    public int count(String what, int minItemSize) throws RpmpException {
        long n = u32(what + " count");
        if (n * Math.max(1, minItemSize) > remaining()) {
            throw new RpmpException(Protocol.BAD_FRAME, what + " count " + n + " exceeds the meta", node);
        }
        return (int) n;
    }

    /** The meta must be fully consumed: trailing bytes mean the two sides disagree on the layout. */
    public void end(String what) throws RpmpException {
        if (pos != end) {
            throw new RpmpException(Protocol.BAD_FRAME, (end - pos) + " trailing meta bytes in " + what, node);
        }
    }
}

package org.rpmp.client;

import java.nio.charset.StandardCharsets;
import java.util.List;

/**
 * Encoders of the request metas the JVM side sends (PROTOCOL.md "Opcodes"), and of whole frames
 * (header + meta; a data part follows on the wire). Pure functions, so ProtocolVectorsTest can compare bytes.
 */
public final class Requests {
    private Requests() {}

    /** Header + meta of a request frame; dataLen bytes of data are to follow. */
    public static byte[] frame(int opcode, int flags, long requestId, byte[] meta, long dataLen) {
        byte[] out = new byte[Protocol.HEADER_SIZE + meta.length];
        System.arraycopy(FrameHeader.encode(opcode, flags, requestId, meta.length, dataLen), 0, out, 0, Protocol.HEADER_SIZE);
        System.arraycopy(meta, 0, out, Protocol.HEADER_SIZE, meta.length);
        return out;
    }

    /**
     * Application names: 1..120 UTF-8 bytes, no '/' (it separates placement key parts), no NUL, no U+001F (nodes
     * qualify a tenant's apps as tenant U+001F app).
     */
    public static void checkApp(String app) {
        int n = app.getBytes(StandardCharsets.UTF_8).length;
        if (n < 1 || n > Protocol.CLIENT_APP_MAX || app.indexOf('/') >= 0 || app.indexOf('\0') >= 0
                || app.indexOf('\u001F') >= 0) {
            throw new IllegalArgumentException("bad RPMP application name '" + app
                + "': needs 1.." + Protocol.CLIENT_APP_MAX + " UTF-8 bytes, no '/', NUL or U+001F");
        }
    }

    public static byte[] hello(String clientName) {
        return new MetaWriter().u16(Protocol.VERSION).str(clientName).toByteArray();
    }

    public static byte[] empty() { return new byte[0]; }

    public static byte[] registerShuffle(String app, int shuffle, int numPartitions, int replicas) {
        checkApp(app);
        if (numPartitions < 1 || numPartitions > Protocol.MAX_PARTITIONS) {
            throw new IllegalArgumentException("partition count " + numPartitions + " outside 1.." + Protocol.MAX_PARTITIONS);
        }
        if (replicas < 1 || replicas > 255) throw new IllegalArgumentException("replicas must be 1..255");
        return new MetaWriter().str(app).u32(shuffle & 0xFFFFFFFFL).u32(numPartitions).u8(replicas).toByteArray();
    }

    public static byte[] push(String app, int shuffle, int partition, int mapIndex, long attempt, int seq, long checksum) {
        checkApp(app);
        return new MetaWriter().str(app).u32(shuffle & 0xFFFFFFFFL).u32(partition).u32(mapIndex)
            .u64(attempt).u32(seq & 0xFFFFFFFFL).u64(checksum).toByteArray();
    }

    public static byte[] mapEnd(String app, int shuffle, int mapIndex, long attempt, List<PartCount> counts) {
        MetaWriter w = new MetaWriter(40 + counts.size() * 16);
        w.str(app).u32(shuffle & 0xFFFFFFFFL).u32(mapIndex).u64(attempt).u32(counts.size());
        for (PartCount c : counts) w.u32(c.partition()).u32(c.segments() & 0xFFFFFFFFL).u64(c.bytes());
        return w.toByteArray();
    }

    /** endMap = Protocol.END_MAP_ALL (0xFFFFFFFF) for no upper bound; an empty attempts list filters nothing. */
    public static byte[] fetch(String app, int shuffle, int partition, int startMap, int endMap, long[] attempts) {
        MetaWriter w = new MetaWriter(40 + attempts.length * 8);
        w.str(app).u32(shuffle & 0xFFFFFFFFL).u32(partition).u32(startMap & 0xFFFFFFFFL).u32(endMap & 0xFFFFFFFFL)
            .u32(attempts.length);
        for (long a : attempts) w.u64(a);
        return w.toByteArray();
    }

    public static byte[] partitionInfo(String app, int shuffle, int partition) {
        return new MetaWriter().str(app).u32(shuffle & 0xFFFFFFFFL).u32(partition).toByteArray();
    }

    public static byte[] deleteShuffle(String app, int shuffle) {
        return new MetaWriter().str(app).u32(shuffle & 0xFFFFFFFFL).toByteArray();
    }

    public static byte[] deleteApp(String app) {
        checkApp(app);
        return new MetaWriter().str(app).toByteArray();
    }

    /** LEASE: {@code str app}; renews the app on every node (the taking node forwards it). */
    public static byte[] lease(String app) {
        checkApp(app);
        return new MetaWriter().str(app).toByteArray();
    }

    /** DRAIN: {@code u32 timeout_s} (0: no limit). */
    public static byte[] drain(long timeoutSeconds) {
        if (timeoutSeconds < 0 || timeoutSeconds > 0xFFFFFFFFL) {
            throw new IllegalArgumentException("DRAIN timeout_s " + timeoutSeconds + " is not a u32");
        }
        return new MetaWriter().u32(timeoutSeconds).toByteArray();
    }

    /**
     * REGISTER_SHUFFLE as a node forwards it (flag FORWARDED): the request meta followed by the placement
     * in the response layout, so every node stores the same table. (Not in PROTOCOL.md; taken from the
     * test vectors and rpmp/_wire.pyx.)
     */
    public static byte[] registerShuffleForwarded(String app, int shuffle, int numPartitions, int replicas,
                                                  Placement placement) {
        byte[] head = registerShuffle(app, shuffle, numPartitions, replicas);
        byte[] tail = placement.encode();
        byte[] out = java.util.Arrays.copyOf(head, head.length + tail.length);
        System.arraycopy(tail, 0, out, head.length, tail.length);
        return out;
    }

    public static byte[] heartbeat(NodeInfo self, long knownEpoch) {
        MetaWriter w = new MetaWriter();
        self.write(w);
        return w.u64(knownEpoch).toByteArray();
    }

    // Pool API (PUT/GET/DELETE by key, ALLOC/WRITE/READ/FREE by address).

    private static void checkKey(byte[] key) {
        if (key.length < 1 || key.length > Protocol.KEY_MAX) {
            throw new IllegalArgumentException("keys are 1.." + Protocol.KEY_MAX + " bytes");
        }
        if (key[0] == 0x1F) throw new IllegalArgumentException("a key may not begin with byte 0x1F (tenants' keys do)");
    }

    public static byte[] key(byte[] key) {
        checkKey(key);
        return new MetaWriter().bytes(key).toByteArray();
    }

    public static byte[] alloc(long size) { return new MetaWriter().u64(size).toByteArray(); }

    public static byte[] write(long address, long offset) {
        return new MetaWriter().u64(address).u64(offset).toByteArray();
    }

    public static byte[] read(long address, long offset, long length) {
        return new MetaWriter().u64(address).u64(offset).u64(length).toByteArray();
    }

    public static byte[] free(long address) { return new MetaWriter().u64(address).toByteArray(); }
}

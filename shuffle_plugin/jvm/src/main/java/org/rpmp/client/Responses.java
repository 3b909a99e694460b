package org.rpmp.client;

import java.util.ArrayList;
import java.util.List;

/** Decoders of the response metas the JVM side reads. Each checks the meta is consumed exactly. */
public final class Responses {
    private Responses() {}

    /** HELLO response: {@code u16 version, str node_id, u64 max_data}. */
    public record Hello(int version, String nodeId, long maxData) {}

    /** MEMBERS / HEARTBEAT response: {@code u64 epoch, list<Node>}. */
    public record Members(long epoch, List<NodeInfo> nodes) {}

    /**
     * PARTITION_INFO response: {@code str pool_path, u32 records, u64 bytes, list<Block>}; per block
     * {address, file_offset, used, sealed (0/1)}.
     */
    public record PartitionInfo(String poolPath, long records, long bytes, List<long[]> blocks) {}

    public static PartitionInfo partitionInfo(MetaReader r) throws RpmpException {
        String path = r.str("pool_path");
        long records = r.u32("records");
        long bytes = r.u64("bytes");
        int n = r.count("blocks", 25);
        List<long[]> blocks = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            blocks.add(new long[] {r.u64("address"), r.u64("file_offset"), r.u64("used"), r.u8("sealed")});
        }
        r.end("PARTITION_INFO response");
        return new PartitionInfo(path, records, bytes, blocks);
    }

    /** ALLOC response: {@code u64 address}. */
    public static long address(MetaReader r) throws RpmpException {
        long a = r.u64("address");
        r.end("ALLOC response");
        return a;
    }

    public static Hello hello(MetaReader r) throws RpmpException {
        Hello h = new Hello(r.u16("version"), r.str("node_id"), r.u64("max_data"));
        r.end("HELLO response");
        return h;
    }

    public static Members members(MetaReader r) throws RpmpException {
        long epoch = r.u64("epoch");
        int n = r.count("nodes", 6);
        List<NodeInfo> nodes = new ArrayList<>(n);
        for (int i = 0; i < n; i++) nodes.add(NodeInfo.read(r));
        r.end("MEMBERS response");
        return new Members(epoch, nodes);
    }

    /** FETCH response frame: {@code u32 records}. */
    public static long fetchRecords(MetaReader r) throws RpmpException {
        long n = r.u32("records");
        r.end("FETCH response");
        return n;
    }

    /** DELETE_SHUFFLE / DELETE_APP response: {@code u64 blocks_freed}. */
    public static long blocksFreed(MetaReader r) throws RpmpException {
        long n = r.u64("blocks_freed");
        r.end("DELETE response");
        return n;
    }

    /** Responses with no meta (PING, PUSH, MAP_END, ...). */
    public static void empty(MetaReader r, int opcode) throws RpmpException {
        r.end(Protocol.opName(opcode) + " response");
    }

    /** An error frame's meta {@code u16 code, str message}, as the exception to throw. */
    public static RpmpException error(MetaReader r, String node) throws RpmpException {
        int code = r.u16("error code");
        String message = r.lenientStr("error message");
        r.end("error frame");
        return new RpmpException(code, message, node);
    }
}

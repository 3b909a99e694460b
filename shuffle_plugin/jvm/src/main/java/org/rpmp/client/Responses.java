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
     * PARTITION_INFO response: {@code str pool_path, u32 records, u64 bytes, list<Block> blocks,
     * list<str> spill_files}; per block {address, file_offset, used, sealed (0/1), file}, where file 0 is
     * the pool file and k > 0 is spillFiles[k - 1] (such a block is sealed).
     */
    public record PartitionInfo(String poolPath, long records, long bytes, List<long[]> blocks, List<String> spillFiles) {
        /** Index of a block's file number in a block's long[]. */
        public static final int FILE = 4;

        /** The files the blocks name, by file number: the pool file first, then the spill files. */
        public List<String> files() {
            List<String> out = new ArrayList<>(1 + spillFiles.size());
            out.add(poolPath);
            out.addAll(spillFiles);
            return out;
        }
    }

    public static PartitionInfo partitionInfo(MetaReader r) throws RpmpException {
        String path = r.str("pool_path");
        long records = r.u32("records");
        long bytes = r.u64("bytes");
        int n = r.count("blocks", 27);
        List<long[]> blocks = new ArrayList<>(n);
        for (int i = 0; i < n; i++) {
            blocks.add(new long[] {r.u64("address"), r.u64("file_offset"), r.u64("used"), r.u8("sealed"), r.u16("file")});
        }
        int m = r.count("spill_files", 2);
        List<String> spill = new ArrayList<>(m);
        for (int i = 0; i < m; i++) spill.add(r.str("spill_files"));
        r.end("PARTITION_INFO response");
        for (int i = 0; i < n; i++) {
            long[] b = blocks.get(i);
            if (b[3] > 1) {
                throw new RpmpException(Protocol.BAD_FRAME, "PARTITION_INFO response: blocks[" + i + "].sealed is "
                    + b[3] + ", not 0 or 1", r.node());
            }
            if (b[PartitionInfo.FILE] > m) {
                throw new RpmpException(Protocol.BAD_FRAME, "PARTITION_INFO response: blocks[" + i + "].file is "
                    + b[PartitionInfo.FILE] + ", but the response lists " + m + " spill files (file 0 is the pool file)",
                    r.node());
            }
            if (b[PartitionInfo.FILE] > 0 && b[3] == 0) {
                throw new RpmpException(Protocol.BAD_FRAME, "PARTITION_INFO response: blocks[" + i + "] is in spill file "
                    + b[PartitionInfo.FILE] + " but not sealed", r.node());
            }
        }
        return new PartitionInfo(path, records, bytes, blocks, spill);
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

    /** LEASE response: {@code u32 ttl_ms}, the node's app TTL in milliseconds (0: apps never expire there). */
    public static long leaseTtlMs(MetaReader r) throws RpmpException {
        long ttl = r.u32("ttl_ms");
        r.end("LEASE response");
        return ttl;
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

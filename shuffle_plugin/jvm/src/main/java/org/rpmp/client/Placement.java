package org.rpmp.client;

import java.io.Serializable;
import java.util.Arrays;
import java.util.List;

/**
 * Where a shuffle's partitions live: the REGISTER_SHUFFLE response. The node list is sent once; each
 * partition has a preference list of L indices into it (primary first, then replicas, then spares).
 * It travels inside the ShuffleHandle, so executors need no ring code.
 */
public final class Placement implements Serializable {
    private static final long serialVersionUID = 1L;

    public final long epoch;
    private final NodeInfo[] nodes;
    private final int prefLength;
    private final short[] prefs;   // numPartitions x prefLength, u16 node indices

    public Placement(long epoch, List<NodeInfo> nodes, int prefLength, short[] prefs) {
        this.epoch = epoch;
        this.nodes = nodes.toArray(new NodeInfo[0]);
        this.prefLength = prefLength;
        this.prefs = prefs;
    }

    public int numPartitions() { return prefLength == 0 ? 0 : prefs.length / prefLength; }

    public int numNodes() { return nodes.length; }

    public NodeInfo node(int index) { return nodes[index]; }

    public List<NodeInfo> nodes() { return List.of(nodes); }

    /** L: the length of every preference list. */
    public int prefLength() { return prefLength; }

    /** The i-th preferred node index (0 = primary) of a partition. */
    public int nodeIndex(int partition, int i) { return prefs[partition * prefLength + i] & 0xFFFF; }

    public NodeInfo preferred(int partition, int i) { return nodes[nodeIndex(partition, i)]; }

    /**
     * Decodes the response meta {@code u64 epoch, list<Node> nodes, u8 L, numPartitions x L u16}.
     * numPartitions < 0 derives the count from the bytes left (for test vectors that do not state it).
     */
    public static Placement decode(MetaReader r, int numPartitions) throws RpmpException {
        long epoch = r.u64("epoch");
        int n = r.count("nodes", 6);
        NodeInfo[] nodes = new NodeInfo[n];
        for (int i = 0; i < n; i++) nodes[i] = NodeInfo.read(r);
        int len = r.u8("L");
        if (numPartitions < 0) {
            if (len == 0 || r.remaining() % (2 * len) != 0) {
                throw new RpmpException(Protocol.BAD_FRAME, "preference lists do not fill the meta", null);
            }
            numPartitions = r.remaining() / (2 * len);
        }
        if (numPartitions > 0 && (len == 0 || len > n)) {
            throw new RpmpException(Protocol.BAD_FRAME, "preference list length " + len + " with " + n + " nodes", null);
        }
        if ((long) numPartitions * len * 2 != r.remaining()) {
            throw new RpmpException(Protocol.BAD_FRAME, "expected " + numPartitions + " x " + len
                + " preferences, meta has " + r.remaining() + " bytes left", null);
        }
        short[] prefs = new short[numPartitions * len];
        for (int i = 0; i < prefs.length; i++) {
            int idx = r.u16("preference");
            if (idx >= n) throw new RpmpException(Protocol.BAD_FRAME, "preference index " + idx + " >= " + n, null);
            prefs[i] = (short) idx;
        }
        r.end("REGISTER_SHUFFLE response");
        return new Placement(epoch, Arrays.asList(nodes), len, prefs);
    }

    public byte[] encode() {
        MetaWriter w = new MetaWriter(32 + prefs.length * 2);
        w.u64(epoch).u32(nodes.length);
        for (NodeInfo node : nodes) node.write(w);
        w.u8(prefLength);
        for (short p : prefs) w.u16(p & 0xFFFF);
        return w.toByteArray();
    }

    @Override
    public String toString() {
        return "Placement(epoch=" + epoch + ", nodes=" + Arrays.toString(nodes) + ", L=" + prefLength
            + ", partitions=" + numPartitions() + ")";
    }
}

package org.rpmp.shuffle;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;

/**
 * Pushes one map attempt's segments to the partitions' nodes and ends the attempt with MAP_END.
 *
 * <p>Each partition goes to the first node of its preference list this task can reach (normally the
 * primary; the node replicates). One connection per node, pipelined up to spark.rpmp.push.inflight
 * pushes. Every segment of one (attempt, partition) goes to the same node, so a reader that finds any
 * record of a committed attempt on a node finds all of them there.
 */
final class SegmentPusher {
    private static final Logger LOG = LogManager.getLogger(SegmentPusher.class);

    private final RpmpShuffleHandle<?, ?, ?> handle;
    private final Placement placement;
    private final ConnectionPool pool;
    private final int mapIndex;
    private final long attempt;
    private final RpmpClient[] clients;        // by node index
    private final boolean[] unreachable;       // by node index
    private final int[] nodeOfPartition;       // -1 until the partition's first push
    private final int[] nextSeq;
    /** node index -> partition -> {segments, bytes}, for MAP_END. */
    private final Map<Integer, Map<Integer, long[]>> sent = new TreeMap<>();
    private long pushNanos;
    private long bytesPushed;
    private long segments;

    SegmentPusher(RpmpShuffleHandle<?, ?, ?> handle, ConnectionPool pool, int mapIndex, long attempt) {
        this.handle = handle;
        this.placement = handle.placement();
        this.pool = pool;
        this.mapIndex = mapIndex;
        this.attempt = attempt;
        this.clients = new RpmpClient[placement.numNodes()];
        this.unreachable = new boolean[placement.numNodes()];
        int n = handle.numPartitions();
        this.nodeOfPartition = new int[n];
        java.util.Arrays.fill(nodeOfPartition, -1);
        this.nextSeq = new int[n];
    }

    /** Sends one segment (returns once it is on the wire; acks are collected later). buf may be reused then. */
    void push(int partition, byte[] buf, int len) throws IOException {
        long start = System.nanoTime();
        long checksum = Checksums.xxh64(buf, 0, len);
        int node = nodeFor(partition);
        RpmpClient c = clients[node];
        int seq = nextSeq[partition]++;
        try {
            c.push(handle.app(), handle.shuffleId(), partition, mapIndex, attempt, seq, checksum, buf, 0, len);
        } catch (RpmpException e) {
            throw onPushError(e, node);
        }
        long[] counts = sent.computeIfAbsent(node, k -> new TreeMap<>()).computeIfAbsent(partition, k -> new long[2]);
        counts[0]++;
        counts[1] += len;
        bytesPushed += len;
        segments++;
        pushNanos += System.nanoTime() - start;
        if (LOG.isDebugEnabled()) {
            LOG.debug("push shuffle {} partition {} map {} attempt {} seq {}: {} bytes to {}", handle.shuffleId(),
                partition, mapIndex, attempt, seq, len, c.address());
        }
    }

    private int nodeFor(int partition) throws IOException {
        int node = nodeOfPartition[partition];
        if (node >= 0) return node;
        IOException last = null;
        for (int i = 0; i < placement.prefLength(); i++) {
            int idx = placement.nodeIndex(partition, i);
            if (unreachable[idx]) continue;
            if (clients[idx] == null) {
                NodeInfo n = placement.node(idx);
                try {
                    clients[idx] = pool.borrow(n.host, n.port);
                } catch (IOException e) {
                    LOG.warn("RPMP node {} unreachable for shuffle {}: {}", n.address(), handle.shuffleId(), e.toString());
                    unreachable[idx] = true;
                    last = e;
                    continue;
                }
            }
            nodeOfPartition[partition] = idx;
            return idx;
        }
        StringBuilder tried = new StringBuilder();
        for (int i = 0; i < placement.prefLength(); i++) {
            tried.append(i == 0 ? "" : ", ").append(placement.preferred(partition, i).address());
        }
        throw new IOException("no RPMP node of partition " + partition + " of shuffle " + handle.shuffleId()
            + " is reachable (" + tried + ")", last);
    }

    /**
     * A node that does not know the shuffle (restarted without it, or replaced) is told again, so that
     * Spark's retry of this task finds it registered; the push itself fails the task.
     */
    private IOException onPushError(RpmpException e, int node) {
        if (e.code() == Protocol.NOT_FOUND) {
            NodeInfo n = placement.node(node);
            RpmpClient c = null;
            try {
                c = pool.borrow(n.host, n.port);
                c.registerShuffle(handle.app(), handle.shuffleId(), handle.numPartitions(), handle.replicas());
                LOG.warn("re-registered shuffle {} on RPMP node {} after: {}", handle.shuffleId(), n.address(), e.getMessage());
            } catch (IOException again) {
                e.addSuppressed(again);
            } finally {
                pool.release(c);
            }
        }
        return e;
    }

    /** Collects every ack and sends MAP_END to each node pushed to; returns connections to the pool. */
    void finish() throws IOException {
        long start = System.nanoTime();
        for (Map.Entry<Integer, Map<Integer, long[]>> e : sent.entrySet()) {
            RpmpClient c = clients[e.getKey()];
            try {
                c.awaitPushes();
            } catch (RpmpException ex) {
                throw onPushError(ex, e.getKey());
            }
            List<PartCount> counts = new ArrayList<>(e.getValue().size());
            for (Map.Entry<Integer, long[]> p : e.getValue().entrySet()) {
                counts.add(new PartCount(p.getKey(), (int) p.getValue()[0], p.getValue()[1]));
            }
            c.mapEnd(handle.app(), handle.shuffleId(), mapIndex, attempt, counts);
        }
        pushNanos += System.nanoTime() - start;
        for (int i = 0; i < clients.length; i++) {
            pool.release(clients[i]);
            clients[i] = null;
        }
    }

    /** Drops every connection (a failed or killed task: unread acks may be on the way). */
    void abort() {
        for (int i = 0; i < clients.length; i++) {
            pool.discard(clients[i]);
            clients[i] = null;
        }
    }

    long pushNanos() { return pushNanos; }

    long bytesPushed() { return bytesPushed; }

    long segments() { return segments; }
}

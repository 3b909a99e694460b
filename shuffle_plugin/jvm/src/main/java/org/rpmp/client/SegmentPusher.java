package org.rpmp.client;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.Consumer;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;

/**
 * Pushes one map attempt's segments to the partitions' nodes and ends the attempt with MAP_END.
 *
 * <p>Each partition goes to the first node of its preference list this task can reach (normally the
 * primary; the node replicates). One connection per node, pipelined up to spark.rpmp.push.inflight
 * pushes. Every segment of one (attempt, partition) goes to the same node, so a reader that finds any
 * record of a committed attempt on a node finds all of them there.
 *
 * <p>A segment stays referenced until the node acknowledged it. When a push fails in a way worth
 * retrying (the node lost a replica: UNAVAILABLE; bytes damaged on the way: CHECKSUM_MISMATCH; the node
 * forgot the shuffle: NOT_FOUND, re-registered first; the connection broke), every unacknowledged segment
 * of that node is pushed again on a new connection. That is safe because a node stores a
 * (map_index, attempt, seq) once. Other errors, or spark.rpmp.push.retries failed rounds, fail the task.
 * A node refusing room (POOL_FULL, QUOTA_EXCEEDED) fails it at once, since pushing there again does not help,
 * with an error that names the shuffle, the map, the partition and the node, and what to look at.
 */
public final class SegmentPusher implements SegmentOutput {
    private static final Logger LOG = LogManager.getLogger(SegmentPusher.class);

    /** A pushed segment the node has not acknowledged yet; the segment is buf's [0, limit). */
    private record Unacked(int partition, int seq, long checksum, ByteBuffer buf) {}

    private final ShuffleRef ref;
    private final Placement placement;
    private final ConnectionPool pool;
    private final int mapIndex;
    private final long attempt;
    private final int retries;
    private final long retryWaitMs;
    private final RpmpClient[] clients;               // by node index
    private final boolean[] unreachable;              // by node index
    private final List<ArrayDeque<Unacked>> unacked;  // by node index, in push order
    private final int[] nodeOfPartition;              // -1 until the partition's first push
    /** Per partition: the next segment's index, and whether the final segment (SEQ_LAST) went. */
    private final int[] nextSeq;
    private final boolean[] ended;
    /** node index -> partition -> {segments, bytes}, for MAP_END. */
    private final Map<Integer, Map<Integer, long[]>> sent = new TreeMap<>();
    /** Gets each segment's buffer back once the node acknowledged it (or the task gave up on it). */
    private Consumer<ByteBuffer> recycler = buf -> { };
    private long pushNanos;
    private long bytesPushed;
    private long segments;
    private long retriedRounds;

    /** retries: failed rounds tolerated per node; retryWaitMs x round is waited before each. */
    public SegmentPusher(ShuffleRef ref, ConnectionPool pool, int mapIndex, long attempt, int retries,
                         long retryWaitMs) {
        this.ref = ref;
        this.placement = ref.placement();
        this.pool = pool;
        this.mapIndex = mapIndex;
        this.attempt = attempt;
        this.retries = retries;
        this.retryWaitMs = retryWaitMs;
        int nodes = placement.numNodes();
        this.clients = new RpmpClient[nodes];
        this.unreachable = new boolean[nodes];
        this.unacked = new ArrayList<>(nodes);
        for (int i = 0; i < nodes; i++) unacked.add(new ArrayDeque<>());
        int n = ref.numPartitions();
        this.nodeOfPartition = new int[n];
        Arrays.fill(nodeOfPartition, -1);
        this.nextSeq = new int[n];
        this.ended = new boolean[n];
    }

    @Override
    public void onAcknowledged(Consumer<ByteBuffer> recycler) {
        this.recycler = recycler;
    }

    /**
     * Sends one segment, buf's [0, limit); returns once it is on the wire (acks are collected as the
     * pipeline fills). The pusher owns buf from now on and hands it to the recycler once acknowledged.
     * Segments of a partition are numbered 0, 1, ...; the last one carries SEQ_LAST in its seq (a retry
     * repeats the seq, flag included), and nothing may follow it.
     */
    @Override
    public void push(int partition, ByteBuffer buf, boolean last) throws IOException {
        if (ended[partition]) {
            throw new IllegalStateException("partition " + partition + " of shuffle " + ref.shuffleId() + " map "
                + mapIndex + " already got its final segment");
        }
        long start = System.nanoTime();
        int len = buf.limit();
        int node = nodeFor(partition);
        int index = nextSeq[partition]++;
        if (index > Protocol.SEQ_INDEX) throw new IllegalStateException("more than 2^31 segments in partition " + partition);
        ended[partition] = last;
        int seq = last ? index | Protocol.SEQ_LAST : index;
        Unacked u = new Unacked(partition, seq, Checksums.xxh3(buf, 0, len), buf);
        unacked.get(node).addLast(u);
        // A retry round re-pushes every unacknowledged segment, this one included.
        withRetries(node, (c, again) -> {
            if (!again) send(c, node, u);
        });
        long[] counts = sent.computeIfAbsent(node, k -> new TreeMap<>()).computeIfAbsent(partition, k -> new long[2]);
        counts[0]++;
        counts[1] += len;
        bytesPushed += len;
        segments++;
        pushNanos += System.nanoTime() - start;
        if (LOG.isDebugEnabled()) {
            LOG.debug("push shuffle {} partition {} map {} attempt {} seq {}: {} bytes to {}", ref.shuffleId(),
                partition, mapIndex, attempt, Protocol.seqName(u.seq()), len, placement.node(node).address());
        }
    }

    private void send(RpmpClient c, int node, Unacked u) throws IOException {
        c.push(ref.app(), ref.shuffleId(), u.partition(), mapIndex, attempt, u.seq(), u.checksum(), u.buf().duplicate());
        forgetAcked(c, node);
    }

    /** The client acks in push order: everything older than its outstanding pushes was acknowledged. */
    private void forgetAcked(RpmpClient c, int node) {
        ArrayDeque<Unacked> q = unacked.get(node);
        while (q.size() > c.pendingPushes()) recycler.accept(q.pollFirst().buf());
    }

    /** One exchange with a node; again is true in a retry round (after the unacknowledged were re-pushed). */
    private interface NodeOp {
        void run(RpmpClient c, boolean again) throws IOException;
    }

    /**
     * Runs op against a node's connection. After a retriable failure: drop the connection, wait, reconnect
     * (re-registering the shuffle if the node forgot it), push every unacknowledged segment again, and
     * run op again, for at most spark.rpmp.push.retries rounds.
     */
    private void withRetries(int node, NodeOp op) throws IOException {
        boolean reRegister = false;
        for (int round = 0; ; round++) {
            IOException error;
            try {
                RpmpClient c = clients[node];
                if (c == null) {
                    NodeInfo n = placement.node(node);
                    c = pool.borrow(n.host(), n.port());
                    clients[node] = c;
                }
                if (round > 0) {
                    if (reRegister) {
                        c.registerShuffle(ref.app(), ref.shuffleId(), ref.numPartitions(), ref.replicas());
                    }
                    for (Unacked u : new ArrayList<>(unacked.get(node))) send(c, node, u);
                }
                op.run(c, round > 0);
                return;
            } catch (IOException e) {
                error = e;
            }
            if (round >= retries || !retriable(error)) throw describe(error, node);
            pool.discard(clients[node]);
            clients[node] = null;
            reRegister = error instanceof RpmpException && ((RpmpException) error).code() == Protocol.NOT_FOUND;
            LOG.warn("RPMP push to {} failed ({}); retrying {} unacknowledged segments (round {} of {})",
                placement.node(node).address(), error.getMessage(), unacked.get(node).size(), round + 1, retries);
            retriedRounds++;
            sleep(retryWaitMs * (round + 1));
        }
    }

    private static boolean retriable(IOException e) {
        if (!(e instanceof RpmpException)) return !(e instanceof java.io.InterruptedIOException);
        int code = ((RpmpException) e).code();
        return code == Protocol.UNAVAILABLE || code == Protocol.CHECKSUM_MISMATCH || code == Protocol.NOT_FOUND;
    }

    private IOException describe(IOException e, int node) {
        String addr = placement.node(node).address();
        if (e instanceof RpmpException) {
            RpmpException r = (RpmpException) e;
            String hint = noRoomHint(r.code());
            if (hint == null) return e;
            // The node refuses to hold more: the task fails with what to look at (the client's message names
            // the partition and seq of the refused push).
            RpmpException out = new RpmpException(r.code(), "shuffle " + ref.shuffleId() + " map " + mapIndex
                + " (attempt " + attempt + ") on RPMP node " + addr + ": " + r.nodeMessage() + "; " + hint,
                r.node() != null ? r.node() : addr);
            out.initCause(e);
            return out;
        }
        return new IOException("push of shuffle " + ref.shuffleId() + " map " + mapIndex + " to RPMP node "
            + addr + " failed: " + e.getMessage(), e);
    }

    /** What a push refused for want of room means, or null for other errors. */
    private static String noRoomHint(int code) {
        if (code == Protocol.POOL_FULL) {
            return "the node has no room left (its pool, and its spill files if it has a disk tier, are full)";
        }
        if (code == Protocol.QUOTA_EXCEEDED) {
            return "the application holds more than its quota on that node (rpmp server --app-quota); "
                + "pushing there fails until the application's shuffles are deleted";
        }
        return null;
    }

    private static void sleep(long ms) throws IOException {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new java.io.InterruptedIOException("interrupted while waiting to retry a push");
        }
    }

    /**
     * The node a partition's segments go to: the first of its preference list this task can connect to.
     * When none answers (a node restarting), the whole list is tried again after retryWait x round.
     */
    private int nodeFor(int partition) throws IOException {
        int node = nodeOfPartition[partition];
        if (node >= 0) return node;
        IOException last = null;
        for (int round = 0; ; round++) {
            for (int i = 0; i < placement.prefLength(); i++) {
                int idx = placement.nodeIndex(partition, i);
                if (unreachable[idx]) continue;
                if (clients[idx] == null) {
                    NodeInfo n = placement.node(idx);
                    try {
                        clients[idx] = pool.borrow(n.host(), n.port());
                    } catch (IOException e) {
                        if (e instanceof java.io.InterruptedIOException) throw e;
                        LOG.warn("RPMP node {} unreachable for shuffle {}: {}", n.address(), ref.shuffleId(), e.toString());
                        unreachable[idx] = true;   // remembered, so other partitions skip it this round
                        last = e;
                        continue;
                    }
                }
                nodeOfPartition[partition] = idx;
                return idx;
            }
            if (round >= retries) break;
            for (int i = 0; i < placement.prefLength(); i++) unreachable[placement.nodeIndex(partition, i)] = false;
            sleep(retryWaitMs * (round + 1));
        }
        StringBuilder tried = new StringBuilder();
        for (int i = 0; i < placement.prefLength(); i++) {
            tried.append(i == 0 ? "" : ", ").append(placement.preferred(partition, i).address());
        }
        throw new IOException("no RPMP node of partition " + partition + " of shuffle " + ref.shuffleId()
            + " is reachable (" + tried + ")", last);
    }

    /** Collects every ack and sends MAP_END to each node pushed to; returns connections to the pool. */
    public void finish() throws IOException {
        long start = System.nanoTime();
        for (Map.Entry<Integer, Map<Integer, long[]>> e : sent.entrySet()) {
            int node = e.getKey();
            List<PartCount> counts = new ArrayList<>(e.getValue().size());
            for (Map.Entry<Integer, long[]> p : e.getValue().entrySet()) {
                counts.add(new PartCount(p.getKey(), (int) p.getValue()[0], p.getValue()[1]));
            }
            // MAP_END only checks what the node holds, so it is as safe to repeat as a push.
            withRetries(node, (c, again) -> {
                c.awaitPushes();
                forgetAcked(c, node);
                c.mapEnd(ref.app(), ref.shuffleId(), mapIndex, attempt, counts);
            });
        }
        pushNanos += System.nanoTime() - start;
        for (int i = 0; i < clients.length; i++) {
            pool.release(clients[i]);
            clients[i] = null;
        }
    }

    /**
     * Drops every connection (a failed or killed task: unread acks may be on the way) and gives the
     * unacknowledged buffers back: what was written to a socket is in the kernel's hands already.
     */
    public void abort() {
        for (int i = 0; i < clients.length; i++) {
            pool.discard(clients[i]);
            clients[i] = null;
            ArrayDeque<Unacked> q = unacked.get(i);
            while (!q.isEmpty()) recycler.accept(q.pollFirst().buf());
        }
    }

    public long pushNanos() { return pushNanos; }

    public long bytesPushed() { return bytesPushed; }

    public long segments() { return segments; }

    /** Rounds of re-pushing after a retriable failure (0 normally). */
    long retriedRounds() { return retriedRounds; }
}

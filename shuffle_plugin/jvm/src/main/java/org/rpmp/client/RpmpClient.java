package org.rpmp.client;

import java.io.Closeable;
import java.io.EOFException;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.List;

/**
 * A blocking client of one RPMP node over one TCP connection (not thread-safe: one user at a time).
 *
 * <p>The bytes travel over a Transport: plain TCP (a non-blocking channel whose every wait goes through a
 * Selector with the read timeout: a silent node must not hang a task) or TLS (Options.tls). With
 * Options.credentials, every connection authenticates after HELLO (AuthHandshake: AUTH, the node's proof
 * checked, AUTH_PROOF) before it is handed out. All bytes pass through two fixed direct buffers (no per-call direct allocations, no JDK temporary
 * direct-buffer cache growing to the largest payload). Every frame received is validated (magic,
 * version, reserved, meta and data lengths, response flag, opcode, request id) before anything is
 * allocated for it.
 *
 * <p>PUSH is pipelined: up to {@code maxInflight} pushes are sent before the oldest ack is read; the node
 * answers a connection's requests in order, so acks are matched by request id in FIFO order.
 */
public final class RpmpClient implements Closeable {
    private static final int BUFFER_SIZE = 256 << 10;
    /** Consecutive empty non-final FETCH frames tolerated before the stream is declared bogus. */
    private static final int MAX_EMPTY_FRAMES = 64;
    /** PartCounts per MAP_END: 16 bytes each keeps the meta well under 1 MiB. */
    private static final int MAP_END_CHUNK = 60_000;
    /** Attempt ids a FETCH lists at most (8 bytes each); beyond, the node does not filter and the reader does. */
    public static final int MAX_FETCH_ATTEMPTS = 100_000;

    /** Connection settings. */
    public static final class Options {
        public int connectTimeoutMs = 10_000;
        public int readTimeoutMs = 120_000;
        public int maxInflight = 4;
        public String clientName = "rpmp-java";
        /** The largest data part accepted from a node, whatever its HELLO says. */
        public long maxDataCap = Protocol.DEFAULT_MAX_DATA;
        /** Tenant and secret to authenticate every connection with; null: the nodes run open. */
        public Credentials credentials;
        /** TLS to the nodes; null: plain TCP. */
        public TlsSettings tls;

        public Options copy() {
            Options o = new Options();
            o.connectTimeoutMs = connectTimeoutMs;
            o.readTimeoutMs = readTimeoutMs;
            o.maxInflight = maxInflight;
            o.clientName = clientName;
            o.maxDataCap = maxDataCap;
            o.credentials = credentials;
            o.tls = tls;
            return o;
        }
    }

    private record PendingPush(long requestId, int partition, int seq) {}

    private final String host;
    private final int port;
    private final String address;
    private final Options options;
    private final Transport transport;
    private final ByteBuffer out = ByteBuffer.allocateDirect(BUFFER_SIZE).order(ByteOrder.LITTLE_ENDIAN);
    /** Received, unread bytes are in [position, limit). */
    private final ByteBuffer in = ByteBuffer.allocateDirect(BUFFER_SIZE).order(ByteOrder.LITTLE_ENDIAN);
    private final ArrayDeque<PendingPush> pushes = new ArrayDeque<>();
    private long nextRequestId = 1;
    private long maxData = Protocol.DEFAULT_MAX_DATA;
    private Responses.Hello hello;
    private FetchStream activeFetch;
    /** The byte stream is out of sync (I/O error, bad frame, abandoned stream): never reuse. */
    private boolean broken;
    private boolean closed;
    /** The tenant this connection acts for (null: it did not authenticate). */
    private String tenant;

    private RpmpClient(String host, int port, Options options, Transport transport) {
        this.host = host;
        this.port = port;
        this.address = host + ":" + port;
        this.options = options;
        this.transport = transport;
        in.flip();
    }

    /** Opens a connection, performs HELLO and, with credentials, authenticates. */
    public static RpmpClient connect(String host, int port, Options options) throws IOException {
        Transport t = options.tls == null
            ? PlainTransport.connect(host, port, options.connectTimeoutMs, options.readTimeoutMs)
            : TlsTransport.connect(host, port, options.connectTimeoutMs, options.readTimeoutMs, options.tls);
        RpmpClient client = new RpmpClient(host, port, options, t);
        try {
            client.hello = client.doHello();
            if (options.credentials != null) client.authenticate(new AuthHandshake(options.credentials));
            return client;
        } catch (IOException | RuntimeException e) {
            client.close();
            throw e;
        }
    }

    public String address() { return address; }

    public String host() { return host; }

    public int port() { return port; }

    /** The node's HELLO answer (node id, max_data). */
    public Responses.Hello helloInfo() { return hello; }

    /** The largest data part this connection sends or accepts (the node's max_data, capped). */
    public long maxData() { return maxData; }

    /** Nanoseconds this client spent blocked waiting for the network since it was created. */
    public long ioWaitNanos() { return transport.ioWaitNanos(); }

    /** The tenant this connection authenticated as, or null (a node running open). */
    public String tenant() { return tenant; }

    /** Whether the connection can be handed to another user: in sync, nothing outstanding. */
    public boolean isReusable() {
        return !closed && !broken && pushes.isEmpty() && activeFetch == null && !in.hasRemaining();
    }

    /** A cheap check of an idle pooled connection: the node has not closed it nor sent anything unasked. */
    public boolean isIdleHealthy() {
        if (!isReusable()) return false;
        try {
            in.compact();
            int n;
            try {
                n = transport.readNow(in);
            } finally {
                in.flip();
            }
            // The node closed it, or sent something nobody asked for: never hand it out again.
            if (n != 0) broken = true;
            return n == 0;
        } catch (IOException e) {
            broken = true;
            return false;
        }
    }

    // ---- requests -------------------------------------------------------------------------------------

    private Responses.Hello doHello() throws IOException {
        byte[] meta = call(Protocol.OP_HELLO, Requests.hello(options.clientName));
        Responses.Hello h = Responses.hello(new MetaReader(meta, address));
        if (h.version() != Protocol.VERSION) {
            broken = true;
            throw new RpmpException(Protocol.BAD_VERSION, "node speaks protocol version " + h.version(), address);
        }
        maxData = Math.min(h.maxData(), options.maxDataCap);
        return h;
    }

    /**
     * AUTH, the node's proof checked, AUTH_PROOF (PROTOCOL.md "Authentication and tenants"). Any failure is
     * AUTH_FAILED naming this node and what to check, and leaves the connection unusable (the node closes it).
     */
    void authenticate(AuthHandshake handshake) throws IOException {
        try {
            byte[] answer = call(Protocol.OP_AUTH, handshake.authRequest());
            byte[] proof = handshake.answer(answer, address);
            Responses.empty(new MetaReader(call(Protocol.OP_AUTH_PROOF, proof), address), Protocol.OP_AUTH_PROOF);
        } catch (RpmpException e) {
            broken = true;
            if (e.code() != Protocol.AUTH_FAILED) throw e;
            if (e.nodeMessage() != null && e.nodeMessage().contains(AuthHandshake.CHECK)) throw e;
            throw new RpmpException(Protocol.AUTH_FAILED, "the node refused tenant '" + handshake.tenant() + "' ("
                + e.nodeMessage() + "); " + AuthHandshake.CHECK, address);
        }
        tenant = handshake.tenant();
    }

    public void ping() throws IOException {
        Responses.empty(new MetaReader(call(Protocol.OP_PING, Requests.empty()), address), Protocol.OP_PING);
    }

    /** STATS: the node's JSON status object. */
    public String stats() throws IOException {
        checkIdle();
        long id = send(Protocol.OP_STATS, Requests.empty(), null);
        FrameHeader h = readResponseHeader(Protocol.OP_STATS, id);
        byte[] meta = readMeta(h);
        Responses.empty(new MetaReader(meta, address), Protocol.OP_STATS);
        byte[] data = new byte[(int) Math.min(h.dataLen(), Integer.MAX_VALUE - 16)];
        readBytes(data, 0, data.length);
        return new String(data, StandardCharsets.UTF_8);
    }

    public Responses.Members members() throws IOException {
        return Responses.members(new MetaReader(call(Protocol.OP_MEMBERS, Requests.empty()), address));
    }

    public Placement registerShuffle(String app, int shuffle, int numPartitions, int replicas) throws IOException {
        byte[] meta = call(Protocol.OP_REGISTER_SHUFFLE, Requests.registerShuffle(app, shuffle, numPartitions, replicas));
        try {
            return Placement.decode(new MetaReader(meta, address), numPartitions);
        } catch (RpmpException e) {
            throw new RpmpException(e.code(), e.nodeMessage(), address);
        }
    }

    /**
     * Sends one PUSH without waiting for its ack, first collecting the oldest ack when maxInflight pushes
     * are outstanding. payload[off, off+len) may be reused once this returns (the bytes are on the wire).
     */
    public void push(String app, int shuffle, int partition, int mapIndex, long attempt, int seq, long checksum,
                     byte[] payload, int off, int len) throws IOException {
        push(app, shuffle, partition, mapIndex, attempt, seq, checksum, ByteBuffer.wrap(payload, off, len));
    }

    /**
     * PUSH of payload's [position, limit), which this consumes. A direct buffer goes to the socket as it is
     * (no copy in the JVM); the buffer may be reused once this returns.
     */
    public void push(String app, int shuffle, int partition, int mapIndex, long attempt, int seq, long checksum,
                     ByteBuffer payload) throws IOException {
        int len = payload.remaining();
        ensureOpen();
        if (activeFetch != null) throw new IllegalStateException("connection is busy with a FETCH stream");
        if (len > Protocol.MAX_SEGMENT || len > maxData) {
            throw new IllegalArgumentException("segment of " + len + " bytes exceeds the limit "
                + Math.min(Protocol.MAX_SEGMENT, maxData));
        }
        while (pushes.size() >= Math.max(1, options.maxInflight)) awaitOnePush();
        byte[] meta = Requests.push(app, shuffle, partition, mapIndex, attempt, seq, checksum);
        long id = send(Protocol.OP_PUSH, meta, payload);
        pushes.add(new PendingPush(id, partition, seq));
    }

    public int pendingPushes() { return pushes.size(); }

    /** Collects the acks of every outstanding push; the first error is thrown. */
    public void awaitPushes() throws IOException {
        while (!pushes.isEmpty()) awaitOnePush();
    }

    private void awaitOnePush() throws IOException {
        PendingPush p = pushes.peek();
        try {
            FrameHeader h = readResponseHeader(Protocol.OP_PUSH, p.requestId());
            byte[] meta = readMeta(h);
            expectNoData(h);
            pushes.poll();
            Responses.empty(new MetaReader(meta, address), Protocol.OP_PUSH);
        } catch (RpmpException e) {
            if (pushes.peek() == p) pushes.poll();
            // The remaining acks are still on the way; nobody will read them, so the stream is unusable.
            if (!pushes.isEmpty()) broken = true;
            throw new RpmpException(e.code(), "push of partition " + p.partition() + " seq " + Protocol.seqName(p.seq())
                + ": " + e.nodeMessage(), address);
        }
    }

    /**
     * MAP_END. The node only checks the listed partitions, so a task that wrote to more partitions than
     * one 1 MiB meta can list (16 bytes each) sends several.
     */
    public void mapEnd(String app, int shuffle, int mapIndex, long attempt, List<PartCount> counts) throws IOException {
        int from = 0;
        do {
            int to = Math.min(counts.size(), from + MAP_END_CHUNK);
            byte[] meta = call(Protocol.OP_MAP_END, Requests.mapEnd(app, shuffle, mapIndex, attempt, counts.subList(from, to)));
            Responses.empty(new MetaReader(meta, address), Protocol.OP_MAP_END);
            from = to;
        } while (from < counts.size());
    }

    /**
     * Starts a FETCH; the returned stream yields the records as they arrive. The connection is busy until
     * the stream returned null (end); closing an unfinished stream makes the connection unusable.
     */
    public FetchStream fetch(String app, int shuffle, int partition, int startMap, int endMap, long[] attempts)
            throws IOException {
        checkIdle();
        if (attempts.length > MAX_FETCH_ATTEMPTS) attempts = new long[0];
        long id = send(Protocol.OP_FETCH, Requests.fetch(app, shuffle, partition, startMap, endMap, attempts), null);
        activeFetch = new FetchStream(id);
        return activeFetch;
    }

    /** PARTITION_INFO: the node's pool file and the blocks of a partition, for a reader on the node's host. */
    public Responses.PartitionInfo partitionInfo(String app, int shuffle, int partition) throws IOException {
        byte[] meta = call(Protocol.OP_PARTITION_INFO, Requests.partitionInfo(app, shuffle, partition));
        return Responses.partitionInfo(new MetaReader(meta, address));
    }

    public long deleteShuffle(String app, int shuffle) throws IOException {
        byte[] meta = call(Protocol.OP_DELETE_SHUFFLE, Requests.deleteShuffle(app, shuffle));
        return Responses.blocksFreed(new MetaReader(meta, address));
    }

    public long deleteApp(String app) throws IOException {
        byte[] meta = call(Protocol.OP_DELETE_APP, Requests.deleteApp(app));
        return Responses.blocksFreed(new MetaReader(meta, address));
    }

    /**
     * LEASE: renews {@code app} on every node (the node forwards it), so its data outlives the node's app TTL;
     * returns that TTL in milliseconds (0: apps never expire there). Renew well within it (LeaseKeeper: a third).
     */
    public long lease(String app) throws IOException {
        byte[] meta = call(Protocol.OP_LEASE, Requests.lease(app));
        return Responses.leaseTtlMs(new MetaReader(meta, address));
    }

    /** DRAIN: the node takes no new shuffles and stops once it holds none (or after timeoutSeconds; 0: no limit). */
    public void drain(long timeoutSeconds) throws IOException {
        Responses.empty(new MetaReader(call(Protocol.OP_DRAIN, Requests.drain(timeoutSeconds)), address),
            Protocol.OP_DRAIN);
    }

    /** The records of one FETCH, streamed frame by frame; record payloads are bounded by MAX_SEGMENT. */
    public final class FetchStream implements Closeable {
        private final long requestId;
        private long recordsLeft;
        private long dataLeft;
        private boolean lastFrame;
        private boolean done;
        private boolean completed;
        private int emptyFrames;

        private FetchStream(long requestId) {
            this.requestId = requestId;
        }

        /** The next record, or null once the node sent the final frame. */
        public SegmentRecord next() throws IOException {
            if (done) return null;
            try {
                while (recordsLeft == 0) {
                    if (dataLeft != 0) {
                        throw new RpmpException(Protocol.BAD_FRAME, dataLeft + " bytes after the last record of a FETCH frame", address);
                    }
                    if (lastFrame) {
                        done = true;
                        completed = true;
                        activeFetch = null;
                        return null;
                    }
                    readFrame();
                }
                ensureIn(Protocol.RECORD_HEADER_SIZE);
                SegmentRecord.Header h = SegmentRecord.readHeader(in, dataLeft - Protocol.RECORD_HEADER_SIZE, address);
                dataLeft -= Protocol.RECORD_HEADER_SIZE;
                byte[] payload = new byte[h.length()];
                readBytes(payload, 0, h.length());
                dataLeft -= h.length();
                recordsLeft--;
                return new SegmentRecord(h.mapIndex(), h.attempt(), h.seq(), h.checksum(), payload);
            } catch (IOException | RuntimeException e) {
                // Only a clean error frame (readFrame marks the stream done) leaves the connection in sync.
                if (!done) broken = true;
                done = true;
                activeFetch = null;
                throw e;
            }
        }

        private void readFrame() throws IOException {
            FrameHeader h;
            try {
                h = readResponseHeader(Protocol.OP_FETCH, requestId);
            } catch (RpmpException e) {
                // An error frame ends the response; the connection stays in sync unless it is now broken.
                if (!broken) {
                    done = true;
                    activeFetch = null;
                }
                throw e;
            }
            byte[] meta = readMeta(h);
            long records = Responses.fetchRecords(new MetaReader(meta, address));
            if (records * Protocol.RECORD_HEADER_SIZE > h.dataLen()) {
                throw new RpmpException(Protocol.BAD_FRAME, records + " records cannot fit " + h.dataLen() + " data bytes", address);
            }
            lastFrame = !h.hasMore();
            recordsLeft = records;
            dataLeft = h.dataLen();
            emptyFrames = records == 0 && !lastFrame ? emptyFrames + 1 : 0;
            if (emptyFrames > MAX_EMPTY_FRAMES) {
                throw new RpmpException(Protocol.BAD_FRAME, "too many empty FETCH frames", address);
            }
        }

        /** Whether the node sent the final frame and every record was read. */
        public boolean completed() { return completed; }

        @Override
        public void close() {
            if (!done) {
                broken = true;
                done = true;
                activeFetch = null;
            }
        }
    }

    // ---- framing --------------------------------------------------------------------------------------

    /** One request without data, one response without data: returns the response meta. */
    private byte[] call(int opcode, byte[] meta) throws IOException {
        checkIdle();
        long id = send(opcode, meta, null);
        FrameHeader h = readResponseHeader(opcode, id);
        byte[] respMeta = readMeta(h);
        expectNoData(h);
        return respMeta;
    }

    private void checkIdle() throws IOException {
        ensureOpen();
        if (activeFetch != null) throw new IllegalStateException("connection is busy with a FETCH stream");
        awaitPushes();
    }

    private void ensureOpen() throws IOException {
        if (closed) throw new IOException("connection to " + address + " is closed");
        if (broken) throw new IOException("connection to " + address + " is out of sync after an earlier error");
    }

    /** One frame; data's [position, limit) is consumed. Direct data leaves in one gathering write with the header. */
    private long send(int opcode, byte[] meta, ByteBuffer data) throws IOException {
        long id = nextRequestId++;
        int len = data == null ? 0 : data.remaining();
        try {
            if (out.remaining() < Protocol.HEADER_SIZE) flushOut();
            FrameHeader.encode(out, opcode, 0, id, meta.length, len);
            writeBytes(ByteBuffer.wrap(meta));
            if (len > 0 && data.isDirect()) {
                out.flip();
                transport.write(out, data);
                out.clear();
            } else {
                if (len > 0) writeBytes(data);
                flushOut();
            }
        } catch (IOException | RuntimeException e) {
            broken = true;
            throw e;
        }
        return id;
    }

    /** Copies src's [position, limit) into the output buffer (flushing as it fills); consumes src. */
    private void writeBytes(ByteBuffer src) throws IOException {
        while (src.hasRemaining()) {
            if (!out.hasRemaining()) flushOut();
            int n = Math.min(src.remaining(), out.remaining());
            ByteBuffer part = src.duplicate();
            part.limit(part.position() + n);
            out.put(part);
            src.position(src.position() + n);
        }
    }

    private void flushOut() throws IOException {
        out.flip();
        transport.write(out);
        out.clear();
    }

    /**
     * Reads the next frame header and checks it answers (opcode, requestId). An error frame is read whole
     * and thrown as RpmpException; after a non-fatal error frame for this request the connection stays in
     * sync and usable. Every other failure leaves it broken.
     */
    private FrameHeader readResponseHeader(int opcode, long requestId) throws IOException {
        FrameHeader h;
        RpmpException nodeError = null;
        try {
            ensureIn(Protocol.HEADER_SIZE);
            h = FrameHeader.decode(in, maxData, address);
            if (!h.isResponse()) {
                throw new RpmpException(Protocol.BAD_FRAME, "expected a response, got a request frame " + h, address);
            }
            if (h.isError()) {
                byte[] meta = readMeta(h);
                if (h.dataLen() != 0) throw new RpmpException(Protocol.BAD_FRAME, "error frame with a data part", address);
                nodeError = Responses.error(new MetaReader(meta, address), address);
                if (nodeError.code() == Protocol.AUTH_FAILED && opcode != Protocol.OP_AUTH && opcode != Protocol.OP_AUTH_PROOF) {
                    nodeError = new RpmpException(Protocol.AUTH_FAILED, nodeError.nodeMessage() + " (the node requires "
                        + "authentication: give a tenant and secret; Spark: spark.rpmp.auth.tenant and "
                        + "spark.rpmp.auth.secret)", address);
                }
                // The node closes the connection after a fatal error; an error for another request means
                // the two sides lost track of each other.
                if (Protocol.isFatal(nodeError.code()) || h.requestId() != requestId) broken = true;
            } else if (h.requestId() != requestId) {
                throw new RpmpException(Protocol.BAD_FRAME, "response to request " + h.requestId()
                    + " while waiting for " + requestId, address);
            } else if (h.opcode() != opcode) {
                throw new RpmpException(Protocol.BAD_FRAME, "response opcode " + Protocol.opName(h.opcode())
                    + " to a " + Protocol.opName(opcode) + " request", address);
            }
        } catch (IOException | RuntimeException e) {
            broken = true;
            throw e;
        }
        if (nodeError != null) throw nodeError;
        return h;
    }

    private byte[] readMeta(FrameHeader h) throws IOException {
        byte[] meta = new byte[h.metaLen()];   // bounded by MAX_META in FrameHeader.decode
        readBytes(meta, 0, meta.length);
        return meta;
    }

    private void expectNoData(FrameHeader h) throws RpmpException {
        if (h.dataLen() != 0) {
            broken = true;
            throw new RpmpException(Protocol.BAD_FRAME, "unexpected data part of " + h.dataLen() + " bytes in "
                + Protocol.opName(h.opcode()) + " response", address);
        }
    }

    /** Makes at least n (<= buffer size) unread bytes available in {@code in}. */
    private void ensureIn(int n) throws IOException {
        while (in.remaining() < n) fill();
    }

    private void readBytes(byte[] dst, int off, int len) throws IOException {
        try {
            while (len > 0) {
                if (!in.hasRemaining()) fill();
                int n = Math.min(len, in.remaining());
                in.get(dst, off, n);
                off += n;
                len -= n;
            }
        } catch (IOException | RuntimeException e) {
            broken = true;
            throw e;
        }
    }

    private void fill() throws IOException {
        in.compact();
        try {
            while (true) {
                int n = transport.read(in);
                if (n > 0) return;
                if (n < 0) throw new EOFException("node " + address + " closed the connection");
            }
        } finally {
            in.flip();
        }
    }

    @Override
    public void close() {
        if (closed) return;
        closed = true;
        transport.close();
    }

    @Override
    public String toString() { return "RpmpClient(" + address + (broken ? ", broken" : "") + ")"; }
}

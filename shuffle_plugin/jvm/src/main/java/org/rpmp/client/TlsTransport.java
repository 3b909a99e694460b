package org.rpmp.client;

import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.net.UnknownHostException;
import java.nio.ByteBuffer;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;

import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSocket;

/**
 * TLS (PROTOCOL.md "TLS"): a blocking SSLSocket whose reads are bounded by SO_TIMEOUT (the read timeout) and
 * whose handshake by the connect timeout. Bytes are copied through two heap buffers (the JSSE encrypts from
 * heap arrays anyway); small writes are gathered into one TLS record. A blocking SSLSocket write ignores
 * SO_TIMEOUT, so a write that makes no progress for the read timeout (a node that stopped reading) has its socket
 * closed by a watchdog and fails as a SocketTimeoutException, as the plain transport's does.
 */
final class TlsTransport implements Transport {
    private static final int BUFFER = 64 << 10;
    /** An idle connection used this recently is trusted without the 1 ms probe read (nodes close idle ones after >= 5 s). */
    private static final long TRUST_IDLE_NANOS = 1_000_000_000L;
    /** Closes the sockets of writes that outlive the read timeout; one daemon thread for all connections. */
    private static final ScheduledThreadPoolExecutor WATCHDOG = watchdog();

    private static ScheduledThreadPoolExecutor watchdog() {
        ScheduledThreadPoolExecutor e = new ScheduledThreadPoolExecutor(1, r -> {
            Thread t = new Thread(r, "rpmp-tls-write-watchdog");
            t.setDaemon(true);
            return t;
        });
        e.setRemoveOnCancelPolicy(true);
        return e;
    }

    private final String address;
    private final int readTimeoutMs;
    private final SSLSocket socket;
    private final Socket raw;
    private final InputStream in;
    private final OutputStream out;
    private final byte[] readBuf = new byte[BUFFER];
    private final byte[] writeBuf = new byte[BUFFER];
    private long ioWaitNanos;
    private long lastIo = System.nanoTime();

    private TlsTransport(String address, int readTimeoutMs, SSLSocket socket, Socket raw) throws IOException {
        this.address = address;
        this.readTimeoutMs = readTimeoutMs;
        this.socket = socket;
        this.raw = raw;
        this.in = socket.getInputStream();
        this.out = socket.getOutputStream();
    }

    static TlsTransport connect(String host, int port, int connectTimeoutMs, int readTimeoutMs, TlsSettings tls)
            throws IOException {
        InetSocketAddress addr = new InetSocketAddress(host, port);
        if (addr.isUnresolved()) throw new UnknownHostException("cannot resolve RPMP node host " + host);
        Socket raw = new Socket();
        SSLSocket s = null;
        try {
            raw.setTcpNoDelay(true);
            raw.setKeepAlive(true);
            raw.connect(addr, Math.max(1, connectTimeoutMs));
            s = (SSLSocket) tls.context().getSocketFactory().createSocket(raw, host, port, true);
            SSLParameters p = s.getSSLParameters();
            // The node's certificate must name the host we dialled (an IP SAN for an address), unless turned off.
            if (tls.verifyHostname()) p.setEndpointIdentificationAlgorithm("HTTPS");
            p.setProtocols(TlsSettings.PROTOCOLS);
            s.setSSLParameters(p);
            s.setSoTimeout(Math.max(1, connectTimeoutMs));
            try {
                s.startHandshake();
            } catch (SocketTimeoutException e) {
                throw new SocketTimeoutException("TLS handshake with RPMP node " + host + ":" + port + " timed out after "
                    + connectTimeoutMs + " ms (does the node run with --tls-cert?)");
            } catch (EOFException e) {
                throw new javax.net.ssl.SSLHandshakeException("RPMP node " + host + ":" + port + " closed the connection "
                    + "during the TLS handshake: it may not run with --tls-cert, or it wants a client certificate "
                    + "(--tls-ca) this client does not present");
            }
            s.setSoTimeout(Math.max(1, readTimeoutMs));
            return new TlsTransport(host + ":" + port, readTimeoutMs, s, raw);
        } catch (IOException | RuntimeException e) {
            try {
                if (s != null) s.close();
                raw.close();
            } catch (IOException ignored) {
                // closing anyway
            }
            throw e;
        }
    }

    @Override
    public int read(ByteBuffer dst) throws IOException {
        long start = System.nanoTime();
        try {
            int n = in.read(readBuf, 0, Math.min(readBuf.length, dst.remaining()));
            if (n > 0) dst.put(readBuf, 0, n);
            return n;
        } catch (SocketTimeoutException e) {
            throw new SocketTimeoutException("node " + address + ": no progress waiting for a response for "
                + readTimeoutMs + " ms");
        } finally {
            lastIo = System.nanoTime();
            ioWaitNanos += lastIo - start;
        }
    }

    /**
     * Decrypted bytes already buffered, else, when TLS bytes (an alert, a close_notify) are waiting in the socket or
     * the connection was idle for a second or more, a 1 ms read: an idle connection the node closed shows as -1.
     * A connection used within the last second with nothing waiting is taken as healthy without waiting.
     */
    @Override
    public int readNow(ByteBuffer dst) throws IOException {
        int avail = in.available();
        if (avail > 0) {
            int n = in.read(readBuf, 0, Math.min(Math.min(avail, readBuf.length), dst.remaining()));
            if (n > 0) dst.put(readBuf, 0, n);
            return n;
        }
        if (raw.getInputStream().available() == 0 && System.nanoTime() - lastIo < TRUST_IDLE_NANOS) return 0;
        socket.setSoTimeout(1);
        try {
            int n = in.read(readBuf, 0, Math.min(readBuf.length, dst.remaining()));
            if (n > 0) dst.put(readBuf, 0, n);
            return n;
        } catch (SocketTimeoutException e) {
            return 0;
        } finally {
            socket.setSoTimeout(Math.max(1, readTimeoutMs));
        }
    }

    /** When the current write last moved bytes (nanoTime); read by the watchdog. */
    private volatile long writeProgress;
    private volatile boolean writing;
    private volatile boolean writeTimedOut;

    @Override
    public void write(ByteBuffer... srcs) throws IOException {
        writeProgress = System.nanoTime();
        writing = true;
        ScheduledFuture<?> guard = WATCHDOG.schedule(this::checkWrite, Math.max(1, readTimeoutMs), TimeUnit.MILLISECONDS);
        try {
            writeAll(srcs);
        } catch (IOException e) {
            if (writeTimedOut) {
                throw new SocketTimeoutException("node " + address + ": no progress sending for " + readTimeoutMs
                    + " ms (connection closed)");
            }
            throw e;
        } finally {
            writing = false;
            guard.cancel(false);
        }
    }

    /** The watchdog: closes the socket of a write stuck for the read timeout, else looks again when it could be. */
    private void checkWrite() {
        if (!writing) return;
        long timeout = Math.max(1, readTimeoutMs) * 1_000_000L;
        long idle = System.nanoTime() - writeProgress;
        if (idle >= timeout) {
            writeTimedOut = true;
            // The TCP socket under TLS: SSLSocket.close() would wait for the stuck write's lock to send close_notify.
            try {
                raw.close();
            } catch (IOException ignored) {
                // closing anyway
            }
        } else {
            WATCHDOG.schedule(this::checkWrite, timeout - idle, TimeUnit.NANOSECONDS);
        }
    }

    private void writeAll(ByteBuffer[] srcs) throws IOException {
        int used = 0;
        for (ByteBuffer src : srcs) {
            while (src.hasRemaining()) {
                if (used == writeBuf.length) {
                    out.write(writeBuf, 0, used);
                    writeProgress = System.nanoTime();
                    used = 0;
                }
                int n = Math.min(src.remaining(), writeBuf.length - used);
                src.get(writeBuf, used, n);
                used += n;
            }
        }
        if (used > 0) out.write(writeBuf, 0, used);
        out.flush();
        lastIo = System.nanoTime();
    }

    @Override
    public long ioWaitNanos() { return ioWaitNanos; }

    @Override
    public void close() {
        try {
            socket.close();
        } catch (IOException ignored) {
            // closing anyway
        }
    }
}

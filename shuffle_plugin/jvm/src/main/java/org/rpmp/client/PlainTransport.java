package org.rpmp.client;

import java.io.IOException;
import java.io.InterruptedIOException;
import java.net.InetSocketAddress;
import java.net.SocketTimeoutException;
import java.net.StandardSocketOptions;
import java.net.UnknownHostException;
import java.nio.ByteBuffer;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.nio.channels.SocketChannel;

/**
 * Plain TCP: a non-blocking SocketChannel whose every wait goes through a Selector with the read timeout,
 * because a blocking SocketChannel ignores SO_TIMEOUT. Direct buffers go to the socket without a copy.
 */
final class PlainTransport implements Transport {
    private final String address;
    private final int readTimeoutMs;
    private final SocketChannel channel;
    private final Selector selector;
    private final SelectionKey key;
    private long ioWaitNanos;

    private PlainTransport(String address, int readTimeoutMs, SocketChannel channel, Selector selector) throws IOException {
        this.address = address;
        this.readTimeoutMs = readTimeoutMs;
        this.channel = channel;
        this.selector = selector;
        this.key = channel.register(selector, 0);
    }

    static PlainTransport connect(String host, int port, int connectTimeoutMs, int readTimeoutMs) throws IOException {
        SocketChannel ch = SocketChannel.open();
        Selector sel = null;
        try {
            ch.setOption(StandardSocketOptions.TCP_NODELAY, true);
            ch.setOption(StandardSocketOptions.SO_KEEPALIVE, true);
            ch.configureBlocking(false);
            sel = Selector.open();
            InetSocketAddress addr = new InetSocketAddress(host, port);
            if (addr.isUnresolved()) throw new UnknownHostException("cannot resolve RPMP node host " + host);
            if (!ch.connect(addr)) {
                SelectionKey k = ch.register(sel, SelectionKey.OP_CONNECT);
                long deadline = System.nanoTime() + connectTimeoutMs * 1_000_000L;
                while (!ch.finishConnect()) {
                    long left = (deadline - System.nanoTime()) / 1_000_000L;
                    if (left <= 0) throw new SocketTimeoutException("connect to " + host + ":" + port + " timed out");
                    sel.select(left);
                    sel.selectedKeys().clear();
                }
                k.interestOps(0);
            }
            return new PlainTransport(host + ":" + port, readTimeoutMs, ch, sel);
        } catch (IOException | RuntimeException e) {
            ch.close();
            if (sel != null) sel.close();
            throw e;
        }
    }

    @Override
    public int read(ByteBuffer dst) throws IOException {
        while (true) {
            int n = channel.read(dst);
            if (n != 0) return n;
            waitFor(SelectionKey.OP_READ, "waiting for a response");
        }
    }

    @Override
    public int readNow(ByteBuffer dst) throws IOException {
        return channel.read(dst);
    }

    @Override
    public void write(ByteBuffer... srcs) throws IOException {
        while (remaining(srcs) > 0) {
            if (channel.write(srcs) == 0) waitFor(SelectionKey.OP_WRITE, "sending");
        }
    }

    private static long remaining(ByteBuffer[] srcs) {
        long n = 0;
        for (ByteBuffer b : srcs) n += b.remaining();
        return n;
    }

    private void waitFor(int op, String what) throws IOException {
        long timeoutMs = Math.max(1, readTimeoutMs);
        long start = System.nanoTime();
        long deadline = start + timeoutMs * 1_000_000L;
        key.interestOps(op);
        try {
            while (true) {
                long left = (deadline - System.nanoTime()) / 1_000_000L;
                if (left <= 0) {
                    throw new SocketTimeoutException("node " + address + ": no progress " + what + " for "
                        + timeoutMs + " ms");
                }
                int ready = selector.select(left);
                selector.selectedKeys().clear();
                if (ready > 0) return;
                if (Thread.currentThread().isInterrupted()) throw new InterruptedIOException("interrupted while " + what);
            }
        } finally {
            key.interestOps(0);
            ioWaitNanos += System.nanoTime() - start;
        }
    }

    @Override
    public long ioWaitNanos() { return ioWaitNanos; }

    @Override
    public void close() {
        try {
            selector.close();
        } catch (IOException ignored) {
            // closing anyway
        }
        try {
            channel.close();
        } catch (IOException ignored) {
            // closing anyway
        }
    }
}

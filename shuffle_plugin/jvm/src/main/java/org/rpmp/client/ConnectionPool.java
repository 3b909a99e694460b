package org.rpmp.client;

import java.io.IOException;
import java.util.ArrayDeque;
import java.util.HashMap;
import java.util.Map;

/**
 * Idle connections to RPMP nodes, shared by the tasks of one JVM. A task borrows a connection for as long
 * as it needs it (a map task for all its pushes, a reader for one FETCH stream) and returns it only if the
 * byte stream is in sync; anything else is closed. Connections are cheap to open, so the pool only saves
 * the handshake on the many short tasks of a stage.
 */
public final class ConnectionPool {
    private static final int MAX_IDLE_PER_NODE = 8;

    private final RpmpClient.Options options;
    private final Map<String, ArrayDeque<RpmpClient>> idle = new HashMap<>();
    private boolean closed;

    public ConnectionPool(RpmpClient.Options options) {
        this.options = options.copy();
    }

    public RpmpClient borrow(String host, int port) throws IOException {
        String key = host + ":" + port;
        while (true) {
            RpmpClient c;
            synchronized (this) {
                if (closed) throw new IOException("RPMP connection pool is closed");
                ArrayDeque<RpmpClient> q = idle.get(key);
                c = q == null ? null : q.pollLast();
            }
            if (c == null) return RpmpClient.connect(host, port, options);
            if (c.isIdleHealthy()) return c;
            c.close();
        }
    }

    /** Returns a connection: kept when it is in sync and there is room, closed otherwise. */
    public void release(RpmpClient c) {
        if (c == null) return;
        if (c.isReusable()) {
            synchronized (this) {
                if (!closed) {
                    ArrayDeque<RpmpClient> q = idle.computeIfAbsent(c.address(), k -> new ArrayDeque<>());
                    if (q.size() < MAX_IDLE_PER_NODE) {
                        q.addLast(c);
                        return;
                    }
                }
            }
        }
        c.close();
    }

    public void discard(RpmpClient c) {
        if (c != null) c.close();
    }

    public void close() {
        synchronized (this) {
            closed = true;
            for (ArrayDeque<RpmpClient> q : idle.values()) {
                for (RpmpClient c : q) c.close();
            }
            idle.clear();
        }
    }
}

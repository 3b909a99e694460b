package org.rpmp.client;

import java.io.Closeable;
import java.io.IOException;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Keeps the leases of the apps it holds alive: LEASE at once when an app is first held (that answer gives the
 * node's app TTL), then every third of the TTL, from one daemon thread, until the app is released or the keeper
 * closed. A node deletes an app nobody renewed for its TTL (PROTOCOL.md "LEASE"), so a driver that dies leaves
 * nothing behind for longer than that. A failed renewal is retried after a second (or the interval, if shorter);
 * the TTL leaves two more chances before it runs out.
 */
public final class LeaseKeeper implements Closeable {
    /** One LEASE of {@code app} through any node; returns the TTL the node answered, in milliseconds. */
    @FunctionalInterface
    public interface Renewal {
        long renew(String app) throws IOException;
    }

    /** How often a node with no TTL (0: apps never expire) is asked again. */
    static final long NO_TTL_RECHECK_MS = 600_000;
    static final long RETRY_MS = 1_000;

    private final Renewal renewal;
    private final long minIntervalMs;
    private final Set<String> apps = ConcurrentHashMap.newKeySet();
    private final ScheduledExecutorService timer;
    private final AtomicLong renewals = new AtomicLong();
    private final AtomicLong failures = new AtomicLong();
    private volatile long ttlMs = -1;
    private volatile boolean closed;
    private volatile String lastError;

    public LeaseKeeper(Renewal renewal, long minIntervalMs) {
        this.renewal = renewal;
        this.minIntervalMs = Math.max(1, minIntervalMs);
        ScheduledThreadPoolExecutor t = new ScheduledThreadPoolExecutor(1, r -> {
            Thread th = new Thread(r, "rpmp-lease");
            th.setDaemon(true);
            return th;
        });
        t.setExecuteExistingDelayedTasksAfterShutdownPolicy(false);
        t.setRemoveOnCancelPolicy(true);
        this.timer = t;
    }

    public LeaseKeeper(Renewal renewal) { this(renewal, 100); }

    /** Keep {@code app}'s lease alive from now on (renewed at once the first time). */
    public void hold(String app) {
        if (closed || !apps.add(app)) return;
        timer.execute(() -> renew(app));
    }

    /** Stop renewing {@code app} (its data then expires on the nodes unless deleted first). */
    public void release(String app) { apps.remove(app); }

    public boolean holds(String app) { return apps.contains(app); }

    /** LEASE requests that succeeded / failed so far. */
    public long renewals() { return renewals.get(); }

    public long failures() { return failures.get(); }

    /** The TTL the last successful renewal answered, in ms (-1 before any; 0: apps never expire there). */
    public long ttlMs() { return ttlMs; }

    public String lastError() { return lastError; }

    private void renew(String app) {
        if (closed || !apps.contains(app)) return;
        long next;
        try {
            long ttl = renewal.renew(app);
            ttlMs = ttl;
            renewals.incrementAndGet();
            next = ttl == 0 ? NO_TTL_RECHECK_MS : Math.max(minIntervalMs, ttl / 3);
        } catch (IOException | RuntimeException e) {
            failures.incrementAndGet();
            lastError = e.toString();
            long ttl = ttlMs;
            next = ttl > 0 ? Math.max(minIntervalMs, Math.min(RETRY_MS, ttl / 3)) : RETRY_MS;
        }
        if (closed || !apps.contains(app)) return;
        try {
            timer.schedule(() -> renew(app), next, TimeUnit.MILLISECONDS);
        } catch (java.util.concurrent.RejectedExecutionException e) {
            // closed meanwhile
        }
    }

    /** Stop renewing everything; waits briefly for a renewal in flight. */
    @Override
    public void close() {
        closed = true;
        apps.clear();
        timer.shutdownNow();
        try {
            timer.awaitTermination(2, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}

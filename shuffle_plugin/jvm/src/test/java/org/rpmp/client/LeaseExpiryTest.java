package org.rpmp.client;

import static org.rpmp.client.TestSupport.*;

import java.util.Map;
import java.util.Random;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/**
 * LeaseKeeper against a live node with a short app TTL (RPMP_TTL_NODE, rpmp server --app-ttl 2; skipped without
 * one): an app the keeper holds outlives three TTLs, an app nobody renews is gone after about one.
 */
@SuppressWarnings("resource")
class LeaseExpiryTest {
    private static final int SHUFFLE = 3;

    @Test
    @DisplayName("a held lease keeps the app for 3 TTLs; an app nobody renews expires")
    void heldAppSurvivesUnrenewedAppExpires() throws Exception {
        String[] node = ttlNode();
        String host = node[0];
        int port = Integer.parseInt(node[1]);
        RpmpClient.Options opts = quick();
        opts.readTimeoutMs = 20_000;
        String kept = "java-lease-kept-" + System.nanoTime();
        String dead = "java-lease-dead-" + System.nanoTime();
        Random rnd = new Random(7);
        byte[] payload = payload(rnd, 5000);
        ConnectionPool pool = new ConnectionPool(opts);
        try (RpmpClient c = RpmpClient.connect(host, port, opts);
             LeaseKeeper keeper = new LeaseKeeper(app -> {
                 RpmpClient k = pool.borrow(host, port);
                 try {
                     return k.lease(app);
                 } finally {
                     pool.release(k);
                 }
             })) {
            for (String app : new String[] {kept, dead}) {
                c.registerShuffle(app, SHUFFLE, 1, 1);
                pushRaw(c, app, SHUFFLE, 0, 0, 1, Map.of(-1, payload));
            }
            keeper.hold(kept);
            long start = System.nanoTime();
            long ttl = c.lease("nothing-" + System.nanoTime());
            expect(ttl == 2000, "the node's TTL is 2 s (--app-ttl 2): " + ttl);
            // The unrenewed app goes after about one TTL (checked every 0.5 s). Watched through STATS: a FETCH
            // of it would renew it.
            long deadline = start + 10_000_000_000L;
            while (c.stats().contains("\"" + dead + "\"") && System.nanoTime() < deadline) sleep(100);
            long took = (System.nanoTime() - start) / 1_000_000L;
            expect(!c.stats().contains("\"" + dead + "\""), "the unrenewed app expired");
            expect(took >= 1500, "not before its TTL: " + took + " ms");
            expect(expectError(() -> fetchAll(c, dead, SHUFFLE, 0, 0, Protocol.END_MAP_ALL, new long[0]))
                == Protocol.NOT_FOUND, "its shuffle is NOT_FOUND");
            // ...while the held one outlives three.
            long waitMs = 3 * ttl + 500 - (System.nanoTime() - start) / 1_000_000L;
            if (waitMs > 0) sleep(waitMs);
            expect(keeper.renewals() >= 4 && keeper.failures() == 0, "renewed every third of the TTL: "
                + keeper.renewals() + " ok, " + keeper.failures() + " failed (" + keeper.lastError() + ")");
            expect(keeper.ttlMs() == ttl, "the keeper learned the TTL");
            var recs = fetchAll(c, kept, SHUFFLE, 0, 0, Protocol.END_MAP_ALL, new long[] {1});
            expect(recs.size() == 1 && java.util.Arrays.equals(recs.get(0).payload(), payload),
                "the held app's data is intact: " + recs.size() + " records");
            c.deleteApp(kept);
        } finally {
            pool.close();
        }
    }
}

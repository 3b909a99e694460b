package org.rpmp.shuffle;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

import org.apache.spark.SparkConf;
import org.apache.spark.shuffle.api.ShuffleDriverComponents;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/** The shuffle data IO plugin: when it claims reliable storage, and that it passes the rest to Spark's local-disk IO. */
class RpmpShuffleDataIOTest {
    private static final String RPMP = RpmpShuffleManager.class.getName();

    @Test
    @DisplayName("reliable storage: only with RpmpShuffleManager, and not with fallback=always")
    void reliableOnlyWithTheRpmpManager() {
        assertTrue(RpmpShuffleDataIO.reliable(RPMP, "auto"));
        assertTrue(RpmpShuffleDataIO.reliable(" " + RPMP + " ", null));
        assertTrue(RpmpShuffleDataIO.reliable(RPMP, "never"));
        assertFalse(RpmpShuffleDataIO.reliable(RPMP, "always"));
        assertFalse(RpmpShuffleDataIO.reliable(RPMP, " ALWAYS "));
        assertFalse(RpmpShuffleDataIO.reliable("sort", "auto"));
        assertFalse(RpmpShuffleDataIO.reliable("org.apache.spark.shuffle.sort.SortShuffleManager", "auto"));
        assertFalse(RpmpShuffleDataIO.reliable(null, "auto"));
    }

    @Test
    @DisplayName("driver(): the claim follows spark.shuffle.manager and spark.rpmp.fallback")
    void driverClaimFollowsTheConf() {
        SparkConf conf = new SparkConf(false).set(RpmpShuffleDataIO.MANAGER_KEY, RPMP);
        assertTrue(new RpmpShuffleDataIO(conf).driver().supportsReliableStorage());
        assertFalse(new RpmpShuffleDataIO(conf.clone().set(RpmpShuffleDataIO.FALLBACK_KEY, "always"))
            .driver().supportsReliableStorage());
        assertFalse(new RpmpShuffleDataIO(new SparkConf(false)).driver().supportsReliableStorage());
        assertTrue(new RpmpShuffleDataIO(conf).executor() instanceof RpmpShuffleDataIO.Executor);
    }

    @Test
    @DisplayName("driver components: every call but the claim goes to the delegate")
    void driverDelegates() {
        List<String> calls = new ArrayList<>();
        ShuffleDriverComponents local = new ShuffleDriverComponents() {
            @Override public Map<String, String> initializeApplication() { calls.add("init"); return Map.of("k", "v"); }
            @Override public void cleanupApplication() { calls.add("cleanup"); }
            @Override public void registerShuffle(int shuffleId) { calls.add("register " + shuffleId); }
            @Override public void removeShuffle(int shuffleId, boolean blocking) { calls.add("remove " + shuffleId + " " + blocking); }
        };
        ShuffleDriverComponents d = new RpmpShuffleDataIO.Driver(local, true);
        assertEquals(Map.of("k", "v"), d.initializeApplication());
        d.registerShuffle(3);
        d.removeShuffle(3, true);
        d.cleanupApplication();
        assertTrue(d.supportsReliableStorage());
        assertEquals(List.of("init", "register 3", "remove 3 true", "cleanup"), calls);
    }
}

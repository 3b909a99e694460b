package org.rpmp.shuffle;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.apache.spark.SparkConf;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/** spark.rpmp.fallback: its parsing and which path a registration outcome selects (no nodes, no Spark job). */
class FallbackPolicyTest {
    private static RpmpConf conf(String fallback) {
        SparkConf c = new SparkConf(false).set(RpmpConf.NODES, "127.0.0.1:7177");
        if (fallback != null) c.set(RpmpConf.FALLBACK, fallback);
        return new RpmpConf(c);
    }

    @Test
    @DisplayName("unset, the setting is auto")
    void defaultIsAuto() {
        assertEquals(FallbackPolicy.AUTO, conf(null).fallback);
        assertEquals(FallbackPolicy.AUTO, FallbackPolicy.parse(null));
        assertEquals(FallbackPolicy.AUTO, FallbackPolicy.parse("  "));
    }

    @Test
    @DisplayName("auto, always and never parse in any case, blanks around ignored")
    void parsesTheThreeValues() {
        assertEquals(FallbackPolicy.AUTO, conf("auto").fallback);
        assertEquals(FallbackPolicy.ALWAYS, conf("ALWAYS").fallback);
        assertEquals(FallbackPolicy.NEVER, conf(" Never ").fallback);
        assertEquals("always", FallbackPolicy.ALWAYS.toString());
    }

    @Test
    @DisplayName("a bad value is an error naming the setting, the value and the accepted ones")
    void badValueIsAClearError() {
        for (String bad : new String[] {"yes", "true", "sometimes", "auto,never"}) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> conf(bad));
            assertTrue(e.getMessage().contains(RpmpConf.FALLBACK), e.getMessage());
            assertTrue(e.getMessage().contains("'" + bad + "'"), e.getMessage());
            assertTrue(e.getMessage().contains("auto, always or never"), e.getMessage());
        }
    }

    @Test
    @DisplayName("auto: registered -> RPMP, not registered -> Spark's sort shuffle")
    void autoFallsBackToSort() {
        assertTrue(FallbackPolicy.AUTO.triesRpmp());
        assertEquals(FallbackPolicy.Route.RPMP, FallbackPolicy.AUTO.route(true));
        assertEquals(FallbackPolicy.Route.SORT, FallbackPolicy.AUTO.route(false));
    }

    @Test
    @DisplayName("never: registered -> RPMP, not registered -> the registration fails")
    void neverFails() {
        assertTrue(FallbackPolicy.NEVER.triesRpmp());
        assertEquals(FallbackPolicy.Route.RPMP, FallbackPolicy.NEVER.route(true));
        assertEquals(FallbackPolicy.Route.FAIL, FallbackPolicy.NEVER.route(false));
    }

    @Test
    @DisplayName("always: RPMP is never asked and every shuffle is a sort shuffle")
    void alwaysNeverUsesRpmp() {
        assertFalse(FallbackPolicy.ALWAYS.triesRpmp());
        assertEquals(FallbackPolicy.Route.SORT, FallbackPolicy.ALWAYS.route(false));
        assertEquals(FallbackPolicy.Route.SORT, FallbackPolicy.ALWAYS.route(true));
    }
}

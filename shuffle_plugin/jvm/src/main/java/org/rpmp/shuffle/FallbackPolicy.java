package org.rpmp.shuffle;

import java.util.Locale;

/**
 * spark.rpmp.fallback: what the driver does with a shuffle that no RPMP node registers.
 *
 * <ul>
 *   <li>{@code auto} (default): try RPMP; if no node takes the registration within spark.rpmp.register.timeout,
 *       the shuffle is written by Spark's sort shuffle (map output on the executors).</li>
 *   <li>{@code never}: try RPMP; if no node takes it, registration fails (the job fails).</li>
 *   <li>{@code always}: never try RPMP; every shuffle is a sort shuffle (for A/B runs).</li>
 * </ul>
 *
 * Pure decision logic, no Spark: unit-tested on its own.
 */
public enum FallbackPolicy {
    AUTO, ALWAYS, NEVER;

    /** Which path a shuffle takes. */
    public enum Route { RPMP, SORT, FAIL }

    /** "auto" / "always" / "never" (any case, surrounding blanks ignored); null or blank is the default, auto. */
    public static FallbackPolicy parse(String value) {
        if (value == null || value.trim().isEmpty()) return AUTO;
        switch (value.trim().toLowerCase(Locale.ROOT)) {
            case "auto": return AUTO;
            case "always": return ALWAYS;
            case "never": return NEVER;
            default:
                throw new IllegalArgumentException(RpmpConf.FALLBACK + " must be auto, always or never, got '"
                    + value + "'");
        }
    }

    /** Whether the driver asks the RPMP nodes at all. */
    public boolean triesRpmp() { return this != ALWAYS; }

    /** The path a shuffle takes once registration on RPMP succeeded or not (not tried counts as not). */
    public Route route(boolean registeredOnRpmp) {
        if (registeredOnRpmp && this != ALWAYS) return Route.RPMP;
        return this == NEVER ? Route.FAIL : Route.SORT;
    }

    @Override
    public String toString() { return name().toLowerCase(Locale.ROOT); }
}

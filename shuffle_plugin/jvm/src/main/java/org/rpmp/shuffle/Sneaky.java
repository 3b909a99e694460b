package org.rpmp.shuffle;

/**
 * Throws a checked exception through an interface that does not declare it (java.util.Iterator), as
 * Scala code does: Spark must see the FetchFailedException itself, not a wrapper.
 */
final class Sneaky {
    private Sneaky() {}

    static RuntimeException rethrow(Throwable t) {
        Sneaky.<RuntimeException>doThrow(t);
        return new IllegalStateException("unreachable", t);
    }

    @SuppressWarnings("unchecked")
    private static <T extends Throwable> void doThrow(Throwable t) throws T {
        throw (T) t;
    }
}

package org.rpmp.client;

import java.io.IOException;

/**
 * Why a partition could not be read completely: no source had the whole output of a map attempt. It names
 * the attempt and its map index (-1 when the read failed otherwise), which the Spark reader turns into a
 * FetchFailedException so that Spark re-runs that map.
 */
public final class MissingDataException extends IOException {
    private static final long serialVersionUID = 1L;

    private final long attempt;
    private final int mapIndex;

    MissingDataException(String message, long attempt, int mapIndex, Throwable cause) {
        super(message, cause);
        this.attempt = attempt;
        this.mapIndex = mapIndex;
    }

    public long attempt() { return attempt; }

    public int mapIndex() { return mapIndex; }
}

package org.rpmp.shuffle;

import org.apache.spark.SparkEnv;
import org.apache.spark.shuffle.ShuffleManager;

/**
 * SparkEnv on Spark 4.3: shuffleManager() may route between a blocking and a pipelined manager; the one
 * spark.shuffle.manager named is the blocking one. Each src/shims/env-* folder has this class with these
 * methods; a Spark line's profile in the pom compiles one of them.
 */
final class SparkEnvShim {
    private SparkEnvShim() {}

    /** The shuffle manager spark.shuffle.manager named. */
    static ShuffleManager configuredShuffleManager(SparkEnv env) {
        return env.blockingShuffleManager();
    }
}

package org.rpmp.shuffle;

import java.io.IOException;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;

import org.apache.spark.SparkConf;
import org.apache.spark.shuffle.api.ShuffleDataIO;
import org.apache.spark.shuffle.api.ShuffleDriverComponents;
import org.apache.spark.shuffle.api.ShuffleExecutorComponents;
import org.apache.spark.shuffle.api.ShuffleMapOutputWriter;
import org.apache.spark.shuffle.api.SingleSpillShuffleMapOutputWriter;
import org.apache.spark.shuffle.sort.io.LocalDiskShuffleDataIO;

/**
 * Spark's shuffle data IO plugin for RPMP: {@code spark.shuffle.sort.io.plugin.class=org.rpmp.shuffle.RpmpShuffleDataIO}.
 *
 * <p>What it adds is the driver's claim that shuffle output is stored reliably
 * ({@link ShuffleDriverComponents#supportsReliableStorage()}): RPMP map output lives on the RPMP nodes, not
 * on the executor that wrote it. Spark reads the claim in three places: SparkContext hands it to the
 * ExecutorAllocationManager, which then accepts dynamic allocation with neither the external shuffle service
 * nor shuffle tracking; the DAGScheduler does not drop a lost executor's map outputs; a TaskSetManager does not
 * re-run the finished map tasks of a lost executor.
 *
 * <p>The claim holds only when {@code spark.shuffle.manager} is {@link RpmpShuffleManager} and shuffles are not
 * all sent to Spark's own shuffle ({@code spark.rpmp.fallback=always}); otherwise map output is on local disk
 * and the plugin claims nothing, as Spark's default does.
 *
 * <p>Everything else is Spark's local-disk IO ({@link LocalDiskShuffleDataIO}), delegated: the driver's
 * removeShuffle is what makes Spark's block managers call {@code unregisterShuffle} (which deletes an RPMP
 * shuffle's data on the nodes), and the executor components are used only by Spark's sort-shuffle writers,
 * which write a shuffle RpmpShuffleManager does not take (a handle that is not RPMP's); RPMP's own writer
 * never calls them.
 */
public class RpmpShuffleDataIO implements ShuffleDataIO {
    public static final String MANAGER_KEY = "spark.shuffle.manager";
    public static final String FALLBACK_KEY = "spark.rpmp.fallback";

    private final SparkConf conf;
    private final LocalDiskShuffleDataIO localDisk;

    public RpmpShuffleDataIO(SparkConf conf) {
        this.conf = conf;
        this.localDisk = new LocalDiskShuffleDataIO(conf);
    }

    @Override
    public ShuffleDriverComponents driver() {
        return new Driver(localDisk.driver(), reliable(conf.get(MANAGER_KEY, "sort"), conf.get(FALLBACK_KEY, "auto")));
    }

    @Override
    public ShuffleExecutorComponents executor() {
        return new Executor(localDisk.executor());
    }

    /**
     * Whether map output is stored off the executors: the shuffle manager is RPMP's and fallback is not
     * {@code always} (with {@code auto} a shuffle goes to Spark's sort shuffle only when no RPMP node takes it;
     * its reduce stage then meets a FetchFailed if the writer's executor is gone, and Spark re-runs its maps).
     */
    static boolean reliable(String manager, String fallback) {
        if (manager == null || !RpmpShuffleManager.class.getName().equals(manager.trim())) return false;
        return fallback == null || !"always".equals(fallback.trim().toLowerCase(Locale.ROOT));
    }

    /** Spark's local-disk driver components with RPMP's reliable-storage claim. */
    static final class Driver implements ShuffleDriverComponents {
        private final ShuffleDriverComponents delegate;
        private final boolean reliable;

        Driver(ShuffleDriverComponents delegate, boolean reliable) {
            this.delegate = delegate;
            this.reliable = reliable;
        }

        @Override
        public Map<String, String> initializeApplication() { return delegate.initializeApplication(); }

        @Override
        public void cleanupApplication() { delegate.cleanupApplication(); }

        @Override
        public void registerShuffle(int shuffleId) { delegate.registerShuffle(shuffleId); }

        @Override
        public void removeShuffle(int shuffleId, boolean blocking) { delegate.removeShuffle(shuffleId, blocking); }

        @Override
        public boolean supportsReliableStorage() { return reliable; }
    }

    /** Spark's local-disk executor components, for the sort-shuffle writers of shuffles RPMP does not take. */
    static final class Executor implements ShuffleExecutorComponents {
        private final ShuffleExecutorComponents delegate;

        Executor(ShuffleExecutorComponents delegate) { this.delegate = delegate; }

        @Override
        public void initializeExecutor(String appId, String execId, Map<String, String> extraConfigs) {
            delegate.initializeExecutor(appId, execId, extraConfigs);
        }

        @Override
        public ShuffleMapOutputWriter createMapOutputWriter(int shuffleId, long mapTaskId, int numPartitions)
                throws IOException {
            return delegate.createMapOutputWriter(shuffleId, mapTaskId, numPartitions);
        }

        @Override
        public Optional<SingleSpillShuffleMapOutputWriter> createSingleFileMapOutputWriter(int shuffleId, long mapId)
                throws IOException {
            return delegate.createSingleFileMapOutputWriter(shuffleId, mapId);
        }
    }
}

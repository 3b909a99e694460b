package org.rpmp.shuffle;

import org.apache.spark.ShuffleDependency;
import org.apache.spark.shuffle.BaseShuffleHandle;
import org.rpmp.client.Placement;
import org.rpmp.client.ShuffleRef;

/**
 * What the driver hands every task of a shuffle: the dependency (serializer, partitioner, aggregator),
 * the RPMP application name, the placement (which nodes hold which partition) and the counters.
 */
public final class RpmpShuffleHandle<K, V, C> extends BaseShuffleHandle<K, V, C> {
    private static final long serialVersionUID = 1L;

    private final String app;
    private final Placement placement;
    private final int replicas;
    private final ShuffleCounters counters;

    public RpmpShuffleHandle(int shuffleId, ShuffleDependency<K, V, C> dependency, String app, Placement placement,
                             int replicas, ShuffleCounters counters) {
        super(shuffleId, dependency);
        this.app = app;
        this.placement = placement;
        this.replicas = replicas;
        this.counters = counters;
    }

    public String app() { return app; }

    public Placement placement() { return placement; }

    public int replicas() { return replicas; }

    public int numPartitions() { return dependency().partitioner().numPartitions(); }

    public ShuffleCounters counters() { return counters; }

    /** The shuffle as the client's pusher and fetchers see it. */
    public ShuffleRef ref() { return new ShuffleRef(app, shuffleId(), numPartitions(), replicas, placement); }

    @Override
    public String toString() {
        return "RpmpShuffleHandle(app=" + app + ", shuffle=" + shuffleId() + ", " + placement + ")";
    }
}

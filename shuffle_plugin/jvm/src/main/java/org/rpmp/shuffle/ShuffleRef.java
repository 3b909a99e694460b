package org.rpmp.shuffle;

/**
 * What the data path needs to know of a shuffle: the RPMP application, the shuffle id, its partition count,
 * copies and placement. Taken from the RpmpShuffleHandle in tasks; built directly by the checks, which
 * drive the pusher and the fetcher against real nodes without a SparkContext.
 */
final class ShuffleRef {
    final String app;
    final int shuffleId;
    final int numPartitions;
    final int replicas;
    final Placement placement;

    ShuffleRef(String app, int shuffleId, int numPartitions, int replicas, Placement placement) {
        this.app = app;
        this.shuffleId = shuffleId;
        this.numPartitions = numPartitions;
        this.replicas = replicas;
        this.placement = placement;
    }

    static ShuffleRef of(RpmpShuffleHandle<?, ?, ?> handle) {
        return new ShuffleRef(handle.app(), handle.shuffleId(), handle.numPartitions(), handle.replicas(),
            handle.placement());
    }
}

package org.rpmp.client;

/**
 * What the data path needs to know of a shuffle: the RPMP application, the shuffle id, its partition count,
 * copies and placement. Spark's tasks take it from their ShuffleHandle; the tests build it directly and
 * drive the pusher and the fetcher against real nodes without a SparkContext.
 */
public record ShuffleRef(String app, int shuffleId, int numPartitions, int replicas, Placement placement) {}

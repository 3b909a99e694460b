"""Spark on a replicated RPMP cluster: with spark.rpmp.replicas=2 every segment is on two nodes, so a
reduce stage whose node died after the map stage reads the copies (FETCH falls back along each
partition's preference list) and no map task runs again.
"""

from __future__ import annotations

import json
import signal

import pytest

pytest.importorskip("pyspark")

from sparkutil import node_cluster, plugin_conf, spark_session  # noqa: E402

N = 40_000
EXPECTED = {k: sum(range(k, N, 101)) for k in range(101)}


@pytest.fixture(scope="module")
def rpmp_nodes():
    with node_cluster(2, pool_size="256m", prefix="rpmp-repl") as nodes:
        yield nodes


@pytest.fixture(scope="module")
def spark(rpmp_nodes):
    conf = {**plugin_conf([n.addr for n in rpmp_nodes]),
            "spark.rpmp.replicas": "2",
            "spark.rpmp.push.size": "32k",
            "spark.rpmp.fetch.local": "false",   # fall back over TCP, node to node
            "spark.rpmp.connect.timeout": "2s",
            "spark.executor.memory": "768m",
            "spark.ui.enabled": "false"}
    session = spark_session("local-cluster[2,1,1024]", conf, "rpmp-replicas")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_reduce_reads_replicas_when_a_node_died_after_the_map_stage(spark, rpmp_nodes):
    sc = spark.sparkContext
    counter = sc.accumulator(0)

    def tag(i):
        counter.add(1)
        return (i % 101, i)

    data = sc.parallelize(range(N), 4).map(tag).partitionBy(6)
    assert data.count() == N
    assert counter.value == N
    shuffles = set(json.loads(sc._jvm.org.rpmp.shuffle.RpmpMetrics.snapshotJson())["shuffles"])

    rpmp_nodes[1].stop(signal.SIGKILL)     # the primary of some partitions, the replica of the others
    # Same partitioning as `data`: this reads its shuffle (no new one).
    assert dict(data.reduceByKey(lambda a, b: a + b, 6).collect()) == EXPECTED
    assert counter.value == N, "map tasks re-ran: the replicas should have served their output"

    snap = json.loads(sc._jvm.org.rpmp.shuffle.RpmpMetrics.snapshotJson())["shuffles"]
    (first,) = sorted(shuffles, key=int)[:1]
    assert snap[first]["fetchFallbacks"] > 0, snap[first]

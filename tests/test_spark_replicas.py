"""Spark on a replicated RPMP cluster: with spark.rpmp.replicas=2 every segment is on two nodes, so a
reduce stage whose node died after the map stage reads the copies (FETCH falls back along each
partition's preference list) and no map task runs again.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

pytest.importorskip("pyspark")

from conftest import SHM, NodeProcess  # noqa: E402

from shuffle_plugin import jar as plugin_jar  # noqa: E402

N = 40_000
EXPECTED = {k: sum(range(k, N, 101)) for k in range(101)}


@pytest.fixture(scope="module")
def rpmp_nodes():
    from rpmp.client import Client

    pools = [os.path.join(SHM or "/tmp", f"rpmp-repl-{uuid.uuid4().hex[:12]}.pool") for _ in range(2)]
    seed = NodeProcess(pools[0], pool_size="256m")
    nodes = [seed, NodeProcess(pools[1], pool_size="256m", seeds=seed.addr)]
    try:
        for n in nodes:
            with Client(n.addr) as c:
                deadline = time.time() + 30
                while sum(m.state == 1 for m in c.members()[1]) < 2:
                    assert time.time() < deadline, f"{n.addr} does not see both nodes"
                    time.sleep(0.1)
        yield nodes
    finally:
        for n in nodes:
            n.stop()
        for p in pools:
            if os.path.exists(p):
                os.unlink(p)


@pytest.fixture(scope="module")
def spark(rpmp_nodes):
    from pyspark.sql import SparkSession

    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    conf = {"spark.jars": str(plugin_jar.build_jar(quiet=True)),
            "spark.shuffle.manager": "org.rpmp.shuffle.RpmpShuffleManager",
            "spark.rpmp.nodes": ",".join(n.addr for n in rpmp_nodes),
            "spark.rpmp.replicas": "2",
            "spark.rpmp.push.size": "32k",
            "spark.rpmp.fetch.local": "false",   # fall back over TCP, node to node
            "spark.rpmp.connect.timeout": "2s",
            "spark.executor.memory": "768m",
            "spark.ui.enabled": "false"}
    builder = SparkSession.builder.master("local-cluster[2,1,1024]").appName("rpmp-replicas")
    for k, v in conf.items():
        builder = builder.config(k, v)
    session = builder.getOrCreate()
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

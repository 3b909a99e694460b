"""The PySpark session option: one call puts a session on RPMP, with an embedded node that stops with it."""

import json
import os

import pytest

pytest.importorskip("pyspark")

from rpmp.client import Client  # noqa: E402
from shuffle_plugin import metrics, rpmp_conf, rpmp_session  # noqa: E402
from shuffle_plugin.session import MANAGER  # noqa: E402


def test_session_with_embedded_node_shuffles_through_it_and_stops_it():
    spark = rpmp_session("session-test", master="local[2]", pool_size="128m", push_size="8k",
                         conf={"spark.ui.enabled": "false"})
    node = spark._rpmp_node
    try:
        sc = spark.sparkContext
        assert sc.getConf().get("spark.shuffle.manager") == MANAGER
        assert sc.getConf().get("spark.rpmp.nodes") == node.address
        assert sc.getConf().get("spark.rpmp.push.size") == "8k"
        counts = dict(sc.parallelize(range(20_000), 4).map(lambda i: (i % 13, 1)).reduceByKey(lambda a, b: a + b, 3)
                      .collect())
        assert counts == {k: len(range(k, 20_000, 13)) for k in range(13)}
        with Client(node.address) as c:
            st = c.stats()
        m = metrics(spark)
        assert m["totals"]["bytesPushed"] > 0 and m["totals"]["bytesFetched"] == m["totals"]["bytesPushed"]
        assert m["totals"]["segmentsPushed"] == st["counters"]["pushes"]
        # the reducers share the node's host: they read its pool file one-sided, not through FETCH
        spark_totals = json.loads(sc._jvm.org.rpmp.shuffle.RpmpMetrics.sparkShuffleTotalsJson())
        assert st["counters"]["fetches"] == 0 and spark_totals["localReadBytes"] > 0
    finally:
        spark.stop()
    assert node.proc.poll() is not None and not os.path.exists(node.pool)


def test_conf_for_existing_nodes_keeps_other_jars():
    conf = rpmp_conf("10.0.0.1:7077,10.0.0.2:7077", replicas=2, existing_jars="/opt/x.jar")
    assert conf["spark.shuffle.manager"] == MANAGER and conf["spark.rpmp.replicas"] == "2"
    jars = conf["spark.jars"].split(",")
    assert jars[0] == "/opt/x.jar" and jars[1].endswith(".jar") and os.path.exists(jars[1])
    assert conf["spark.rpmp.nodes"] == "10.0.0.1:7077,10.0.0.2:7077"

"""spark.rpmp.fallback on real Spark (local-cluster, separate executor JVMs).

- auto, nodes down at registration: every shuffle is written by Spark's sort shuffle, the results equal the
  plain computation, and the driver logs one WARN per shuffle naming the nodes tried (so one for a job with
  one shuffle);
- never, nodes down: the job fails with an error naming the nodes;
- always, a live node: the job succeeds and the node receives nothing (no registration, 0 bytes pushed), and
  the plugin's metrics show 0 bytes pushed.

Each test starts its own SparkSession (the setting is read once, by the driver's ShuffleManager); a short
spark.rpmp.register.timeout keeps the waits for the dead address short.
"""

from __future__ import annotations

import os
import re
import socket

import pytest

pyspark = pytest.importorskip("pyspark")

from sparkutil import forget_lingering_rpmp_settings, plugin_conf, spark_session, wait_for_executors  # noqa: E402

MASTER = "local-cluster[2,1,1024]"
COMMON_CONF = {
    "spark.ui.enabled": "false",
    "spark.default.parallelism": "4",
    "spark.sql.shuffle.partitions": "6",
    "spark.sql.adaptive.enabled": "false",       # a fixed number of exchanges, so of registrations
    "spark.sql.autoBroadcastJoinThreshold": "-1",  # joins must shuffle
    "spark.rpmp.register.timeout": "2s",
    "spark.rpmp.connect.timeout": "1s",
}
LOGGER = "org.rpmp.shuffle.RpmpShuffleManager"


@pytest.fixture(scope="module", autouse=True)
def no_settings_left_behind():
    """The driver JVM outlives this module; if one of its sessions launched it, its settings are JVM system
    properties that a later plain session would inherit: they go when the module ends."""
    yield
    forget_lingering_rpmp_settings({})


def dead_address() -> str:
    """A loopback address nobody listens on (a port just bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def start(nodes: list[str], fallback: str, name: str):
    conf = {**plugin_conf(nodes), **COMMON_CONF, "spark.rpmp.fallback": fallback}
    spark = spark_session(MASTER, conf, name)
    spark.sparkContext.setLogLevel("WARN")
    wait_for_executors(spark.sparkContext, 2)
    return spark


def capture_manager_log(spark, path: str):
    """Appends the driver-side RpmpShuffleManager's log lines to `path` ("LEVEL message"); returns the appender
    (remove it with release_manager_log)."""
    jvm = spark.sparkContext._jvm
    core = jvm.org.apache.logging.log4j.core
    layout = core.layout.PatternLayout.newBuilder().withPattern("%p %m%n").build()
    appender = (core.appender.FileAppender.newBuilder().setName("rpmp-fallback-test").withFileName(path)
                .setLayout(layout).build())
    appender.start()
    jvm.org.apache.logging.log4j.LogManager.getLogger(LOGGER).addAppender(appender)
    return appender


def release_manager_log(spark, appender) -> None:
    jvm = spark.sparkContext._jvm
    jvm.org.apache.logging.log4j.LogManager.getLogger(LOGGER).removeAppender(appender)
    appender.stop()


def warnings(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.startswith("WARN ")]


# ---- the jobs and their expected results, computed without Spark ------------------------------------------

def rdd_job(spark):
    """One shuffle: 200,000 records into 8 reduce partitions."""
    pairs = spark.sparkContext.parallelize(range(200_000), 8).map(lambda i: (i % 1013, i))
    return sorted(pairs.reduceByKey(lambda a, b: a + b, 8).collect())


def rdd_expected():
    sums: dict[int, int] = {}
    for i in range(200_000):
        sums[i % 1013] = sums.get(i % 1013, 0) + i
    return sorted(sums.items())


def sql_job(spark):
    """A shuffle join and an aggregation: three exchanges."""
    from pyspark.sql import functions as F

    facts = spark.range(60_000).select((F.col("id") % 997).alias("k"), F.col("id").alias("v"))
    dims = spark.range(997).select(F.col("id").alias("k"), (F.col("id") % 7).alias("g"))
    rows = facts.join(dims, "k").groupBy("g").agg(F.sum("v").alias("s"), F.count("*").alias("n")).collect()
    return sorted((r["g"], r["s"], r["n"]) for r in rows)


def sql_expected():
    out: dict[int, list[int]] = {}
    for i in range(60_000):
        g = (i % 997) % 7
        acc = out.setdefault(g, [0, 0])
        acc[0] += i
        acc[1] += 1
    return sorted((g, s, n) for g, (s, n) in out.items())


# ---- the tests --------------------------------------------------------------------------------------------

def test_auto_falls_back_to_sort_shuffle_when_no_node_takes_the_registration(tmp_path):
    from shuffle_plugin.session import metrics

    nodes = [dead_address(), dead_address()]
    spark = start(nodes, "auto", "rpmp-fallback-auto")
    log = str(tmp_path / "manager.log")
    appender = capture_manager_log(spark, log)
    try:
        assert rdd_job(spark) == rdd_expected()
        warned = warnings(log)
        assert len(warned) == 1, warned
        assert all(n in warned[0] for n in nodes) and "sort shuffle" in warned[0], warned[0]

        # A job of three shuffles: one WARN each, and the nodes (still down) are tried once, not for 2 s each.
        assert sql_job(spark) == sql_expected()
        warned = warnings(log)
        shuffles = {re.search(r"shuffle (\d+)", w).group(1) for w in warned}
        assert len(warned) == len(shuffles) == 4, warned
        assert all(n in w for w in warned for n in nodes), warned

        m = metrics(spark)
        assert m["totals"]["bytesPushed"] == 0 and not m["shuffles"], m
        assert m["totals"]["sortShuffles"] == 4 and sorted(m["sortShuffles"]) == sorted(map(int, shuffles)), m
    finally:
        release_manager_log(spark, appender)
        spark.stop()


def test_never_fails_with_an_error_naming_the_nodes():
    from py4j.protocol import Py4JJavaError

    nodes = [dead_address()]
    spark = start(nodes, "never", "rpmp-fallback-never")
    try:
        with pytest.raises(Py4JJavaError) as err:
            rdd_job(spark)
        text = str(err.value)
        assert "no RPMP node of" in text and nodes[0] in text and "could register shuffle" in text, text[:3000]
    finally:
        spark.stop()


def test_always_never_uses_rpmp(node_factory):
    from rpmp.client import Client
    from shuffle_plugin.session import metrics

    node = node_factory()
    spark = start([node.addr], "always", "rpmp-fallback-always")
    try:
        assert rdd_job(spark) == rdd_expected()
        assert sql_job(spark) == sql_expected()
        m = metrics(spark)
        assert m["totals"]["bytesPushed"] == 0 and not m["shuffles"], m
        assert m["totals"]["sortShuffles"] == len(m["sortShuffles"]) == 4, m  # the RDD job's and the SQL job's
    finally:
        spark.stop()
    with Client(node.addr) as c:
        stats = c.stats()
    assert stats["counters"]["pushes"] == 0 and stats["counters"]["push_bytes"] == 0, stats
    assert stats["apps"] == {} and stats["pool"]["blocks"] == 0, stats

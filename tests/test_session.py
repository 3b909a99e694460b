"""The PySpark session option: one call puts a session on RPMP, with an embedded node that stops with it (or
with the process), settings that stay with their session, and clear errors for what it cannot do."""

import glob
import json
import os
import re
import time

import pytest

pytest.importorskip("pyspark")

from pyspark import SparkContext  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402
from test_cluster_helper import kill_driver_and_wait, start_driver  # noqa: E402

from rpmp.client import Client  # noqa: E402
from rpmp.cluster import LocalNode  # noqa: E402
from shuffle_plugin import configure, metrics, rpmp_conf, rpmp_session  # noqa: E402
from shuffle_plugin.session import MANAGER, OPTIONS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_UI = {"spark.ui.enabled": "false"}


def embedded_pools() -> set[str]:
    return set(glob.glob(f"/dev/shm/rpmp-embedded-{os.getpid()}-*"))


def shuffle_counts(spark) -> dict[int, int]:
    rdd = spark.sparkContext.parallelize(range(2_000), 2).map(lambda i: (i % 7, 1))
    return dict(rdd.reduceByKey(lambda a, b: a + b, 2).collect())


EXPECTED = {k: len(range(k, 2_000, 7)) for k in range(7)}


def test_session_with_embedded_node_shuffles_through_it_and_stops_it(tmp_path):
    spark = rpmp_session("session-test", master="local[2]", pool_size="128m", push_size="8k", conf=NO_UI,
                         spill_dir=str(tmp_path), spill_size="1g")
    node = spark._rpmp_node
    try:
        assert node.spill_dirs == [str(tmp_path / os.path.basename(node.pool).removesuffix(".pool"))]
        assert os.path.isdir(node.spill_dirs[0]) and node.spill.spill_size == 1 << 30
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
    assert os.listdir(tmp_path) == []   # the node's spill subdirectory went with it


def test_embedded_node_spills_into_a_subdirectory_of_its_own_that_goes_with_it(tmp_path):
    (tmp_path / "theirs.spill").write_bytes(b"not the node's")
    _, node = configure(SparkSession.builder, pool_size="64m", spill_dir=str(tmp_path), spill_size="2g")
    try:
        assert node is not None and node.running
        own = tmp_path / os.path.basename(node.pool).removesuffix(".pool")
        assert node.spill_dirs == [str(own)] and own.is_dir() and own.stat().st_mode & 0o777 == 0o700
        cmd = node.command()
        assert cmd[cmd.index("--spill-dir") + 1] == str(own) and cmd[cmd.index("--spill-size") + 1] == str(2 << 30)
        (own / "0.spill").write_bytes(b"spilled")
    finally:
        node.close()
    assert os.listdir(tmp_path) == ["theirs.spill"]


def test_conf_for_existing_nodes_keeps_other_jars():
    conf = rpmp_conf("10.0.0.1:7077,10.0.0.2:7077", replicas=2, existing_jars="/opt/x.jar")
    assert conf["spark.shuffle.manager"] == MANAGER and conf["spark.rpmp.replicas"] == "2"
    jars = conf["spark.jars"].split(",")
    assert jars[0] == "/opt/x.jar" and jars[1].endswith(".jar") and os.path.exists(jars[1])
    assert conf["spark.rpmp.nodes"] == "10.0.0.1:7077,10.0.0.2:7077"


def test_embedded_node_dies_with_a_killed_driver_and_takes_its_pool():
    driver, pid, pool = start_driver("""
        from shuffle_plugin.session import EmbeddedNode
        node = EmbeddedNode("64m")
        print(node.pid, node.pool, flush=True)
    """)
    kill_driver_and_wait(driver, pid, pool, pool_goes=True)


def test_settings_stay_with_their_session_and_a_running_session_is_not_taken_silently():
    spark = rpmp_session("leak-test", master="local[2]", pool_size="64m", conf=NO_UI)
    try:
        assert shuffle_counts(spark) == EXPECTED
    finally:
        spark.stop()
    # a plain session afterwards, in the same process: Spark's own shuffle, at once
    plain = SparkSession.builder.getOrCreate()
    try:
        conf = plain.sparkContext.getConf()
        assert conf.get("spark.shuffle.manager") != MANAGER and conf.get("spark.rpmp.nodes") is None
        started = time.monotonic()
        assert shuffle_counts(plain) == EXPECTED
        assert time.monotonic() - started < 20
        # rpmp_session() cannot put it on RPMP: it says so (and starts no node) instead of returning it
        pools = embedded_pools()
        with pytest.raises(RuntimeError, match=r"already running.*spark\.stop\(\).*stop_existing=True"):
            rpmp_session("taken", pool_size="64m")
        assert SparkContext._active_spark_context is plain.sparkContext and embedded_pools() == pools
        with pytest.raises(ValueError, match="does not shuffle through RPMP.*rpmp_session"):
            metrics(plain)
        # ... unless asked to stop it and start an RPMP session in its place
        spark = rpmp_session("replacing", master="local[2]", pool_size="64m", conf=NO_UI, stop_existing=True)
    except BaseException:
        plain.stop()
        raise
    try:
        assert plain.sparkContext._jsc is None and spark.sparkContext is not plain.sparkContext
        assert shuffle_counts(spark) == EXPECTED
        assert metrics(spark)["totals"]["bytesPushed"] > 0
    finally:
        spark.stop()


def test_bad_options_are_clear_errors_before_anything_starts(tmp_path):
    context, pools = SparkContext._active_spark_context, embedded_pools()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"spill_dir and spill_size configure the embedded RPMP node, but "
                                         r"nodes='127\.0\.0\.1:7077' are given"):
        rpmp_session("bad", nodes="127.0.0.1:7077", spill_dir=str(tmp_path), spill_size="1g")
    with pytest.raises(ValueError, match="spill_dir configures the embedded RPMP node"):
        configure(SparkSession.builder, "127.0.0.1:7077", spill_dir=str(tmp_path))
    with pytest.raises(ValueError, match="spill dir '/no/such/dir': does not exist, nor does its parent"):
        rpmp_session("bad", spill_dir="/no/such/dir")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        configure(SparkSession.builder, spill_dir=str(tmp_path / "file"))
    with pytest.raises(ValueError, match="spill_size=-1: must be >= 0"):
        rpmp_session("bad", spill_dir=str(tmp_path), spill_size="-1")
    with pytest.raises(ValueError, match="not a size: 'lots'"):
        rpmp_session("bad", pool_size="lots")
    assert os.listdir(tmp_path) == ["file"]
    with pytest.raises(ValueError, match=r"unknown RPMP option 'push_sise' \(did you mean push_size\?\).*push_memory"):
        rpmp_session("bad", push_sise="8k")
    with pytest.raises(ValueError, match="unknown RPMP option 'colour'"):
        configure(SparkSession.builder, colour="blue")
    with pytest.raises(ValueError, match=r"nodes='' names no RPMP node.*None"):
        rpmp_session("bad", nodes="")
    with pytest.raises(ValueError, match="'somehost' is not host:port"):
        rpmp_session("bad", nodes="somehost")
    with pytest.raises(ValueError, match="replicas=2 but the embedded RPMP node is a single node"):
        rpmp_session("bad", replicas=2)
    with pytest.raises(ValueError, match="replicas=0"):
        rpmp_session("bad", replicas=0)
    with LocalNode(pool_size="64m") as node:
        with pytest.raises(ValueError, match=f"replicas=2 but the RPMP cluster at {node.address} has 1 alive node:"):
            rpmp_session("bad", nodes=node.address, replicas=2)
    assert SparkContext._active_spark_context is context and embedded_pools() == pools


def test_options_are_the_plugins_settings():
    """Every spark.rpmp.* setting the JVM side reads is an option (or nodes / replicas), and nothing else is."""
    java = [p for p in glob.glob(os.path.join(ROOT, "shuffle_plugin", "jvm", "**", "*.java"), recursive=True)
            if os.sep + "test" + os.sep not in p]
    keys = {m for p in java for m in re.findall(r'"(spark\.rpmp\.[A-Za-z.]+)"', open(p).read())}
    assert keys and keys == {*OPTIONS.values(), "spark.rpmp.nodes", "spark.rpmp.replicas"}
    assert configure(SparkSession.builder, "127.0.0.1:1", push_off_heap=False, push_retryWait="1s")[0] \
        ._options["spark.rpmp.push.offHeap"] == "false"

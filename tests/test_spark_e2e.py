"""Spark end to end on RPMP: real executors (local-cluster, separate JVMs) shuffle through a real RPMP
node, and every job's result must equal the same job's result on Spark's own sort shuffle.

One RPMP-backed SparkSession serves the whole module (startup is the expensive part on 2 cores). The
sort-shuffle baseline runs the same job functions in a child Python process: a PySpark driver JVM lives
as long as the Python process, and this module's JVM must be launched with the plugin jar.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest

pyspark = pytest.importorskip("pyspark")

from sparkutil import node_cluster, plugin_conf, spark_session, wait_for_executors  # noqa: E402

# Small segments and a small push budget, so every job cuts many segments and pushes some early.
RPMP_CONF = {
    "spark.rpmp.push.size": "16k",
    "spark.rpmp.push.memory": "96k",
    "spark.rpmp.push.inflight": "3",
}
COMMON_CONF = {
    "spark.ui.enabled": "false",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.sql.adaptive.advisoryPartitionSizeInBytes": "8k",
    "spark.sql.shuffle.partitions": "12",
    "spark.sql.autoBroadcastJoinThreshold": "-1",   # joins must shuffle
    "spark.default.parallelism": "4",
    "spark.task.maxFailures": "4",
}


# ---- the jobs: each takes a SparkSession and returns a plain, comparable Python value ------------------

def rdd_reduce_by_key(spark):
    sc = spark.sparkContext
    pairs = sc.parallelize(range(60_000), 6).map(lambda i: (i % 1009, i))
    return sorted(pairs.reduceByKey(lambda a, b: a + b, 5).collect())


def rdd_group_by_key(spark):
    sc = spark.sparkContext
    pairs = sc.parallelize(range(30_000), 5).map(lambda i: (f"k{i % 211}", i * 7))
    return sorted((k, sorted(v)) for k, v in pairs.groupByKey(4).collect())


def rdd_sort_by_key(spark):
    sc = spark.sparkContext
    rows = sc.parallelize(range(40_000), 6).map(lambda i: ((i * 7919) % 40_009, f"v{i}"))
    return rows.sortByKey(ascending=False, numPartitions=5).collect()   # exact order


def rdd_join(spark):
    sc = spark.sparkContext
    left = sc.parallelize(range(20_000), 4).map(lambda i: (i % 3000, f"L{i}"))
    right = sc.parallelize(range(9_000), 3).map(lambda i: (i % 4500, i))
    return sorted(left.join(right, 6).collect())


def rdd_retried_map_attempt(spark):
    """The first attempt of map task 1 dies after pushing part of its output: it must be ignored."""
    from pyspark import TaskContext

    def flaky(index, it):
        ctx = TaskContext.get()
        for n, x in enumerate(it):
            if index == 1 and ctx.attemptNumber() == 0 and n == 6_000:
                raise RuntimeError("injected failure after pushing part of the output")
            yield x

    sc = spark.sparkContext
    rows = sc.parallelize(range(40_000), 4).mapPartitionsWithIndex(flaky).map(lambda i: (i % 500, "x" * 40 + str(i)))
    return sorted(rows.groupByKey(6).mapValues(lambda v: (len(v), min(v), max(v))).collect())


def _df(spark, n, parts):
    return spark.range(0, n, 1, parts).selectExpr("id", "id % 97 as k", "cast(id * 31 % 1000 as double) as x",
                                                "concat('s', cast(id % 13 as string)) as s")


def df_group_by(spark):
    from pyspark.sql import functions as F

    out = _df(spark, 50_000, 6).groupBy("k", "s").agg(F.count("*").alias("n"), F.sum("x").alias("sx"),
                                                      F.max("id").alias("mx"))
    return sorted(tuple(r) for r in out.collect())


def df_order_by(spark):
    return [tuple(r) for r in _df(spark, 30_000, 5).orderBy("x", "id").collect()]   # exact order


def df_join(spark):
    a = _df(spark, 20_000, 4).select("k", "id")
    b = _df(spark, 6_000, 3).selectExpr("k", "x", "s")
    return sorted(tuple(r) for r in a.join(b, "k").groupBy("k", "s").count().collect())


def df_skewed_join(spark):
    """A hot key on one side: AQE's skew-join handling reads map-index sub-ranges of one partition."""
    hot = spark.range(0, 40_000, 1, 4).selectExpr("if(id % 10 < 8, 0, id % 500) as k", "id as a")
    other = spark.range(0, 5_000, 1, 2).selectExpr("id % 500 as k", "id as b")
    return sorted(tuple(r) for r in hot.join(other, "k").groupBy("k").count().collect())


def rdd_many_partitions(spark):
    """2,000 reduce partitions of tiny data: most are empty, none may be lost or doubled."""
    sc = spark.sparkContext
    pairs = sc.parallelize(range(3_000), 3).map(lambda i: (i * 7919 % 4_001, i))
    return sorted(pairs.reduceByKey(lambda a, b: a + b, 2_000).collect())


JOBS = {f.__name__: f for f in (rdd_reduce_by_key, rdd_group_by_key, rdd_sort_by_key, rdd_join,
                                rdd_retried_map_attempt, rdd_many_partitions, df_group_by, df_order_by, df_join,
                                df_skewed_join)}


def _session(master: str, conf: dict):
    return spark_session(master, conf, "rpmp-e2e")


def baseline_main(out_path: str) -> None:
    """Child process: run every job on Spark's sort shuffle and pickle the results."""
    spark = _session("local[2,4]", {**COMMON_CONF, "spark.sql.adaptive.skewJoin.enabled": "true"})
    spark.sparkContext.setLogLevel("ERROR")
    results = {name: job(spark) for name, job in JOBS.items()}
    spark.stop()
    with open(out_path, "wb") as f:
        pickle.dump(results, f)


# ---- fixtures ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    out = tmp_path_factory.mktemp("baseline") / "results.pickle"
    # `python -c` in tests/ imports this module (and sparkutil, conftest) from there: no sys.path edits.
    code = f"import test_spark_e2e as m; m.baseline_main({str(out)!r})"
    proc = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.abspath(__file__)),
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out, "rb") as f:
        return pickle.load(f)


@pytest.fixture(scope="module")
def rpmp_nodes():
    """Two RPMP nodes (the second joins the first), so partitions spread over both."""
    with node_cluster(2, pool_size="512m", prefix="rpmp-e2e") as nodes:
        yield nodes


@pytest.fixture(scope="module")
def spark(rpmp_nodes):
    conf = {**COMMON_CONF, **RPMP_CONF, **plugin_conf([n.addr for n in rpmp_nodes]),
            "spark.executor.memory": "768m"}
    session = _session("local-cluster[2,1,1024]", conf)
    session.sparkContext.setLogLevel("WARN")
    wait_for_executors(session.sparkContext, 2)
    yield session
    session.stop()


def metrics(spark) -> dict:
    return json.loads(spark.sparkContext._jvm.org.rpmp.shuffle.RpmpMetrics.snapshotJson())


# ---- tests ---------------------------------------------------------------------------------------------------

def test_session_uses_rpmp_with_separate_executors(spark):
    sc = spark.sparkContext
    assert sc._jvm.org.rpmp.shuffle.RpmpMetrics.activeShuffleManager() == "org.rpmp.shuffle.RpmpShuffleManager"
    assert len(sc._jsc.sc().statusTracker().getExecutorInfos()) == 3   # the driver and two executor JVMs
    # the manager's SQL default: AQE's local shuffle reader costs RPMP requests (bench/README.md "AQE reads")
    assert spark.conf.get("spark.sql.adaptive.localShuffleReader.enabled") == "false"


@pytest.mark.parametrize("name", list(JOBS))
def test_job_matches_sort_shuffle(spark, baseline, name):
    before = metrics(spark)["totals"]
    result = JOBS[name](spark)
    assert result == baseline[name]
    after = metrics(spark)["totals"]
    assert after["bytesPushed"] > before["bytesPushed"], "the job did not push to RPMP"
    assert after["bytesFetched"] > before["bytesFetched"], "the job did not fetch from RPMP"


def test_counters_agree_with_each_other_and_with_spark(spark, rpmp_nodes):
    """A shuffle written and read once: what was pushed was fetched, and Spark's task metrics say the same."""
    sc = spark.sparkContext
    jm = sc._jvm.org.rpmp.shuffle.RpmpMetrics
    known = set(metrics(spark)["shuffles"])
    spark_before = json.loads(jm.sparkShuffleTotalsJson())
    sc.parallelize(range(50_000), 5).map(lambda i: (i % 777, str(i))).partitionBy(7).count()
    spark_after = json.loads(jm.sparkShuffleTotalsJson())
    new = {k: v for k, v in metrics(spark)["shuffles"].items() if k not in known}
    assert len(new) == 1, new
    (m,) = new.values()
    assert m["bytesPushed"] == m["bytesFetched"] > 0
    assert m["segmentsPushed"] == m["segmentsFetched"] > 5   # 16k segments: several per task
    assert m["recordsWritten"] == m["recordsRead"] > 0
    assert m["fetchFallbacks"] == 0
    assert m["pushTimeNs"] > 0 and m["fetchTimeNs"] > 0
    delta = {k: spark_after[k] - spark_before[k] for k in spark_after}
    # The nodes run on this host: readers copy segments straight out of their pool files.
    assert delta.pop("localReadBytes") == m["bytesFetched"]
    assert delta == {"writeBytes": m["bytesPushed"], "writeRecords": m["recordsWritten"],
                     "readBytes": m["bytesFetched"], "readRecords": m["recordsRead"]}
    # Both nodes hold partitions of the session's shuffles.
    from rpmp.client import Client

    for n in rpmp_nodes:
        with Client(n.addr) as c:
            assert c.stats()["counters"]["pushes"] > 0, f"nothing was pushed to {n.addr}"

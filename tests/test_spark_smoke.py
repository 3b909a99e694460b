"""The smoke set of a Spark line (scripts/spark_lines.py runs it on 4.0-4.2; the main run and 3.5's full run too):
the plugin loads on this line's Spark, and a shuffle-heavy DataFrame query and an RDD job shuffle through RPMP
with exact results.

- the DataFrame query (a shuffle join, an aggregation, a global sort) must equal the same query's result on
  Spark's own sort shuffle, computed first in this process by a session without RPMP (a plain session, started
  with the plugin jar only so that the driver JVM has it for the RPMP session that follows);
- the RDD job (groupByKey, then reduceByKey over its output) must give exact counts, sums and checksums,
  computed here in Python;
- both must have pushed to and fetched from RPMP, through separate executor JVMs (local-cluster).
"""

from __future__ import annotations

from functools import reduce
from operator import xor

import pytest

pyspark = pytest.importorskip("pyspark")

from sparkutil import (  # noqa: E402
    MANAGER,
    forget_jvm_settings,
    forget_lingering_rpmp_settings,
    node_cluster,
    plugin_conf,
    plugin_jar,
    spark_session,
    wait_for_executors,
)

DATA_IO_KEY = "spark.shuffle.sort.io.plugin.class"
COMMON_CONF = {
    "spark.ui.enabled": "false",
    "spark.default.parallelism": "4",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.autoBroadcastJoinThreshold": "-1",   # the join must shuffle
}
# Spark's own shuffle, named rather than left to the defaults, which a session earlier in this process may have
# left behind as JVM system properties.
SORT_CONF = {"spark.shuffle.manager": "sort",
             DATA_IO_KEY: "org.apache.spark.shuffle.sort.io.LocalDiskShuffleDataIO"}

FACTS, DIMS, GROUPS, TAGS = 120_000, 1_000, 37, 17
N, KEYS, BUCKETS, HASH = 200_000, 1_009, 7, 2654435761


def df_query(spark) -> list[tuple]:
    """A shuffle join of 120,000 facts with 1,000 dimension rows, grouped by two columns, sorted: three kinds of
    exchange (hash for the join and the aggregation, range for the sort)."""
    from pyspark.sql import functions as F

    facts = spark.range(0, FACTS, 1, 6).select((F.col("id") * 7919 % DIMS).alias("k"), F.col("id").alias("v"),
                                               F.concat(F.lit("t"), (F.col("id") % TAGS).cast("string")).alias("t"))
    dims = spark.range(0, DIMS, 1, 3).select(F.col("id").alias("k"), (F.col("id") % GROUPS).alias("g"))
    out = (facts.join(dims, "k").groupBy("g", "t")
           .agg(F.count("*").alias("n"), F.sum("v").alias("sv"), F.countDistinct("k").alias("nk"))
           .orderBy("g", "t"))
    return [tuple(r) for r in out.collect()]


def rdd_job(spark) -> tuple[list, list]:
    """groupByKey of 200,000 values over 1,009 keys (count, sum, checksum per key), then reduceByKey of those
    per key bucket: two shuffles, the second reading the first's output. The checksum is order-free, the xor of
    a multiplicative hash of each value: a lost, doubled or altered value changes it. (Only builtins in the
    lambdas: cloudpickle would ship a function of this module by reference, which the executors cannot import.)"""
    sc = spark.sparkContext
    per_key = (sc.parallelize(range(N), 8).map(lambda i: (i % KEYS, i)).groupByKey(6)
               .mapValues(lambda vs: (len(vs), sum(vs), reduce(xor, (v * HASH % 2**32 for v in vs), 0))))
    per_bucket = (per_key.map(lambda kv: (kv[0] % BUCKETS, (1, *kv[1])))
                  .reduceByKey(lambda a, b: (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] ^ b[3]), 3))
    return sorted(per_key.collect()), sorted(per_bucket.collect())


def rdd_expected() -> tuple[list, list]:
    per_key = {k: (len(range(k, N, KEYS)), sum(range(k, N, KEYS)),
                   reduce(xor, (v * HASH % 2**32 for v in range(k, N, KEYS)), 0)) for k in range(KEYS)}
    per_bucket: dict[int, tuple[int, int, int, int]] = {}
    for k, (n, s, c) in per_key.items():
        a = per_bucket.get(k % BUCKETS, (0, 0, 0, 0))
        per_bucket[k % BUCKETS] = (a[0] + 1, a[1] + n, a[2] + s, a[3] ^ c)
    return sorted(per_key.items()), sorted(per_bucket.items())


# ---- fixtures ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def no_settings_left_behind():
    """The driver JVM outlives this module, and the settings of the session that launched it stay as JVM system
    properties: this module's go when it ends, so a later plain session does not inherit them."""
    yield
    forget_lingering_rpmp_settings({})
    forget_jvm_settings([DATA_IO_KEY])


@pytest.fixture(scope="module")
def baseline() -> list[tuple]:
    """The DataFrame query on Spark's sort shuffle (local[2]), before the RPMP session starts."""
    spark = spark_session("local[2]", {**COMMON_CONF, **SORT_CONF, "spark.jars": plugin_jar()}, "rpmp-smoke-sort")
    try:
        spark.sparkContext.setLogLevel("ERROR")
        return df_query(spark)
    finally:
        spark.stop()


@pytest.fixture(scope="module")
def spark(baseline):   # after the baseline: one SparkContext at a time in this process
    with node_cluster(2, pool_size="256m", prefix="rpmp-smoke") as nodes:
        conf = {**COMMON_CONF, **plugin_conf([n.addr for n in nodes]), "spark.rpmp.push.size": "32k",
                "spark.executor.memory": "768m"}
        session = spark_session("local-cluster[2,1,1024]", conf, "rpmp-smoke")
        try:
            session.sparkContext.setLogLevel("WARN")
            wait_for_executors(session.sparkContext, 2)
            yield session
        finally:
            session.stop()


def totals(spark) -> dict[str, int]:
    from shuffle_plugin.session import metrics

    return metrics(spark)["totals"]


# ---- tests ---------------------------------------------------------------------------------------------------

def test_plugin_is_the_shuffle_manager_on_this_spark(spark):
    from shuffle_plugin import jar

    sc = spark.sparkContext
    assert sc._jvm.org.rpmp.shuffle.RpmpMetrics.activeShuffleManager() == MANAGER
    assert len(sc._jsc.sc().statusTracker().getExecutorInfos()) == 3   # the driver and two executor JVMs
    line = jar.spark_line()
    assert sc.version.startswith(line + ".") and pyspark.__version__ == sc.version


def test_dataframe_query_equals_sort_shuffle(spark, baseline):
    before = totals(spark)
    result = df_query(spark)
    after = totals(spark)
    assert result == baseline
    assert len(result) == GROUPS * TAGS
    assert sum(r[2] for r in result) == FACTS and sum(r[3] for r in result) == sum(range(FACTS))
    assert after["bytesPushed"] > before["bytesPushed"], "the query did not push to RPMP"
    assert after["bytesFetched"] > before["bytesFetched"], "the query did not fetch from RPMP"


def test_rdd_job_exact_counts_and_checksums(spark):
    before = totals(spark)
    per_key, per_bucket = rdd_job(spark)
    after = totals(spark)
    expected_key, expected_bucket = rdd_expected()
    assert len(per_key) == KEYS and sum(n for _, (n, _, _) in per_key) == N
    assert per_key == expected_key
    assert per_bucket == expected_bucket
    assert after["bytesPushed"] > before["bytesPushed"], "the job did not push to RPMP"
    assert after["bytesFetched"] > before["bytesFetched"], "the job did not fetch from RPMP"

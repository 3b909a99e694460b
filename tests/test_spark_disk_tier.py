"""A Spark job whose shuffle is eight times the nodes' pools finishes with the right answer: the nodes
spill to their disk tier, and the reducers read both tiers (one-sided from the pool and spill files, as
PARTITION_INFO names them, and over TCP).
"""

from __future__ import annotations

import hashlib
import json
import zlib

import pytest

pytest.importorskip("pyspark")

from conftest import NODE_ARGS, SHM  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from sparkutil import plugin_conf, spark_session  # noqa: E402

from rpmp.client import Client  # noqa: E402
from rpmp.cluster import LocalCluster  # noqa: E402

ROWS = 2_000_000
KEYS = 1000
POOL = 32 << 20  # per node; two nodes: 64 MiB of pool for a shuffle of about 560 MB


def value_of(i: int) -> str:
    return hashlib.md5(str(i).encode()).hexdigest() * 8  # 256 characters, as Spark's repeat(md5(..), 8)


@pytest.fixture(scope="module")
def rpmp_nodes(tmp_path_factory):
    spill = tmp_path_factory.mktemp("spill")
    with LocalCluster(2, pool_size=POOL, pool_dir=SHM, name="rpmp-spill", node_args=NODE_ARGS,
                      spill_dir=str(spill)) as cluster:
        yield cluster.nodes


@pytest.fixture(scope="module")
def spark(rpmp_nodes):
    conf = {**plugin_conf([n.addr for n in rpmp_nodes]),
            "spark.executor.memory": "768m",
            "spark.sql.shuffle.partitions": "16",
            "spark.shuffle.compress": "false",  # the rows repeat a hash 8 times: compressed, 8x would be 1x
            "spark.ui.enabled": "false"}
    session = spark_session("local-cluster[2,1,1024]", conf, "rpmp-disk-tier")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_a_shuffle_eight_times_the_pools_finishes_with_the_right_result(spark, rpmp_nodes):
    df = spark.range(0, ROWS, 1, 8).selectExpr(f"id % {KEYS} AS k", "repeat(md5(CAST(id AS STRING)), 8) AS v")
    # repartition moves every row (no map-side combining); the aggregate then runs on its partitioning.
    rows = df.repartition(16, "k").groupBy("k").agg(F.count("v").alias("n"), F.sum(F.crc32("v")).alias("c"))
    got = {r["k"]: (r["n"], r["c"]) for r in rows.collect()}
    expected = [0] * KEYS
    for i in range(ROWS):
        expected[i % KEYS] += zlib.crc32(value_of(i).encode())
    assert got == {k: (ROWS // KEYS, c) for k, c in enumerate(expected)}

    metrics = json.loads(spark.sparkContext._jvm.org.rpmp.shuffle.RpmpMetrics.snapshotJson())
    assert metrics["totals"]["sortShuffles"] == 0, "a shuffle fell back to Spark's own"
    spilled = pushed = 0
    for n in rpmp_nodes:
        with Client(n.addr) as c:
            st = c.stats()
        spilled += st["spill"]["spilled_bytes"]
        pushed += st["counters"]["push_bytes"]
    assert pushed >= 8 * 2 * POOL, f"only {pushed} bytes were pushed"  # the shuffle was 8x the pools
    assert spilled >= pushed // 2, f"only {spilled} of {pushed} pushed bytes were spilled"

"""Dynamic allocation without the external shuffle service: RpmpShuffleDataIO claims reliable storage.

Spark refuses dynamic allocation unless the external shuffle service, shuffle tracking, or a shuffle data IO
plugin whose driver components support reliable storage keeps map output alive when executors go.
With spark.shuffle.sort.io.plugin.class=org.rpmp.shuffle.RpmpShuffleDataIO the session starts with the first two
off; executors idle after the map stage are released, and the reduce stage (on new executors) reads every map
output from the RPMP node: the result is exact and no map task runs again.
"""

from __future__ import annotations

import time

import pytest

pytest.importorskip("pyspark")

from sparkutil import forget_jvm_settings, plugin_conf, restartable_node, spark_session, wait_for_executors  # noqa: E402

from shuffle_plugin import metrics, rpmp_conf  # noqa: E402
from shuffle_plugin.session import DATA_IO, DATA_IO_KEY  # noqa: E402

N = 60_000
KEYS = 101
EXPECTED = {k: sum(range(k, N, KEYS)) for k in range(KEYS)}

# The settings this module adds to the plugin's.
DYNAMIC = {
    DATA_IO_KEY: DATA_IO,
    "spark.dynamicAllocation.enabled": "true",
    "spark.dynamicAllocation.minExecutors": "0",
    "spark.dynamicAllocation.initialExecutors": "2",
    "spark.dynamicAllocation.maxExecutors": "2",
    "spark.dynamicAllocation.executorIdleTimeout": "2s",
    "spark.dynamicAllocation.schedulerBacklogTimeout": "1s",
    "spark.dynamicAllocation.shuffleTracking.enabled": "false",
    "spark.shuffle.service.enabled": "false",
}


@pytest.fixture(scope="module")
def rpmp_node():
    n = restartable_node(prefix="rpmp-dynalloc")
    yield n
    n.close()


def session_conf(rpmp_node) -> dict[str, str]:
    return {**plugin_conf([rpmp_node.addr]), **DYNAMIC,
            "spark.executor.memory": "768m",
            "spark.executor.cores": "1",
            "spark.ui.enabled": "false",
            "spark.task.maxFailures": "2"}


@pytest.fixture(scope="module")
def spark(rpmp_node):
    conf = session_conf(rpmp_node)
    session = spark_session("local-cluster[2,1,1024]", conf, "rpmp-dynamic-allocation")
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
        forget_jvm_settings(conf)  # a later module must not start with dynamic allocation or on RPMP


def executor_count(sc) -> int:
    """Executors the driver's status store knows (getExecutorInfos lists the driver too)."""
    return len(sc._jsc.sc().statusTracker().getExecutorInfos()) - 1


def executor_ids(sc) -> set[str]:
    """The ids of the executors alive now (the scheduler backend's; Spark never reuses an id)."""
    ids = sc._jsc.sc().getExecutorIds()
    return {str(ids.apply(i)) for i in range(ids.size())}


def wait_for_count(sc, want: int, timeout: float) -> int:
    deadline = time.time() + timeout
    n = executor_count(sc)
    while n != want and time.time() < deadline:
        time.sleep(0.25)
        n = executor_count(sc)
    return n


def test_rpmp_conf_sets_the_data_io_plugin():
    assert rpmp_conf("127.0.0.1:7077")[DATA_IO_KEY] == "org.rpmp.shuffle.RpmpShuffleDataIO"


def test_idle_executors_go_and_the_reduce_stage_reads_every_map_output(spark):
    sc = spark.sparkContext
    jsc = sc._jsc.sc()
    # Spark started with dynamic allocation on, no shuffle service, no shuffle tracking: the plugin's claim.
    assert jsc.executorAllocationManager().isDefined(), "dynamic allocation is not active"
    assert jsc.shuffleDriverComponents().supportsReliableStorage()
    assert sc.getConf().get("spark.shuffle.service.enabled") == "false"
    wait_for_executors(sc, 2)
    started = executor_count(sc)
    mappers = executor_ids(sc)

    calls = sc.accumulator(0)

    def tag(i):
        calls.add(1)
        return (i % KEYS, i)

    data = sc.parallelize(range(N), 4).map(tag).partitionBy(5)
    assert data.count() == N                 # the map stage: every map task pushes to the RPMP node
    assert calls.value == N
    during = executor_count(sc)
    mappers |= executor_ids(sc)
    # PySpark's shuffle records are pickled batches: what counts is that the number does not grow.
    pushed = {k: v["recordsWritten"] for k, v in metrics(spark)["shuffles"].items()}
    assert pushed and all(n > 0 for n in pushed.values()), pushed

    after_idle = wait_for_count(sc, 0, timeout=45)   # executorIdleTimeout 2 s, minExecutors 0
    print(f"executors: {started} at the start, {during} after the map stage, {after_idle} after the idle timeout")
    assert started == 2 and after_idle == 0, f"idle executors were not released: {started} -> {after_idle}"

    # The reduce side of the same shuffle (same partitioner: no new shuffle), on executors started anew.
    sums = dict(data.reduceByKey(lambda a, b: a + b, 5).collect())
    assert sums == EXPECTED
    assert calls.value == N, f"map tasks re-ran ({calls.value - N} records mapped again)"
    written = {k: v["recordsWritten"] for k, v in metrics(spark)["shuffles"].items() if k in pushed}
    print(f"records pushed per shuffle: {pushed} after the map stage, {written} after the reduce stage; "
          f"executors now {executor_count(sc)}")
    assert written == pushed, f"map output pushed again: {pushed} -> {written}"
    reducers = executor_ids(sc)
    print(f"map-stage executors {sorted(mappers)}, reduce-stage executors {sorted(reducers)}")
    assert reducers and not reducers & mappers, "the reduce stage should run on executors started anew"


def test_without_the_plugin_spark_refuses_dynamic_allocation(spark, rpmp_node):
    """The control: the same settings without spark.shuffle.sort.io.plugin.class do not start (runs last: it
    stops the module's session)."""
    spark.stop()
    forget_jvm_settings(session_conf(rpmp_node))
    conf = {k: v for k, v in session_conf(rpmp_node).items() if k != DATA_IO_KEY}
    with pytest.raises(Exception, match="Dynamic allocation of executors requires"):
        spark_session("local-cluster[2,1,1024]", conf, "rpmp-dynamic-allocation-control").stop()


def test_sort_shuffle_writers_go_through_the_plugins_executor_components(rpmp_node):
    """With spark.rpmp.fallback=always every shuffle is Spark's sort shuffle, whose writers get their map output
    writers from the plugin's executor components (Spark's local-disk ones, delegated); the driver then claims
    no reliable storage, map output being on the executors."""
    conf = {k: v for k, v in session_conf(rpmp_node).items() if not k.startswith("spark.dynamicAllocation.")}
    conf["spark.rpmp.fallback"] = "always"
    session = spark_session("local-cluster[2,1,1024]", conf, "rpmp-dynamic-allocation-sort")
    try:
        sc = session.sparkContext
        sc.setLogLevel("ERROR")
        assert not sc._jsc.sc().shuffleDriverComponents().supportsReliableStorage()
        data = sc.parallelize(range(N), 4).map(lambda i: (i % KEYS, i))
        assert dict(data.reduceByKey(lambda a, b: a + b, 5).collect()) == EXPECTED
        assert metrics(session)["totals"]["bytesPushed"] == 0, "the shuffle went through RPMP"
    finally:
        session.stop()
        forget_jvm_settings(conf)

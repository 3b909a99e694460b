"""Spark on RPMP when things break: map output lives on the RPMP node, not on the executor that wrote it.

- An executor lost after the map stage costs nothing: the reduce stage still finds every map output
  (with Spark's sort shuffle and no external shuffle service, the lost executor's maps would re-run).
- An RPMP node killed and restarted on its pool between the stages serves the same output.
- A node killed and restarted while map tasks push: the writers push their unacknowledged segments
  again on a new connection, and no task fails.
- A node that stays down fails the job with an error that names RPMP, in bounded time.

One SparkSession (local-cluster, separate executor JVMs) for the module; the tests run in file order
because each leaves the cluster a little more broken.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

pytest.importorskip("pyspark")

from sparkutil import plugin_conf, restartable_node, spark_session, wait_for_executors  # noqa: E402

N = 40_000


@pytest.fixture(scope="module")
def rpmp_node():
    n = restartable_node()
    yield n
    n.close()


@pytest.fixture(scope="module")
def spark(rpmp_node):
    conf = {**plugin_conf([rpmp_node.addr]),
            "spark.rpmp.push.size": "32k",
            "spark.rpmp.connect.timeout": "2s",
            "spark.rpmp.fetch.timeout": "10s",
            "spark.rpmp.push.retryWait": "1s",     # retry rounds after 1, 2, 3 s: time for a restart
            "spark.rpmp.fetch.local": "false",   # FETCH over TCP: the e2e module covers one-sided reads
            "spark.executor.memory": "768m",
            "spark.ui.enabled": "false",
            "spark.task.maxFailures": "2",
            "spark.stage.maxConsecutiveAttempts": "2"}
    session = spark_session("local-cluster[2,1,1024]", conf, "rpmp-faults")
    session.sparkContext.setLogLevel("ERROR")
    wait_for_executors(session.sparkContext, 2)
    yield session
    session.stop()


def executors(sc) -> list[str]:
    return sorted(e.host() + ":" + str(e.port()) for e in sc._jsc.sc().statusTracker().getExecutorInfos())


def shuffled(sc, counter):
    """A shuffle whose map function counts its calls (an accumulator: successful tasks only)."""
    def tag(i):
        counter.add(1)
        return (i % 101, i)

    return sc.parallelize(range(N), 4).map(tag).partitionBy(5)


def sums(rdd) -> dict:
    """Reads the shuffle of `rdd` (same partitioning: no new shuffle)."""
    return dict(rdd.reduceByKey(lambda a, b: a + b, rdd.getNumPartitions()).collect())


EXPECTED = {k: sum(range(k, N, 101)) for k in range(101)}


def test_map_output_survives_a_lost_executor(spark):
    sc = spark.sparkContext
    counter = sc.accumulator(0)
    data = shuffled(sc, counter)
    assert data.count() == N               # runs the map stage: every map pushed to RPMP
    assert counter.value == N

    before = len(executors(sc))
    victim = sc._jsc.sc().getExecutorIds().apply(0)
    assert sc._jsc.sc().killExecutor(victim)
    deadline = time.time() + 60
    while len(executors(sc)) >= before and time.time() < deadline:
        time.sleep(0.5)
    assert len(executors(sc)) == before - 1, "the executor did not go away"

    assert sums(data) == EXPECTED
    assert counter.value == N, "map tasks re-ran: their output should have survived on RPMP"


def test_map_output_survives_a_node_restart(spark, rpmp_node):
    sc = spark.sparkContext
    counter = sc.accumulator(0)
    data = shuffled(sc, counter)
    assert data.count() == N
    rpmp_node.kill()
    rpmp_node.restart()                    # same pool file, same address
    assert sums(data) == EXPECTED
    assert counter.value == N, "map tasks re-ran: the restarted node should have served their output"


def test_pushes_are_retried_across_a_node_restart_during_the_map_stage(spark, rpmp_node, tmp_path):
    sc = spark.sparkContext
    pid = rpmp_node.proc.pid
    marker = str(tmp_path / "killed")     # kill once, even if a task ran twice

    def kill_midway(index, it):
        from pyspark import TaskContext

        attempt = TaskContext.get().attemptNumber()
        for n, x in enumerate(it):
            if index == 0 and n == N // 5 and not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(pid, signal.SIGKILL)
            yield (x % 101, (x, attempt))

    def restart_when_dead():
        while rpmp_node.proc.poll() is None:
            time.sleep(0.05)
        rpmp_node.restart()

    watcher = threading.Thread(target=restart_when_dead)
    watcher.start()
    rows = sc.parallelize(range(N), 4).mapPartitionsWithIndex(kill_midway).groupByKey(5).mapValues(list).collect()
    watcher.join(60)
    assert os.path.exists(marker), "the node was not killed"
    assert sorted(x for _, vs in rows for x, _ in vs) == list(range(N))
    assert {a for _, vs in rows for _, a in vs} == {0}, "a map task failed: its pushes should have been retried"


def test_a_node_that_stays_down_fails_the_job_clearly(spark, rpmp_node):
    sc = spark.sparkContext
    data = shuffled(sc, sc.accumulator(0))
    assert data.count() == N
    rpmp_node.kill()
    t0 = time.time()
    with pytest.raises(Exception) as info:
        sums(data)
    assert time.time() - t0 < 180
    assert "RPMP" in str(info.value) or "rpmp" in str(info.value)

"""Speculative attempts on RPMP: a map task and a reduce task whose first attempts stall after pushing part of
their output get speculative copies; the copies win, the stalled attempts are killed, and the job's result is
exactly that of Spark's sort shuffle: the killed attempts' segments stay on the node and are never read.

Why not local-cluster: Spark never starts a speculative copy on a host where the task already has an attempt
(TaskSetManager.hasAttemptOnHost), and all local-cluster workers share one host name, so speculation cannot
happen there. The fixture builds the same thing by hand instead: a standalone master and two workers in the
driver JVM (as local-cluster does), the workers named 127.0.0.1 and localhost, each running a separate
executor JVM with one core and 1024 MB.
"""

from __future__ import annotations

import json
import os
import time

import pytest

pytest.importorskip("pyspark")

from sparkutil import node_cluster, plugin_conf, plugin_jar, spark_session, wait_for_executors  # noqa: E402

N = 40_000
MAPS, SLOW_MAP = 4, 1          # stage 1: 4 map tasks, the first attempt of map 1 stalls
REDUCES, SLOW_REDUCE = 5, 2    # stage 2: 5 tasks read shuffle 1 and write shuffle 2; reduce 2 stalls
OUT = 3                        # stage 3: 3 tasks read shuffle 2 and sum
KEYS = 37
STALL_S = 60                   # a stalled attempt waits this long at most; it is killed long before

SPECULATION = {
    "spark.speculation": "true",
    "spark.speculation.interval": "100ms",
    "spark.speculation.quantile": "0.5",            # speculate once half the tasks of a stage are done,
    "spark.speculation.multiplier": "2",            # for tasks running twice the median
    "spark.speculation.minTaskRuntime": "1s",       # and at least 1 s
    "spark.speculation.efficiency.enabled": "false",  # by run time alone (no process-rate heuristics)
    "spark.task.maxFailures": "1",                  # killed attempts are not failures; nothing may fail
    "spark.stage.maxConsecutiveAttempts": "1",      # no fetch failure, no stage re-run
    "spark.executor.memory": "512m",
    "spark.ui.enabled": "false",
}
EXPECTED = {k: (len(range(k, N, KEYS)), sum(range(k, N, KEYS))) for k in range(KEYS)}


class TwoHostCluster:
    """A standalone master and two workers (1 core, 1024 MB each) inside the driver JVM, like local-cluster,
    but with two host names, so Spark may run a speculative copy on the other worker."""

    def __init__(self, work_dir: str):
        from pyspark import SparkConf, SparkContext

        os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
        # The driver JVM (py4j gateway) starts here unless an earlier module started it; either way with
        # the plugin jar on its class path (every module passes the same jar).
        SparkContext._ensure_initialized(conf=SparkConf().set("spark.jars", plugin_jar()))
        jvm, gateway = SparkContext._jvm, SparkContext._gateway
        conf = jvm.org.apache.spark.SparkConf(False)
        conf.set("spark.master.rest.enabled", "false")
        conf.set("spark.shuffle.service.enabled", "false")
        master = jvm.org.apache.spark.deploy.master.Master.startRpcEnvAndEndpoint("127.0.0.1", 0, 0, conf)
        self.envs = [master._1()]
        self.url = f"spark://127.0.0.1:{self.envs[0].address().port()}"
        masters = gateway.new_array(jvm.java.lang.String, 1)
        masters[0] = self.url
        for i, host in enumerate(["127.0.0.1", "localhost"], start=1):
            self.envs.append(jvm.org.apache.spark.deploy.worker.Worker.startRpcEnvAndEndpoint(
                host, 0, 0, 1, 1024, masters, os.path.join(work_dir, f"worker{i}"), jvm.scala.Some(i), conf,
                jvm.scala.Option.empty()))

    def stop(self) -> None:
        for env in reversed(self.envs):   # workers (they stop their executors), then the master
            env.shutdown()
            env.awaitTermination()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = TwoHostCluster(str(tmp_path_factory.mktemp("workers")))
    yield c.url
    c.stop()


@pytest.fixture(scope="module")
def rpmp_node():
    with node_cluster(1, prefix="rpmp-spec") as nodes:
        yield nodes[0]


def run_job(spark, group: str, markers: str | None):
    """Three stages; returns {key: (count, sum)}. With a markers folder, the first attempts of map SLOW_MAP
    and reduce SLOW_REDUCE emit (and so push) part of their output, leave a marker file there and stall;
    their speculative copies start only once the marker is there, so a copy never wins before the stalled
    attempt pushed. Records carry 48 random bytes, so that what is emitted before a stall fills
    compression blocks and segments."""
    sc = spark.sparkContext

    def stall_first_attempt(index, it, slow, at, marker):
        from pyspark import TaskContext

        if index != slow or marker is None:
            yield from it
            return
        if TaskContext.get().attemptNumber() > 0:
            deadline = time.time() + STALL_S
            while not os.path.exists(marker):
                if time.time() > deadline:
                    raise TimeoutError(f"{marker} did not appear")
                time.sleep(0.05)
            # The stalled attempt's executor still has to push what its Python worker emitted before the
            # marker; on a loaded machine a quick copy could win (and get it killed) before it did.
            time.sleep(2.0)
            yield from it
            return
        for n, x in enumerate(it):
            if n == at:
                open(marker, "w").close()
                time.sleep(STALL_S)      # killed once the speculative copy succeeded
            yield x

    map_marker = os.path.join(markers, "map") if markers else None
    reduce_marker = os.path.join(markers, "reduce") if markers else None

    def map_side(index, it):
        for i in stall_first_attempt(index, it, SLOW_MAP, 7_000, map_marker):
            yield (i % 101, (i, os.urandom(48)))

    def reduce_side(index, it):
        for _, (i, pad) in stall_first_attempt(index, it, SLOW_REDUCE, 4_000, reduce_marker):
            yield (i % KEYS, (i, pad))

    sc.setJobGroup(group, "speculation")
    shuffle1 = sc.parallelize(range(N), MAPS).mapPartitionsWithIndex(map_side).partitionBy(REDUCES)
    shuffle2 = shuffle1.mapPartitionsWithIndex(reduce_side).partitionBy(OUT)
    # Same partitioning as shuffle2: reduceByKey reads it, no third shuffle.
    sums = shuffle2.mapValues(lambda v: (1, v[0])).reduceByKey(lambda a, b: (a[0] + b[0], a[1] + b[1]), OUT)
    return dict(sums.collect())


def finished_tasks(sc, group: str, timeout: float = 60) -> dict[int, list]:
    """numTasks of each stage of the group's job -> its tasks (status store), once none is still running
    (the killed attempts end a little after the job)."""
    tracker = sc.statusTracker()
    store = sc._jsc.sc().statusStore()
    (job,) = tracker.getJobIdsForGroup(group)
    stages = list(tracker.getJobInfo(job).stageIds)
    deadline = time.time() + timeout
    while True:
        out = {}
        for sid in stages:
            tasks = store.taskList(sid, 0, 1000)
            out[tracker.getStageInfo(sid).numTasks] = [tasks.apply(i) for i in range(tasks.size())]
        if all(t.status() != "RUNNING" for ts in out.values() for t in ts):
            return out
        assert time.time() < deadline, "attempts still running long after the job"
        time.sleep(0.2)


def stalled_and_winner(tasks: list, index: int):
    """The stalled first attempt of task `index` (killed) and its speculative copy (succeeded)."""
    mine = {t.attempt(): t for t in tasks if t.index() == index}
    first = mine[0]
    copies = [t for t in mine.values() if t.speculative()]
    assert copies, f"no speculative copy of task {index} ran: {[(t.attempt(), t.status()) for t in mine.values()]}"
    assert first.status() == "KILLED" and not first.speculative(), (first.status(), first.speculative())
    assert [t.status() for t in copies] == ["SUCCESS"]
    return first, copies[0]


@pytest.fixture(scope="module")
def sort_shuffle_result():
    """The same job on Spark's own sort shuffle, in local mode (no executors to start: fast). Local mode
    never speculates, so its attempts do not stall. The plugin jar is named so that the driver JVM, if this
    starts it, has it on its class path for the RPMP session after this one."""
    spark = spark_session("local[2]", {"spark.ui.enabled": "false", "spark.jars": plugin_jar(),
                                       "spark.shuffle.manager": "sort"}, "rpmp-speculation-sort")
    try:
        return run_job(spark, "sort", None)
    finally:
        spark.stop()


def test_speculative_map_and_reduce_attempts_count_once(sort_shuffle_result, cluster, rpmp_node, tmp_path):
    from rpmp.client import BadRequestError, Client

    assert sort_shuffle_result == EXPECTED
    conf = {**SPECULATION, **plugin_conf([rpmp_node.addr]), "spark.rpmp.push.size": "1k"}
    spark = spark_session(cluster, conf, "rpmp-speculation")
    try:
        sc = spark.sparkContext
        wait_for_executors(sc, 2)
        hosts = {e.host() for e in sc._jsc.sc().statusTracker().getExecutorInfos()}
        assert {"127.0.0.1", "localhost"} <= hosts
        jm = sc._jvm.org.rpmp.shuffle.RpmpMetrics
        t0 = time.time()
        result = run_job(spark, "rpmp", str(tmp_path))
        elapsed = time.time() - t0
        assert result == sort_shuffle_result        # every record once: no killed attempt's segment read
        assert elapsed < STALL_S, f"the job waited for a stalled attempt ({elapsed:.0f} s)"

        tasks = finished_tasks(sc, "rpmp")
        map_first, map_copy = stalled_and_winner(tasks[MAPS], SLOW_MAP)
        red_first, red_copy = stalled_and_winner(tasks[REDUCES], SLOW_REDUCE)

        # The stalled attempts had pushed segments before they stalled: the node holds them next to the
        # winners' (the MapStatus' mapId, which readers keep, is the task attempt id).
        shuffles = [int(s) for s in json.loads(jm.snapshotJson())["shuffles"]]
        assert len(shuffles) == 2, shuffles
        on_node: dict[int, set] = {}
        with Client(rpmp_node.addr) as c:
            for s in shuffles:
                for p in range(max(REDUCES, OUT)):
                    try:
                        segments = c.fetch(sc.applicationId, s, p)
                    except BadRequestError:     # past the shuffle's last partition
                        break
                    for seg in segments:
                        on_node.setdefault(seg.attempt, set()).add(seg.map_index)
        assert on_node.get(map_first.taskId()) == {SLOW_MAP}, "the stalled map attempt pushed nothing"
        assert on_node.get(map_copy.taskId()) == {SLOW_MAP}
        assert on_node.get(red_first.taskId()) == {SLOW_REDUCE}, "the stalled reduce attempt pushed nothing"
        assert on_node.get(red_copy.taskId()) == {SLOW_REDUCE}
    finally:
        spark.stop()

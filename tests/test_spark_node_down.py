"""Reduce tasks reading from an RPMP node over TCP (spark.rpmp.fetch.local=false) while it goes away.

- A node stopped while the reduce tasks are in the middle of their input: the job fails in bounded time
  with a FetchFailed that names the node; it does not hang. (test_spark_faults.py stops its node between
  the stages, so there the reduce tasks find it gone when they start.) Each reduce task reads many shuffle
  partitions one after the other (a coalesce without shuffle), so when the node stops a task has read
  some of its partitions and has others still to fetch.
- A node that drops a reader which took nothing of a FETCH reply for its send timeout (a reduce task
  slower than that with its fetch buffer full): the task reads on from the same node; the job neither
  fails nor re-runs a map task.

Its own session: spark.stage.maxConsecutiveAttempts=1 makes the first fetch failure end the job, instead
of re-running the map stage against a node that is gone (whose push errors the faults module covers).
The node's send timeout is 1 s instead of 120 s.
"""

from __future__ import annotations

import os
import re
import threading
import time

import pytest

pytest.importorskip("pyspark")

from sparkutil import plugin_conf, restartable_node, spark_session, wait_for_executors  # noqa: E402

PARTITIONS = 40        # shuffle partitions: 2 records of 600 KB each
RECORDS = 80
RECORD_BYTES = 600_000
READERS = 2            # reduce tasks (one per executor), each reading 20 partitions in turn
WAIT_S = 60            # bound on every wait of the test and of its tasks


SEND_TIMEOUT_S = 1


def socket_buffers_max() -> int:
    """What the kernel may buffer on one loopback connection: the reader's receive buffer autotunes up to
    tcp_rmem's maximum (32 MiB on recent kernels), the node's send buffer up to tcp_wmem's."""
    total = 0
    for name in ("tcp_rmem", "tcp_wmem"):
        with open(f"/proc/sys/net/ipv4/{name}") as f:
            total += int(f.read().split()[2])
    return total


@pytest.fixture(scope="module")
def rpmp_node():
    n = restartable_node(prefix="rpmp-down", extra=["--send-timeout", str(SEND_TIMEOUT_S)])
    yield n
    n.close()


@pytest.fixture(scope="module")
def spark(rpmp_node):
    conf = {**plugin_conf([rpmp_node.addr]),
            "spark.rpmp.fetch.local": "false",     # read over TCP: the node's death breaks the reads
            "spark.rpmp.fetch.buffer": "256k",     # little read-ahead: partitions are fetched as needed
            "spark.rpmp.push.size": "256k",
            "spark.rpmp.connect.timeout": "2s",
            "spark.rpmp.fetch.timeout": "5s",
            "spark.stage.maxConsecutiveAttempts": "1",
            "spark.task.maxFailures": "1",
            "spark.executor.memory": "768m",
            "spark.ui.enabled": "false"}
    session = spark_session("local-cluster[2,1,1024]", conf, "rpmp-node-down")
    session.sparkContext.setLogLevel("ERROR")
    wait_for_executors(session.sparkContext, 2)
    yield session
    session.stop()


def wait_for(predicate, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"{what} did not happen in {timeout} s"
        time.sleep(0.05)


def test_a_reader_slower_than_the_node_send_timeout_reads_on(spark, rpmp_node):
    from rpmp.client import Client

    sc = spark.sparkContext
    maps = sc.accumulator(0)
    # Records of 600 KB in one partition: twice what the sockets and the fetch buffer can hold, so the node
    # holds replies that the reader does not take while it sleeps. (A fixed 38 MB was too little on a
    # kernel whose tcp_rmem lets a loopback reader buffer 32 MiB: the node then had almost nothing waiting.)
    big = max(64, 2 * (socket_buffers_max() + (256 << 10)) // RECORD_BYTES)

    def tag(i):
        maps.add(1)
        return (0, os.urandom(RECORD_BYTES))

    def slow(it):
        for n, (_, payload) in enumerate(it):
            if n == 1:
                time.sleep(3 * SEND_TIMEOUT_S)   # the slow reducer under test (nothing to wait for)
            yield len(payload)

    data = sc.parallelize(range(big), 2).map(tag).partitionBy(1)
    with Client(rpmp_node.addr) as c:
        dropped = c.stats()["counters"]["dropped_connections"]
    assert data.mapPartitions(slow).sum() == big * RECORD_BYTES     # each record once
    assert maps.value == big, "map tasks re-ran: the reader should have read on from the node"
    with Client(rpmp_node.addr) as c:
        assert c.stats()["counters"]["dropped_connections"] > dropped, "the node did not drop the slow reader"


def test_a_node_stopped_during_the_reduce_stage_is_a_fetch_failure(spark, rpmp_node, tmp_path):
    from rpmp.client import Client

    sc = spark.sparkContext
    markers = str(tmp_path)
    stopped = os.path.join(markers, "stopped")

    def reduce_side(index, it):
        """Signals after its first record, then waits (bounded) until the test stopped the node."""
        for n, (_, payload) in enumerate(it):
            if n == 0:
                open(os.path.join(markers, f"reading-{index}"), "w").close()
                deadline = time.time() + WAIT_S
                while not os.path.exists(stopped) and time.time() < deadline:
                    time.sleep(0.05)
            yield len(payload)

    data = sc.parallelize(range(RECORDS), 4).map(lambda i: (i, os.urandom(RECORD_BYTES))).partitionBy(PARTITIONS)
    assert data.count() == RECORDS          # the map stage, and a first full read: the node is still up
    with Client(rpmp_node.addr) as c:
        fetches_before = c.stats()["counters"]["fetches"]

    outcome: dict = {}

    def job():
        t0 = time.time()
        try:
            outcome["result"] = data.coalesce(READERS).mapPartitionsWithIndex(reduce_side).sum()
        except Exception as e:  # the failure is the point
            outcome["error"] = e
        outcome["seconds"] = time.time() - t0

    runner = threading.Thread(target=job, daemon=True)
    runner.start()
    wait_for(lambda: all(os.path.exists(os.path.join(markers, f"reading-{i}")) for i in range(READERS)),
             "both reduce tasks reading")
    with Client(rpmp_node.addr) as c:
        fetched = c.stats()["counters"]["fetches"] - fetches_before
    # The reduce tasks are in the middle of their input: some partitions fetched, most still to come.
    assert READERS <= fetched < PARTITIONS - READERS * 4, fetched
    rpmp_node.stop()                   # SIGTERM: the node shuts down
    open(stopped, "w").close()

    runner.join(WAIT_S + 60)
    assert not runner.is_alive(), "the job hangs after its RPMP node stopped"
    assert "error" in outcome, f"the job succeeded without its node: {outcome}"
    message = str(outcome["error"])
    assert "FetchFailed" in message, message[:3000]
    assert rpmp_node.addr in message, message[:3000]
    assert re.search(r"shuffle \d+ partition \d+", message), message[:3000]
    assert outcome["seconds"] < WAIT_S, outcome["seconds"]

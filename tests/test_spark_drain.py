"""Spark on a 3-node RPMP cluster while one node drains (`rpmp drain`): a running job finishes (its reduce tasks
read the draining node's partitions from it), shuffles registered afterwards go to the other two nodes (the
driver asks the draining node first and moves on when it refuses), and the node exits once the application's
data is deleted (at session stop).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("pyspark")

from sparkutil import node_cluster, plugin_conf, spark_session, wait_for_executors  # noqa: E402

N = 60_000
KEYS = 101
WAIT_S = 120


def wait_for(predicate, what: str, timeout: float = WAIT_S) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"{what} did not happen in {timeout} s"
        time.sleep(0.05)


def test_a_job_finishes_while_a_node_drains_and_new_shuffles_go_elsewhere(tmp_path):
    from rpmp.client import Client
    from rpmp.protocol import NodeState

    with node_cluster(3, pool_size="256m", prefix="rpmp-drain") as nodes:
        seed, d, other = nodes
        # The draining node first: the driver asks it first and must move on when it refuses.
        conf = {**plugin_conf([d.addr, seed.addr, other.addr]),
                "spark.rpmp.fetch.local": "false",   # reads go to the draining node over TCP
                "spark.rpmp.connect.timeout": "2s",
                "spark.executor.memory": "768m",
                "spark.ui.enabled": "false"}
        spark = spark_session("local-cluster[2,1,1024]", conf, "rpmp-drain")
        try:
            sc = spark.sparkContext
            sc.setLogLevel("ERROR")
            wait_for_executors(sc, 2)
            app = sc.applicationId
            markers = str(tmp_path)
            drained = os.path.join(markers, "drained")

            def reduce_side(index, it):
                total = 0
                for n, (_, v) in enumerate(it):
                    if n == 0 and not os.path.exists(drained):
                        open(os.path.join(markers, f"reading-{index}"), "w").close()
                        deadline = time.time() + WAIT_S
                        while not os.path.exists(drained) and time.time() < deadline:
                            time.sleep(0.05)
                    total += v
                yield total

            data = sc.parallelize(range(N), 4).map(lambda i: (i % KEYS, i)).partitionBy(12)
            outcome: dict = {}

            def job():
                try:
                    outcome["result"] = data.mapPartitionsWithIndex(reduce_side).sum()
                except Exception as e:
                    outcome["error"] = e

            runner = threading.Thread(target=job, daemon=True)
            runner.start()
            wait_for(lambda: any(f.startswith("reading-") for f in os.listdir(markers)), "a reduce task reading")
            with Client(d.addr) as c:
                held = c.stats()["apps"][app]
            assert held["shuffles"] == 1 and held["bytes"] > 0, held   # the running job's shuffle has data there

            out = subprocess.run([sys.executable, "-m", "rpmp.cli", "drain", d.addr], capture_output=True, text=True,
                                 timeout=60)
            assert out.returncode == 0, out.stderr
            for n in nodes:
                with Client(n.addr) as c:
                    wait_for(lambda c=c: any(m.node_id == d.addr and m.state == NodeState.DRAINING
                                             for m in c.members()[1]), f"{n.addr} to see the drain", 15)
            open(drained, "w").close()
            runner.join(WAIT_S + 60)
            assert not runner.is_alive(), "the job hangs while a node drains"
            assert "error" not in outcome, str(outcome.get("error"))[:3000]
            assert outcome["result"] == sum(range(N))

            # A new shuffle: placed on the other two nodes, the job's result right.
            expected = {k: sum(range(k, N, KEYS)) for k in range(KEYS)}
            again = sc.parallelize(range(N), 4).map(lambda i: (i % KEYS, i)).reduceByKey(lambda a, b: a + b, 8)
            assert dict(again.collect()) == expected
            with Client(d.addr) as c:
                st = c.stats()
                assert st["state"] == "DRAINING"
                assert st["apps"][app]["shuffles"] == 1, st["apps"]   # nothing new reached it
            with Client(seed.addr) as c:
                st = c.stats()
                assert st["apps"][app]["shuffles"] >= 2
                assert st["counters"]["leases"] >= 1  # the driver holds a lease on its app (forwarded here)
            assert d.running
        finally:
            spark.stop()    # the driver deletes its application: the draining node then holds nothing
        assert d.reap(timeout=30) == 0
        log = d.stderr_text()
        assert "drained: node" in log and "Traceback" not in log

"""What the Spark test modules share: RPMP nodes for a module, a SparkSession on the plugin, executor waits.

Imported by the test modules (tests/ is on sys.path, as for conftest) and by the e2e module's baseline child.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from contextlib import contextmanager

from conftest import SHM, NodeProcess

MANAGER = "org.rpmp.shuffle.RpmpShuffleManager"


def plugin_jar() -> str:
    """The plugin jar, built from the sources when they are newer."""
    from shuffle_plugin import jar

    return str(jar.build_jar(quiet=True))


def plugin_conf(nodes: list[str]) -> dict[str, str]:
    """The settings that put a session on RPMP: the jar, the manager and the nodes (host:port)."""
    return {"spark.jars": plugin_jar(), "spark.shuffle.manager": MANAGER, "spark.rpmp.nodes": ",".join(nodes)}


def forget_lingering_rpmp_settings(conf: dict[str, str]) -> None:
    """The driver JVM lives as long as this Python process, and spark-submit made the settings of the
    session that started it Java system properties, which every later SparkConf reads: a module would get
    the spark.rpmp.* settings (fetch.local, replicas, ...) of whichever module ran first. Those this session
    does not name are dropped, so a module runs with the RPMP settings it names, whatever ran before it."""
    from pyspark import SparkContext

    jvm = SparkContext._jvm
    if jvm is None:
        return
    for key in list(jvm.System.getProperties().stringPropertyNames()):
        if (key.startswith("spark.rpmp.") or key == "spark.shuffle.manager") and key not in conf:
            jvm.System.clearProperty(key)


def spark_session(master: str, conf: dict[str, str], app_name: str):
    """A SparkSession with everything on loopback (SPARK_LOCAL_IP=127.0.0.1, as executors inherit it) and
    no RPMP setting but those in conf."""
    from pyspark.sql import SparkSession

    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    forget_lingering_rpmp_settings(conf)
    builder = SparkSession.builder.master(master).appName(app_name)
    for k, v in conf.items():
        builder = builder.config(k, v)
    return builder.getOrCreate()


def wait_for_executors(sc, n: int, timeout: float = 120) -> None:
    """Executors register after the SparkContext exists; tests that count on them wait."""
    deadline = time.time() + timeout
    while len(sc._jsc.sc().statusTracker().getExecutorInfos()) < n + 1:   # + the driver
        assert time.time() < deadline, f"{n} executors did not register in {timeout} s"
        time.sleep(0.2)


def pool_file(prefix: str) -> str:
    return os.path.join(SHM or "/tmp", f"{prefix}-{uuid.uuid4().hex[:12]}.pool")


@contextmanager
def node_cluster(n: int = 2, pool_size: str = "256m", prefix: str = "rpmp-spark"):
    """n RPMP nodes (the others join the first), yielded once every node sees all n live; stopped and their
    pools removed afterwards."""
    from rpmp.client import Client

    pools = [pool_file(prefix) for _ in range(n)]
    nodes: list[NodeProcess] = []
    try:
        nodes.append(NodeProcess(pools[0], pool_size=pool_size))
        for p in pools[1:]:
            nodes.append(NodeProcess(p, pool_size=pool_size, seeds=nodes[0].addr))
        for node in nodes:
            with Client(node.addr) as c:
                deadline = time.time() + 30
                while sum(m.state == 1 for m in c.members()[1]) < n:
                    assert time.time() < deadline, f"{node.addr} does not see all {n} nodes"
                    time.sleep(0.1)
        yield nodes
    finally:
        for node in nodes:
            node.stop()
        for p in pools:
            if os.path.exists(p):
                os.unlink(p)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RestartableNode:
    """One RPMP node on a fixed port and pool, so it can come back at the same address."""

    def __init__(self, prefix: str = "rpmp-faults", pool_size: str = "256m", extra: list[str] | None = None):
        self.pool = pool_file(prefix)
        self.pool_size = pool_size
        self.extra = extra
        self.port = free_port()
        self.node = NodeProcess(self.pool, pool_size=pool_size, port=self.port, extra=extra)
        self.addr = self.node.addr

    def kill(self) -> None:
        self.node.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.node = NodeProcess(self.pool, pool_size=self.pool_size, port=self.port, extra=self.extra)
        assert self.node.addr == self.addr

    def close(self) -> None:
        if self.node.proc.poll() is None:
            self.node.proc.send_signal(signal.SIGCONT)   # in case a test left it stopped
        self.node.stop()
        if os.path.exists(self.pool):
            os.unlink(self.pool)

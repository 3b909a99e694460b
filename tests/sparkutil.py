"""What the Spark test modules share: RPMP nodes for a module, a SparkSession on the plugin, executor waits.

Imported by the test modules (pytest puts tests/, the rootdir conftest's directory, on sys.path) and by the e2e
module's baseline child (which runs in tests/). The nodes are rpmp.cluster's LocalNode / LocalCluster.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from conftest import NODE_ARGS, SHM, make_node

from rpmp.cluster import LocalCluster, LocalNode, new_pool_path

MANAGER = "org.rpmp.shuffle.RpmpShuffleManager"


def plugin_jar() -> str:
    """The plugin jar, built from the sources when they are newer."""
    from shuffle_plugin import jar

    return str(jar.build_jar(quiet=True))


def plugin_conf(nodes: list[str]) -> dict[str, str]:
    """The settings that put a session on RPMP: the jar, the manager and the nodes (host:port)."""
    from shuffle_plugin.session import jar_conf

    return {**jar_conf(plugin_jar()), "spark.shuffle.manager": MANAGER, "spark.rpmp.nodes": ",".join(nodes)}


def forget_lingering_rpmp_settings(conf: dict[str, str]) -> None:
    """The driver JVM lives as long as this Python process, and spark-submit made the settings of the
    session that started it Java system properties, which every later SparkConf reads: a module would get
    the spark.rpmp.* settings (fetch.local, replicas, ...) of whichever module ran first. Those this session
    does not name are dropped, so a module runs with the RPMP settings it names, whatever ran before it."""
    from pyspark import SparkContext

    jvm = SparkContext._jvm
    if jvm is None:
        return
    forget_jvm_settings(key for key in list(jvm.System.getProperties().stringPropertyNames())
                        if (key.startswith("spark.rpmp.") or key == "spark.shuffle.manager") and key not in conf)


def forget_jvm_settings(keys: Iterable[str]) -> None:
    """Drop these keys from the driver JVM's system properties (where the first session's settings live on)."""
    from pyspark import SparkContext

    jvm = SparkContext._jvm
    if jvm is not None:
        for key in keys:
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


@contextmanager
def node_cluster(n: int = 2, pool_size: str = "256m", prefix: str = "rpmp-spark") -> Iterator[list[LocalNode]]:
    """n RPMP nodes (the others join the first), yielded once every node sees all n live; stopped and their
    pools removed afterwards."""
    with LocalCluster(n, pool_size=pool_size, pool_dir=SHM, name=prefix, node_args=NODE_ARGS) as cluster:
        yield cluster.nodes


def restartable_node(prefix: str = "rpmp-faults", pool_size: str = "256m", extra: list[str] | None = None
                     ) -> LocalNode:
    """One running RPMP node; kill() / stop() and restart() bring it back on the same pool and address, close()
    removes the pool."""
    return make_node(new_pool_path(prefix, SHM), pool_size=pool_size, extra=extra).start()

"""PySpark on RPMP in one call.

    from shuffle_plugin import rpmp_session, metrics
    spark = rpmp_session("my-job", master="local-cluster[2,1,2048]")   # embedded RPMP node
    spark = rpmp_session("my-job", nodes="10.0.0.5:7077,10.0.0.6:7077")  # an existing RPMP cluster
    ...
    metrics(spark)      # bytes pushed / fetched per shuffle, push and fetch times (from the driver JVM)
    spark.stop()        # also stops the embedded node and removes its pool (EmbeddedNode.close())

The executors' JVMs talk to the RPMP nodes directly (org.rpmp.shuffle.RpmpShuffleManager); Python
only configures the session, runs the embedded node, and reads metrics from the driver through py4j.
"""

from __future__ import annotations

import atexit
import json
import os
from typing import Any

from rpmp.cluster import LocalNode, new_pool_path
from shuffle_plugin import jar as plugin_jar

MANAGER = "org.rpmp.shuffle.RpmpShuffleManager"


class EmbeddedNode(LocalNode):
    """The session's own RPMP node: a LocalNode, started at once, that logs warnings and errors to this
    process's stderr. close() (what the session's stop() calls, and atexit if nobody did) stops it and
    removes the pool it made: the session's shuffle data dies with the session."""

    def __init__(self, pool_size: str = "1g", pool: str | None = None, host: str = "127.0.0.1",
                 extra_args: list[str] | None = None):
        super().__init__(pool or new_pool_path(f"rpmp-embedded-{os.getpid()}"), pool_size=pool_size, host=host,
                         args=["--log-level", "WARNING", *(extra_args or [])], stderr="inherit",
                         remove_pool=pool is None)
        self.start()
        atexit.register(self.close)


def rpmp_conf(nodes: str, *, replicas: int = 1, push_size: str | None = None, push_memory: str | None = None,
              existing_jars: str | None = None) -> dict[str, str]:
    """The Spark settings that put a session on RPMP (what spark-conf/spark-defaults.conf shows)."""
    jar = str(plugin_jar.locate_jar())
    jars = ",".join(j for j in (existing_jars, jar) if j)
    conf = {
        "spark.shuffle.manager": MANAGER,
        "spark.jars": jars,
        "spark.rpmp.nodes": nodes,
        "spark.rpmp.replicas": str(replicas),
    }
    if push_size:
        conf["spark.rpmp.push.size"] = push_size
    if push_memory:
        conf["spark.rpmp.push.memory"] = push_memory
    return conf


def configure(builder: Any, nodes: str | None = None, *, pool_size: str = "1g", replicas: int = 1,
              **options: str) -> tuple[Any, EmbeddedNode | None]:
    """Put a SparkSession.Builder on RPMP; with no `nodes`, start an embedded node (returned, to stop later).

    Extra `options` are spark.rpmp.* settings without the prefix, with dots as underscores
    (push_size="4m" -> spark.rpmp.push.size).
    """
    node = None
    if not nodes:
        node = EmbeddedNode(pool_size)
        nodes = node.address
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # everything of this session is on this host
    existing = builder._options.get("spark.jars") if hasattr(builder, "_options") else None
    for k, v in rpmp_conf(nodes, replicas=replicas, existing_jars=existing).items():
        builder = builder.config(k, v)
    for k, v in options.items():
        builder = builder.config("spark.rpmp." + k.replace("_", "."), str(v))
    return builder, node


def rpmp_session(app_name: str = "rpmp", master: str | None = None, nodes: str | None = None, *,
                 pool_size: str = "1g", replicas: int = 1, conf: dict[str, str] | None = None, **options: str) -> Any:
    """A SparkSession whose shuffles go through RPMP.

    nodes: RPMP nodes as "host:port,..."; None starts an embedded single node (pool on /dev/shm of
    `pool_size`) that stops with the session. conf: any other Spark settings.
    """
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for k, v in (conf or {}).items():
        builder = builder.config(k, v)
    builder, node = configure(builder, nodes, pool_size=pool_size, replicas=replicas, **options)
    try:
        spark = builder.getOrCreate()
    except Exception:
        if node is not None:
            node.close()
        raise
    if node is not None:
        original_stop = spark.stop

        def stop() -> None:
            try:
                original_stop()
            finally:
                node.close()

        spark.stop = stop
        spark._rpmp_node = node
    return spark


def metrics(spark: Any) -> dict[str, Any]:
    """The plugin's counters from the driver JVM: per shuffle and totals (bytes pushed and fetched,
    segments, records, push and fetch time in ns)."""
    raw = spark.sparkContext._jvm.org.rpmp.shuffle.RpmpMetrics.snapshotJson()
    return json.loads(raw)

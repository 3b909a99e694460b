"""Spark's UI (its REST API, /api/v1/applications/<id>/stages) shows an RPMP shuffle's write and read metrics as it
shows the sort shuffle's: the same job on both, stage by stage, records exactly equal, bytes and times present.

One job, a repartition of N rows over two local-cluster executors (every row is written and read once), first on
Spark's sort shuffle, then on RPMP. The stage metrics come from the driver's UI over HTTP (spark.ui.enabled on a
free port), as an operator's browser or a monitoring script would read them.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import pytest

pytest.importorskip("pyspark")

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
SORT_CONF = {"spark.shuffle.manager": "sort", DATA_IO_KEY: "org.apache.spark.shuffle.sort.io.LocalDiskShuffleDataIO"}
N, MAPS, REDUCES = 60_000, 4, 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conf() -> dict[str, str]:
    return {"spark.ui.enabled": "true", "spark.ui.port": str(_free_port()), "spark.port.maxRetries": "50",
            "spark.ui.showConsoleProgress": "false", "spark.executor.memory": "512m",
            "spark.sql.adaptive.enabled": "false"}  # one exchange, read whole: the stages are the same on both


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=20) as r:
        return json.load(r)


def _run_and_read_stages(spark, ui_key: str) -> dict[str, dict]:
    """Run the job; return its map stage and its reduce stage as the UI's REST API reports them, once both are
    COMPLETE there (the UI learns of stages from listener events, a moment after the job returns)."""
    sc = spark.sparkContext
    began = time.monotonic()
    wait_for_executors(sc, 2)
    print(f"{ui_key}: executors in {time.monotonic() - began:.1f} s")
    # One shuffle (the repartition) of N rows; the result stage counts what each reducer read.
    counts = spark.range(0, N, 1, MAPS).repartition(REDUCES, "id").rdd.mapPartitions(lambda it: [sum(1 for _ in it)])
    assert sum(counts.collect()) == N
    base = sc.uiWebUrl.replace("localhost", "127.0.0.1").rstrip("/")
    url = f"{base}/api/v1/applications/{sc.applicationId}/stages?details=false"
    deadline = time.monotonic() + 60
    while True:
        try:
            listed = _get(url)
        except OSError:  # a driver slow to answer on a loaded machine: ask again until the deadline
            assert time.monotonic() < deadline, f"the driver's UI at {url} did not answer in 60 s"
            time.sleep(0.5)
            continue
        stages = [s for s in listed if s["status"] == "COMPLETE"]  # type: ignore[union-attr]
        maps = [s for s in stages if s["shuffleWriteRecords"] > 0]
        reduces = [s for s in stages if s["shuffleReadRecords"] > 0]
        if maps and reduces:
            return {"map": maps[-1], "reduce": reduces[-1], "ui_key": ui_key}
        assert time.monotonic() < deadline, f"the UI shows no complete shuffle stages in 60 s: {stages}"
        time.sleep(0.2)


@pytest.fixture(scope="module", autouse=True)
def no_settings_left_behind():
    yield
    forget_lingering_rpmp_settings({})
    forget_jvm_settings([DATA_IO_KEY, "spark.ui.port", "spark.ui.enabled"])


def test_rpmp_stages_report_shuffle_metrics_like_the_sort_shuffle():
    t0 = time.monotonic()
    spark = spark_session("local-cluster[2,1,1024]", {**_conf(), **SORT_CONF, "spark.jars": plugin_jar()},
                          "rpmp-ui-sort")
    print(f"sort session in {time.monotonic() - t0:.1f} s")
    try:
        spark.sparkContext.setLogLevel("ERROR")
        sort = _run_and_read_stages(spark, "sort")
        print(f"sort job at {time.monotonic() - t0:.1f} s")
    finally:
        spark.stop()
    print(f"sort stopped at {time.monotonic() - t0:.1f} s")
    with node_cluster(2, pool_size="128m", prefix="rpmp-ui") as nodes:
        conf = {**_conf(), **plugin_conf([n.addr for n in nodes]), "spark.rpmp.push.size": "32k"}
        spark = spark_session("local-cluster[2,1,1024]", conf, "rpmp-ui-rpmp")
        try:
            spark.sparkContext.setLogLevel("ERROR")
            assert spark.sparkContext._jvm.org.rpmp.shuffle.RpmpMetrics.activeShuffleManager() == MANAGER
            print(f"rpmp session at {time.monotonic() - t0:.1f} s")
            rpmp = _run_and_read_stages(spark, "rpmp")
            print(f"rpmp job at {time.monotonic() - t0:.1f} s")
        finally:
            spark.stop()
        print(f"rpmp stopped at {time.monotonic() - t0:.1f} s")

    keys = ("shuffleWriteBytes", "shuffleWriteRecords", "shuffleWriteTime", "shuffleReadBytes",
            "shuffleRemoteBytesRead", "shuffleLocalBytesRead", "shuffleReadRecords", "shuffleFetchWaitTime")
    for run in (sort, rpmp):  # shown with -s, and in a failure's report
        print(run["ui_key"], {k: run["map"][k] if k.startswith("shuffleWrite") else run["reduce"][k] for k in keys})
    for run in (sort, rpmp):
        m, r = run["map"], run["reduce"]
        where = f"{run['ui_key']} shuffle"
        # Records: every record written once by the map stage and read once by the reduce stage.
        assert m["shuffleWriteRecords"] == N, where
        assert r["shuffleReadRecords"] == N, where
        assert m["shuffleWriteBytes"] > 0 and m["shuffleWriteTime"] > 0, where
        assert r["shuffleReadBytes"] > 0, where
        assert r["shuffleReadBytes"] == r["shuffleRemoteBytesRead"] + r["shuffleLocalBytesRead"], where
        assert r["shuffleFetchWaitTime"] >= 0 and "shuffleFetchWaitTime" in r, where
    assert rpmp["map"]["shuffleWriteRecords"] == sort["map"]["shuffleWriteRecords"]
    assert rpmp["reduce"]["shuffleReadRecords"] == sort["reduce"]["shuffleReadRecords"]
    # Bytes: the same records, framed and compressed differently; within a sane factor of the sort shuffle's.
    for stage, key in (("map", "shuffleWriteBytes"), ("reduce", "shuffleReadBytes")):
        ratio = rpmp[stage][key] / sort[stage][key]
        assert 0.25 < ratio < 4, f"{key}: RPMP {rpmp[stage][key]} vs sort {sort[stage][key]}"
    # What the map stage wrote is what the reduce stage read (RPMP: the pushed segments, fetched once).
    assert rpmp["reduce"]["shuffleReadBytes"] == rpmp["map"]["shuffleWriteBytes"]
    assert sort["reduce"]["shuffleReadBytes"] == sort["map"]["shuffleWriteBytes"]

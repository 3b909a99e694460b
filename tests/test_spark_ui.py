"""Spark's UI (its REST API, /api/v1/applications/<id>/stages) shows an RPMP shuffle's write and read metrics as it
shows the sort shuffle's: the same job on both, stage by stage, records exactly equal, bytes and times present.
While the RPMP job runs, a scraper reads the node's Prometheus /metrics, as Prometheus would; afterwards the bytes
the node counts as pushed equal the plugin's own count.

One job, a repartition of N rows over two local-cluster executors (every row is written and read once), first on
Spark's sort shuffle, then on RPMP. The stage metrics come from the driver's UI over HTTP (spark.ui.enabled on a
free port), as an operator's browser or a monitoring script would read them.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.request

import pytest

pytest.importorskip("pyspark")

from conftest import NODE_ARGS, SHM  # noqa: E402
from sparkutil import (  # noqa: E402
    MANAGER,
    forget_jvm_settings,
    forget_lingering_rpmp_settings,
    plugin_conf,
    plugin_jar,
    spark_session,
    wait_for_executors,
)

from rpmp.cluster import LocalCluster  # noqa: E402
from shuffle_plugin.session import metrics  # noqa: E402

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


def _pushed_bytes(metrics_port: int) -> float:
    """rpmp_pushed_bytes_total from the node's /metrics (Prometheus text format)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = re.search(r"^rpmp_pushed_bytes_total (\S+)$", text, re.M)
    assert found, "rpmp_pushed_bytes_total is not in the node's /metrics"
    return float(found.group(1))


class _Scraper(threading.Thread):
    """Scrapes /metrics every 50 ms until stopped (bounded: at most 2,000 scrapes), keeping what it read."""

    def __init__(self, metrics_port: int):
        super().__init__(daemon=True)
        self.port, self.seen, self.errors = metrics_port, [], []
        self.stopped = threading.Event()

    def run(self) -> None:
        for _ in range(2000):
            try:
                self.seen.append(_pushed_bytes(self.port))
            except Exception as e:  # reported by the test
                self.errors.append(repr(e))
            if self.stopped.wait(0.05):
                return


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
    metrics_port = _free_port()
    with LocalCluster(1, pool_size="128m", pool_dir=SHM, name="rpmp-ui",
                      node_args=[*NODE_ARGS, "--metrics-port", str(metrics_port)]) as cluster:
        conf = {**_conf(), **plugin_conf([n.addr for n in cluster.nodes]), "spark.rpmp.push.size": "32k"}
        spark = spark_session("local-cluster[2,1,1024]", conf, "rpmp-ui-rpmp")
        scraper = _Scraper(metrics_port)
        try:
            spark.sparkContext.setLogLevel("ERROR")
            assert spark.sparkContext._jvm.org.rpmp.shuffle.RpmpMetrics.activeShuffleManager() == MANAGER
            print(f"rpmp session at {time.monotonic() - t0:.1f} s")
            before = _pushed_bytes(metrics_port)
            scraper.start()
            rpmp = _run_and_read_stages(spark, "rpmp")
            scraper.stopped.set()
            scraper.join(timeout=30)
            print(f"rpmp job at {time.monotonic() - t0:.1f} s")
            plugin_pushed = metrics(spark)["totals"]["bytesPushed"]
            node_pushed = _pushed_bytes(metrics_port) - before
        finally:
            scraper.stopped.set()
            spark.stop()
        print(f"rpmp stopped at {time.monotonic() - t0:.1f} s")

    # /metrics answered all along the job, its count only grew, and it ends at the plugin's own count.
    assert not scraper.errors and len(scraper.seen) >= 3, (scraper.errors, scraper.seen)
    assert scraper.seen == sorted(scraper.seen)
    assert plugin_pushed > 0 and node_pushed == plugin_pushed, (node_pushed, plugin_pushed)

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

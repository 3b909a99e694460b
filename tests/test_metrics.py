"""`rpmp server --metrics-port`: a real node scraped over HTTP, its figures checked against what was sent and
against STATS; the Grafana dashboard (deploy/grafana/rpmp.json) and docs/OPERATIONS.md checked against what it
exports."""

import json
import os
import re
import socket
import urllib.request

import pytest
import xxhash
from prometheus_client.parser import text_string_to_metric_families

from rpmp import _wire as W
from rpmp.client import ChecksumMismatchError, Client, NotFoundError
from rpmp.protocol import RECORD_HEADER_SIZE, Op

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP, SMALL = "app-metrics-big", "app-metrics-small"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        return r.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a scrape."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def exported_names(text: str) -> set[str]:
    """Every name a PromQL expression may use against this scrape: sample names, and the names a family's type
    gives even while it has no samples (a counter's _total, a histogram's _bucket, _count, _sum)."""
    names = set()
    for fam in text_string_to_metric_families(text):
        names.add(fam.name)
        names.update(s.name for s in fam.samples)
        if fam.type == "counter":
            names.add(fam.name + "_total")
        elif fam.type == "histogram":
            names.update(fam.name + suffix for suffix in ("_bucket", "_count", "_sum"))
    return names


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """A node with a disk tier and --metrics-port, a known workload through the Python client (pushes, fetches,
    one-sided reads, two apps, one deleted, a checksum mismatch, a fetch of nothing), then one scrape and
    STATS taken at the same quiet moment."""
    from conftest import make_node

    port = free_port()
    node = make_node(pool_size="64m", extra=["--metrics-port", str(port),
                                             "--spill-dir", str(tmp_path_factory.mktemp("spill"))])
    try:
        node.start()
        sent = {}
        with Client(node.addr) as c:
            c.register_shuffle(APP, 1, num_partitions=2)
            sizes = [1, 1000, 70_000, 300_000, 5_000_000]
            for m, size in enumerate(sizes):  # one PUSH each
                c.push(APP, 1, m % 2, m, 0, 0, os.urandom(size))
            segs = [(p, m, 0, 1, os.urandom(4096 + m)) for m in range(10) for p in range(2)]
            assert c.push_many(APP, 1, segs) == 20
            c.push(APP, 1, 0, 0, 0, 0, os.urandom(1))  # a duplicate of (0, 0, 0): counted, dropped
            sent["pushes"] = len(sizes) + len(segs) + 1
            sent["push_bytes"] = sum(sizes) + sum(len(d) for *_, d in segs) + 1
            fetched = [c.fetch(APP, 1, p) for p in range(2)]
            sent["fetches"] = 2
            sent["fetch_bytes"] = sum(len(s.data) for got in fetched for s in got)
            sent["fetch_segments"] = sum(len(got) for got in fetched)
            info = c.partition_info(APP, 1, 1)
            sent["info_bytes"] = info["bytes"]
            c.register_shuffle(SMALL, 2, num_partitions=1)
            c.push(SMALL, 2, 0, 0, 0, 0, b"x" * 777)
            sent["small_bytes"] = 777
            assert c.delete_app(SMALL) >= 1
            with c.connection() as conn:  # deliberate bad requests: one of each code
                meta = W.encode_push(APP, 1, 0, 50, 0, 0, xxhash.xxh3_64_intdigest(b"right") ^ 1)
                with pytest.raises(ChecksumMismatchError):
                    conn.call(Op.PUSH, meta, b"right")
            with pytest.raises(NotFoundError):
                c.fetch("no-such-app", 1, 0)
            text = scrape(port)
            stats = c.stats()
        yield {"text": text, "samples": samples(text), "stats": stats, "sent": sent, "node": node, "port": port}
    finally:
        node.stop()
        node.close()


def value(s, name: str, **labels: str) -> float:
    return s[(name, tuple(sorted(labels.items())))]


def test_counts_are_what_was_sent(scraped):
    s, sent = scraped["samples"], scraped["sent"]
    assert value(s, "rpmp_metrics_loop_responsive") == 1
    assert value(s, "rpmp_pushed_segments_total") == sent["pushes"] + 1  # the deleted app's push too
    assert value(s, "rpmp_pushed_bytes_total") == sent["push_bytes"] + sent["small_bytes"]
    assert value(s, "rpmp_push_duplicates_total") == 1
    assert value(s, "rpmp_fetch_requests_total") == sent["fetches"]
    records = sent["fetch_bytes"] + RECORD_HEADER_SIZE * sent["fetch_segments"]  # FETCH serves whole records
    assert value(s, "rpmp_fetched_bytes_total") == records
    assert value(s, "rpmp_fetched_segments_total") == sent["fetch_segments"]
    assert value(s, "rpmp_one_sided_requests_total") == 1
    assert value(s, "rpmp_one_sided_bytes_total") == sent["info_bytes"] > 0
    assert value(s, "rpmp_replicated_segments_total") == 0  # one node: nothing to replicate
    assert value(s, "rpmp_push_checksum_failures_total") == 1
    # errors by code: exactly the two deliberate ones
    errors = {dict(k[1])["code"]: v for k, v in s.items() if k[0] == "rpmp_errors_total"}
    assert errors == {"CHECKSUM_MISMATCH": 1, "NOT_FOUND": 1}
    # per app: the live app has its own series; the deleted one's counts went to _other
    assert value(s, "rpmp_app_pushed_bytes_total", app=APP) == sent["push_bytes"]
    assert value(s, "rpmp_app_pushed_segments_total", app=APP) == sent["pushes"]
    assert value(s, "rpmp_app_pushed_bytes_total", app="_other") == sent["small_bytes"]
    assert value(s, "rpmp_app_fetched_bytes_total", app=APP) == records
    assert value(s, "rpmp_app_one_sided_bytes_total", app=APP) == sent["info_bytes"]
    assert value(s, "rpmp_app_held_bytes", app=APP) == sent["push_bytes"] - 1  # the duplicate was dropped
    assert value(s, "rpmp_app_held_bytes", app="_other") == 0
    assert value(s, "rpmp_apps") == 1


def test_latency_histograms_count_the_requests(scraped):
    s, sent = scraped["samples"], scraped["sent"]
    for op, requests in (("push", sent["pushes"] + 1), ("fetch", sent["fetches"])):
        name = f"rpmp_{op}_latency_seconds"
        buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in s.items() if k[0] == name + "_bucket"))
        assert len(buckets) == 18 and buckets[-1][0] == float("inf")
        counts = [v for _, v in buckets]
        assert counts == sorted(counts)  # cumulative
        assert value(s, name + "_count") == counts[-1] == requests  # successful requests only
        assert 0 < value(s, name + "_sum") < 60


def test_gauges_equal_stats(scraped):
    s, st = scraped["samples"], scraped["stats"]
    pool, spill = st["pool"], st["spill"]
    assert value(s, "rpmp_pool_capacity_bytes") == pool["capacity"] == 64 << 20
    assert value(s, "rpmp_pool_allocated_bytes") == pool["allocated"] > 0
    assert value(s, "rpmp_pool_used_bytes") == pool["used"] > 0
    assert value(s, "rpmp_pool_blocks") == pool["blocks"] > 0
    assert value(s, "rpmp_disk_used_bytes") == spill["used"]
    assert value(s, "rpmp_disk_blocks") == spill["blocks"]
    assert value(s, "rpmp_disk_spilled_bytes_total") == spill["spilled_bytes"]
    assert value(s, "rpmp_disk_capacity_bytes") > 0
    assert value(s, "rpmp_membership_epoch") == st["epoch"]
    assert value(s, "rpmp_live_nodes") == len(st["live_nodes"]) == 1
    assert value(s, "rpmp_node_info", node_id=scraped["node"].addr, protocol="2") == 1
    assert value(s, "rpmp_connections") >= 1
    assert sum(v for k, v in s.items() if k[0] == "rpmp_connections_paused") == 0
    assert value(s, "rpmp_apps_expired_total") == st["counters"]["apps_expired"] == 0
    assert value(s, "process_resident_memory_bytes") > 0 and value(s, "process_cpu_seconds_total") > 0


def dashboard_exprs() -> list[str]:
    with open(os.path.join(ROOT, "deploy", "grafana", "rpmp.json")) as f:
        dash = json.load(f)
    exprs: list[str] = []

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if k in ("expr", "definition") and isinstance(v, str):
                    exprs.append(v)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(dash)
    return exprs


METRIC = re.compile(r"\b((?:rpmp|process)_[a-zA-Z0-9_]+)")


def test_dashboard_names_only_exported_metrics(scraped):
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    exported = exported_names(scraped["text"])
    used = {name for e in exprs for name in METRIC.findall(e)}
    assert used and not used - exported, f"the dashboard uses metrics the node does not export: {used - exported}"
    for needed in ("rpmp_pushed_bytes_total", "rpmp_fetched_bytes_total", "rpmp_push_latency_seconds_bucket",
                   "rpmp_fetch_latency_seconds_bucket", "rpmp_pool_allocated_bytes", "rpmp_disk_used_bytes",
                   "rpmp_errors_total", "rpmp_live_nodes", "rpmp_membership_epoch", "rpmp_app_held_bytes"):
        assert needed in used, needed
    assert any("histogram_quantile(0.99" in e for e in exprs) and any("histogram_quantile(0.5" in e for e in exprs)
    for e in exprs:  # no PromQL parser here: at least brackets balance and label values are quoted
        stack = []
        for ch in re.sub(r'"[^"]*"', '""', e):
            if ch in "([{":
                stack.append(ch)
            elif ch in ")]}":
                assert stack and stack.pop() + ch in ("()", "[]", "{}"), e
        assert not stack and e.count('"') % 2 == 0, e


def test_operations_doc_lists_every_metric(scraped):
    with open(os.path.join(ROOT, "docs", "OPERATIONS.md")) as f:
        doc = f.read()
    section = doc.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `((?:rpmp|process)_[a-zA-Z0-9_]+)`", section, re.M))
    families = {fam.name + ("_total" if fam.type == "counter" else "")
                for fam in text_string_to_metric_families(scraped["text"])}
    exported = {n for n in families if n.startswith("rpmp_")} | {"process_cpu_seconds_total",
                                                                 "process_resident_memory_bytes"}
    assert not exported - documented, f"exported but not in docs/OPERATIONS.md: {exported - documented}"
    assert not documented - exported_names(scraped["text"]), "documented but not exported"


def test_metrics_port_in_use_is_one_line(tmp_path):
    from conftest import make_node

    from rpmp.cluster import NodeError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        node = make_node(extra=["--metrics-port", str(port)])
        try:
            with pytest.raises(NodeError, match=f"cannot serve metrics on 127.0.0.1:{port}.*--metrics-port"):
                node.start()
            assert not os.path.exists(node.pool)  # refused before the pool was created
        finally:
            node.close()


def test_top_apps_bound_the_series_and_the_rest_is_other():
    from rpmp.server.controller import APP_COUNTERS
    from rpmp.server.metrics import NodeCollector

    held = {f"app{i}": {"shuffles": 1, "bytes": 100 * i, "records": i, "spilled_bytes": 0} for i in range(1, 6)}
    counts = {app: [i] * len(APP_COUNTERS) for i, app in enumerate(held, 1)}
    snap = {"stats": {"apps": held}, "apps": counts, "retired": [1000] * len(APP_COUNTERS)}
    fams = {f.name: f for f in NodeCollector(None, None, top_apps=2)._app_families(snap)}
    pushed = {s.labels["app"]: s.value for s in fams["rpmp_app_pushed_bytes"].samples}
    assert pushed == {"app5": 5, "app4": 4, "_other": 1000 + 1 + 2 + 3}  # the two holding most; deleted apps too
    held_bytes = {s.labels["app"]: s.value for s in fams["rpmp_app_held_bytes"].samples}
    assert held_bytes == {"app5": 500, "app4": 400, "_other": 600}

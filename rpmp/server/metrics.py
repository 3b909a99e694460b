"""Prometheus metrics of a node (`rpmp server --metrics-port PORT`): docs/OPERATIONS.md "Metrics" lists them.

Nothing here runs on the data path. The controller and the network keep the counts they keep anyway (plain
ints, a few per request, and a small array of bucket counts per latency histogram); at scrape time a
`NodeCollector` asks the event loop for one snapshot of them (`loop.call_soon_threadsafe`, answered within
`SNAPSHOT_TIMEOUT`) and turns that into metric families. The HTTP server is prometheus_client's own, on a
thread of its own: formatting the answer happens off the loop, the loop only copies counters and computes
what STATS computes, and a node whose loop is stuck still answers a scrape (process metrics and
`rpmp_metrics_loop_responsive 0`) instead of timing out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from rpmp.auth import display_app
from rpmp.protocol import VERSION, ErrorCode
from rpmp.server.controller import APP_COUNTERS, LATENCY_BUCKETS

if TYPE_CHECKING:
    from rpmp.server.node import RpmpNode

log = logging.getLogger("rpmp.metrics")

SNAPSHOT_TIMEOUT = 5.0  # seconds a scrape waits for the loop's snapshot (Prometheus' default scrape timeout: 10 s)
TOP_APPS = 10  # apps with series of their own (those holding the most bytes); the rest are summed as app="_other"
OTHER = "_other"

# (metric name, controller counter, help) of the node-wide counters
CONTROLLER_COUNTERS = (
    ("rpmp_pushed_bytes_total", "push_bytes", "Payload bytes of the segments pushed to this node and stored "
     "(replicas it received included; duplicates included)."),
    ("rpmp_pushed_segments_total", "pushes", "Segments (PUSH requests) stored by this node, duplicates included."),
    ("rpmp_push_duplicates_total", "duplicates", "Pushed segments already held (a retry), received and dropped."),
    ("rpmp_fetched_bytes_total", "fetch_bytes", "Bytes of the records served by FETCH (payload plus each "
     "record's 32-byte header: what went on the wire)."),
    ("rpmp_fetched_segments_total", "fetch_records", "Segments (records) served by FETCH."),
    ("rpmp_fetch_requests_total", "fetches", "FETCH requests answered with data."),
    ("rpmp_fetch_map_range_requests_total", "fetch_map_ranges", "FETCH requests for a map range (AQE's reads)."),
    ("rpmp_replicated_bytes_total", "replica_bytes", "Payload bytes this node forwarded to replicas (once per "
     "replica)."),
    ("rpmp_replicated_segments_total", "replica_pushes", "Segments this node forwarded to replicas (once per "
     "replica)."),
    ("rpmp_replication_failures_total", "replica_errors", "Pushes answered UNAVAILABLE because a replica did not "
     "take the segment."),
    ("rpmp_one_sided_requests_total", "partition_infos", "PARTITION_INFO requests answered (one-sided reads: the "
     "reader maps the pool file itself)."),
    ("rpmp_one_sided_bytes_total", "partition_info_bytes", "Payload bytes the PARTITION_INFO answers described."),
    ("rpmp_push_checksum_failures_total", "checksum_errors", "Pushed segments whose payload failed its XXH3 "
     "(answered CHECKSUM_MISMATCH)."),
    ("rpmp_kv_puts_total", "puts", "PUT requests stored."),
    ("rpmp_kv_gets_total", "gets", "GET requests answered with a value."),
    ("rpmp_lease_renewals_total", "leases", "LEASE requests received."),
    ("rpmp_apps_expired_total", "apps_expired", "Apps deleted because nobody renewed their lease (--app-ttl)."),
)
NETWORK_COUNTERS = (
    ("rpmp_sendfile_bytes_total", "sendfile_bytes", "Bytes sent with sendfile(2) (spilled blocks, --sendfile)."),
    ("rpmp_connections_dropped_total", "dropped_connections", "Connections dropped by the node: a client that "
     "took none of its replies for --send-timeout, a frame late past --frame-timeout, a failed send."),
    ("rpmp_connections_evicted_total", "evicted_connections", "Idle connections closed to admit a new one at "
     "--max-connections."),
    ("rpmp_connections_idle_closed_total", "idle_closed", "Connections closed after --idle-timeout of silence."),
    ("rpmp_frames_timed_out_total", "timed_out_frames", "Frames not complete within --frame-timeout."),
    ("rpmp_auth_failures_total", "auth_failures", "Failed authentications (--auth-file): unknown tenant, wrong proof, "
     "a request before AUTH; each logged at WARN with the peer's address."),
)
# (per-app metric name, index in the controller's per-app counters, help)
APP_METRICS = (
    ("rpmp_app_pushed_bytes_total", "push_bytes", "Payload bytes pushed, by app"),
    ("rpmp_app_pushed_segments_total", "pushes", "Segments pushed, by app"),
    ("rpmp_app_fetched_bytes_total", "fetch_bytes", "Record bytes served by FETCH, by app"),
    ("rpmp_app_fetched_segments_total", "fetch_records", "Segments served by FETCH, by app"),
    ("rpmp_app_replicated_bytes_total", "replica_bytes", "Payload bytes forwarded to replicas, by app"),
    ("rpmp_app_replicated_segments_total", "replica_pushes", "Segments forwarded to replicas, by app"),
    ("rpmp_app_one_sided_requests_total", "partition_infos", "PARTITION_INFO requests, by app"),
    ("rpmp_app_one_sided_bytes_total", "partition_info_bytes", "Payload bytes PARTITION_INFO described, by app"),
)
CORRUPT_KINDS = (("record", "corrupt_records"), ("value", "corrupt_values"), ("registration", "corrupt_registrations"))
PAUSE_REASONS = ("write", "memory", "room")  # a client not reading its replies; staging budget; pool room


def histogram(name: str, doc: str, counts: list[int], total: float) -> HistogramMetricFamily:
    """A histogram family from per-bucket counts (the last one past the largest bound) and their sum."""
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound, n in zip((*map(repr, LATENCY_BUCKETS), "+Inf"), counts, strict=True):
        cumulative += n
        buckets.append((bound, cumulative))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)


class NodeCollector(Collector):
    """Reads a node's counters and state at scrape time (one snapshot taken on its event loop)."""

    def __init__(self, node: RpmpNode, loop: asyncio.AbstractEventLoop, top_apps: int = TOP_APPS):
        self.node = node
        self.loop = loop
        self.top_apps = top_apps

    # ---- on the loop ----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any] | None:
        """Everything the metrics show, copied (runs on the loop thread: nothing it reads changes meanwhile)."""
        node = self.node
        ctl, net, storage, members = node.controller, node.network, node.storage, node.membership
        if ctl is None or net is None or storage is None or members is None:
            return None  # still starting
        began = time.perf_counter()
        st = storage.stats()
        held = cast(dict[str, dict[str, int]], st["apps"])
        ctl.retire_apps(held.keys())  # apps gone since: their counts join app="_other"
        paused = dict.fromkeys(PAUSE_REASONS, 0)
        for c in net.connections:
            if c.write_paused:
                paused["write"] += 1
            elif c.waiting_memory:
                paused["memory"] += 1
            elif c.waiting_room:
                paused["room"] += 1
        disk = storage.disk
        network = {**net.counters, "auth_failures": 0 if net.auth is None else net.auth.failures}
        return {
            "node": ctl.config.node_id, "counters": dict(ctl.counters), "network": network,
            "errors": dict(net.errors), "latency": {k: (list(h.counts), h.sum) for k, h in ctl.latency.items()},
            "apps": {display_app(app): list(c) for app, c in ctl.app_counters.items()},
            "retired": list(ctl.retired_app_counters),
            "stats": st, "connections": len(net.connections), "paused": paused,
            "disk_capacity": None if disk is None else (disk.capacity or disk.used + disk.room()),
            "epoch": members.epoch, "live": len(members.live()), "members": len(members.nodes()),
            "draining": members.draining, "leased_apps": len(ctl.leases.renewed),
            "oldest_lease": max((ctl.leases.clock() - t for t in ctl.leases.renewed.values()), default=0.0),
            "seconds": time.perf_counter() - began,
        }

    # ---- on the scraping thread -----------------------------------------------------------------
    def _take(self) -> dict[str, Any] | None:
        fut: concurrent.futures.Future[dict[str, Any] | None] = concurrent.futures.Future()

        def run() -> None:
            if not fut.set_running_or_notify_cancel():
                return  # the scrape gave up waiting
            try:
                fut.set_result(self.snapshot())
            except BaseException as e:  # reported on the scraping thread
                fut.set_exception(e)

        try:
            self.loop.call_soon_threadsafe(run)
        except RuntimeError:  # the loop is closed: the node stopped
            return None
        try:
            return fut.result(SNAPSHOT_TIMEOUT)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            log.warning("metrics: the event loop did not answer within %.0f s", SNAPSHOT_TIMEOUT)
            raise

    def collect(self) -> Iterator[Metric]:
        try:
            snap = self._take()
        except concurrent.futures.TimeoutError:
            snap = None
            responsive = 0.0
        except Exception:
            log.exception("metrics: snapshot failed")
            snap, responsive = None, 0.0
        else:
            responsive = 1.0
        yield GaugeMetricFamily("rpmp_metrics_loop_responsive", "1 if the node's event loop answered this scrape's "
                                f"snapshot within {SNAPSHOT_TIMEOUT:g} s, else 0 (only process metrics follow).",
                                value=responsive)
        if snap is not None:
            yield from self._families(snap)

    def _families(self, s: dict[str, Any]) -> Iterable[Metric]:
        yield GaugeMetricFamily("rpmp_metrics_snapshot_seconds", "Event-loop time this scrape's snapshot took.",
                                value=s["seconds"])
        info = GaugeMetricFamily("rpmp_node_info", "1, labelled with the node's id and protocol version.",
                                 labels=["node_id", "protocol"])
        info.add_metric([s["node"], str(VERSION)], 1)
        yield info
        c, n = s["counters"], s["network"]
        for name, key, doc in CONTROLLER_COUNTERS:
            yield CounterMetricFamily(name, doc, value=c[key])
        for name, key, doc in NETWORK_COUNTERS:
            yield CounterMetricFamily(name, doc, value=n[key])
        for op in ("push", "fetch"):
            counts, total = s["latency"][op]
            yield histogram(f"rpmp_{op}_latency_seconds", f"Seconds from a {op.upper()} request's header to its "
                            "reply handed to the network, successful requests only (PUSH: its data part's arrival "
                            "and the replicas' acknowledgements included).", counts, total)
        errors = CounterMetricFamily("rpmp_errors_total", "Error replies sent, by ErrorCode name.", labels=["code"])
        for code, count in sorted(s["errors"].items()):
            try:
                name = ErrorCode(code).name
            except ValueError:
                name = str(code)
            errors.add_metric([name], count)
        yield errors
        st = s["stats"]
        integrity = st["integrity"]
        corrupt = CounterMetricFamily("rpmp_corrupt_total", "Stored items found damaged (checksum failures of held "
                                      "data), quarantined and never served again, by kind.", labels=["kind"])
        for label, key in CORRUPT_KINDS:
            corrupt.add_metric([label], integrity[key])
        yield corrupt
        yield CounterMetricFamily("rpmp_lost_record_bytes_total", "Record bytes lost behind a damaged record header "
                                  "(readers take them from a replica).", value=integrity["lost_record_bytes"])
        yield GaugeMetricFamily("rpmp_connections", "Client connections open.", value=s["connections"])
        paused = GaugeMetricFamily("rpmp_connections_paused", "Connections whose reading is paused, by reason: write "
                                   "(the client does not read its replies), memory (the staging budget), room (no "
                                   "pool room yet for the frame's data).", labels=["reason"])
        for reason, count in s["paused"].items():
            paused.add_metric([reason], count)
        yield paused
        pool = st["pool"]
        for name, value, doc in (
                ("rpmp_pool_capacity_bytes", pool["capacity"], "Size of the pool file."),
                ("rpmp_pool_allocated_bytes", pool["allocated"], "Pool bytes allocated to blocks (what spilling and "
                 "POOL_FULL go by)."),
                ("rpmp_pool_used_bytes", pool["used"], "Bytes published in the pool's blocks."),
                ("rpmp_pool_blocks", pool["blocks"], "Blocks in the pool."),
                ("rpmp_pool_pending_free_blocks", st["pending_free"], "Deleted blocks still pinned by readers."),
                ("rpmp_receiving_bytes", st["receiving"], "Pool bytes reserved for data parts still arriving."),
                ("rpmp_kv_values", st["values"], "Values held (key-value API)."),
                ("rpmp_membership_epoch", s["epoch"], "This node's membership epoch."),
                ("rpmp_live_nodes", s["live"], "Nodes this node sees alive, itself included."),
                ("rpmp_member_nodes", s["members"], "Nodes in this node's membership table, dead ones included."),
                ("rpmp_draining", int(s["draining"]), "1 while this node drains (takes no new shuffles)."),
                ("rpmp_apps", len(st["apps"]), "Apps holding shuffles on this node."),
                ("rpmp_leased_apps", s["leased_apps"], "Apps whose lease this node keeps."),
                ("rpmp_lease_oldest_age_seconds", s["oldest_lease"], "Seconds since the least recently renewed "
                 "app's last renewal (an app is deleted past --app-ttl).")):
            yield GaugeMetricFamily(name, doc, value=value)
        spill = st["spill"]
        if spill is not None:
            for name, value, doc in (
                    ("rpmp_disk_capacity_bytes", s["disk_capacity"], "Bytes the disk tier may hold: --spill-size, "
                     "else what its directories' file systems have (used + free)."),
                    ("rpmp_disk_used_bytes", spill["used"], "Bytes of the spill files' live extents."),
                    ("rpmp_disk_blocks", spill["blocks"], "Blocks in the disk tier.")):
                yield GaugeMetricFamily(name, doc, value=value)
            for name, value, doc in (
                    ("rpmp_disk_spilled_bytes_total", spill["spilled_bytes"], "Bytes moved from the pool to disk."),
                    ("rpmp_disk_spilled_blocks_total", spill["spilled_blocks"], "Blocks moved from the pool to disk."),
                    ("rpmp_disk_spill_seconds_total", spill["spill_seconds"], "Seconds spent writing spilled blocks "
                     "(off the event loop)."),
                    ("rpmp_disk_spill_errors_total", spill["spill_errors"], "Spill batches that failed.")):
                yield CounterMetricFamily(name, doc, value=value)
        yield from self._app_families(s)

    def _app_families(self, s: dict[str, Any]) -> Iterable[Metric]:
        held: dict[str, dict[str, int]] = s["stats"]["apps"]
        top = sorted(held, key=lambda a: (-held[a]["bytes"], a))[:self.top_apps]
        shown = set(top)
        other = list(s["retired"])
        for app, counts in s["apps"].items():
            if app not in shown:
                other = [x + y for x, y in zip(other, counts, strict=True)]
        per_app = [(app, s["apps"].get(app) or [0] * len(APP_COUNTERS)) for app in top] + [(OTHER, other)]
        for name, key, doc in APP_METRICS:
            i = APP_COUNTERS.index(key)
            fam = CounterMetricFamily(name, f"{doc} (the {self.top_apps} apps holding the most bytes; the others "
                                      f"and deleted ones summed as app=\"{OTHER}\").", labels=["app"])
            for app, counts in per_app:
                fam.add_metric([app], counts[i])
            yield fam
        for name, key, doc in (("rpmp_app_held_bytes", "bytes", "Payload bytes an app holds here, both tiers"),
                               ("rpmp_app_spilled_bytes", "spilled_bytes", "Of those, bytes on the disk tier"),
                               ("rpmp_app_shuffles", "shuffles", "Shuffles an app holds here")):
            gauge = GaugeMetricFamily(name, f"{doc} (top {self.top_apps} apps by bytes, the rest as "
                                      f"app=\"{OTHER}\").", labels=["app"])
            for app in top:
                gauge.add_metric([app], held[app][key])
            gauge.add_metric([OTHER], sum(held[a][key] for a in held if a not in shown))
            yield gauge


class MetricsServer:
    """prometheus_client's HTTP server on its own thread, serving a node's collector and the process's."""

    def __init__(self, node: RpmpNode, host: str, port: int, top_apps: int = TOP_APPS):
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = NodeCollector(node, asyncio.get_running_loop(), top_apps)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)
        self.host, self.port = host, port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve; OSError (naming the metrics port) if it cannot bind."""
        try:
            self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as e:
            hint = ": pick another --metrics-port" if e.errno == errno.EADDRINUSE else ""
            raise OSError(e.errno, f"cannot serve metrics on {self.host}:{self.port}: {e.strerror}{hint}") from None
        self.port = self._server.server_port
        log.info("serving Prometheus metrics at http://%s:%d/metrics", self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

#!/usr/bin/env python3
"""TeraSort through RPMP and through Spark's own sort shuffle, alternating, in one invocation.

    python bench/terasort.py                                  # 100m (1M rows), both shuffles, 2 runs each
    python bench/terasort.py --size 1g --json /tmp/ts1g.json --plot /tmp/ts1g.png
    python bench/terasort.py --size 1g --kill-executor        # recovery: is the map stage recomputed?
    python bench/terasort.py --nodes 10.0.0.5:7177 --shuffle rpmp --conf spark.rpmp.push.size=16m
    python bench/terasort.py --size 4g --pool-size 2g --spill-dir /mnt/ssd   # more shuffle than pool: disk tier

Phases (each with its own progress bar):
  teragen       N records of 100 bytes (10-byte key, 90-byte value, Hadoop gensort layout) computed by Spark
                SQL expressions in the JVM from a seed; generator partition i writes the contiguous row ids
                [i*N/m, (i+1)*N/m) to one Parquet file, like Hadoop's TeraGen. Once, in its own session.
  input sum     count and checksum (sum of xxhash64(key, value) as an exact decimal) of the input.
  warm-up scan  every new session scans (and sums) the input once, untimed: fresh executors spend their
                first seconds loading classes and compiling, which is not what is compared.
  terasort      TIMED. A total-order sort: orderBy(key) = range partitioning (sampled bounds) + a sort of
                each partition. Default sink "count": step 1 materializes the shuffle (the sampling job and
                the map stage: adaptive query execution submits map stages on their own), step 2 counts the
                sorted rows (the reduce stage: fetch + sort + iterate, like the noop sink but without a
                per-row copy). The figure is step 1 + step 2. `--sink noop` times one
                `write.format("noop")` instead. Teragen, session start-up and validation are never timed.
  teravalidate  on the timed run's own shuffle output: every partition sorted, max key of partition i <=
                min key of the next non-empty one, count and checksum equal to the input's. JVM only.

Every run gets a fresh SparkSession (spark.shuffle.manager is fixed per SparkContext), runs alternate
rpmp, sort, sort, rpmp, rpmp, sort ... (each round reverses the last one's order, so neither shuffle
always runs first), and the result is the median per shuffle and their ratio (rpmp / sort).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout: `git` names what was measured

if TYPE_CHECKING:
    from pyspark import SparkContext
    from pyspark.sql import DataFrame, SparkSession
    from rich.progress import Progress

ROW_BYTES = 100
RPMP_MANAGER = "org.rpmp.shuffle.RpmpShuffleManager"
SORT_MANAGER = "sort"
MARKER = "_teragen.json"
TIMED = ("terasort phase only: the sampling job, the map stage (shuffle write) and the reduce stage (shuffle "
         "read, sort, iterate); not teragen, session start-up or validation")

# Settings that decide how a shuffle behaves; their effective values are recorded with every run.
SHUFFLE_KEYS = (
    "spark.shuffle.manager", "spark.shuffle.compress", "spark.io.compression.codec", "spark.shuffle.file.buffer",
    "spark.shuffle.sort.bypassMergeThreshold", "spark.reducer.maxSizeInFlight", "spark.shuffle.spill.compress",
    "spark.sql.shuffle.partitions", "spark.sql.adaptive.enabled", "spark.sql.adaptive.coalescePartitions.enabled",
    "spark.sql.adaptive.advisoryPartitionSizeInBytes", "spark.sql.files.maxPartitionBytes",
    "spark.sql.files.openCostInBytes", "spark.executor.memory", "spark.memory.fraction",
    "spark.rpmp.nodes", "spark.rpmp.replicas", "spark.rpmp.push.size", "spark.rpmp.push.memory",
    "spark.rpmp.push.offHeap", "spark.rpmp.push.inflight", "spark.rpmp.fetch.buffer", "spark.rpmp.fetch.local",
    "spark.rpmp.fetch.timeout",
)
# The plugin's defaults (RpmpConf.java, spark-conf/spark-defaults.conf), shown when a session leaves them unset.
RPMP_DEFAULTS = {"spark.rpmp.replicas": "1", "spark.rpmp.push.size": "4m", "spark.rpmp.push.memory": "64m",
                 "spark.rpmp.push.offHeap": "true", "spark.rpmp.push.inflight": "4", "spark.rpmp.fetch.buffer": "48m",
                 "spark.rpmp.fetch.local": "true",
                 "spark.rpmp.fetch.timeout": "120s"}


# ---- sizes ----------------------------------------------------------------------------------------------------

_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_size(text: str) -> int:
    """'100m' -> 100_000_000 bytes. Decimal units, as TeraGen counts: 1g is 10M rows of 100 bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)b?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 100m, 1g, 2.5g)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


# ---- teragen / terasort / teravalidate: the Spark part ------------------------------------------------------

def teragen_frame(spark: SparkSession, rows: int, partitions: int, seed: int) -> DataFrame:
    """The TeraGen records as a DataFrame: (key binary(10), value binary(90)), computed in the JVM.

    spark.range splits [0, rows) into `partitions` contiguous ranges, as Hadoop's TeraGen gives each map a
    contiguous range of row ids. The key is 10 pseudo-random bytes (two xxhash64 of the row id and the seed);
    the value follows gensort: 00 11, the row id as 32 hex digits, 88 99 AA BB, 48 filler bytes (12 hex digits
    of the row's hash, each written 4 times), CC DD EE FF. Same seed, same bytes, whatever the cluster.
    """
    from pyspark.sql import functions as F

    h1 = f"lpad(hex(xxhash64(id, {seed}L)), 16, '0')"
    h2 = f"lpad(hex(xxhash64({seed}L, id)), 16, '0')"
    key = F.expr(f"unhex(concat({h1}, substr({h2}, 1, 4)))").alias("key")
    value = F.expr(
        "concat(unhex('0011'), cast(lpad(hex(id), 32, '0') as binary), unhex('8899AABB'), "
        f"cast(regexp_replace(substr({h2}, 5, 12), '(.)', '$1$1$1$1') as binary), unhex('CCDDEEFF'))"
    ).alias("value")
    return spark.range(0, rows, 1, partitions).select(key, value)


def checksum_column():
    """xxhash64 of the whole record as an exact decimal: sums never wrap, whatever the order of addition."""
    from pyspark.sql import functions as F

    return F.xxhash64("key", "value").cast("decimal(20,0)")


def summarize(df: DataFrame) -> dict[str, int]:
    """Record count and order-independent checksum of a (key, value) DataFrame, computed in the JVM."""
    from pyspark.sql import functions as F

    row = df.agg(F.count(F.lit(1)).alias("n"), F.sum(checksum_column()).alias("sum")).collect()[0]
    return {"count": int(row["n"]), "checksum": int(row["sum"] or 0)}


def teravalidate(out: DataFrame, expected_count: int | None = None, expected_checksum: int | None = None,
                 max_reasons: int = 5) -> dict[str, Any]:
    """Check a sort's output the way Hadoop's TeraValidate does; every per-row step runs in the JVM.

    `out` has columns key and value; its partitions are the output partitions in order and its row order
    within a partition is the output order (columns `part` and `pos` may name them explicitly, otherwise
    spark_partition_id() and monotonically_increasing_id() are taken as the rows come out). Returns
    {"valid", "reasons", "count", "checksum", "partitions", "inversions", "boundary_violations"}.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    cols = set(out.columns)
    framed = out.select(
        (F.col("part") if "part" in cols else F.spark_partition_id()).alias("part"),
        (F.col("pos") if "pos" in cols else F.monotonically_increasing_id()).alias("pos"),
        "key", checksum_column().alias("h"))
    prev = F.lag("key").over(Window.partitionBy("part").orderBy("pos"))
    inverted = F.col("prev") > F.col("key")
    per_part = framed.withColumn("prev", prev).groupBy("part").agg(
        F.count(F.lit(1)).alias("rows"), F.min("key").alias("min_key"), F.max("key").alias("max_key"),
        F.sum("h").alias("checksum"), F.sum(F.when(inverted, 1).otherwise(0)).alias("inversions"),
        F.min(F.when(inverted, F.col("pos"))).alias("first_inversion"))
    # Boundaries between consecutive non-empty partitions: a window over one row per partition.
    ordered = Window.orderBy("part")
    bounds = per_part.withColumn("prev_part", F.lag("part").over(ordered)) \
        .withColumn("prev_max", F.lag("max_key").over(ordered)) \
        .withColumn("crosses", F.coalesce(F.col("prev_max") > F.col("min_key"), F.lit(False)))
    parts = sorted(bounds.collect(), key=lambda r: r["part"])   # one row per non-empty partition
    row_mask = -1 if "pos" in cols else (1 << 33) - 1   # monotonically_increasing_id: partition << 33 | row

    reasons: list[str] = []
    count = sum(int(r["rows"]) for r in parts)
    checksum = sum(int(r["checksum"]) for r in parts)
    inversions = sum(int(r["inversions"]) for r in parts)
    crossings = [r for r in parts if r["crosses"]]
    for r in [r for r in parts if r["inversions"]][:max_reasons]:
        reasons.append(f"partition {r['part']} is not sorted: {r['inversions']} key(s) smaller than the one before, "
                       f"the first at row {int(r['first_inversion']) & row_mask}")
    for r in crossings[:max_reasons]:
        reasons.append(f"partitions out of order: max key of partition {r['prev_part']} ({bytes(r['prev_max']).hex()})"
                       f" > min key of partition {r['part']} ({bytes(r['min_key']).hex()})")
    if expected_count is not None and count != expected_count:
        reasons.append(f"{count} records in the output, {expected_count} in the input")
    if expected_checksum is not None and checksum != expected_checksum:
        reasons.append(f"checksum of the output {checksum} != input's {expected_checksum}")
    return {"valid": not reasons, "reasons": reasons, "count": count, "checksum": str(checksum),
            "partitions": len(parts), "inversions": inversions, "boundary_violations": len(crossings)}


# ---- status store, executors, cleanup (driver JVM through py4j) --------------------------------------------

def stage_list(sc: SparkContext, after: int = -1) -> list[dict[str, Any]]:
    """Every stage attempt with id > `after` from the driver's status store, with the metrics that say where
    time went (times in seconds, bytes in bytes)."""
    jsc = sc._jsc.sc()
    jsc.listenerBus().waitUntilEmpty(60_000)
    gw = sc._gateway
    empty = gw.jvm.java.util.ArrayList()
    stages = jsc.statusStore().stageList(empty, False, False, gw.new_array(gw.jvm.double, 0), empty)
    out = []
    for i in range(stages.size()):
        s = stages.apply(i)
        if s.stageId() <= after:
            continue
        sub, done = s.submissionTime(), s.completionTime()
        wall = (done.get().getTime() - sub.get().getTime()) / 1000 if sub.isDefined() and done.isDefined() else None
        write_records, read_records = s.shuffleWriteRecords(), s.shuffleReadRecords()
        out.append({
            "stage": s.stageId(), "attempt": s.attemptId(), "status": s.status().toString(), "name": s.name(),
            "submitted_ms": sub.get().getTime() if sub.isDefined() else None,
            "completed_ms": done.get().getTime() if done.isDefined() else None,
            "kind": "map" if write_records > 0 else "reduce" if read_records > 0 else "other",
            "tasks": s.numTasks(), "completed": s.numCompleteTasks(), "failed": s.numFailedTasks(),
            "wall_s": wall, "run_s": s.executorRunTime() / 1e3, "cpu_s": s.executorCpuTime() / 1e9,
            "gc_s": s.jvmGcTime() / 1e3, "deserialize_s": s.executorDeserializeTime() / 1e3,
            "input_bytes": s.inputBytes(), "write_bytes": s.shuffleWriteBytes(), "write_records": write_records,
            "write_s": s.shuffleWriteTime() / 1e9, "read_bytes": s.shuffleReadBytes(), "read_records": read_records,
            "fetch_wait_s": s.shuffleFetchWaitTime() / 1e3, "spill_memory_bytes": s.memoryBytesSpilled(),
            "spill_disk_bytes": s.diskBytesSpilled(), "peak_execution_memory": s.peakExecutionMemory(),
        })
    return sorted(out, key=lambda d: (d["stage"], d["attempt"]))


def last_stage_id(sc: SparkContext) -> int:
    return max((s["stage"] for s in stage_list(sc)), default=-1)


def executor_ids(sc: SparkContext) -> list[str]:
    ids = sc._jsc.sc().getExecutorIds()
    return [ids.apply(i) for i in range(ids.size())]


def executor_pids(app_id: str) -> dict[str, int]:
    """Executor id -> pid of this application's executor JVMs on this host (CoarseGrainedExecutorBackend
    command lines carry --app-id and --executor-id)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
        except OSError:
            continue
        if "org.apache.spark.executor.CoarseGrainedExecutorBackend" in argv and app_id in argv \
                and "--executor-id" in argv:
            found[argv[argv.index("--executor-id") + 1]] = int(entry)
    return found


def round_order(shuffles: list[str], rep: int) -> list[str]:
    """The shuffles of round `rep`: every other round reversed (rpmp, sort, sort, rpmp, ...), so the first
    session of an invocation, which runs slowest, and any drift in background load fall on both alike."""
    return list(shuffles) if rep % 2 == 0 else list(reversed(shuffles))


def wait_for(predicate, timeout: float, what: str, step: float = 0.05) -> float:
    """Polls until predicate() is true; returns the seconds it took."""
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)
    return time.perf_counter() - start


def kill_executor(sc: SparkContext, map_stage: int | None) -> dict[str, Any]:
    """SIGKILL the executor JVM that ran the most tasks of the map stage (the most map output to lose), and
    wait until the driver has removed it: the next job then starts with that executor known dead."""
    before = executor_ids(sc)
    pids = executor_pids(sc.applicationId)
    counts: dict[str, int] = {}
    if map_stage is not None:
        tasks = sc._jsc.sc().statusStore().taskList(map_stage, 0, 100_000)
        for i in range(tasks.size()):
            ex = tasks.apply(i).executorId()
            counts[ex] = counts.get(ex, 0) + 1
    candidates = [e for e in before if e in pids]
    if not candidates:
        raise RuntimeError(f"no executor JVM of {sc.applicationId} found on this host (executors {before}): "
                           "--kill-executor needs a local-cluster master")
    victim = max(candidates, key=lambda e: (counts.get(e, 0), -int(e) if e.isdigit() else 0))
    killed_at_ms = time.time() * 1000
    os.kill(pids[victim], signal.SIGKILL)
    detect = wait_for(lambda: victim not in executor_ids(sc), 120, f"the driver to notice executor {victim} died")
    return {"executor": victim, "pid": pids[victim], "map_tasks_on_it": counts.get(victim, 0),
            "executors_before": len(before), "detect_s": round(detect, 3), "killed_at_ms": int(killed_at_ms)}


def replacement_delay(sc: SparkContext, killed_at_ms: int) -> float | None:
    """Seconds from the kill until the cluster manager's replacement executor registered (None: none yet)."""
    gw = sc._jsc.sc()
    gw.listenerBus().waitUntilEmpty(60_000)
    execs = gw.statusStore().executorList(False)
    added = [execs.apply(i).addTime().getTime() for i in range(execs.size())]
    later = [t for t in added if t > killed_at_ms]
    return round((min(later) - killed_at_ms) / 1000, 2) if later else None


def cleanup_shuffles(sc: SparkContext, upto: int = 64) -> None:
    """Remove every shuffle of this context now (blocking), as Spark's ContextCleaner would after a GC: the
    next run starts with an empty RPMP pool / shuffle directory. Ids not in use are harmless no-ops."""
    cleaner = sc._jsc.sc().cleaner()
    if cleaner.isDefined():
        for sid in range(upto):
            cleaner.get().doCleanupShuffle(sid, True)


def effective_settings(spark: SparkSession) -> dict[str, str]:
    """The values this session really uses for SHUFFLE_KEYS (explicit, SQL default, or Spark's default)."""
    conf = spark.sparkContext.getConf()
    entry = spark.sparkContext._jvm.org.apache.spark.internal.config.ConfigEntry
    out = {}
    for k in SHUFFLE_KEYS:
        v = conf.get(k, None)
        if v is None and k.startswith("spark.sql."):
            with contextlib.suppress(Exception):   # get(k, None) would answer None for an unset SQL setting
                v = spark.conf.get(k)
        if v is None and k in RPMP_DEFAULTS and conf.get("spark.shuffle.manager", "") == RPMP_MANAGER:
            v = RPMP_DEFAULTS[k]
        if v is None:
            e = entry.findEntry(k)
            v = e.defaultValueString() if e is not None else None
        if v is not None:
            out[k] = str(v)
    return out


# ---- progress ---------------------------------------------------------------------------------------------

class SparkPhases:
    """One rich progress bar per phase, fed with Spark's task counts by a thread polling the status tracker."""

    def __init__(self, progress: Progress | None):
        self.progress = progress
        self.sc: SparkContext | None = None

    @contextlib.contextmanager
    def phase(self, description: str) -> Iterator[None]:
        if self.progress is None:
            yield
            return
        task = self.progress.add_task(description, total=None)
        mark = last_stage_id(self.sc) if self.sc is not None else None
        stop = threading.Event()
        seen: dict[tuple[int, int], tuple[int, int]] = {}

        def poll() -> None:
            while not stop.wait(0.25):
                sc = self.sc
                if sc is None:
                    continue
                try:
                    tracker = sc.statusTracker()
                    for sid in tracker.getActiveStageIds():
                        info = tracker.getStageInfo(sid)
                        if info is not None:
                            seen[(info.stageId, info.currentAttemptId)] = (info.numCompletedTasks, info.numTasks)
                except Exception:   # the context is stopping; the phase ends on its own
                    continue
                if seen:
                    self.progress.update(task, completed=sum(d for d, _ in seen.values()),
                                         total=sum(t for _, t in seen.values()))

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            # Stages shorter than the polling interval were never seen active: the status store has them all.
            done = total = sum(t for _, t in seen.values())
            if mark is not None and self.sc is not None:
                with contextlib.suppress(Exception):
                    ran = [s for s in stage_list(self.sc, mark) if s["status"] != "SKIPPED"]
                    total, done = sum(s["tasks"] for s in ran), sum(s["completed"] for s in ran)
            self.progress.update(task, completed=done, total=total or 1)


# ---- one run ---------------------------------------------------------------------------------------------

@dataclass
class Run:
    shuffle: str
    repeat: int
    seconds: float
    map_s: float
    reduce_s: float
    rows_out: int | None
    app_id: str
    load_avg: float = 0.0          # 1-minute load average when the timed run started (noise from other work)
    map_tasks: int = 0
    reduce_tasks: int = 0
    map_tasks_recomputed: int = 0
    stage_retries: int = 0
    failed_tasks: int = 0
    kill: dict[str, Any] | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    rpmp: dict[str, int] | None = None
    node: dict[str, int] | None = None
    spill: dict[str, float] | None = None  # the nodes' disk tier during this run (SPILL_DELTA_KEYS), if they report it
    validation: dict[str, Any] | None = None


def rpmp_counters(spark: SparkSession) -> dict[str, int]:
    from shuffle_plugin import metrics

    return metrics(spark)["totals"]


# How this process's own Client reaches the nodes (--tls: {"tls": True, "ca": the embedded node's certificate}).
CLIENT_KW: dict[str, Any] = {}


def node_counters(nodes: str) -> dict[str, int]:
    """The STATS counters of every node named, summed (pushes, push_bytes, fetches, fetch_bytes, ...)."""
    from rpmp.client import Client

    total: dict[str, int] = {}
    with Client(nodes, **CLIENT_KW) as c:
        for addr in [a.strip() for a in nodes.split(",") if a.strip()]:
            for k, v in c.stats(node=addr).get("counters", {}).items():
                total[k] = total.get(k, 0) + int(v)
    return total


def node_stats(nodes: str) -> list[dict[str, Any]]:
    from rpmp.client import Client

    with Client(nodes, **CLIENT_KW) as c:
        return [c.stats(node=a.strip()) for a in nodes.split(",") if a.strip()]


# The STATS "spill" object (the nodes' disk tier): dirs, files, capacity, used, blocks, bytes, spilled_bytes,
# spilled_blocks, spill_seconds. Nodes without a disk tier (or from before it) have none: read with .get.
SPILL_KEYS = ("files", "capacity", "used", "blocks", "bytes", "spilled_bytes", "spilled_blocks", "spill_seconds")
SPILL_DELTA_KEYS = ("spilled_bytes", "spilled_blocks", "spill_seconds")   # counters since the node started


def spill_totals(stats: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """The "spill" objects of the nodes' STATS summed (dirs listed), None if no node reports one."""
    spills = [st.get("spill") for st in stats or ()]
    spills = [sp for sp in spills if isinstance(sp, dict)]
    if not spills:
        return None
    total: dict[str, Any] = {k: sum(sp.get(k) or 0 for sp in spills) for k in SPILL_KEYS}
    total["spill_seconds"] = round(float(total["spill_seconds"]), 3)
    total["dirs"] = [d for sp in spills for d in (sp.get("dirs") or [])]
    return total


def node_spill(nodes: str) -> dict[str, Any] | None:
    return spill_totals(node_stats(nodes))


def spill_delta(after: dict[str, Any] | None, before: dict[str, Any] | None) -> dict[str, float] | None:
    if after is None:
        return None
    return {k: after.get(k, 0) - (before or {}).get(k, 0) for k in SPILL_DELTA_KEYS}


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (the embedded RPMP node), from /proc."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def process_peak_rss(pid: int | None) -> int | None:
    """The peak resident set (VmHWM, bytes) of a process over its life so far, from /proc."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return None


def _sum_dicts(ds: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in ds:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items()}


def terasort_run(spark: SparkSession, input_path: str, *, shuffle: str, repeat: int, sink: str, kill: bool,
                 validate: bool, expected: dict[str, int] | None, nodes: str | None, phases: SparkPhases,
                 label: str, node_pid: int | None = None) -> Run:
    """One timed TeraSort in this session (and its validation); see the module doc for what is timed."""
    from pyspark.sql import DataFrame

    sc = spark.sparkContext
    rpmp = shuffle == "rpmp"
    sorted_df = spark.read.parquet(input_path).orderBy("key")
    plan = sorted_df._jdf.queryExecution().executedPlan().toString()
    if "rangepartitioning" not in plan.lower():
        raise RuntimeError(f"the sort plan has no range-partitioning exchange:\n{plan}")
    mark0 = last_stage_id(sc)
    before_rpmp = rpmp_counters(spark) if rpmp else None
    before_node = node_counters(nodes) if rpmp and nodes else None
    before_spill = node_spill(nodes) if rpmp and nodes else None
    before_cpu = process_cpu_s(node_pid) if rpmp else None
    kill_info = None
    load = os.getloadavg()[0]
    sc.setJobDescription(f"terasort {label}")
    rdd = None
    with phases.phase(f"terasort {label}"):
        if sink == "noop":
            t0 = time.perf_counter()
            sorted_df.write.format("noop").mode("overwrite").save()
            seconds = time.perf_counter() - t0
            map_s = reduce_s = float("nan")
            rows_out = None
        else:
            t0 = time.perf_counter()
            # With adaptive execution, building the final RDD submits the sampling job and the map stage and
            # waits for them: the shuffle is complete (and on RPMP) when toRdd returns.
            rdd = sorted_df._jdf.queryExecution().toRdd()
            map_s = time.perf_counter() - t0
            if kill:
                maps = [s for s in stage_list(sc, mark0) if s["kind"] == "map"]
                if not maps:
                    raise RuntimeError("the map stage did not run before the result job: --kill-executor needs "
                                       "spark.sql.adaptive.enabled=true")
                kill_info = kill_executor(sc, maps[-1]["stage"])
            t1 = time.perf_counter()
            rows_out = int(rdd.count())
            reduce_s = time.perf_counter() - t1
            seconds = map_s + reduce_s
    stages = stage_list(sc, mark0)
    if kill_info is not None:   # untimed: let the replacement come up, then say when it did
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: len(executor_ids(sc)) >= kill_info["executors_before"], 120, "a replacement executor")
        kill_info["replaced_after_s"] = replacement_delay(sc, kill_info["killed_at_ms"])
        kill_info["replaced_during_run"] = (kill_info["replaced_after_s"] is not None
                                            and kill_info["replaced_after_s"] < reduce_s)
    first_map = next((s for s in stages if s["kind"] == "map"), None)
    # The plan has one shuffle: map tasks beyond its first stage attempt were re-runs (lost output).
    map_tasks_run = sum(s["completed"] for s in stages if s["kind"] == "map")
    run = Run(shuffle=shuffle, repeat=repeat, seconds=seconds, map_s=map_s, reduce_s=reduce_s, rows_out=rows_out,
              app_id=sc.applicationId, load_avg=round(load, 2), stages=stages, kill=kill_info,
              map_tasks=first_map["tasks"] if first_map else 0,
              reduce_tasks=sum(s["tasks"] for s in stages if s["kind"] == "reduce" and s["attempt"] == 0),
              map_tasks_recomputed=map_tasks_run - (first_map["completed"] if first_map else 0),
              stage_retries=sum(1 for s in stages if s["attempt"] > 0),
              failed_tasks=sum(s["failed"] for s in stages))
    if sink == "noop":
        reduce_wall = sum(s["wall_s"] or 0 for s in stages if s["kind"] == "reduce")
        run.reduce_s, run.map_s = reduce_wall, max(0.0, seconds - reduce_wall)
    if rpmp:
        run.rpmp = _delta(rpmp_counters(spark), before_rpmp)
        if before_node is not None:
            run.node = _delta(node_counters(nodes), before_node)
            run.spill = spill_delta(node_spill(nodes), before_spill)
            after_cpu = process_cpu_s(node_pid)
            if before_cpu is not None and after_cpu is not None:
                run.node["cpu_ms"] = round(1000 * (after_cpu - before_cpu))   # the embedded node's CPU
            peak = process_peak_rss(node_pid)
            if peak is not None:
                run.node["peak_rss"] = peak  # the embedded node's, over its life up to the end of this run
    if validate:
        sc.setJobDescription(f"teravalidate {label}")
        with phases.phase(f"teravalidate {label}"):
            if rdd is not None:
                # The timed run's own shuffle output, read again (no map stage): what the run produced.
                out = DataFrame(spark._jsparkSession.internalCreateDataFrame(rdd, sorted_df._jdf.schema(), False),
                                spark)
            else:
                out = sorted_df   # noop sink: nothing was kept; the same sort runs again
            run.validation = teravalidate(out, expected["count"] if expected else None,
                                          expected["checksum"] if expected else None)
    sc.setJobDescription(None)
    return run


# ---- sessions ------------------------------------------------------------------------------------------------

@dataclass
class Settings:
    rows: int
    maps: int
    partitions: int
    seed: int
    master: str
    executor_memory: str
    shuffles: list[str]
    repeat: int
    warmup: int
    warmup_sessions: int
    sink: str
    kill_executor: bool
    validate: str
    nodes: str | None
    pool_size: str
    spill_dir: str | None
    replicas: int
    log_level: str
    ui: bool
    extra_conf: dict[str, str]
    data_dir: str | None

    def base_conf(self) -> dict[str, str]:
        conf = {
            "spark.executor.memory": self.executor_memory,
            "spark.sql.shuffle.partitions": str(self.partitions),
            "spark.ui.enabled": "true" if self.ui else "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.log.level": self.log_level,
        }
        conf.update(self.extra_conf)
        return conf


@contextlib.contextmanager
def spark_session(settings: Settings, shuffle: str, master: str, nodes: str | None,
                  app_name: str) -> Iterator[SparkSession]:
    """A fresh SparkSession on `shuffle` ("rpmp", "sort", or "gen": sort shuffle for teragen). The previous
    one must be stopped; the new one is checked to really run the requested shuffle manager."""
    from pyspark.sql import SparkSession

    from shuffle_plugin import configure
    from shuffle_plugin import jar as plugin_jar

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if SparkSession.getActiveSession() is not None:
        raise RuntimeError("a SparkSession is still active: stop it before starting the next one")
    builder = SparkSession.builder.master(master).appName(app_name)
    conf = settings.base_conf()
    if shuffle != "rpmp":
        # Both shuffles ship the plugin jar (configure() adds it for rpmp), so their executors start alike and
        # the driver JVM, launched by the first session, has it on its class path whichever shuffle comes first.
        conf["spark.jars"] = ",".join(j for j in (conf.get("spark.jars"), str(plugin_jar.locate_jar())) if j)
    for k, v in conf.items():
        builder = builder.config(k, v)
    if shuffle == "rpmp":
        builder, _ = configure(builder, nodes=nodes, replicas=settings.replicas)
        expected = RPMP_MANAGER
    else:
        builder = builder.config("spark.shuffle.manager", SORT_MANAGER)
        expected = SORT_MANAGER
    spark = builder.getOrCreate()
    try:
        got = spark.sparkContext.getConf().get("spark.shuffle.manager")
        if got != expected:
            raise RuntimeError(f"the new SparkSession runs spark.shuffle.manager={got}, expected {expected}")
        if shuffle == "rpmp":
            active = spark.sparkContext._jvm.org.rpmp.shuffle.RpmpMetrics.activeShuffleManager()
            if active not in (None, RPMP_MANAGER):
                raise RuntimeError(f"the driver's SparkEnv runs {active}, expected {RPMP_MANAGER}")
        yield spark
    finally:
        spark.stop()


def local_cluster_executors(master: str) -> int | None:
    m = re.fullmatch(r"local-cluster\[\s*(\d+)\s*,\s*\d+\s*,\s*\d+\s*\]", master)
    return int(m.group(1)) if m else None


# ---- teragen (once) --------------------------------------------------------------------------------------------

def ensure_input(settings: Settings, data_dir: str, phases: SparkPhases, console) -> dict[str, Any]:
    """Parquet files of the TeraGen records plus their count and checksum; reused when `data_dir` already holds
    the same rows, maps and seed (the marker file says so)."""
    marker = os.path.join(data_dir, MARKER)
    want = {"rows": settings.rows, "maps": settings.maps, "seed": settings.seed, "layout": "gensort-1"}
    have = None
    if os.path.exists(marker):
        with open(marker) as f:
            have = json.load(f)
        if not all(have.get(k) == v for k, v in want.items()):
            have = None
    path = os.path.join(data_dir, "input")
    gen_master = f"local[{os.cpu_count() or 2}]"
    # Reused data is summed again in the same kind of session: it checks the files, and the first timed
    # session never pays for the driver JVM's start-up whether or not teragen ran.
    with spark_session(settings, "gen", gen_master, None, "teragen") as spark:
        phases.sc = spark.sparkContext
        gen_s = have["teragen_s"] if have else None
        if have:
            console.print(f"[dim]teragen: reusing {path} ({settings.rows:,} rows)[/dim]")
        else:
            with phases.phase("teragen"):
                t0 = time.perf_counter()
                teragen_frame(spark, settings.rows, settings.maps, settings.seed).write.mode("overwrite").parquet(path)
                gen_s = round(time.perf_counter() - t0, 2)
        with phases.phase("input count + checksum"):
            summary = summarize(spark.read.parquet(path))
        phases.sc = None
    if have:
        if summary != {"count": int(have["count"]), "checksum": int(have["checksum"])}:
            raise RuntimeError(f"{path} changed since teragen wrote it: {summary} != {have}")
        return have
    files = sorted(f for f in os.listdir(path) if f.endswith(".parquet"))
    info = {**want, **summary, "checksum": str(summary["checksum"]), "path": path, "files": len(files),
            "bytes_on_disk": sum(os.path.getsize(os.path.join(path, f)) for f in files),
            "max_file_bytes": max(os.path.getsize(os.path.join(path, f)) for f in files),
            "teragen_s": gen_s}
    if summary["count"] != settings.rows:
        raise RuntimeError(f"teragen wrote {summary['count']} rows, asked for {settings.rows}")
    with open(marker, "w") as f:
        json.dump(info, f, indent=1)
    return info


# ---- report ---------------------------------------------------------------------------------------------

def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def median_split(runs: list[Run]) -> tuple[float | None, float | None]:
    """Map and reduce parts of the median run (the mean of the two middle runs for an even count), so that
    they add up to the median time."""
    rs = sorted(runs, key=lambda r: r.seconds)
    if not rs:
        return None, None
    mid = rs[(len(rs) - 1) // 2: len(rs) // 2 + 1]
    return statistics.fmean(r.map_s for r in mid), statistics.fmean(r.reduce_s for r in mid)


def summarize_runs(runs: list[Run], shuffles: list[str], expected_rows: int) -> dict[str, Any]:
    """Per shuffle: median and runs, validity (every check that ran passed), recomputed map tasks."""
    out: dict[str, Any] = {}
    for sh in shuffles:
        rs = [r for r in runs if r.shuffle == sh]
        validated = [r.validation for r in rs if r.validation is not None]
        counted = [r for r in rs if r.rows_out is not None]
        reasons = [x for v in validated for x in v["reasons"]]
        reasons += [f"run {r.repeat + 1} counted {r.rows_out} rows, expected {expected_rows}" for r in counted
                    if r.rows_out != expected_rows]
        if not validated and not counted:
            reasons.append("nothing was checked (--validate none with --sink noop)")
        out[sh] = {
            "median_s": median([r.seconds for r in rs]),
            "runs_s": [round(r.seconds, 3) for r in rs],
            "map_s": median_split(rs)[0], "reduce_s": median_split(rs)[1],   # of the median run
            "valid": not reasons, "validated_runs": len(validated), "counted_runs": len(counted),
            "reasons": reasons,
            "map_tasks_recomputed": sum(r.map_tasks_recomputed for r in rs),
            "shuffle_write_bytes": median([next((s["write_bytes"] for s in r.stages if s["kind"] == "map"), 0)
                                           for r in rs]),
        }
        spilled = [r.spill for r in rs if r.spill is not None]
        if spilled:  # the RPMP nodes' disk tier, summed over the timed runs
            out[sh]["spilled_bytes"] = sum(int(sp["spilled_bytes"]) for sp in spilled)
            out[sh]["spilled_blocks"] = sum(int(sp["spilled_blocks"]) for sp in spilled)
            out[sh]["spill_seconds"] = round(sum(float(sp["spill_seconds"]) for sp in spilled), 3)
    return out


def stage_breakdown(runs: list[Run]) -> dict[str, Any]:
    """Median per shuffle of the stage metrics that say where the time goes (map vs reduce stage)."""
    out: dict[str, Any] = {}
    for sh in sorted({r.shuffle for r in runs}):
        rs = [r for r in runs if r.shuffle == sh]
        agg: dict[str, Any] = {}
        for kind in ("map", "reduce"):
            keys = ("wall_s", "run_s", "cpu_s", "gc_s", "write_s", "fetch_wait_s", "write_bytes", "read_bytes",
                    "spill_disk_bytes")
            per_run = [[s for s in r.stages if s["kind"] == kind and s["attempt"] == 0][:1] for r in rs]
            per_run = [p[0] for p in per_run if p]
            agg[kind] = {k: median([float(p[k] or 0) for p in per_run]) for k in keys} if per_run else {}
        out[sh] = agg
    return out


def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def print_report(console, settings: Settings, runs: list[Run], summary: dict[str, Any], ratio: float | None) -> None:
    from rich.table import Table

    t = Table(title=f"TeraSort {settings.rows:,} rows ({human(settings.rows * ROW_BYTES)}), "
                    f"{settings.maps} maps x {settings.partitions} partitions, {settings.master}")
    for col, just in (("shuffle", "left"), ("runs (s)", "left"), ("median s", "right"), ("of it: map s", "right"),
                      ("reduce s", "right"), ("shuffle bytes", "right"), ("maps recomputed", "right"),
                      ("valid", "left")):
        t.add_column(col, justify=just)
    for sh, s in summary.items():
        valid = ("yes" if s["valid"] else "NO") + ("" if s["validated_runs"] else " (count only)")
        t.add_row(sh, " ".join(f"{x:.2f}" for x in s["runs_s"]), _fmt(s["median_s"]), _fmt(s["map_s"]),
                  _fmt(s["reduce_s"]), human(s["shuffle_write_bytes"] or 0), str(s["map_tasks_recomputed"]), valid)
    console.print(t)
    console.print(f"timed: {TIMED}.")
    if ratio is not None:
        console.print(f"[bold]ratio rpmp / sort = {ratio:.2f}[/bold] (median {summary['rpmp']['median_s']:.2f} s vs "
                      f"{summary['sort']['median_s']:.2f} s; < 1 means RPMP is faster)")
    for sh, s in summary.items():
        if "spilled_bytes" in s and (s["spilled_bytes"] or settings.spill_dir):
            console.print(f"{sh}: the RPMP nodes spilled {human(s['spilled_bytes'])} in {s['spilled_blocks']:,} "
                          f"block(s) to disk over the timed runs ({s['spill_seconds']:.2f} s spilling)")
        elif sh == "rpmp" and settings.spill_dir:
            console.print(f"{sh}: the RPMP node reports no disk-tier statistics (no \"spill\" in STATS)")
    for sh, s in summary.items():
        for reason in s["reasons"][:5]:
            console.print(f"[red]{sh}: {reason}[/red]")
    kills = [r for r in runs if r.kill]
    for r in kills:
        console.print(f"{r.shuffle} run {r.repeat + 1}: killed executor {r.kill['executor']} (it ran "
                      f"{r.kill['map_tasks_on_it']} of {r.map_tasks} map tasks) -> {r.map_tasks_recomputed} map "
                      f"task(s) recomputed, {r.stage_retries} stage retries, {r.failed_tasks} failed tasks")


def plot(path: str, runs: list[Run], shuffles: list[str], title: str) -> None:
    """Bars side by side per run (map and reduce part stacked), medians last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"rpmp": ("#1f77b4", "#aec7e8"), "sort": ("#ff7f0e", "#ffbb78")}
    repeats = max((r.repeat for r in runs), default=0) + 1
    groups = [f"run {i + 1}" for i in range(repeats)] + ["median"]
    width = 0.8 / max(1, len(shuffles))
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(groups) + 2), 4.5))
    for j, sh in enumerate(shuffles):
        rs = {r.repeat: r for r in runs if r.shuffle == sh}
        maps = [rs[i].map_s if i in rs else 0 for i in range(repeats)]
        reds = [rs[i].reduce_s if i in rs else 0 for i in range(repeats)]
        m, r = median_split(list(rs.values()))
        maps.append(m or 0)
        reds.append(r or 0)
        xs = [i + (j - (len(shuffles) - 1) / 2) * width for i in range(len(groups))]
        dark, light = colors.get(sh, ("#555555", "#aaaaaa"))
        ax.bar(xs, maps, width, color=dark, label=f"{sh}: sample + map stage")
        ax.bar(xs, reds, width, bottom=maps, color=light, label=f"{sh}: reduce stage")
        for x, m, r in zip(xs, maps, reds, strict=True):
            ax.text(x, m + r, f"{m + r:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("seconds (terasort phase)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---- main -------------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="TeraSort (teragen, terasort, teravalidate) through RPMP and through "
                                            "Spark's sort shuffle; reports the median of each and the ratio.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--rows", type=int, help="number of 100-byte records")
    size.add_argument("--size", default="100m", help="data size, decimal units: 100m = 1M rows, 1g = 10M rows")
    p.add_argument("--shuffle", choices=("rpmp", "sort", "both"), default="both")
    p.add_argument("--repeat", type=int, default=2,
                   help="timed runs per shuffle, each in a fresh SparkSession (use 3+ for figures)")
    p.add_argument("--warmup", type=int, default=0, help="untimed runs before each timed one, same session (JIT)")
    p.add_argument("--warmup-sessions", type=int, default=1,
                   help="untimed sessions per shuffle before the first timed one, each sorting the whole input "
                        "once: the first session of an invocation ran slowest (cold driver JVM, first use of the "
                        "node's pool pages)")
    p.add_argument("--master", default="local-cluster[2,1,4096]")
    p.add_argument("--executor-memory", help="spark.executor.memory (default: the local-cluster worker memory, "
                                             "else 2g)")
    p.add_argument("--maps", type=int, help="teragen partitions = input files = map tasks (default 1 per 128 MB, "
                                            "at least 2)")
    p.add_argument("--partitions", type=int, default=200, help="spark.sql.shuffle.partitions for the sort "
                                                               "(adaptive execution may coalesce them)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--sink", choices=("count", "noop"), default="count",
                   help="count: map stage, then count the sorted rows (what is validated is this run's "
                        "output); noop: one write.format('noop') (validation re-runs the sort)")
    p.add_argument("--validate", choices=("first", "all", "none"), default="first",
                   help="which timed runs of each shuffle teravalidate checks")
    p.add_argument("--kill-executor", action="store_true",
                   help="SIGKILL one executor JVM after the map stage of every timed run")
    p.add_argument("--nodes", help="existing RPMP nodes host:port[,...] (default: an embedded node)")
    p.add_argument("--pool-size", help="embedded node's pool on /dev/shm (default 3x the data, at least 1g); "
                                       "smaller than the shuffle with --spill-dir to measure the disk tier")
    p.add_argument("--spill-dir", metavar="DIR[,DIR...]",
                   help="embedded node's disk tier: spill files in a subdirectory of its own in DIR, removed at the "
                        "end (without it, a full pool fails the run)")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Spark setting for every session (e.g. spark.rpmp.push.size=16m); repeatable")
    p.add_argument("--data-dir", help="keep teragen's output here and reuse it next time (default: a temporary "
                                      "directory, removed at the end)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="bar chart of the runs")
    p.add_argument("--log-level", default="ERROR", help="Spark's log level")
    p.add_argument("--ui", action="store_true", help="keep Spark's web UI on")
    p.add_argument("--tls", action="store_true",
                   help="the embedded node speaks TLS with a self-signed certificate made by openssl in a temporary "
                        "directory; the plugin trusts it (spark.rpmp.tls.*). Local reads of the pool file stay "
                        "outside TLS unless --conf spark.rpmp.fetch.local=false")
    args = p.parse_args(argv)
    if args.tls and args.nodes:
        p.error("--tls is for the embedded node; with --nodes pass --conf spark.rpmp.tls.enabled=true and the CA")
    if args.repeat < 1 or args.warmup < 0 or args.warmup_sessions < 0:
        p.error("--repeat must be >= 1, --warmup and --warmup-sessions >= 0")
    args.rows = args.rows if args.rows is not None else parse_size(args.size) // ROW_BYTES
    if args.rows < 1:
        p.error("at least one row")
    if args.kill_executor and args.sink == "noop":
        p.error("--kill-executor needs --sink count (the kill happens between the map and the reduce step)")
    if args.kill_executor and local_cluster_executors(args.master) is None:
        p.error("--kill-executor needs a local-cluster[N,c,mb] master (executor JVMs on this host)")
    for kv in args.conf:
        if "=" not in kv:
            p.error(f"--conf {kv!r}: expected KEY=VALUE")
    if args.nodes and args.spill_dir:
        p.error("--spill-dir configures the embedded node: not with --nodes (give those nodes `rpmp server "
                "--spill-dir`)")
    if args.spill_dir is not None:
        from rpmp.server.config import check_spill_dirs

        dirs = [d.strip() for d in args.spill_dir.split(",") if d.strip()]
        try:
            if not dirs:
                raise ValueError("names no directory")
            check_spill_dirs(dirs)
        except ValueError as e:
            p.error(f"--spill-dir: {e}")
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    data = args.rows * ROW_BYTES
    lc = re.fullmatch(r"local-cluster\[\s*\d+\s*,\s*\d+\s*,\s*(\d+)\s*\]", args.master)
    return Settings(
        rows=args.rows, maps=args.maps or max(2, math.ceil(data / (128 << 20))), partitions=args.partitions,
        seed=args.seed, master=args.master, executor_memory=args.executor_memory or (f"{lc.group(1)}m" if lc else "2g"),
        shuffles=["rpmp", "sort"] if args.shuffle == "both" else [args.shuffle], repeat=args.repeat,
        warmup=args.warmup, warmup_sessions=args.warmup_sessions,
        sink=args.sink, kill_executor=args.kill_executor, validate=args.validate,
        nodes=args.nodes, pool_size=args.pool_size or f"{max(1 << 30, 3 * data) >> 20}m", spill_dir=args.spill_dir,
        replicas=args.replicas,
        log_level=args.log_level, ui=args.ui, extra_conf=dict(kv.split("=", 1) for kv in args.conf),
        data_dir=args.data_dir)


def machine() -> dict[str, Any]:
    import pyspark

    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    # Others may be editing the plugin: the jar is rebuilt from the working tree, so say what it held.
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "shuffle_plugin", "rpmp", "native"],
                           capture_output=True, text=True).stdout.split("\n")
    return {"cores": os.cpu_count(), "memory_bytes": mem, "cpu": cpu, "kernel": platform.release(),
            "python": platform.python_version(), "pyspark": pyspark.__version__,
            "git": commit.stdout.strip() or None, "uncommitted": [d[3:] for d in dirty if d.strip()],
            "load_avg_at_start": os.getloadavg()}


def print_settings(console, settings: Settings, argv: list[str], host: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title="TeraSort settings (everything a rerun needs)", show_header=False)
    t.add_column("setting", style="bold")
    t.add_column("value")
    rows = {
        "command": "python bench/terasort.py " + " ".join(shlex.quote(a) for a in argv),
        "data": f"{settings.rows:,} rows x {ROW_BYTES} B = {human(settings.rows * ROW_BYTES)}, seed {settings.seed}",
        "map tasks (teragen files)": str(settings.maps),
        "reduce partitions": f"spark.sql.shuffle.partitions={settings.partitions} (adaptive coalescing may merge)",
        "master": f"{settings.master}, spark.executor.memory={settings.executor_memory}",
        "shuffles, order": " -> ".join(settings.shuffles) + " (each round reversing the last one's order, "
                           f"{settings.repeat} timed run(s) each, after {settings.warmup_sessions} untimed session(s) "
                           f"each; {settings.warmup} warm-up run(s) per session)",
        "sink": settings.sink + (", kill one executor after the map stage" if settings.kill_executor else ""),
        "RPMP": (f"nodes {settings.nodes}" if settings.nodes else f"embedded node, pool {settings.pool_size} on "
                 "/dev/shm" + (f", spill dir {settings.spill_dir}" if settings.spill_dir else ", no disk tier"))
                + f", replicas {settings.replicas}",
        "Spark conf (both)": ", ".join(f"{k}={v}" for k, v in settings.base_conf().items()),
        "machine": f"{host['cores']} cores, {human(host['memory_bytes'])} RAM, {host['cpu']}, Linux {host['kernel']},"
                   f" Python {host['python']}, pyspark {host['pyspark']}, git {host['git']}"
                   + (f" + uncommitted {', '.join(host['uncommitted'])}" if host["uncommitted"] else "") + ", load "
                   + " ".join(f"{x:.2f}" for x in host["load_avg_at_start"]),
    }
    for k, v in rows.items():
        t.add_row(k, v)
    console.print(t)
    console.print("[dim]effective shuffle settings of each session are printed when it starts and kept in the "
                  "JSON ('settings_effective')[/dim]")


def session_plan(settings: Settings) -> list[tuple[str, int]]:
    """The sessions in order as (shuffle, round): first the untimed warm-up sessions (round -1), one set per
    --warmup-sessions, then the timed rounds, each round reversing the last one's order."""
    plan = [(sh, -1) for _ in range(settings.warmup_sessions) for sh in settings.shuffles]
    plan += [(sh, rep) for rep in range(settings.repeat) for sh in round_order(settings.shuffles, rep)]
    return plan


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    settings = settings_from(args)
    console = Console(width=None if sys.stdout.isatty() else 150)
    host = machine()
    print_settings(console, settings, argv, host)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

    tmp = None
    data_dir = settings.data_dir
    if data_dir is None:
        tmp = tempfile.mkdtemp(prefix="terasort-")
        data_dir = tmp
    os.makedirs(data_dir, exist_ok=True)
    node = None
    runs: list[Run] = []
    effective: dict[str, dict[str, str]] = {}
    final_rpmp: dict[str, int] = {}
    last_node_stats = None
    try:
        nodes = settings.nodes
        if "rpmp" in settings.shuffles and not nodes:
            from shuffle_plugin import EmbeddedNode

            tls = None
            if args.tls:
                from shuffle_plugin.session import self_signed_cert

                tls_dir = tempfile.mkdtemp(prefix="terasort-tls-")
                atexit.register(shutil.rmtree, tls_dir, True)
                tls = self_signed_cert(tls_dir)
                settings.extra_conf.update({"spark.rpmp.tls.enabled": "true", "spark.rpmp.tls.caPem": tls[0]})
                CLIENT_KW.update(tls=True, ca=tls[0])
            node = EmbeddedNode(settings.pool_size, spill_dir=settings.spill_dir, tls=tls)
            nodes = node.address
            console.print(f"RPMP: embedded node {nodes}, pool {node.pool} ({settings.pool_size})"
                          + (f", spill dir {', '.join(node.spill_dirs)}" if node.spill_dirs else "")
                          + (", TLS (self-signed certificate)" if tls else ""))
        with Progress(SpinnerColumn(), TextColumn("{task.description:<26}"), BarColumn(),
                      MofNCompleteColumn(), TextColumn("tasks"), TimeElapsedColumn(), console=console) as progress:
            phases = SparkPhases(progress)
            inp = ensure_input(settings, data_dir, phases, console)
            expected = {"count": int(inp["count"]), "checksum": int(inp["checksum"])}
            executors = local_cluster_executors(settings.master)
            for sh, rep in session_plan(settings):
                timed = rep >= 0
                label = f"{sh} {rep + 1}/{settings.repeat}" if timed else f"{sh} warm-up session"
                app_name = f"terasort-{sh}-{rep + 1}" if timed else f"terasort-{sh}-warmup"
                with spark_session(settings, sh, settings.master, nodes, app_name) as spark:
                    sc = spark.sparkContext
                    phases.sc = sc
                    spark.conf.set("spark.sql.files.maxPartitionBytes", str(inp["max_file_bytes"] + 1))
                    spark.conf.set("spark.sql.files.openCostInBytes", str(inp["max_file_bytes"] + 1))
                    if executors:
                        wait_for(lambda sc=sc: len(executor_ids(sc)) >= executors, 180, "the executors")
                    if sh not in effective:
                        effective[sh] = effective_settings(spark)
                        progress.console.print(f"[dim]{sh}: " + ", ".join(
                            f"{k}={v}" for k, v in effective[sh].items()) + "[/dim]")
                    # Untimed: the first tasks of fresh executors load classes and compile code for
                    # seconds; scanning the input here keeps that out of the timed sort (and checks it).
                    with phases.phase(f"warm-up scan {label}"):
                        scan = summarize(spark.read.parquet(inp["path"]))
                    if scan != expected:
                        raise RuntimeError(f"the input changed: {scan} != {expected}")
                    # A warm-up session is one untimed sort; a timed session first runs --warmup of them.
                    untimed = settings.warmup if timed else 1
                    for w in range(untimed):
                        terasort_run(spark, inp["path"], shuffle=sh, repeat=max(rep, 0), sink=settings.sink,
                                     kill=False, validate=False, expected=None, nodes=None, phases=phases,
                                     label=f"{label} warm-up {w + 1}" if timed else label)
                        cleanup_shuffles(sc)
                    if not timed:
                        phases.sc = None
                        progress.console.print(f"{label}: untimed")
                        continue
                    validate = settings.validate == "all" or (settings.validate == "first" and rep == 0)
                    run = terasort_run(spark, inp["path"], shuffle=sh, repeat=rep, sink=settings.sink,
                                       kill=settings.kill_executor, validate=validate, expected=expected,
                                       nodes=nodes, phases=phases, label=label,
                                       node_pid=node.proc.pid if node is not None else None)
                    runs.append(run)
                    if sh == "rpmp":
                        final = rpmp_counters(spark)
                        for k, v in final.items():
                            final_rpmp[k] = final_rpmp.get(k, 0) + v
                        last_node_stats = node_stats(nodes)
                    phases.sc = None
                progress.console.print(
                    f"{label}: {run.seconds:.2f} s (map {run.map_s:.2f} + reduce {run.reduce_s:.2f}), load "
                    f"{run.load_avg:.1f}"
                    + (f", valid={run.validation['valid']}" if run.validation else "")
                    + (f", killed executor {run.kill['executor']}: {run.map_tasks_recomputed} map task(s) "
                       "recomputed" if run.kill else ""))
        summary = summarize_runs(runs, settings.shuffles, settings.rows)
        ratio = None
        if "rpmp" in summary and "sort" in summary and summary["sort"]["median_s"]:
            ratio = summary["rpmp"]["median_s"] / summary["sort"]["median_s"]
        print_report(console, settings, runs, summary, ratio)
        result = {
            "rows": settings.rows, "bytes": settings.rows * ROW_BYTES,
            "rpmp_s": summary.get("rpmp", {}).get("median_s"), "sort_s": summary.get("sort", {}).get("median_s"),
            "ratio": ratio, "valid": all(s["valid"] for s in summary.values()),
            "kill_executor": settings.kill_executor, "timed": TIMED,
            "summary": summary, "stage_breakdown": stage_breakdown(runs),
            "rpmp_metrics": _sum_dicts([r.rpmp for r in runs if r.rpmp]) or None,
            "rpmp_metrics_sessions": final_rpmp or None, "rpmp_node_stats": last_node_stats,
            # the nodes' disk tier: spilled bytes and blocks over the timed runs (None: no disk tier or no
            # statistics), and the nodes' spill totals at the end (STATS "spill", summed over the nodes)
            "rpmp_spilled_bytes": summary.get("rpmp", {}).get("spilled_bytes"),
            "rpmp_spilled_blocks": summary.get("rpmp", {}).get("spilled_blocks"),
            "rpmp_spill": spill_totals(last_node_stats),
            "input": inp, "settings": {**asdict(settings), "argv": argv}, "settings_effective": effective,
            "machine": {**host, "load_avg_at_end": os.getloadavg()}, "runs": [asdict(r) for r in runs],
        }
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1, default=str)
            console.print(f"JSON: {args.json}")
        if args.plot:
            title = f"TeraSort {human(settings.rows * ROW_BYTES)}, {settings.master}" + (
                f": rpmp/sort = {ratio:.2f}" if ratio is not None else "") + (
                ", executor killed after map stage" if settings.kill_executor else "")
            plot(args.plot, runs, settings.shuffles, title)
            console.print(f"plot: {args.plot}")
        return 0 if result["valid"] else 1
    finally:
        if node is not None:
            node.close()  # stops the embedded node and removes its pool
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

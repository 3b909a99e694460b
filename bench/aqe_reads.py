#!/usr/bin/env python3
"""What AQE's partial reads cost an RPMP node: a skew-join split and the local shuffle reader, on real Spark.

    python bench/aqe_reads.py                               # both queries, AQE setting on and off, 3 runs each
    python bench/aqe_reads.py --rows 4000000 --maps 40 --repeat 5
    python bench/aqe_reads.py --only select                 # only the in-process cost of `select` per entry

With AQE, a skew-join split reads one reduce partition by map ranges (getReader(startMap, endMap, p, p+1)) and
the local shuffle reader reads one map's output across partitions (getReader(m, m+1, 0, N)). The node serves
each as FETCH(partition, start_map, end_map): `ShuffleStore.select` walks the partition's record index (one
entry per pushed segment) and keeps the records of those maps. This measures what that walk costs:

  select      in-process: `select` of a one-map range of a partition of E entries (one record per map) and of
              the whole partition, per call, with the index entries each visits (only that walk, not the rest
              of the node's FETCH path).
  skew        a join where one key holds --skew-pct of the rows (sort-merge join, broadcast off), with
              spark.sql.adaptive.skewJoin.enabled true (the skewed partition is split by map ranges) and false.
  local       a join AQE turns into a broadcast join at run time (its other side is filtered down to a few
              rows), with spark.sql.adaptive.localShuffleReader.enabled true (map m read across partitions)
              and false (coalesced partitions).

Per run it prints the node's STATS counter deltas (FETCHes, of them with a map range, index entries visited,
records served, bytes served, payload bytes of the partitions read), the node process's CPU seconds (from
/proc) and the query's wall time; and whether the final plan really split the skew / used the local reader.
One node (rpmp.cluster.LocalNode, on /dev/shm), one SparkSession (local-cluster by default); reads go over
TCP (FETCH) unless --fetch-local, which makes the plugin read a node on its host one-sided (no FETCH at all).
Every loop is bounded in count (--repeat, --select-samples) and in time (--budget seconds in all).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

COUNTERS = ("fetches", "fetch_map_ranges", "fetch_index_visited", "fetch_records", "fetch_bytes",
            "fetch_partition_bytes")


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---- select, in-process ----------------------------------------------------------------------------------------

def select_cost(entries: int, samples: int, deadline: float) -> dict[str, float]:
    """ns per index entry that `select` visits, for one-map ranges of a partition of `entries` records (one per
    map, 64-byte payloads), on a pool on /dev/shm; and, for scale, a whole-partition select."""
    import xxhash

    from rpmp._wire import encode_register_resp
    from rpmp.cluster import new_pool_path
    from rpmp.protocol import Node
    from rpmp.server.storage import Storage

    path = new_pool_path("aqe-select", "/dev/shm")
    st = Storage(path, 256 << 20, name="bench")
    try:
        sh = st.shuffles.register("bench", 1, 1, 1, encode_register_resp(1, [Node("a:1", "127.0.0.1", 1)], [[0]]))
        data = os.urandom(64)
        checksum = xxhash.xxh3_64_intdigest(data)
        for m in range(entries):
            res = st.shuffles.reserve(sh, 0, m, m + 1_000_000, 0, len(data), checksum)
            res.view[:] = data
            st.shuffles.commit(res, checksum)
        n = visited = 0
        t0 = time.perf_counter()
        for i in range(samples):
            if time.monotonic() > deadline:
                break
            m = (i * 7919) % entries
            for run in st.shuffles.select(sh, 0, m, m + 1, [m + 1_000_000]):
                run.range.view.release()
            visited += st.shuffles.last_visited
            n += 1
        ranged = time.perf_counter() - t0
        t0 = time.perf_counter()
        whole = 0
        for _ in range(max(1, min(samples // 10, 50))):
            if time.monotonic() > deadline:
                break
            for run in st.shuffles.select(sh, 0):
                run.range.view.release()
            whole += 1
        full = time.perf_counter() - t0
    finally:
        st.close()
        os.unlink(path)
    return {"entries": entries, "selects": n, "visited_per_select": visited / max(1, n),
            "us_per_ranged_select": 1e6 * ranged / max(1, n), "us_per_whole_select": 1e6 * full / max(1, whole)}


# ---- Spark ------------------------------------------------------------------------------------------------------

def session(args: argparse.Namespace, node_addr: str):
    from pyspark.sql import SparkSession

    from shuffle_plugin import configure

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (SparkSession.builder.master(args.master).appName("aqe-reads")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.adaptive.enabled", "true")
               .config("spark.sql.shuffle.partitions", str(args.partitions))
               .config("spark.executor.memory", args.executor_memory))
    builder, _ = configure(builder, nodes=node_addr, fetch_local=str(args.fetch_local).lower())
    return builder.getOrCreate()


def skew_query(spark, args: argparse.Namespace):
    """One key (0) holds --skew-pct of the left side's rows; both sides shuffled (sort-merge join)."""
    from pyspark.sql import functions as F

    left = spark.range(0, args.rows, 1, args.maps).selectExpr(
        f"CASE WHEN id % 100 < {args.skew_pct} THEN 0 ELSE id % {args.keys} END AS k", "id AS v",
        f"substr(sha2(cast(id AS string), 256), 1, {args.pad}) AS pad")
    right = spark.range(0, args.keys, 1, max(1, args.maps // 4)).selectExpr("id AS k", "id * 3 AS w")
    return left.join(right, "k").agg(F.count("*").alias("n"), F.sum("v").alias("sv"), F.sum("w").alias("sw"),
                                     F.sum(F.length("pad")).alias("sp"))


def local_query(spark, args: argparse.Namespace):
    """Planned as a sort-merge join (both sides' estimates are large); at run time the right side is a few rows,
    so AQE makes it a broadcast join and the left side's shuffle can be read map by map (the local reader)."""
    from pyspark.sql import functions as F

    left = spark.range(0, args.rows, 1, args.maps).selectExpr(f"id % {args.keys} AS k", "id AS v",
                                                               f"substr(sha2(cast(id AS string), 256), 1, "
                                                               f"{args.pad}) AS pad")
    right = (spark.range(0, args.rows, 1, max(1, args.maps // 4)).where(f"id % {args.right_keep} = 0")
             .selectExpr(f"id % {args.keys} AS k", "id AS w"))
    return left.join(right, "k").agg(F.count("*").alias("n"), F.sum("v").alias("sv"), F.sum("w").alias("sw"),
                                     F.sum(F.length("pad")).alias("sp"))


def final_plan(df) -> str:
    return df._jdf.queryExecution().executedPlan().toString()


def node_counters(client, addr: str) -> dict[str, int]:
    ctr = client.stats(node=addr)["counters"]
    return {k: int(ctr.get(k, 0)) for k in COUNTERS}


def run_case(spark, client, node, query: str, setting: str, value: bool, args: argparse.Namespace
             ) -> dict[str, Any]:
    spark.conf.set(setting, str(value).lower())
    df = skew_query(spark, args) if query == "skew" else local_query(spark, args)
    before, cpu0 = node_counters(client, node.address), process_cpu_s(node.pid)
    t0 = time.perf_counter()
    rows = df.collect()
    wall = time.perf_counter() - t0
    cpu = process_cpu_s(node.pid) - cpu0
    after = node_counters(client, node.address)
    plan = final_plan(df)
    out: dict[str, Any] = {k: after[k] - before[k] for k in COUNTERS}
    out.update(query=query, setting=setting, value=value, wall_s=wall, node_cpu_s=cpu, result=tuple(rows[0]),
               skew_joins=plan.count("skew=true"), local_reads=plan.count("AQEShuffleRead local"),
               load=load_average())
    return out


def cleanup(spark) -> None:
    """Unregister the finished shuffles (the node frees their blocks), so the pool does not fill across runs."""
    sc = spark.sparkContext
    jsc = sc._jsc.sc()
    cleaner = jsc.cleaner()
    if cleaner.isDefined():
        for sid in range(0, 512):
            cleaner.get().doCleanupShuffle(sid, True)


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = ("query", "setting", "runs", "FETCH", "map-range", "visited", "records", "served", "part. bytes",
            "node CPU s", "query s", "split/local")
    print("  ".join(f"{c:>11}" for c in cols))
    for r in rows:
        print("  ".join(f"{v:>11}" for v in (
            r["query"], f"{r['short']}={'on' if r['value'] else 'off'}", r["runs"], r["fetches"],
            r["fetch_map_ranges"], r["fetch_index_visited"], r["fetch_records"], human(r["fetch_bytes"]),
            human(r["fetch_partition_bytes"]), f"{r['node_cpu_s']:.2f}", f"{r['wall_s']:.2f}",
            r["skew_joins"] if r["query"] == "skew" else r["local_reads"])))


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the runs of one case (counters are the same run to run; times are not)."""
    out = dict(runs[0])
    for k in (*COUNTERS, "node_cpu_s", "wall_s", "skew_joins", "local_reads"):
        out[k] = statistics.median(r[k] for r in runs)
        if k in COUNTERS or k in ("skew_joins", "local_reads"):
            out[k] = int(out[k])
    out["runs"] = len(runs)
    out["short"] = "skewJoin" if out["query"] == "skew" else "localReader"
    out["wall_all"] = [round(r["wall_s"], 2) for r in runs]
    out["cpu_all"] = [round(r["node_cpu_s"], 2) for r in runs]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--only", choices=("all", "select", "skew", "local"), default="all")
    ap.add_argument("--rows", type=int, default=2_000_000, help="rows of the left side (default 2M)")
    ap.add_argument("--maps", type=int, default=40, help="map tasks of the left side (default 40)")
    ap.add_argument("--keys", type=int, default=20_000, help="distinct join keys (default 20k)")
    ap.add_argument("--pad", type=int, default=40, help="hex characters of padding per left row, up to 64 (default 40)")
    ap.add_argument("--skew-pct", type=int, default=60, help="percent of left rows on key 0 (default 60)")
    ap.add_argument("--right-keep", type=int, default=2000,
                    help="local query: keep one right row in this many (default 2000)")
    ap.add_argument("--partitions", type=int, default=40, help="spark.sql.shuffle.partitions (default 40)")
    ap.add_argument("--advisory", default="1m", help="spark.sql.adaptive.advisoryPartitionSizeInBytes (default 1m)")
    ap.add_argument("--skew-threshold", default="2m",
                    help="spark.sql.adaptive.skewJoin.skewedPartitionThresholdInBytes (default 2m)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per case (default 3), after one untimed warm-up")
    ap.add_argument("--master", default="local-cluster[2,1,1024]")
    ap.add_argument("--executor-memory", default="1g")
    ap.add_argument("--pool-size", default="2g", help="the node's pool (default 2g, on /dev/shm)")
    ap.add_argument("--fetch-local", action="store_true",
                    help="let the plugin read the node one-sided (spark.rpmp.fetch.local; default off: FETCH)")
    ap.add_argument("--node-pythonpath", metavar="DIR",
                    help="run the node with PYTHONPATH=DIR (a copy of another version's rpmp/: before/after)")
    ap.add_argument("--select-entries", type=int, default=2000, help="select: entries in the partition (2000)")
    ap.add_argument("--select-samples", type=int, default=2000, help="select: one-map selects timed (2000)")
    ap.add_argument("--budget", type=float, default=1200, help="seconds for everything; runs stop past it")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = time.monotonic() + args.budget
    print(f"# bench/aqe_reads.py {' '.join(sys.argv[1:])}")
    print(f"# {os.cpu_count()} cores, load average {load_average()} at start, "
          f"{time.strftime('%H:%M:%S UTC', time.gmtime())}")
    if args.only in ("all", "select"):
        sc = select_cost(args.select_entries, args.select_samples, deadline)
        print(f"select: partition of {sc['entries']} entries, {sc['selects']} one-map selects: "
              f"{sc['us_per_ranged_select']:.1f} us and {sc['visited_per_select']:.0f} entries visited per one-map "
              f"select; {sc['us_per_whole_select']:.0f} us per whole-partition select")
        if args.only == "select":
            return 0

    from rpmp.client import Client
    from rpmp.cluster import LocalNode

    cases = []
    if args.only in ("all", "skew"):
        cases += [("skew", "spark.sql.adaptive.skewJoin.enabled", v) for v in (True, False)]
    if args.only in ("all", "local"):
        cases += [("local", "spark.sql.adaptive.localShuffleReader.enabled", v) for v in (True, False)]
    env, cwd = None, os.getcwd()
    if args.node_pythonpath:  # before/after: the node runs another tree's rpmp (the client side is this one);
        env = {**os.environ, "PYTHONPATH": args.node_pythonpath}
        os.chdir(args.node_pythonpath)  # and from there: `python -m` puts its working directory first on sys.path
    try:
        node = LocalNode(pool_size=args.pool_size, exit_with_parent=True, env=env).start()
    finally:
        os.chdir(cwd)
    spark = None
    try:
        spark = session(args, node.address)
        spark.conf.set("spark.sql.adaptive.advisoryPartitionSizeInBytes", str(parse_size(args.advisory)))
        spark.conf.set("spark.sql.adaptive.skewJoin.skewedPartitionThresholdInBytes",
                       str(parse_size(args.skew_threshold)))
        spark.conf.set("spark.sql.adaptive.skewJoin.skewedPartitionFactor", "2")
        results: dict[tuple[str, bool], list[dict[str, Any]]] = {}
        with Client(node.address) as client:
            for rep in range(-1, args.repeat):  # -1: the warm-up round, untimed
                order = cases if rep % 2 else list(reversed(cases))  # alternate, so no case always runs first
                for query, setting, value in order:
                    if time.monotonic() > deadline:
                        print(f"# budget of {args.budget:.0f} s spent: stopping after {max(rep, 0)} rounds")
                        break
                    # skew: broadcast off, so both sides are shuffled; local: AQE may broadcast the small side
                    spark.conf.set("spark.sql.autoBroadcastJoinThreshold", "-1" if query == "skew" else "10m")
                    spark.conf.set("spark.sql.adaptive.autoBroadcastJoinThreshold", "-1" if query == "skew"
                                   else "10m")
                    r = run_case(spark, client, node, query, setting, value, args)
                    cleanup(spark)
                    print(f"{'warm-up' if rep < 0 else f'run {rep + 1}'}: {query} {setting}={value}: "
                          f"{r['wall_s']:.2f} s, node CPU {r['node_cpu_s']:.2f} s, {r['fetches']} FETCH "
                          f"({r['fetch_map_ranges']} map ranges), visited {r['fetch_index_visited']}, "
                          f"served {r['fetch_records']} records / {human(r['fetch_bytes'])}, skew joins in plan "
                          f"{r['skew_joins']}, local reads {r['local_reads']}, load {r['load']}", flush=True)
                    if rep >= 0:
                        results.setdefault((query, value), []).append(r)
                else:
                    continue
                break
        results_list = [summarize(results[(q, v)]) for q, _, v in cases if (q, v) in results]
        for q in {q for q, _, _ in cases}:
            got = {r["result"] for (qq, _), rs in results.items() if qq == q for r in rs}
            if len(got) > 1:
                raise SystemExit(f"{q}: the settings gave different answers: {got}")
        print()
        print_table(results_list)
        print()
        for r in results_list:
            print(f"{r['query']} {r['short']}={'on' if r['value'] else 'off'}: query s {r['wall_all']}, "
                  f"node CPU s {r['cpu_all']}")
        print(f"# load average {load_average()} at end; {time.strftime('%H:%M:%S UTC', time.gmtime())}")
    finally:
        if spark is not None:
            spark.stop()
        node.stop()
        node.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

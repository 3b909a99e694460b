#!/usr/bin/env python3
"""What the disk tier costs and how fast it spills: a node against a plain sequential write of the same dir.

    python bench/spill.py                          # 2 GiB through a 256 MiB pool, spill dir under /var/tmp
    python bench/spill.py --bytes 4g --pool-size 512m --spill-dir /data/rpmp --repeat 3

Per repeat, in the same process tree and the same directory:

  dd        `dd if=/dev/zero of=DIR/dd.bin bs=4M count=N conv=fdatasync` of --bytes: what the file system
            takes sequentially, synced once at the end.
  seqwrite  the node's own syscalls without the node: pwrite of 64 MiB chunks of random bytes, one
            fdatasync per chunk (the node syncs once per 64 MiB batch), --bytes in all.
  nospill   a node whose pool holds everything (--bytes plus room): the clients' push rate with no disk tier
            at work, the baseline for "pushes keep flowing".
  spill     a node with --pool-size and --spill-dir: the same pushes; the node's spill rate (bytes moved /
            seconds its spill thread spent writing and syncing, from STATS) and the clients' push rate.
Then each node's partitions are FETCHed back over one connection (best of 3): from the pool, and mostly
from the spill files.

It prints the ratios spill-rate / dd-rate (and / seqwrite-rate) and push-rate(spill) / push-rate(nospill),
and the p50/p99 round trip of PINGs sent every 10 ms during each node run (is the event loop free while the
spill thread writes?), and writes JSON with --json. Pushes are 1 MiB segments over 16 partitions from
--clients threads; every loop is bounded by --bytes and --repeat. Everything is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from rpmp.client import Client
from rpmp.cluster import LocalNode
from rpmp.protocol import SEQ_LAST
from rpmp.server.config import parse_size

SEGMENT = 1 << 20
PARTITIONS = 16


def dd_rate(directory: str, nbytes: int) -> float:
    """Bytes per second of a sequential write of `nbytes` into `directory`, fdatasync'ed at the end."""
    path = os.path.join(directory, "dd.bin")
    began = time.monotonic()
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=4M", f"count={nbytes >> 22}", "conv=fdatasync"],
                   check=True, capture_output=True)
    seconds = time.monotonic() - began
    os.unlink(path)
    return nbytes / seconds


def seqwrite_rate(directory: str, nbytes: int, chunk: int = 64 << 20) -> float:
    """Bytes per second of pwrite + fdatasync per `chunk`, as the node's spill thread writes."""
    path = os.path.join(directory, "seq.bin")
    buf = os.urandom(chunk)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        began = time.monotonic()
        for off in range(0, nbytes, chunk):
            os.pwrite(fd, buf, off)
            os.fdatasync(fd)
        seconds = time.monotonic() - began
    finally:
        os.close(fd)
        os.unlink(path)
    return nbytes / seconds


def push_all(addr: str, nbytes: int, clients: int) -> tuple[float, list[float]]:
    """Push `nbytes` in 1 MiB segments from `clients` threads; returns bytes per second and the round trips
    (seconds) of PINGs sent every 10 ms meanwhile on a connection of their own: how the event loop answers."""
    with Client(addr) as c:
        c.register_shuffle("bench-spill", 1, PARTITIONS)
    per_client = nbytes // SEGMENT // clients
    data = os.urandom(SEGMENT)
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            with Client(addr) as c:
                segs = ((m % PARTITIONS, k * per_client + m, 0, SEQ_LAST, data) for m in range(per_client))
                c.push_many("bench-spill", 1, segs, window=8)
        except BaseException as e:  # reported below
            errors.append(e)

    pings: list[float] = []
    done = threading.Event()

    def ping() -> None:
        with Client(addr) as c:
            while not done.wait(0.01):
                t0 = time.perf_counter()
                c.ping()
                pings.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    pinger = threading.Thread(target=ping)
    began = time.monotonic()
    pinger.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - began
    done.set()
    pinger.join()
    if errors:
        raise errors[0]
    return per_client * clients * SEGMENT / seconds, pings


def fetch_rate(addr: str, rounds: int = 3) -> float:
    """Bytes per second of FETCHing every partition back over one connection (best of `rounds`)."""
    best, total = float("inf"), 0
    with Client(addr) as c:
        for _ in range(rounds):
            began, total = time.perf_counter(), 0
            for p in range(PARTITIONS):
                for _, buf in c.iter_fetch_raw("bench-spill", 1, p):
                    total += buf.size if buf is not None else 0
            best = min(best, time.perf_counter() - began)
    return total / best


def node_run(pool_size: int, spill_dir: str | None, nbytes: int, clients: int) -> dict:
    node = LocalNode(pool_size=pool_size, spill_dir=spill_dir, spill_subdir="node" if spill_dir else None)
    with node.start():
        rate, pings = push_all(node.addr, nbytes, clients)
        fetched = fetch_rate(node.addr)
        with Client(node.addr) as c:
            st = c.stats()
    spill = st.get("spill") or {}
    q = statistics.quantiles(pings, n=100) if len(pings) >= 2 else [0.0] * 99
    out = {"push_rate": rate, "fetch_rate": fetched, "on_disk": spill.get("bytes", 0),
           "room_waits": st["counters"].get("room_waits", 0),
           "spilled_bytes": spill.get("spilled_bytes", 0), "ping_p50": q[49], "ping_p99": q[98]}
    if spill.get("spill_seconds"):
        out["spill_rate"] = spill["spilled_bytes"] / spill["spill_seconds"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bytes", default="2g", help="pushed per run (default 2g)")
    ap.add_argument("--pool-size", default="256m", help="the spilling node's pool (default 256m)")
    ap.add_argument("--spill-dir", default="/var/tmp", help="a directory on the disk to measure (default /var/tmp)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    nbytes, pool = parse_size(args.bytes), parse_size(args.pool_size)
    work = tempfile.mkdtemp(prefix="rpmp-spill-bench-", dir=args.spill_dir)
    runs = []
    try:
        for i in range(args.repeat):
            dd = dd_rate(work, nbytes)
            seq = seqwrite_rate(work, nbytes)
            base = node_run(nbytes + (nbytes >> 1) + (64 << 20), None, nbytes, args.clients)
            spill = node_run(pool, work, nbytes, args.clients)
            run = {"dd_rate": dd, "seqwrite_rate": seq, "nospill_push_rate": base["push_rate"],
                   "spill_push_rate": spill["push_rate"], "spill_rate": spill.get("spill_rate", 0.0),
                   "spilled_bytes": spill["spilled_bytes"], "ping_p50_nospill": base["ping_p50"],
                   "ping_p99_nospill": base["ping_p99"], "ping_p50_spill": spill["ping_p50"],
                   "ping_p99_spill": spill["ping_p99"], "fetch_rate_nospill": base["fetch_rate"],
                   "fetch_rate_spill": spill["fetch_rate"], "on_disk_at_fetch": spill["on_disk"],
                   "room_waits_spill": spill["room_waits"], "room_waits_nospill": base["room_waits"]}
            run["fetch_spill_vs_nospill"] = spill["fetch_rate"] / base["fetch_rate"]
            run["spill_vs_dd"] = run["spill_rate"] / dd
            run["spill_vs_seqwrite"] = run["spill_rate"] / seq
            run["push_spill_vs_nospill"] = spill["push_rate"] / base["push_rate"]
            runs.append(run)
            print(f"run {i + 1}: dd {dd / 1e9:.2f} GB/s, seqwrite {seq / 1e9:.2f} GB/s | node spill "
                  f"{run['spill_rate'] / 1e9:.2f} GB/s ({run['spill_vs_dd']:.2f} of dd, "
                  f"{run['spill_vs_seqwrite']:.2f} of seqwrite), {spill['spilled_bytes'] / 1e9:.2f} GB spilled | "
                  f"pushes "
                  f"{spill['push_rate'] / 1e9:.2f} GB/s spilling vs {base['push_rate'] / 1e9:.2f} GB/s not "
                  f"({run['push_spill_vs_nospill']:.2f}), {spill['room_waits']} waits for room | "
                  f"PING p50/p99 {1e3 * spill['ping_p50']:.1f}/"
                  f"{1e3 * spill['ping_p99']:.1f} ms spilling, "
                  f"{1e3 * base['ping_p50']:.1f}/{1e3 * base['ping_p99']:.1f} ms not | fetch "
                  f"{spill['fetch_rate'] / 1e9:.2f} GB/s ({spill['on_disk'] / 1e9:.2f} GB of it on disk) vs "
                  f"{base['fetch_rate'] / 1e9:.2f} GB/s from the pool ({run['fetch_spill_vs_nospill']:.2f})",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"median: spill/dd {summary['spill_vs_dd']:.2f}, spill/seqwrite {summary['spill_vs_seqwrite']:.2f}, "
          f"fetch spilled/pool {summary['fetch_spill_vs_nospill']:.2f}, push rate spilling/not "
          f"{summary['push_spill_vs_nospill']:.2f} ({args.bytes} through a {args.pool_size} pool, "
          f"{args.clients} clients, {os.cpu_count()} cores)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs, "median": summary}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())

"""4 MiB append and read throughput of the RPMP pool, as ratios against memcpy in the same process.

Both sides move the same bytes over the same working set (64 distinct 4 MiB buffers, larger than the
CPU caches), so the ratio says what the pool costs over plain memory copies:
- append: pool.alloc + pool.append (memcpy_persist, persisted `used`) of a 4 MiB source into a
  rotating set of blocks (the oldest freed) vs. memcpy of the same source into rotating DRAM buffers;
- read: pool.read_into from rotating sealed blocks into one buffer vs. memcpy from rotating DRAM buffers.
Rounds alternate pool and memcpy; each figure is the median over rounds.

    python bench/pool_bench.py [--pool /dev/shm/bench.pool] [--rounds 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from rpmp._pool import DEFAULT_BLOCK_CAPACITY, Pool

BLOCK = DEFAULT_BLOCK_CAPACITY
WORKING_SET = 64
OPS_PER_ROUND = 192


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return OPS_PER_ROUND * BLOCK / (time.perf_counter() - start) / 1e9


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", default="/dev/shm/rpmp-pool-bench.pool", help="pool file to create (removed after)")
    ap.add_argument("--rounds", type=int, default=7, help="alternating rounds per figure (median is reported)")
    ap.add_argument("--json", metavar="FILE", help="write the figures as JSON to FILE")
    args = ap.parse_args(argv)

    if os.path.exists(args.pool):
        os.unlink(args.pool)
    pool = Pool.create(args.pool, (WORKING_SET * 2 + 16) * (4 << 20))
    src = memoryview(bytearray(os.urandom(BLOCK)))
    dram = [memoryview(bytearray(os.urandom(BLOCK))) for _ in range(WORKING_SET)]
    sink = memoryview(bytearray(BLOCK))
    live: list[int] = []
    sealed = []
    for i in range(WORKING_SET):
        b = pool.alloc(BLOCK)
        pool.append(b, dram[i])
        pool.seal(b)
        sealed.append(b)

    def pool_append():
        for _ in range(OPS_PER_ROUND):
            b = pool.alloc(BLOCK)
            pool.append(b, src)
            live.append(b)
            if len(live) > WORKING_SET:
                pool.free(live.pop(0))

    def memcpy_write():
        for i in range(OPS_PER_ROUND):
            dram[i % WORKING_SET][:] = src

    def pool_read():
        for i in range(OPS_PER_ROUND):
            pool.read_into(sealed[i % WORKING_SET], sink)

    def memcpy_read():
        for i in range(OPS_PER_ROUND):
            sink[:] = dram[i % WORKING_SET]

    pool_append(), memcpy_write(), pool_read(), memcpy_read()  # warm up: touch every page once
    runs: dict[str, list[float]] = {"append": [], "mw": [], "read": [], "mr": []}
    for _ in range(args.rounds):
        runs["append"].append(timed(pool_append))
        runs["mw"].append(timed(memcpy_write))
        runs["read"].append(timed(pool_read))
        runs["mr"].append(timed(memcpy_read))
    for b in live:
        pool.free(b)
    pool.close()
    os.unlink(args.pool)

    med = {k: statistics.median(v) for k, v in runs.items()}
    result = {
        "append_gbps": round(med["append"], 3),
        "read_gbps": round(med["read"], 3),
        "memcpy_gbps": round(statistics.median(runs["mw"] + runs["mr"]), 3),
        "memcpy_write_gbps": round(med["mw"], 3),
        "memcpy_read_gbps": round(med["mr"], 3),
        "append_ratio": round(med["append"] / med["mw"], 3),
        "read_ratio": round(med["read"] / med["mr"], 3),
        "block_bytes": BLOCK,
        "rounds": args.rounds,
        "pool": args.pool,
    }
    print(f"pool append {result['append_gbps']:6.2f} GB/s   memcpy {result['memcpy_write_gbps']:6.2f} GB/s"
          f"   ratio {result['append_ratio']:.2f}  (target >= 0.80)")
    print(f"pool read   {result['read_gbps']:6.2f} GB/s   memcpy {result['memcpy_read_gbps']:6.2f} GB/s"
          f"   ratio {result['read_ratio']:.2f}  (target >= 0.90)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

"""AQE's partial reads on a real node over real sockets: a map-range FETCH (a skew-join split reads one partition
by map ranges, the local shuffle reader one map across partitions) returns exactly the records of those maps, the
STATS counters of what a read cost (fetch_index_visited, fetch_records, fetch_map_ranges, fetch_partition_bytes)
count what they claim, and a restart on the same pool serves the same bytes to the same ranges."""

import random
import signal

import pytest

from rpmp.client import Client
from rpmp.protocol import END_MAP_ALL, RECORD_HEADER_SIZE

APP = "app-aqe-ranges"
MAPS = 12
PARTS = 3
COUNTERS = ("fetches", "fetch_bytes", "fetch_records", "fetch_index_visited", "fetch_map_ranges",
            "fetch_partition_bytes")
RANGES = [(0, END_MAP_ALL), (0, MAPS), (3, 4), (5, 9), (0, 1), (MAPS - 1, MAPS), (MAPS, 2 * MAPS), (7, 7)]


def committed(m: int) -> int:
    return 100 * m + (m % 3 == 0)  # maps 0, 3, 6, 9 ran twice; their second attempt (…1) is the committed one


def build(c: Client) -> dict[int, list[tuple[int, int, int, bytes]]]:
    """Push every map's segments with the maps interleaved (so a map's records are spread over a partition's
    blocks, between other maps' records), a failed first attempt for some maps; return per partition what
    was stored: (map, attempt, seq, payload)."""
    rng = random.Random(13)
    c.register_shuffle(APP, 7, PARTS)
    stored: dict[int, list[tuple[int, int, int, bytes]]] = {p: [] for p in range(PARTS)}
    pending = []
    for m in range(MAPS):
        attempts = [100 * m, 100 * m + 1] if m % 3 == 0 else [100 * m]
        for a in attempts:
            for p in range(PARTS):
                n = 1 + (m + p) % 3
                for s in range(n):
                    data = rng.randbytes(rng.choice([0, 5, 700, 9_000, 40_000])) if s == n - 1 else \
                        rng.randbytes(rng.choice([1, 3_000, 60_000]))
                    pending.append((p, m, a, s, data, s == n - 1))
    rng.shuffle(pending)  # arrival order interleaves maps and attempts; seqs of one map arrive in any order
    for p, m, a, s, data, last in pending:
        c.push(APP, 7, p, m, a, s, data, last=last)
        stored[p].append((m, a, s, data))
    return stored


def expected(stored, p: int, start: int, end: int) -> list[tuple[int, int, int, bytes]]:
    return sorted((m, a, s, d) for m, a, s, d in stored[p] if start <= m < end and a == committed(m))


def counters(c: Client) -> dict[str, int]:
    ctr = c.stats()["counters"]
    return {k: ctr[k] for k in COUNTERS}


def check_ranges(c: Client, stored) -> None:
    for p in range(PARTS):
        for start, end in RANGES:
            attempts = [committed(m) for m in range(MAPS)]
            want = expected(stored, p, start, end)
            before = counters(c)
            got = c.fetch(APP, 7, p, start_map=start, end_map=end, attempts=attempts)
            after = counters(c)
            # exactly the records of those maps' committed attempts, byte for byte (order is not promised)
            assert sorted((g.map_index, g.attempt, g.seq & 0x7FFFFFFF, bytes(g.data)) for g in got) == want, \
                (p, start, end)
            delta = {k: after[k] - before[k] for k in COUNTERS}
            assert delta == {
                "fetches": 1,
                "fetch_bytes": sum(RECORD_HEADER_SIZE + len(d) for *_, d in want),
                "fetch_records": len(want),
                # a map range looks only at its maps' entries (every attempt); a whole read at all of them
                "fetch_index_visited": sum(1 for m, *_ in stored[p] if start <= m < end),
                "fetch_map_ranges": int((start, end) != (0, END_MAP_ALL)),
                "fetch_partition_bytes": sum(len(d) for *_, d in stored[p]),
            }, (p, start, end)


def test_map_range_fetch_is_exact_and_counted(node):
    with Client(node.addr) as c:
        stored = build(c)
        assert len(c.partition_info(APP, 7, 0)["blocks"]) > 2  # the maps' records are spread over blocks
        check_ranges(c, stored)
        # a push after those reads (a late attempt of a new map) is seen by the next map-range read: the by-map
        # index built by the reads above is dropped by the push, not served stale
        c.push(APP, 7, 1, MAPS, 100 * MAPS, 0, b"late", last=True)
        stored[1].append((MAPS, 100 * MAPS, 0, b"late"))
        got = c.fetch(APP, 7, 1, start_map=MAPS, end_map=MAPS + 1)
        assert [(g.map_index, g.attempt, bytes(g.data)) for g in got] == [(MAPS, 100 * MAPS, b"late")]
        whole = c.fetch(APP, 7, 1, start_map=0, end_map=MAPS + 1, attempts=[100 * MAPS])
        assert [bytes(g.data) for g in whole] == [b"late"]
        # an unknown partition of a known shuffle holds nothing: visited 0, nothing served, still a FETCH
        c.register_shuffle(APP, 8, 2)
        before = counters(c)
        assert c.fetch(APP, 8, 1, start_map=0, end_map=1) == []
        after = counters(c)
        assert {k: after[k] - before[k] for k in COUNTERS} == {
            "fetches": 1, "fetch_bytes": 0, "fetch_records": 0, "fetch_index_visited": 0, "fetch_map_ranges": 1,
            "fetch_partition_bytes": 0}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_map_range_fetch_after_restart_serves_the_same_bytes(node_factory, sig):
    n = node_factory()
    with Client(n.addr) as c:
        stored = build(c)
        check_ranges(c, stored)
    n.stop(sig)
    n2 = node_factory(pool=n.pool)
    with Client(n2.addr) as c:
        check_ranges(c, stored)  # the index rebuilt at open answers map ranges as before, and counts alike

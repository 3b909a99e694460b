"""Crash consistency across both tiers: a node SIGKILLed 20 times at random moments while it spills.

A client pushes into a 32 MiB pool while the node moves blocks to its spill directory; the node is killed
at a random point (mid-batch, mid-fdatasync, mid-free: wherever the moment falls) and restarted on the same
pool and files. After every restart, every segment the node acknowledged must be served exactly once and
byte for byte (by its XXH3), and nothing unacknowledged may come back altered. Each round re-registers one
of four shuffle ids after deleting it, so stale extents of a deleted shuffle would show up as extra records.
"""

import random
import threading
import time

import xxhash
from test_disk_tier import data_of

from rpmp.client import Client, RpmpError
from rpmp.protocol import SEQ_LAST

KILLS = 20
APP = "app-crash-spill"
PARTITIONS = 4
SHUFFLE_IDS = 4
MAX_SEGMENTS = 200  # per round: bounds what the checks read back


def pusher(addr: str, sid: int, seed: int, stop: threading.Event, acked: dict, tried: dict) -> None:
    """Push segments (64 KiB to 1 MiB) until the node dies or `stop`; acked: {(partition, map): xxh3}."""
    rng = random.Random(seed)
    try:
        with Client(addr, timeout=10) as c:
            for m in range(MAX_SEGMENTS):
                if stop.is_set():
                    return
                p = m % PARTITIONS
                data = data_of(seed * 1000 + m, rng.choice((64 << 10, 256 << 10, 1 << 20)))
                digest = xxhash.xxh3_64_intdigest(data)
                tried[(p, m)] = digest
                c.push(APP, sid, p, m, 0, SEQ_LAST, data)
                acked[(p, m)] = digest
    except (OSError, RpmpError):
        return  # the node was killed under us


def served(c: Client, sid: int) -> dict:
    got = {}
    for p in range(PARTITIONS):
        for seg in c.fetch(APP, sid, p):
            key = (p, seg.map_index)
            assert key not in got, f"shuffle {sid}: {key} served twice"
            got[key] = xxhash.xxh3_64_intdigest(bytes(seg.data))
    return got


def test_twenty_sigkills_while_spilling_lose_and_duplicate_nothing(spill_node):
    rng = random.Random(20261202)
    n = spill_node("32m", spill_high=0.5, spill_low=0.3)
    expect: dict[int, tuple[dict, dict]] = {}  # shuffle id -> (acknowledged, tried)
    spilled_at_kill = 0
    for round_ in range(KILLS):
        sid = round_ % SHUFFLE_IDS
        with Client(n.addr, timeout=30) as c:
            if sid in expect:
                c.delete_shuffle(APP, sid)
            c.register_shuffle(APP, sid, PARTITIONS)
        acked: dict = {}
        tried: dict = {}
        expect[sid] = (acked, tried)
        stop = threading.Event()
        t = threading.Thread(target=pusher, args=(n.addr, sid, round_, stop, acked, tried), daemon=True)
        t.start()
        time.sleep(rng.uniform(0.15, 1.2))
        n.kill()
        stop.set()
        t.join(30)
        assert not t.is_alive()
        n.restart()
        with Client(n.addr, timeout=60) as c:
            spilled_at_kill += c.stats()["spill"]["blocks"] > 0
            for s, (ack, attempted) in expect.items():
                got = served(c, s)
                missing = [k for k in ack if got.get(k) != ack[k]]
                assert not missing, f"round {round_}: shuffle {s} lost or changed {len(missing)} acknowledged " \
                                    f"segments, e.g. {missing[:3]}"
                extra = [k for k in got if k not in attempted or got[k] != attempted[k]]
                assert not extra, f"round {round_}: shuffle {s} serves segments never pushed: {extra[:3]}"
    assert spilled_at_kill >= KILLS // 2, f"the node held spilled blocks after only {spilled_at_kill} kills"

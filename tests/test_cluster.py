"""Three real nodes on loopback: membership, the documented placement, forwarded registration and deletes."""

import bisect
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import xxhash
from conftest import NODE_ARGS

from rpmp.client import Client, NotFoundError, UnavailableError
from rpmp.cluster import LocalCluster

APP = "app-cluster-1"


def wait_for(cond, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def documented_placement(node_ids, app, shuffle, nparts, replicas):
    """PROTOCOL.md "Placement", computed here from the text, independently of rpmp.ring."""
    tokens = sorted((xxhash.xxh64_intdigest(f"{n}#{v}".encode()), n) for n in node_ids for v in range(64))
    keys = [t for t, _ in tokens]
    size = min(len(node_ids), replicas + 1)
    out = []
    for p in range(nparts):
        i = bisect.bisect_left(keys, xxhash.xxh64_intdigest(f"{app}/{shuffle}/{p}".encode()))
        taken = []
        while len(taken) < size:
            n = tokens[i % len(tokens)][1]
            if n not in taken:
                taken.append(n)
            i += 1
        out.append(taken)
    return out


@pytest.fixture
def three():
    """Three nodes, the seed first, once each lists all three alive."""
    with LocalCluster(3, node_args=NODE_ARGS) as cluster:
        yield cluster.nodes


def test_members_and_placement_follow_the_documented_ring(three):
    ids = sorted(n.addr for n in three)
    for n in three:
        with Client(n.addr) as c:
            epoch, members = c.members()
            assert sorted(m.node_id for m in members if m.state == 1) == ids
    with Client(three[1].addr) as c:  # any node can take the registration
        pl = c.register_shuffle(APP, 1, num_partitions=64, replicas=2)
    expected = documented_placement(ids, APP, 1, 64, 2)
    assert [[n.node_id for n in pl.nodes_for(p)] for p in range(64)] == expected
    assert {pl.primary(p).node_id for p in range(64)} == set(ids)  # every node is somebody's primary
    # the registration reached every node, with the same placement
    for n in three:
        with Client(n.addr) as c:
            assert c.register_shuffle(APP, 1, num_partitions=64, replicas=2) == pl


def test_push_to_primaries_fetch_and_delete_everywhere(three):
    with Client([n.addr for n in three]) as c:
        pl = c.register_shuffle(APP, 2, num_partitions=12)
        segs = [(p, m, 100 + m, 0, f"{p}-{m}".encode() * 100) for p in range(12) for m in range(5)]
        c.push_many(APP, 2, segs, placement=pl)
        for p in range(12):
            got = c.fetch(APP, 2, p, placement=pl)
            assert [bytes(s.data) for s in got] == [f"{p}-{m}".encode() * 100 for m in range(5)]
            # data sits on the primary only (replicas = 1)
            for n in three:
                info = c.partition_info(APP, 2, p, node=n.addr)
                assert info["records"] == (5 if n.addr == pl.primary(p).node_id else 0)
        freed = c.delete_shuffle(APP, 2, node=three[2].addr)
        assert freed == 12 + 2 * 3  # one block per partition, the registration's two copies on each node
        assert all(c.stats(node=n.addr)["pool"]["blocks"] == 0 for n in three)
        for n in three:
            with pytest.raises(NotFoundError):
                c.fetch(APP, 2, 0, node=n.addr)


def test_dead_node_leaves_the_live_set(three):
    seed, victim = three[0], three[2]
    with Client(seed.addr) as c:
        epoch0 = c.members()[0]
        victim.stop(signal.SIGKILL)
        wait_for(lambda: [m.state for m in c.members()[1] if m.node_id == victim.addr] == [3],
                 what="the killed node declared dead")
        epoch1, members = c.members()
        assert epoch1 > epoch0
        pl = c.register_shuffle(APP, 3, num_partitions=16)
        assert victim.addr not in {n.node_id for n in pl.nodes}
    with Client(three[1].addr) as c:  # the other node learns it from the seed
        wait_for(lambda: [m.state for m in c.members()[1] if m.node_id == victim.addr] == [3],
                 what="the survivor adopting the seed's view")


def test_cluster_command_starts_three_nodes(tmp_path):
    # A directory of its own: a stray node of another run holding /dev/shm/rpmp-node0.pool cannot interfere.
    pool_dir = tempfile.mkdtemp(prefix="rpmp-test-cluster-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    proc = subprocess.Popen([sys.executable, "-m", "rpmp.cli", "cluster", "--nodes", "3", "--pool-dir", pool_dir,
                             "--pool-size", "64m"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        assert lines[3].startswith("RPMP cluster ready: ")
        addrs = lines[3].split(": ", 1)[1].strip().split(",")
        assert len(addrs) == 3
        with Client(addrs[0]) as c:
            wait_for(lambda: sum(m.state == 1 for m in c.members()[1]) == 3, what="3 members")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        shutil.rmtree(pool_dir, ignore_errors=True)


def test_replicas_hold_copies_and_readers_fall_back_when_the_primary_dies(three):
    by_addr = {n.addr: n for n in three}
    with Client([n.addr for n in three]) as c:
        pl = c.register_shuffle(APP, 4, num_partitions=24, replicas=2)
        segs = [(p, m, 500 + m, 0, f"r{p}-{m}".encode() * 300) for p in range(24) for m in range(4)]
        c.push_many(APP, 4, segs, placement=pl)
        for p in range(24):
            primary, replica, *spare = pl.nodes_for(p)
            assert len(spare) == 1  # L = replicas + 1: one spare
            for n, expect in ((primary, 4), (replica, 4), (spare[0], 0)):
                assert c.partition_info(APP, 4, p, node=n.node_id)["records"] == expect
        # a node that is the primary of some partitions and the replica of others
        both = {pl.primary(p) for p in range(24)} & {pl.nodes_for(p)[1] for p in range(24)}
        victim = sorted(both, key=lambda n: n.node_id)[0]
        by_addr[victim.node_id].stop(signal.SIGKILL)
        for p in range(24):  # every partition still reads in full, from its replica where needed
            got = c.fetch(APP, 4, p, placement=pl)
            assert sorted(bytes(s.data) for s in got) == sorted(f"r{p}-{m}".encode() * 300 for m in range(4))
        # a push whose replica is down is stored on the primary but reported, so the writer retries
        p = next(p for p in range(24) if pl.nodes_for(p)[1] == victim)
        with pytest.raises(UnavailableError, match="not on replicas"):
            c.push(APP, 4, p, 9, 900, 0, b"late", placement=pl)
        assert c.partition_info(APP, 4, p, node=pl.primary(p).node_id)["records"] == 5

"""The disk tier: shuffles larger than the pool spill to files and read back byte for byte, across restarts,
through FETCH and through the files PARTITION_INFO names; both tiers full; per-app quotas."""

import glob
import random

import pytest
import xxhash

from rpmp._wire import unpack_record_header
from rpmp.client import Client, PoolFullError, QuotaExceededError
from rpmp.protocol import RECORD_HEADER_SIZE, SEQ_LAST

APP = "app-20261202-0001"
SEGMENT = 1 << 20


def data_of(seed: int, size: int = SEGMENT) -> bytes:
    return random.Random(seed).randbytes(size)


def push_maps(c: Client, app: str, sid: int, partitions: int, maps: range, size: int = SEGMENT) -> dict:
    """Push one segment per (map, partition); returns {(partition, map): xxh3 of its bytes}."""
    sent = {}
    for m in maps:
        segs = []
        for p in range(partitions):
            data = data_of(hash((app, sid, p, m)) & 0xFFFFFFFF, size)
            sent[(p, m)] = xxhash.xxh3_64_intdigest(data)
            segs.append((p, m, 0, SEQ_LAST, data))
        c.push_many(app, sid, segs)
    return sent


def fetched(c: Client, app: str, sid: int, partitions: int) -> dict:
    got = {}
    for p in range(partitions):
        for seg in c.fetch(app, sid, p):
            assert (p, seg.map_index) not in got, f"record of map {seg.map_index} partition {p} served twice"
            got[(p, seg.map_index)] = xxhash.xxh3_64_intdigest(bytes(seg.data))
    return got


def spill_files(tmp_path) -> list[str]:
    return sorted(glob.glob(str(tmp_path / "spill" / "*.spill")))


def test_a_shuffle_five_times_the_pool_spills_and_reads_back_byte_exact(spill_node, tmp_path):
    n = spill_node("32m")
    with Client(n.addr) as c:
        c.register_shuffle(APP, 1, 8)
        sent = push_maps(c, APP, 1, 8, range(20))  # 160 MiB into a 32 MiB pool
        st = c.stats()
        spill = st["spill"]
        assert spill["spilled_bytes"] >= 100 << 20 and spill["blocks"] > 0, spill
        assert st["pool"]["allocated"] < st["pool"]["capacity"]
        assert st["apps"][APP]["spilled_bytes"] == spill["bytes"]
        assert fetched(c, APP, 1, 8) == sent
        assert spill_files(tmp_path)
        # A map range reads only its maps' records, from either tier.
        assert sorted(s.map_index for s in c.fetch(APP, 1, 3, start_map=5, end_map=9)) == [5, 6, 7, 8]


def test_both_tiers_survive_a_restart_and_a_delete_empties_the_disk(spill_node, tmp_path):
    n = spill_node("32m")
    with Client(n.addr) as c:
        c.register_shuffle(APP, 2, 4)
        sent = push_maps(c, APP, 2, 4, range(24))
        before = c.stats()["spill"]
        assert before["blocks"] > 0
    n.restart()
    with Client(n.addr) as c:
        after = c.stats()["spill"]
        assert (after["blocks"], after["bytes"]) == (before["blocks"], before["bytes"])
        assert fetched(c, APP, 2, 4) == sent
        # The restart's node takes more, into new spill files.
        sent.update(push_maps(c, APP, 2, 4, range(24, 32)))
        assert fetched(c, APP, 2, 4) == sent
        c.delete_shuffle(APP, 2)
        st = c.stats()["spill"]
        assert (st["blocks"], st["bytes"], st["used"]) == (0, 0, 0)
    assert len(spill_files(tmp_path)) <= 1  # only the file new extents would go to is kept


def test_partition_info_names_the_spill_files_that_hold_a_partition(spill_node):
    """A reader on the node's host reads each block from the file PARTITION_INFO names, as the JVM's local
    reader does: every record parses there and matches what FETCH serves."""
    n = spill_node("32m")
    with Client(n.addr) as c:
        c.register_shuffle(APP, 3, 2)
        sent = push_maps(c, APP, 3, 2, range(40))
        for p in range(2):
            info = c.partition_info(APP, 3, p)
            files = [info["pool_path"], *info["spill_files"]]
            assert len(files) > 1, "nothing of the partition was spilled"
            found = {}
            for b in info["blocks"]:
                with open(files[b.file], "rb") as f:
                    f.seek(b.file_offset)
                    raw = f.read(b.used)
                pos = 0
                while pos < len(raw):
                    m, _a, _s, length, checksum = unpack_record_header(raw, pos)
                    body = raw[pos + RECORD_HEADER_SIZE:pos + RECORD_HEADER_SIZE + length]
                    assert xxhash.xxh3_64_intdigest(body) == checksum
                    found[(p, m)] = checksum
                    pos += RECORD_HEADER_SIZE + length
            assert found == {k: v for k, v in sent.items() if k[0] == p}
            assert info["records"] == 40


def test_both_tiers_full_is_a_clear_error_other_apps_keep_their_data_and_delete_app_makes_room(spill_node):
    n = spill_node("32m", spill_size="48m", full_wait=1)
    other = "app-other"
    with Client(n.addr) as c:
        c.register_shuffle(other, 1, 2)
        kept = push_maps(c, other, 1, 2, range(4))
        c.register_shuffle(APP, 4, 4)
        with pytest.raises(PoolFullError) as e:
            push_maps(c, APP, 4, 4, range(100))
        msg = e.value.message
        assert f"node {n.addr}" in msg and "pool" in msg and "disk tier" in msg and "of 48 MiB" in msg, msg
        assert fetched(c, other, 1, 2) == kept
        c.delete_app(APP)
        c.register_shuffle(APP, 5, 4)
        sent = push_maps(c, APP, 5, 4, range(8))
        assert fetched(c, APP, 5, 4) == sent
        assert fetched(c, other, 1, 2) == kept


def test_an_app_over_its_quota_is_refused_and_others_proceed(spill_node):
    n = spill_node("64m", app_quota="8m")
    with Client(n.addr) as c:
        c.register_shuffle(APP, 6, 1)
        sent = push_maps(c, APP, 6, 1, range(8))
        with pytest.raises(QuotaExceededError) as e:
            push_maps(c, APP, 6, 1, range(8, 9))
        assert f"app {APP!r} holds {8 << 20} bytes" in e.value.message and "quota of 8388608" in e.value.message
        c.register_shuffle("app-b", 1, 1)
        b = push_maps(c, "app-b", 1, 1, range(8))
        assert fetched(c, "app-b", 1, 1) == b
        assert fetched(c, APP, 6, 1) == sent
    n.restart()  # the usage is rebuilt from what the node holds
    with Client(n.addr) as c:
        with pytest.raises(QuotaExceededError):
            push_maps(c, APP, 6, 1, range(8, 9))
        c.delete_shuffle(APP, 6)
        c.register_shuffle(APP, 7, 1)
        assert fetched(c, APP, 7, 1) == {} and push_maps(c, APP, 7, 1, range(8))


def test_values_move_to_disk_and_get_serves_them_byte_exact_across_a_restart(spill_node):
    n = spill_node("32m")
    values = {f"key-{i}".encode(): data_of(1000 + i) for i in range(48)}  # 48 MiB of values, 32 MiB pool
    with Client(n.addr) as c:
        for k, v in values.items():
            c.put(k, v)
        assert c.stats()["spill"]["blocks"] > 0
        assert all(bytes(c.get(k)) == v for k, v in values.items())
    n.restart()
    with Client(n.addr) as c:
        assert all(bytes(c.get(k)) == v for k, v in values.items())
        c.put(b"key-0", b"replaced")  # a spilled value replaced and one deleted: both gone from disk
        c.delete(b"key-1")
        assert bytes(c.get(b"key-0")) == b"replaced"
        st = c.stats()["spill"]
        assert st["freed_extents"] >= 1 and st["blocks"] < 48


def test_replicas_spill_independently_and_either_copy_serves_byte_exact(tmp_path):
    """With replicas=2 both nodes hold every segment and each spills its own copy; with one node stopped,
    the other serves everything from its two tiers."""
    from conftest import NODE_ARGS, SHM

    from rpmp.cluster import LocalCluster

    with LocalCluster(2, pool_size="32m", pool_dir=SHM, name="rpmp-spill-repl", node_args=NODE_ARGS,
                      spill_dir=str(tmp_path / "spill")) as cluster:
        addrs = [n.addr for n in cluster.nodes]
        with Client(",".join(addrs)) as c:
            pl = c.register_shuffle(APP, 8, 4, replicas=2)
            sent = {}
            for m in range(12):
                for p in range(4):
                    data = data_of(m * 10 + p)
                    sent[(p, m)] = xxhash.xxh3_64_intdigest(data)
                    c.push(APP, 8, p, m, 0, SEQ_LAST, data, placement=pl)
            for a in addrs:
                st = c.stats(node=a)["spill"]
                assert st["spilled_bytes"] > 0, f"{a} spilled nothing"
            cluster.nodes[0].stop()
        with Client(addrs[1]) as c:
            assert fetched(c, APP, 8, 4) == sent

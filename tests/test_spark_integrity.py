"""Spark never gets a short answer from RPMP (the integrity issue's reproduction).

A node is stopped, one record of its pool file gets its magic byte flipped, and the node restarts on the
same pool: it drops that record and the rest of its block (several records of one map attempt, the
attempt's tail among them). The same RDD is then collected again, reading the shuffle written before:

- replicas=2 on two nodes: the reader finds the attempt incomplete on the restarted primary (no final
  segment, SEQ_LAST) and reads it from the replica: the result is identical and no map task re-ran.
- replicas=1 on one node: no copy is whole anywhere, so the result must be exact (Spark re-ran the map
  stage after a FetchFailed) or the job must fail naming the node; never fewer records.

Real Spark (local-cluster), real node processes on /dev/shm; one-sided reads of the co-located pool file
on (the default), so the damaged block is met first by the pool-file reader, then by FETCH.
"""

from __future__ import annotations

import json
import struct
import time

import pytest

pytest.importorskip("pyspark")

from sparkutil import plugin_conf, restartable_node, spark_session, wait_for_executors  # noqa: E402

from rpmp.cluster import LocalNode  # noqa: E402
from rpmp.protocol import RECORD_MAGIC, SEQ_INDEX  # noqa: E402

N = 120_000  # ~5,000 rows per map and partition: several 32 KiB compression blocks, so several segments
KEYS = 101
PARTITIONS = 6
RECORD = struct.Struct("<IIQIIQ")  # magic, map_index, attempt, seq, length, checksum (PROTOCOL.md)


def session(nodes: list[str], replicas: int, name: str):
    conf = {**plugin_conf(nodes),
            "spark.rpmp.replicas": str(replicas),
            "spark.rpmp.push.size": "2k",          # several segments per map attempt and partition
            "spark.rpmp.connect.timeout": "2s",
            "spark.rpmp.fetch.timeout": "10s",
            "spark.sql.adaptive.enabled": "false",  # exactly PARTITIONS reduce partitions
            "spark.executor.memory": "768m",
            "spark.ui.enabled": "false"}
    s = spark_session("local-cluster[2,1,1024]", conf, name)
    s.sparkContext.setLogLevel("ERROR")
    wait_for_executors(s.sparkContext, 2)
    return s


def job(spark):
    """A shuffle of N rows (key, value) into PARTITIONS partitions, as an RDD: collecting it again reads the
    same shuffle output (no new map stage). Rows are serialized one by one (UnsafeRow), so each map attempt
    pushes several segments to each partition."""
    return (spark.range(0, N, 1, 4).selectExpr(f"id % {KEYS} AS k", "id AS v").repartition(PARTITIONS, "k")
            .rdd.map(tuple))


def collected(rdd) -> list[tuple[int, int]]:
    return sorted(rdd.collect())


def written(sc, sid: int) -> int:
    return json.loads(sc._jvm.org.rpmp.shuffle.RpmpMetrics.snapshotJson())["shuffles"][str(sid)]["recordsWritten"]


def shuffle_ids(sc) -> list[int]:
    return sorted(int(k) for k in json.loads(sc._jvm.org.rpmp.shuffle.RpmpMetrics.snapshotJson())["shuffles"])


def fallbacks(sc, sid: int) -> int:
    return json.loads(sc._jvm.org.rpmp.shuffle.RpmpMetrics.snapshotJson())["shuffles"][str(sid)]["fetchFallbacks"]


def app_name(sc) -> str:
    """The RPMP application name the plugin derives from Spark's (RpmpShuffleManager.appName)."""
    name = (sc.applicationId or "spark-app").replace("/", "_").replace("\0", "_")
    while len(name.encode()) > 120:
        name = name[:-1]
    return name


def records_of(addr: str, app: str, sid: int, partition: int) -> tuple[str, list[tuple]]:
    """The node's pool file and the records of a partition in it: (file offset, map, attempt, seq, length)."""
    from rpmp.client import Client

    with Client(addr) as c:
        info = c.partition_info(app, sid, partition)
    out = []
    with open(info["pool_path"], "rb") as f:
        for block in info["blocks"]:
            f.seek(block.file_offset)
            data = f.read(block.used)
            pos = 0
            while pos + RECORD.size <= len(data):
                magic, m, a, s, n, _ = RECORD.unpack_from(data, pos)
                assert magic == RECORD_MAGIC, f"bad record at {block.file_offset + pos} before the test flipped one"
                out.append((block.file_offset + pos, m, a, s, n))
                pos += RECORD.size + n
    return info["pool_path"], out


def pick_tail(records: list[tuple]) -> tuple:
    """The last data record of an attempt that pushed several: flipping its magic loses the attempt's tail
    (that record and the rest of its block), which segment numbering alone cannot show."""
    by_attempt: dict[int, list[tuple]] = {}
    for r in records:
        if r[4] > 0:
            by_attempt.setdefault(r[2], []).append(r)
    several = [rs for rs in by_attempt.values() if len(rs) >= 2]
    assert several, f"no attempt pushed several segments: {records[:10]}"
    rs = max(several, key=len)
    return max(rs, key=lambda r: r[3] & SEQ_INDEX)


def flip_magic(pool: str, offset: int) -> None:
    with open(pool, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def count_records(addr: str, app: str, sid: int, partition: int) -> int:
    from rpmp.client import Client

    with Client(addr) as c:
        return c.partition_info(app, sid, partition)["records"]


def wait_alive(addr: str, n: int, timeout: float = 30) -> None:
    from rpmp.client import Client

    deadline = time.time() + timeout
    while True:
        try:
            with Client(addr) as c:
                if sum(m.state == 1 for m in c.members()[1]) >= n:
                    return
        except OSError:
            pass
        assert time.time() < deadline, f"{addr} does not see {n} live nodes"
        time.sleep(0.1)


def damage_a_tail(node: LocalNode, app: str, sid: int, partitions: list[int]) -> tuple[int, tuple]:
    """Stops the node, flips the magic byte of an attempt's last data record in one of the partitions,
    restarts it on the same pool; returns (partition, record). Checks the node really lost records."""
    partition = max(partitions, key=lambda p: len(records_of(node.addr, app, sid, p)[1]))
    pool, recs = records_of(node.addr, app, sid, partition)
    target = pick_tail(recs)
    before = len(recs)
    node.stop()                       # SIGTERM: a stopped primary
    flip_magic(pool, target[0])
    node.restart()                         # same pool, same address
    after = count_records(node.addr, app, sid, partition)
    assert after < before, f"the node still serves {after} of {before} records after the flip"
    return partition, target


def test_replicas_serve_what_a_restarted_primary_lost(tmp_path):
    from rpmp.ring import HashRing

    a = restartable_node(prefix="rpmp-integ")
    b = restartable_node(prefix="rpmp-integ", extra=["--seeds", a.addr])
    spark = None
    try:
        wait_alive(a.addr, 2)
        wait_alive(b.addr, 2)
        spark = session([a.addr, b.addr], 2, "rpmp-integrity-replicas")
        sc = spark.sparkContext
        data = job(spark)
        first = collected(data)
        assert first == sorted((i % KEYS, i) for i in range(N))
        (sid,) = shuffle_ids(sc)[-1:]
        assert written(sc, sid) == N
        app = app_name(sc)
        table = HashRing([a.addr, b.addr]).placement(app, sid, PARTITIONS, 2)
        on_b = [p for p in range(PARTITIONS) if table[p][0] == b.addr]
        assert on_b, f"{b.addr} is the primary of no partition: {table}"

        partition, target = damage_a_tail(b, app, sid, on_b)
        wait_alive(b.addr, 2)
        before = fallbacks(sc, sid)

        second = collected(data)            # the same shuffle, read again: the map stage is not re-run
        assert second == first, (f"partition {partition}: {len(second)} records instead of {len(first)} after "
                                 f"the flip of {target}")
        assert written(sc, sid) == N, "map tasks re-ran: the replica should have served the lost tail"
        assert fallbacks(sc, sid) > before, "no reader fell back: the flip was never met"
    finally:
        if spark is not None:
            spark.stop()
        b.close()
        a.close()


def test_a_single_copy_with_a_lost_tail_is_exact_or_fails_loudly(tmp_path):
    node = restartable_node(prefix="rpmp-integ1")
    spark = None
    try:
        spark = session([node.addr], 1, "rpmp-integrity-single")
        sc = spark.sparkContext
        data = job(spark)
        first = collected(data)
        assert first == sorted((i % KEYS, i) for i in range(N))
        (sid,) = shuffle_ids(sc)[-1:]
        app = app_name(sc)

        partition, target = damage_a_tail(node, app, sid, list(range(PARTITIONS)))
        t0 = time.time()
        try:
            second = collected(data)
        except Exception as e:  # a loud failure is acceptable; it must name the node that lost the data
            message = str(e)
            assert "FetchFailed" in message or "MissingData" in message or "RPMP" in message, message[:3000]
            assert node.addr in message, message[:3000]
            print(f"failed loudly: {message[:500]}")
        else:
            # Spark re-ran the map stage after the FetchFailed: the answer must be exact, never short.
            assert second == first, (f"partition {partition}: {len(second)} records instead of {len(first)} after "
                                     f"the flip of {target}")
            print(f"exact after Spark re-ran the map stage ({written(sc, sid)} records written in all)")
        assert time.time() - t0 < 120
    finally:
        if spark is not None:
            spark.stop()
        node.close()

"""Consistent-hash placement (rpmp.ring) against PROTOCOL.md "Placement".

The expected preference lists are recomputed here with xxhash directly and a plain linear walk, sharing
no code with the implementation.
"""

import json
import os
import time

import pytest
import xxhash

from rpmp.protocol import ErrorCode, ProtocolError
from rpmp.ring import HashRing, partition_key

NODES3 = ["10.0.0.1:7070", "10.0.0.2:7070", "10.0.0.3:7070"]
VECTORS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors", "vectors.json")


def reference_preference(node_ids, app, shuffle, partition, n, vnodes=64):
    """PROTOCOL.md "Placement", written out the slow obvious way."""
    ring = []
    for node in node_ids:
        for v in range(vnodes):
            ring.append((xxhash.xxh64(f"{node}#{v}".encode(), seed=0).intdigest(), node))
    ring.sort()  # ascending token, ties by node id
    key = xxhash.xxh64(f"{app}/{shuffle}/{partition}".encode(), seed=0).intdigest()
    start = next((i for i, (token, _) in enumerate(ring) if token >= key), 0)
    taken = []
    for i in range(len(ring)):
        node = ring[(start + i) % len(ring)][1]
        if node not in taken:
            taken.append(node)
        if len(taken) == n:
            break
    return taken


def test_hand_computed_three_node_example():
    ring = HashRing(NODES3)
    for partition in (0, 1, 2, 3, 17, 999):
        for n in (1, 2, 3):
            assert ring.preference("app-1", 5, partition, n) == reference_preference(NODES3, "app-1", 5, partition, n)
    # one fully spelled-out case: the primary owns the first token at or after the key
    key = xxhash.xxh64(b"app-1/5/0", seed=0).intdigest()
    assert partition_key("app-1", 5, 0) == key
    owners = sorted((xxhash.xxh64(f"{nid}#{v}".encode(), seed=0).intdigest(), nid) for nid in NODES3 for v in range(64))
    following = [nid for token, nid in owners if token >= key] or [owners[0][1]]
    assert ring.preference("app-1", 5, 0, 1) == [following[0]]


def test_matches_reference_on_many_rings():
    for nodes in (["a:1"], ["a:1", "b:2"], [f"node{i}:7070" for i in range(7)]):
        ring = HashRing(nodes)
        rows = ring.placement("spark-app", 3, 50, 2)
        for p, row in enumerate(rows):
            assert row == reference_preference(nodes, "spark-app", 3, p, min(len(nodes), 3))


def test_placement_examples_in_vectors():
    with open(VECTORS, encoding="utf-8") as f:
        examples = json.load(f)["placement_examples"]
    assert examples
    for ex in examples:
        L = min(len(ex["nodes"]), ex["replicas"] + 1)
        expect = [reference_preference(ex["nodes"], ex["app"], ex["shuffle"], p, L)
                  for p in range(ex["num_partitions"])]
        assert ex["placement"] == expect


def test_deterministic_and_order_independent():
    a = HashRing(NODES3).placement("app", 1, 500, 2)
    b = HashRing(list(reversed(NODES3))).placement("app", 1, 500, 2)
    c = HashRing(NODES3 + NODES3[:1]).placement("app", 1, 500, 2)  # duplicates are ignored
    assert a == b == c
    ring = HashRing(NODES3)
    assert ring.placement("app", 1, 500, 2) == ring.placement("app", 1, 500, 2) == a
    assert [ring.preference("app", 1, p, 3) for p in range(500)] == a


def test_tokens_sorted_with_ties_by_node_id():
    ring = HashRing(NODES3)
    pairs = list(zip(ring._tokens, ring._owners, strict=True))
    assert pairs == sorted(pairs) and len(pairs) == 3 * 64


def test_distinct_nodes_and_L_capped_by_live_count():
    nodes = [f"n{i}" for i in range(5)]
    ring = HashRing(nodes)
    for replicas, L in ((1, 2), (2, 3), (4, 5), (9, 5)):
        rows = ring.placement("app", 2, 300, replicas)
        assert len(rows) == 300
        for row in rows:
            assert len(row) == L and len(set(row)) == L and set(row) <= set(nodes)
    assert len(ring.preference("app", 2, 0, 50)) == 5
    assert ring.preference("app", 2, 0, 0) == []
    solo = HashRing(["only:1"])
    assert solo.placement("app", 0, 4, 3) == [["only:1"]] * 4


def test_placement_table():
    ring = HashRing(NODES3)
    nodes, prefs = ring.placement_table("app", 9, 20, 1)
    assert nodes == sorted(NODES3)
    assert [[nodes[i] for i in row] for row in prefs] == ring.placement("app", 9, 20, 1)
    assert all(isinstance(row, tuple) and len(row) == 2 for row in prefs)


def test_balance_over_three_nodes():
    ring = HashRing(NODES3)
    counts = dict.fromkeys(NODES3, 0)
    total = 30_000
    for row in ring.placement("app-balance", 0, total, 1):
        counts[row[0]] += 1
    for node, c in counts.items():
        assert 0.20 <= c / total <= 0.47, (node, c / total)


def test_minimal_movement_when_a_node_joins():
    total = 30_000
    before = HashRing(NODES3).placement("app-move", 4, total, 1)
    after = HashRing(NODES3 + ["10.0.0.4:7070"]).placement("app-move", 4, total, 1)
    moved = [(b[0], a[0]) for b, a in zip(before, after, strict=True) if b[0] != a[0]]
    assert len(moved) / total < 0.35, len(moved) / total
    assert len(moved) / total > 0.10  # the new node does take its share
    assert all(dst == "10.0.0.4:7070" for _, dst in moved)  # keys only move to the newcomer


def test_removing_a_node_moves_only_its_keys():
    total = 10_000
    before = HashRing(NODES3).placement("app", 4, total, 2)
    after = HashRing(NODES3[:2]).placement("app", 4, total, 2)
    for b, a in zip(before, after, strict=True):
        assert a == [n for n in b if n != NODES3[2]][:2]


def test_empty_ring_and_bad_arguments():
    ring = HashRing([])
    assert len(ring) == 0
    with pytest.raises(ProtocolError, match="no live nodes") as ei:
        ring.preference("app", 0, 0, 1)
    assert ei.value.code == ErrorCode.UNAVAILABLE
    with pytest.raises(ProtocolError, match="no live nodes"):
        ring.placement("app", 0, 10, 1)
    with pytest.raises(ProtocolError, match="replicas") as ei:
        HashRing(NODES3).placement("app", 0, 10, 0)
    assert ei.value.code == ErrorCode.BAD_REQUEST
    with pytest.raises(ValueError):
        HashRing(NODES3, vnodes=0)


def test_fast_enough():
    for nodes in (NODES3, [f"node{i}:7070" for i in range(50)]):
        ring = HashRing(nodes)
        t = time.perf_counter()
        ring.placement("app-fast", 1, 2000, 2)
        elapsed = time.perf_counter() - t
        assert elapsed < 0.1, elapsed

"""Consistent-hash placement of shuffle partitions on nodes (PROTOCOL.md "Placement").

Every node must compute the same placement from the same member list, and the Java side may
recompute it, so the rules are exact:

1. ring: for each node id and each v in 0..vnodes-1, token = XXH64("{node_id}#{v}" UTF-8, seed 0);
   tokens sorted ascending, ties broken by node id;
2. key of a partition = XXH64("{app}/{shuffle}/{partition}" UTF-8, seed 0), integers in decimal;
3. preference list: from the first token >= key (wrapping around), take each node not yet taken.

Consistent hashing keeps movement small: adding a node to N moves about 1/(N+1) of the partitions.

API:
    HashRing(node_ids, vnodes=64)
    .nodes -> list[str]                                    (sorted, distinct)
    .preference(app, shuffle, partition, n) -> list[str]   (n distinct ids, primary first; n capped at len(nodes))
    .placement(app, shuffle, num_partitions, replicas) -> list[list[str]]   (L = min(len(nodes), replicas + 1))
    .placement_table(app, shuffle, num_partitions, replicas) -> (nodes, prefs)
        (the REGISTER_SHUFFLE response shape: prefs are tuples of indices into nodes = self.nodes)
    partition_key(app, shuffle, partition) -> int
An empty ring raises ProtocolError(UNAVAILABLE) on lookup: there is nowhere to place data.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

import xxhash

from rpmp.protocol import ErrorCode, ProtocolError

DEFAULT_VNODES = 64

_xxh64 = xxhash.xxh64_intdigest


def node_token(node_id: str, v: int) -> int:
    """The ring token of virtual node `v` of `node_id`."""
    return _xxh64(f"{node_id}#{v}".encode(), 0)


def partition_key(app: str, shuffle: int, partition: int) -> int:
    """Where partition `partition` of (app, shuffle) falls on the ring."""
    return _xxh64(f"{app}/{shuffle}/{partition}".encode(), 0)


class HashRing:
    """An immutable ring over the live node ids (duplicates are ignored); rebuild it when membership changes."""

    __slots__ = ("nodes", "vnodes", "_tokens", "_owners", "_walks")

    def __init__(self, node_ids: Iterable[str], vnodes: int = DEFAULT_VNODES):
        if vnodes < 1:
            raise ValueError(f"vnodes must be at least 1, got {vnodes}")
        self.nodes: list[str] = sorted(set(node_ids))
        self.vnodes = vnodes
        ring = sorted((node_token(nid, v), nid) for nid in self.nodes for v in range(vnodes))
        self._tokens: list[int] = [t for t, _ in ring]
        self._owners: list[str] = [nid for _, nid in ring]
        # A walk depends only on (start position, length): cache it (at most len(nodes) * vnodes starts).
        self._walks: dict[tuple[int, int], list[str]] = {}

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        return f"HashRing({self.nodes!r}, vnodes={self.vnodes})"

    def _walk(self, start: int, n: int) -> list[str]:
        """The first `n` distinct nodes in ring order from position `start` (callers cap n at len(nodes))."""
        key = (start, n)
        walk = self._walks.get(key)
        if walk is None:
            owners = self._owners
            size = len(owners)
            walk = []
            i = start
            while len(walk) < n:
                nid = owners[i]
                if nid not in walk:  # n is small (replicas + 1): a list beats a set
                    walk.append(nid)
                i += 1
                if i == size:
                    i = 0
            self._walks[key] = walk
        return walk

    def _start(self, key: int) -> int:
        if not self._tokens:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "no live nodes: the placement ring is empty")
        i = bisect_left(self._tokens, key)
        return 0 if i == len(self._tokens) else i

    def preference(self, app: str, shuffle: int, partition: int, n: int) -> list[str]:
        """The first `n` distinct nodes clockwise from the partition's key (fewer if the ring is smaller)."""
        n = min(n, len(self.nodes))
        start = self._start(partition_key(app, shuffle, partition))
        return list(self._walk(start, n)) if n > 0 else []

    def placement(self, app: str, shuffle: int, num_partitions: int, replicas: int) -> list[list[str]]:
        """One preference list per partition, of L = min(live nodes, replicas + 1) node ids.

        `replicas` is the total number of copies; the extra entry is a spare to fall back on.
        """
        if replicas < 1:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"replicas is {replicas}, must be at least 1")
        if not self._tokens:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "no live nodes: the placement ring is empty")
        n = min(len(self.nodes), replicas + 1)
        tokens, size, walk = self._tokens, len(self._tokens), self._walk
        out = []
        for p in range(num_partitions):
            i = bisect_left(tokens, _xxh64(f"{app}/{shuffle}/{p}".encode(), 0))
            out.append(list(walk(0 if i == size else i, n)))
        return out

    def placement_table(self, app: str, shuffle: int, num_partitions: int,
                        replicas: int) -> tuple[list[str], list[tuple[int, ...]]]:
        """The placement as REGISTER_SHUFFLE carries it: (node ids, per partition a tuple of indices into them)."""
        index = {nid: i for i, nid in enumerate(self.nodes)}
        rows = self.placement(app, shuffle, num_partitions, replicas)
        return list(self.nodes), [tuple(index[nid] for nid in row) for row in rows]

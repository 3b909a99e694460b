"""Controller: what each request means. Sits between the network layer and storage.

It validates requests, keeps shuffle registrations and placement (consistent hashing over the live
nodes), verifies pushed checksums as the bytes arrive, checks map-end counts, answers fetches with
zero-copy views of pool memory, and forwards registrations, deletes and leases to the other live nodes.
It keeps the apps' leases (expire_apps, which the node's janitor calls) and refuses new shuffles while the
node drains.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeAlias, cast

import xxhash

from rpmp import _pool
from rpmp import _wire as wire
from rpmp.auth import CLUSTER, KEY_PREFIX, SEP, app_tenant, display_app, key_tag, qualify_app, qualify_key
from rpmp.protocol import (
    CLIENT_APP_MAX,
    END_MAP_ALL,
    FLAG_FORWARDED,
    MAX_META,
    MAX_PARTITIONS,
    MAX_SEGMENT,
    VERSION,
    ErrorCode,
    Node,
    Op,
    ProtocolError,
)
from rpmp.server import logs
from rpmp.server.auth import IDENTITY, forbidden
from rpmp.server.config import NodeConfig, public_config
from rpmp.server.contract import Busy, FileRange, Reply, Sink
from rpmp.server.leases import Leases
from rpmp.server.membership import Membership
from rpmp.server.peers import PeerPool
from rpmp.server.storage import Record, Run, Shuffle, Storage, StorageError
from rpmp.server.storage.disk import is_spilled

log = logging.getLogger("rpmp.controller")

FETCH_FRAME_BYTES = 16 << 20
VERIFY_INLINE_BYTES = 1 << 20  # replies up to this size are verified on the loop, larger ones on a worker thread
PLACE_INLINE = 10_000  # placement tables of more partitions are computed on a worker thread
STORAGE_ERRORS = {"not_found": ErrorCode.NOT_FOUND, "pool_full": ErrorCode.POOL_FULL,
                  "bad_request": ErrorCode.BAD_REQUEST, "corrupt": ErrorCode.CORRUPT,
                  "quota": ErrorCode.QUOTA_EXCEEDED}
# Pool errors that reach the controller are states a request can run into (a block freed by a racing
# request, a full pool, a size past a block's end), never bugs: each has its protocol code.
POOL_ERRORS = ((_pool.PoolFullError, ErrorCode.POOL_FULL), (_pool.PoolSizeError, ErrorCode.BAD_REQUEST),
               (_pool.BlockNotFoundError, ErrorCode.NOT_FOUND), (_pool.BlockCorruptError, ErrorCode.CORRUPT),
               (_pool.BlockSealedError, ErrorCode.CONFLICT), (_pool.PoolBusyError, ErrorCode.UNAVAILABLE),
               (_pool.PoolError, ErrorCode.UNAVAILABLE))
U64_MAX = (1 << 64) - 1
# What a draining node's refusal of a registration says; a taking node that reads it in a forwarded
# registration's answer places the shuffle again without that node.
DRAINING_REFUSAL = "is draining: it takes no new shuffles"
REGISTER_ROUNDS = 3  # placements tried when forwarded registrations meet draining nodes
# Request latency histograms (rpmp/server/metrics.py exposes them): upper bounds in seconds, Prometheus' `le`.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
# What the controller counts per app, in this order (a list per app: a few increments per request).
APP_COUNTERS = ("push_bytes", "pushes", "fetch_bytes", "fetch_records", "replica_bytes", "replica_pushes",
                "partition_infos", "partition_info_bytes")

OpHandler: TypeAlias = Callable[[int, memoryview], Reply | Awaitable[Reply]]  # (flags, meta): no data part
DataHandler: TypeAlias = Callable[[int, memoryview, int], Sink]  # (flags, meta, data_len): a data part
OnDone: TypeAlias = Callable[[], Reply | Awaitable[Reply]]  # a sink's on_done


class Latency:
    """Counts of observations per LATENCY_BUCKETS bucket (the last: past the largest bound) and their sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds


def _owner() -> bytes | None:
    """Whose ALLOC blocks the request may use: the tenant's tag, None (anyone's) when open or for @cluster."""
    identity = IDENTITY.get()
    return None if identity is None or identity == CLUSTER else key_tag(identity)


def _visible_apps(apps: dict[str, dict[str, Any]], identity: str | None) -> dict[str, dict[str, Any]]:
    """The apps STATS shows: all of them to @cluster and on a node running open, a tenant's own otherwise."""
    if identity is None or identity == CLUSTER:
        return apps
    return {a: v for a, v in apps.items() if app_tenant(a) == identity}


def _storage_error(e: Exception) -> ProtocolError:
    if isinstance(e, StorageError):
        return ProtocolError(STORAGE_ERRORS.get(e.kind, ErrorCode.INTERNAL), str(e))
    code = next(c for cls, c in POOL_ERRORS if isinstance(e, cls))
    return ProtocolError(code, f"pool: {e}")


async def _guarded(pending: Awaitable[Reply]) -> Reply:
    try:
        return await pending
    except (StorageError, _pool.PoolError) as e:
        raise _storage_error(e) from None


def _forward_fields(op: int, meta: bytes, peer: Node) -> dict[str, object]:
    """A failed forward's log fields: the request's app and shuffle, the peer it went to."""
    app, shuffle = logs.subject(op, meta)
    return {"app": app, "shuffle": shuffle, "peer": f"{peer.host}:{peer.port}", "node": peer.node_id}


def _mapped(fn: OnDone, app: str | None = None, shuffle: int | None = None) -> OnDone:
    """Callbacks the network calls later (a sink's on_done, a coroutine) answer storage and pool errors
    with their protocol codes too, not with INTERNAL (handle() does the same for the handlers). `app` and
    `shuffle` name the request in the failure's log line: the network no longer has a data frame's meta then."""

    @functools.wraps(fn)
    def call() -> Reply | Awaitable[Reply]:
        try:
            out = fn()
        except (StorageError, _pool.PoolError) as e:
            raise logs.tag(_storage_error(e), app, shuffle) from None
        except ProtocolError as e:
            raise logs.tag(e, app, shuffle) from None
        return out if isinstance(out, Reply) else _tagged(_guarded(out), app, shuffle)

    return call


async def _tagged(pending: Awaitable[Reply], app: str | None, shuffle: int | None) -> Reply:
    try:
        return await pending
    except ProtocolError as e:
        raise logs.tag(e, app, shuffle) from None


class Controller:
    def __init__(self, storage: Storage, membership: Membership, peers: PeerPool, config: NodeConfig,
                 network_counters: Callable[[], dict[str, int]] = dict,
                 on_drain: Callable[[int], None] = lambda timeout_s: None):
        self.storage = storage
        self.membership = membership
        self.peers = peers  # PeerPool: async requests to other nodes
        self.config = config
        self.started = time.time()
        self.counters = {"pushes": 0, "push_bytes": 0, "duplicates": 0, "fetches": 0, "fetch_bytes": 0,
                         "fetch_records": 0, "fetch_index_visited": 0, "fetch_partition_bytes": 0,
                         "fetch_map_ranges": 0,
                         "checksum_errors": 0, "gets": 0, "puts": 0, "replica_pushes": 0,
                         "replica_errors": 0, "leases": 0, "apps_expired": 0, "replica_bytes": 0,
                         "partition_infos": 0, "partition_info_bytes": 0}
        # For the metrics (rpmp/server/metrics.py): request latencies; APP_COUNTERS per app, and the sums of
        # apps no longer held (retire_apps), so that a node that sees many apps keeps a bounded table.
        self.latency = {"push": Latency(), "fetch": Latency()}
        self.app_counters: dict[str, list[int]] = {}
        self.retired_app_counters = [0] * len(APP_COUNTERS)
        self.network_counters = network_counters  # the network layer's, shown by STATS too
        self.on_drain = on_drain  # DRAIN: the node watches for the moment it holds nothing (or the timeout)
        self.leases = Leases(config.app_ttl, self._held_apps())  # apps found at open: renewed now
        self._handlers: dict[int, OpHandler] = {
            Op.HELLO: self._hello, Op.PING: self._ping, Op.STATS: self._stats, Op.MEMBERS: self._members,
            Op.HEARTBEAT: self._heartbeat, Op.DRAIN: self._drain, Op.LEASE: self._lease,
            Op.REGISTER_SHUFFLE: self._register, Op.MAP_END: self._map_end,
            Op.FETCH: self._fetch, Op.PARTITION_INFO: self._partition_info, Op.DELETE_SHUFFLE: self._delete_shuffle,
            Op.DELETE_APP: self._delete_app, Op.GET: self._get, Op.DELETE: self._delete, Op.ALLOC: self._alloc,
            Op.READ: self._read, Op.FREE: self._free,
        }
        self._data_handlers: dict[int, DataHandler] = {Op.PUSH: self._push, Op.PUT: self._put, Op.WRITE: self._write}

    # ---- entry points called by the network layer ------------------------------------------------
    def handle(self, op: int, flags: int, meta: memoryview) -> Reply | Awaitable[Reply]:
        h = self._handlers.get(op)
        if h is None:
            raise ProtocolError(ErrorCode.UNKNOWN_OPCODE, f"unknown opcode {op:#04x}")
        refused = forbidden(IDENTITY.get(), op, flags)
        if refused is not None:
            raise refused
        try:
            out = h(flags, meta)
        except (StorageError, _pool.PoolError) as e:
            raise _storage_error(e) from None
        return out if isinstance(out, Reply) else _guarded(out)

    def takes_data(self, op: int) -> bool:
        return op in self._data_handlers

    def begin_data(self, op: int, flags: int, meta: memoryview, data_len: int) -> Sink:
        h = self._data_handlers.get(op)
        if h is None:
            if op in self._handlers:
                raise ProtocolError(ErrorCode.BAD_REQUEST, f"{Op(op).name} takes no data part")
            raise ProtocolError(ErrorCode.UNKNOWN_OPCODE, f"unknown opcode {op:#04x}")
        refused = forbidden(IDENTITY.get(), op, flags)
        if refused is not None:
            raise refused
        try:
            return h(flags, meta, data_len)
        except StorageError as e:
            if e.kind == "busy":  # the receive bound is taken: the network holds the frame until there is room
                raise Busy(str(e), e.wait) from None
            raise _storage_error(e) from None
        except _pool.PoolError as e:
            raise _storage_error(e) from None

    def _named(self, flags: int, app: str, what: str) -> str:
        """The stored name of the app a request names: a tenant's is qualified with the tenant; a client's (not
        FORWARDED) name is at most CLIENT_APP_MAX bytes; only @cluster (peers, the operator) may name a qualified
        app, so that no name, not even one given to a node running open, can pass for a tenant's."""
        identity = IDENTITY.get()
        if identity == CLUSTER:
            return app
        if SEP in app:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{what}.app: application name {app!r} contains U+001F "
                                f"(it separates tenant and app on the node)")
        if flags & FLAG_FORWARDED:  # from a peer of a node running open (a tenant's FORWARDED is FORBIDDEN)
            return app
        n = len(app.encode("utf-8"))
        if n > CLIENT_APP_MAX:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{what}.app: application name is {n} bytes, the limit is "
                                f"{CLIENT_APP_MAX}")
        return qualify_app(identity, app)

    @staticmethod
    def _key(meta: memoryview, what: str) -> bytes:
        """The stored key of a key-value request: a tenant's key is prefixed with its tag; no client's key may
        begin with that prefix's byte (0x1F), so that no key, not even one written on a node running open, can
        pass for a tenant's."""
        key = wire.decode_key(meta)
        identity = IDENTITY.get()
        if identity == CLUSTER:
            return key
        if key[:1] == KEY_PREFIX:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"{what}.key: a key may not begin with byte 0x1f (the node's "
                                f"tenant prefix)")
        return qualify_key(identity, key)

    # ---- control --------------------------------------------------------------------------------
    def _hello(self, flags: int, meta: memoryview) -> Reply:
        version, _client = wire.decode_hello(meta)
        if version != VERSION:
            raise ProtocolError(ErrorCode.BAD_VERSION, f"client speaks version {version}, node speaks {VERSION}")
        return Reply(wire.encode_hello_resp(VERSION, self.config.node_id, self.config.max_data))

    def _ping(self, flags: int, meta: memoryview) -> Reply:
        wire.decode_empty(meta)
        return Reply()

    def _stats(self, flags: int, meta: memoryview) -> Reply:
        wire.decode_empty(meta)
        st = self.storage.stats()
        st.update(node=self.config.node_id, state=self.membership.me.state.name, app_ttl=self.leases.ttl,
                  uptime_s=round(time.time() - self.started, 1),
                  epoch=self.membership.epoch, live_nodes=[n.node_id for n in self.membership.live()],
                  counters={**self.counters, **self.network_counters()}, config=public_config(self.config))
        apps = _visible_apps(cast(dict[str, dict[str, Any]], st["apps"]), IDENTITY.get())
        self._shuffle_stats(apps)
        st["apps"] = {display_app(a): v for a, v in apps.items()}
        return Reply(data=[json.dumps(st).encode()])

    def _shuffle_stats(self, shown: object) -> None:
        """STATS' per-shuffle figures (`rpmp admin shuffles`), under each app shown: apps[app]["by_shuffle"][sid]."""
        apps = cast(dict[str, dict[str, Any]], shown)
        blocks = self.storage.blocks
        for (app, sid), sh in self.storage.shuffles.shuffles.items():
            entry = apps.get(app)
            if entry is None:  # not shown to this asker
                continue
            parts = sh.partitions.values()
            entry.setdefault("by_shuffle", {})[str(sid)] = {
                "partitions": sh.num_partitions, "replicas": sh.replicas,
                "partitions_held": len(sh.partitions),
                "bytes": sum(p.bytes for p in parts), "segments": sum(len(p.records) for p in parts),
                "spilled_bytes": sum(blocks.used(b) for p in parts for b in p.blocks if is_spilled(b)),
            }

    def _members(self, flags: int, meta: memoryview) -> Reply:
        wire.decode_empty(meta)
        return Reply(wire.encode_members(self.membership.epoch, self.membership.nodes()))

    def _heartbeat(self, flags: int, meta: memoryview) -> Reply:
        node, known_epoch = wire.decode_heartbeat(meta)
        self.membership.on_heartbeat(node, known_epoch)
        return Reply(wire.encode_members(self.membership.epoch, self.membership.nodes()))

    # ---- shuffles -------------------------------------------------------------------------------
    def _shuffle(self, app: str, sid: int) -> Shuffle:
        sh = self.storage.shuffles.get(app, sid)
        if sh is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"shuffle {sid} of app {display_app(app)!r} is not registered "
                                f"on this node")
        return sh

    def _partition(self, sh: Shuffle, p: int) -> None:
        if p >= sh.num_partitions:
            raise ProtocolError(ErrorCode.BAD_REQUEST,
                                f"partition {p} is out of range: shuffle {sh.shuffle} has {sh.num_partitions}")

    def _register(self, flags: int, meta: memoryview) -> Reply | Awaitable[Reply]:
        forwarded = bool(flags & FLAG_FORWARDED)
        if forwarded:
            (app, sid, nparts, replicas), placement = wire.decode_register_forwarded(meta)
        else:
            app, sid, nparts, replicas = wire.decode_register(meta)
            app = self._named(flags, app, "REGISTER_SHUFFLE")
            placement = None
        if not 1 <= nparts <= MAX_PARTITIONS:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"num_partitions {nparts} is not in 1..{MAX_PARTITIONS}")
        if not 1 <= replicas <= 8:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"replicas {replicas} is not in 1..8")
        existing = self._registered(app, sid, nparts)
        if existing is not None:
            self.leases.renew(app)
            return existing
        if self.membership.draining:  # a client (or the taking node) goes to another node
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"node {self.config.node_id} {DRAINING_REFUSAL}; register "
                                f"shuffle {sid} of {display_app(app)!r} through another node")
        if placement is not None:
            self._check_forwarded_placement(app, sid, nparts, placement)
            return self._store_registration(app, sid, nparts, replicas, placement, forwarded)
        table, nodes = self._placement_job(app, sid, nparts, replicas)
        if nparts <= PLACE_INLINE:
            return self._store_registration(app, sid, nparts, replicas, table(), forwarded, nodes)

        async def run() -> Reply:  # a large table is computed on a worker thread: the loop serves others
            computed = await asyncio.get_running_loop().run_in_executor(None, table)
            existing = self._registered(app, sid, nparts)  # registered meanwhile by a concurrent request
            if existing is not None:
                return existing
            stored = self._store_registration(app, sid, nparts, replicas, computed, forwarded, nodes)
            return stored if isinstance(stored, Reply) else await stored

        return run()

    def _registered(self, app: str, sid: int, nparts: int) -> Reply | None:
        sh = self.storage.shuffles.get(app, sid)
        if sh is None:
            return None
        if sh.num_partitions != nparts:
            raise ProtocolError(ErrorCode.CONFLICT, f"shuffle {sid} of app {display_app(app)!r} is registered with "
                                f"{sh.num_partitions} partitions, not {nparts}")
        return Reply(self.storage.shuffles.placement(sh))

    def _store_registration(self, app: str, sid: int, nparts: int, replicas: int, placement: bytes,
                            forwarded: bool, nodes: list[Node] | None = None) -> Reply | Awaitable[Reply]:
        self.storage.shuffles.register(app, sid, nparts, replicas, placement)
        self.leases.hold(app)
        log.info("registered shuffle %d of %s: %d partitions, %d replicas%s", sid, display_app(app), nparts, replicas,
                 " (forwarded)" if forwarded else "")
        if forwarded:
            return Reply(placement)
        return self._forward_registration(app, sid, nparts, replicas, placement, nodes or [])

    def _forward_registration(self, app: str, sid: int, nparts: int, replicas: int, placement: bytes,
                              nodes: list[Node]) -> Awaitable[Reply]:
        """Register the shuffle on the placement's other nodes. One that answers it is draining (membership
        had not told this node yet) is left out: the registration is undone where it was taken and placed
        again without it (REGISTER_ROUNDS times at most), so the driver's registration does not fail."""
        me = self.config.node_id

        async def run() -> Reply:
            table, targets = placement, [n for n in nodes if n.node_id != me]
            for _ in range(REGISTER_ROUNDS):
                fwd = wire.encode_register_forwarded(app, sid, nparts, replicas, table)
                took, failed = await self._forward_to(targets, Op.REGISTER_SHUFFLE, fwd)
                draining = [nid for nid, e in failed.items()
                            if isinstance(e, ProtocolError) and DRAINING_REFUSAL in e.message]
                if not draining:
                    if failed:  # pushes to those nodes would be refused: the driver must retry the registration
                        raise ProtocolError(ErrorCode.UNAVAILABLE, f"nodes {', '.join(failed)} did not take the "
                                            f"registration; retry")
                    return Reply(table)
                for nid in draining:
                    self.membership.mark_draining(nid)
                log.info("shuffle %d of %s: nodes %s are draining; placing it again without them", sid,
                         display_app(app), ", ".join(draining))
                self.storage.shuffles.delete(app, sid)
                if took:
                    await self._forward_to(took, Op.DELETE_SHUFFLE, wire.encode_delete_shuffle(app, sid))
                job, fresh = self._placement_job(app, sid, nparts, replicas)
                table = job() if nparts <= PLACE_INLINE else \
                    await asyncio.get_running_loop().run_in_executor(None, job)
                targets = [n for n in fresh if n.node_id != me]
                self.storage.shuffles.register(app, sid, nparts, replicas, table)
                self.leases.hold(app)
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"shuffle {sid} of {display_app(app)!r}: nodes kept refusing "
                                f"it as draining over {REGISTER_ROUNDS} placements; retry")

        return run()

    def _placement_job(self, app: str, sid: int, nparts: int,
                       replicas: int) -> tuple[Callable[[], bytes], list[Node]]:
        """Check what the placement table costs, then return the function that computes it (it only reads
        the current ring, so it may run on a worker thread) and the nodes it places on: the placeable ones
        (alive, not draining)."""
        live = self.membership.placeable()
        # What the answer costs is known before it is computed: refuse a table that cannot fit one frame
        # (2**24 partitions would take seconds and gigabytes to place, only to be refused afterwards).
        width = min(len(live), replicas + 1)
        size = 8 + 4 + sum(2 + len(n.node_id.encode()) + 2 + len(n.host.encode()) + 3 for n in live) + 1 \
            + 2 * width * nparts
        if size > MAX_META:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"a placement of {nparts} partitions x {width} nodes "
                                f"needs {size} bytes of meta, more than {MAX_META}: use fewer partitions")
        ring, epoch = self.membership.ring(), self.membership.epoch
        index = {n.node_id: i for i, n in enumerate(live)}

        def table() -> bytes:
            prefs = [[index[nid] for nid in row] for row in ring.placement(app, sid, nparts, replicas)]
            return wire.encode_register_resp(epoch, live, prefs)

        return table, live

    def _check_forwarded_placement(self, app: str, sid: int, nparts: int, placement: bytes) -> None:
        """A forwarded registration may only name nodes this node knows at those addresses, itself included:
        the placement decides where this node pushes replicas, so a stranger must not be able to set it."""
        _, nodes, prefs = wire.decode_register_resp(placement, nparts)
        me = self.config.node_id
        if not any(n.node_id == me for n in nodes):
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"forwarded placement of shuffle {sid} of {app!r} does not "
                                f"include this node ({me})")
        for n in nodes:
            if not self._is_member(n):
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"forwarded placement of shuffle {sid} of {app!r} names "
                                    f"{n.node_id} at {n.host}:{n.port}, which this node does not know; retry")

    def _is_member(self, n: Node) -> bool:
        known = self.membership.node(n.node_id)
        return known is not None and (known.host, known.port) == (n.host, n.port)

    async def _forward_to(self, peers: list[Node], op: int,
                          meta: bytes) -> tuple[list[Node], dict[str, BaseException]]:
        """Send a FORWARDED request to `peers`: (those that took it, node id -> error of those that did not)."""
        results = await asyncio.gather(*(self.peers.request(n.host, n.port, op, meta, FLAG_FORWARDED)
                                         for n in peers), return_exceptions=True)
        took, failed = [], {}
        for n, r in zip(peers, results, strict=True):
            if isinstance(r, BaseException):
                if not (isinstance(r, ProtocolError) and DRAINING_REFUSAL in r.message):
                    log.warning("forwarding %s to %s failed: %s", Op(op).name, n.node_id, r,
                                extra=_forward_fields(op, meta, n))
                failed[n.node_id] = r
            else:
                took.append(n)
        return took, failed

    async def _forward(self, op: int, meta: bytes) -> tuple[list[tuple[bytes, bytes]], list[str]]:
        """Send a FORWARDED request to every other live node: (their replies, ids of those that failed)."""
        me = self.config.node_id
        peers = [n for n in self.membership.live() if n.node_id != me]
        results = await asyncio.gather(*(self.peers.request(n.host, n.port, op, meta, FLAG_FORWARDED)
                                         for n in peers), return_exceptions=True)
        failed = []
        for n, r in zip(peers, results, strict=True):
            if isinstance(r, BaseException):
                log.warning("forwarding %s to %s failed: %s", Op(op).name, n.node_id, r,
                            extra=_forward_fields(op, meta, n))
                failed.append(n.node_id)
        return [r for r in results if not isinstance(r, BaseException)], failed

    def _push(self, flags: int, meta: memoryview, data_len: int) -> Sink:
        began = time.perf_counter()
        app, sid, p, map_index, attempt, seq, checksum = wire.decode_push(meta)
        app = self._named(flags, app, "PUSH")
        forwarded = bool(flags & FLAG_FORWARDED)
        if data_len > MAX_SEGMENT:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"segment of {data_len} bytes exceeds {MAX_SEGMENT}")
        sh = self._shuffle(app, sid)
        self._partition(sh, p)
        res = self.storage.shuffles.reserve(sh, p, map_index, attempt, seq, data_len, checksum)
        hasher = xxhash.xxh3_64() if self.config.verify_push else None

        def chunk(view: memoryview) -> None:
            if hasher is not None:
                hasher.update(view)

        def done() -> Reply | Awaitable[Reply]:
            if hasher is not None and hasher.intdigest() != checksum:
                self.storage.shuffles.abort(res)
                self.counters["checksum_errors"] += 1
                raise ProtocolError(ErrorCode.CHECKSUM_MISMATCH, f"segment ({map_index}, {attempt}, {seq}) of "
                                    f"partition {p}: payload XXH3 {hasher.intdigest():#018x} != {checksum:#018x}")
            stored = self.storage.shuffles.commit(res, checksum)
            self.counters["pushes"] += 1
            self.counters["push_bytes"] += data_len
            per_app = self._app(app)
            per_app[0] += data_len
            per_app[1] += 1
            if not stored:
                self.counters["duplicates"] += 1
            if sh.replicas > 1 and not forwarded:
                return self._replicate(sh, p, (map_index, attempt, seq), checksum, began)
            self.latency["push"].observe(time.perf_counter() - began)
            return Reply()

        return Sink(res.view, data_len, on_chunk=chunk, on_done=_mapped(done, app, sid),
                    on_abort=lambda: self.storage.shuffles.abort(res))

    def _replicate(self, sh: Shuffle, p: int, ident: tuple[int, int, int], checksum: int,
                   began: float) -> Awaitable[Reply]:
        """Forward a stored segment to the partition's replicas; acknowledge once all have persisted it. Called by a
        PUSH's on_done, whose wrapper (_mapped) names app and shuffle on whatever this raises.

        Also for a duplicate: a writer retrying after a failed replication must get its copies made. The
        payload is pinned here, before anything can run in between: a delete racing the push must not free
        (and let the allocator reuse) the block the replicas are sent from.
        """
        view = self.storage.shuffles.payload(sh, p, ident)
        if view is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"shuffle {sh.shuffle} of app {display_app(sh.app)!r} was deleted "
                                f"while segment {ident} was pushed")
        me = self.config.node_id
        targets = [n for n in self.storage.shuffles.replica_nodes(sh, p) if n.node_id != me]
        meta = wire.encode_push(sh.app, sh.shuffle, p, *ident, checksum)
        nbytes = view.nbytes

        async def run() -> Reply:
            try:
                strangers = [n for n in targets if not self._is_member(n)]
                if strangers:
                    raise ProtocolError(ErrorCode.UNAVAILABLE, "segment stored here but replicas "
                                        f"{', '.join(n.node_id for n in strangers)} are not members of this cluster")
                results = await asyncio.gather(*(self.peers.request(n.host, n.port, Op.PUSH, meta, FLAG_FORWARDED,
                                                                    view) for n in targets), return_exceptions=True)
            finally:
                view.release()
            failed = [f"{n.node_id} ({r})" for n, r in zip(targets, results, strict=True)
                      if isinstance(r, BaseException)]
            if failed:
                self.counters["replica_errors"] += 1
                raise ProtocolError(ErrorCode.UNAVAILABLE,
                                    f"segment stored here but not on replicas {', '.join(failed)}")
            self.counters["replica_pushes"] += len(targets)
            self.counters["replica_bytes"] += nbytes * len(targets)
            per_app = self._app(sh.app)
            per_app[4] += nbytes * len(targets)
            per_app[5] += len(targets)
            self.latency["push"].observe(time.perf_counter() - began)
            return Reply()

        return run()

    def _map_end(self, flags: int, meta: memoryview) -> Reply:
        app, sid, map_index, attempt, counts = wire.decode_map_end(meta)
        app = self._named(flags, app, "MAP_END")
        sh = self._shuffle(app, sid)
        self.leases.renew(app)
        wrong = []
        for p, segments, nbytes in counts:
            self._partition(sh, p)
            have = self.storage.shuffles.map_counts(sh, p, map_index, attempt)
            if have != (segments, nbytes):
                wrong.append(f"partition {p}: node has {have[0]} segments/{have[1]} bytes, map says "
                             f"{segments}/{nbytes}")
        if wrong:
            raise ProtocolError(ErrorCode.INCOMPLETE, f"map {map_index} attempt {attempt}: " + "; ".join(wrong[:5]))
        return Reply()

    def _fetch(self, flags: int, meta: memoryview) -> Reply | Awaitable[Reply]:
        began = time.perf_counter()
        app, sid, p, start_map, end_map, attempts = wire.decode_fetch(meta)
        app = self._named(flags, app, "FETCH")
        sh = self._shuffle(app, sid)
        self.leases.renew(app)
        self._partition(sh, p)
        store = self.storage.shuffles
        runs = store.select(sh, p, start_map, end_map, attempts)
        # What the read cost against what it serves: index entries looked at, payload bytes in the partition.
        self.counters["fetch_index_visited"] += store.last_visited
        self.counters["fetch_partition_bytes"] += store.last_partition_bytes
        if start_map or end_map != END_MAP_ALL:  # AQE's reads: a skew split's map range, the local reader's map
            self.counters["fetch_map_ranges"] += 1
        total = sum(r.view.nbytes for r in runs)
        if not self.config.verify_fetch:
            return self._fetch_reply(runs, total, app, began)
        if total <= VERIFY_INLINE_BYTES and not any(r.range.disk for r in runs):  # spill files: off the loop
            return self._checked_fetch(sh, p, runs, total, self.storage.shuffles.find_corrupt(runs), began)

        async def verify() -> Reply:  # a large reply is hashed on a worker thread: the loop serves others
            try:
                bad = await asyncio.get_running_loop().run_in_executor(None, self.storage.shuffles.find_corrupt, runs)
            except BaseException:
                for r in runs:
                    r.view.release()
                raise
            return self._checked_fetch(sh, p, runs, total, bad, began)

        return verify()

    def _checked_fetch(self, sh: Shuffle, p: int, runs: list[Run], total: int, bad: list[Record],
                       began: float) -> Reply:
        if bad:
            for r in runs:
                r.view.release()
            raise _storage_error(self.storage.shuffles.quarantine(sh, p, bad))
        return self._fetch_reply(runs, total, sh.app, began)

    def _fetch_reply(self, runs: list[Run], total: int, app: str, began: float) -> Reply:
        frames: list[tuple[bytes, list[FileRange]]] = []
        cur: list[FileRange] = []
        cur_bytes = cur_records = records = 0
        for run in runs:
            if cur and cur_bytes + run.view.nbytes > FETCH_FRAME_BYTES:
                frames.append((wire.encode_fetch_resp(cur_records), cur))
                cur, cur_bytes, cur_records = [], 0, 0
            cur.append(run.range)
            cur_bytes += run.view.nbytes
            cur_records += len(run.records)
            records += len(run.records)
        frames.append((wire.encode_fetch_resp(cur_records), cur))
        self.counters["fetches"] += 1
        self.counters["fetch_bytes"] += total
        self.counters["fetch_records"] += records
        per_app = self._app(app)
        per_app[2] += total
        per_app[3] += records
        self.latency["fetch"].observe(time.perf_counter() - began)
        return Reply(frames=frames)

    def _partition_info(self, flags: int, meta: memoryview) -> Reply:
        app, sid, p = wire.decode_partition_info(meta)
        app = self._named(flags, app, "PARTITION_INFO")
        sh = self._shuffle(app, sid)
        self.leases.renew(app)
        self._partition(sh, p)
        # Each block names its file: 0 the pool file, k > 0 the k-th of `files` (spill files; their blocks are sealed).
        blocks, records, nbytes, files = self.storage.shuffles.partition_blocks(sh, p)
        self.counters["partition_infos"] += 1
        self.counters["partition_info_bytes"] += nbytes
        per_app = self._app(app)
        per_app[6] += 1
        per_app[7] += nbytes
        return Reply(wire.encode_partition_info_resp(self.storage.path, records, nbytes, blocks, files))

    def _delete_shuffle(self, flags: int, meta: memoryview) -> Reply | Awaitable[Reply]:
        app, sid = wire.decode_delete_shuffle(meta)
        app = self._named(flags, app, "DELETE_SHUFFLE")
        freed = self.storage.shuffles.delete(app, sid)
        if freed:
            log.info("deleted shuffle %d of %s: %d blocks", sid, display_app(app), freed)
        if flags & FLAG_FORWARDED:
            return Reply(wire.encode_u64(freed))
        return self._forward_sum(Op.DELETE_SHUFFLE, wire.encode_delete_shuffle(app, sid), freed)  # qualified

    def _delete_app(self, flags: int, meta: memoryview) -> Reply | Awaitable[Reply]:
        app = wire.decode_delete_app(meta)
        app = self._named(flags, app, "DELETE_APP")
        freed = self.storage.shuffles.delete_app(app)
        if freed:
            log.info("deleted app %s: %d blocks", display_app(app), freed)
        if flags & FLAG_FORWARDED:
            return Reply(wire.encode_u64(freed))
        return self._forward_sum(Op.DELETE_APP, wire.encode_delete_app(app), freed)  # qualified

    # ---- leases and drain ------------------------------------------------------------------------
    def _lease(self, flags: int, meta: memoryview) -> Reply | Awaitable[Reply]:
        """LEASE: renew the app here and (unless forwarded) on every other live node; answer this node's TTL."""
        app = wire.decode_lease(meta)
        app = self._named(flags, app, "LEASE")
        self.leases.renew(app)
        self.counters["leases"] += 1
        reply = Reply(wire.encode_lease_resp(self.leases.ttl_ms))
        if flags & FLAG_FORWARDED:
            return reply
        fwd = wire.encode_lease(app)  # the qualified name (and the network reuses `meta` once this returns)

        async def run() -> Reply:
            await self._forward(Op.LEASE, fwd)  # failures are logged; a node missed renews next time
            return reply

        return run()

    def _app(self, app: str) -> list[int]:
        counts = self.app_counters.get(app)
        if counts is None:
            counts = self.app_counters[app] = [0] * len(APP_COUNTERS)
        return counts

    def retire_apps(self, held: Iterable[str]) -> None:
        """Fold the counts of apps not in `held` (deleted, expired) into the retired sums."""
        keep = set(held)
        for app in [a for a in self.app_counters if a not in keep]:
            self.retired_app_counters = [x + y for x, y in zip(self.retired_app_counters, self.app_counters.pop(app),
                                                               strict=True)]

    def _held_apps(self) -> set[str]:
        store = self.storage.shuffles
        return {app for app, _ in store.shuffles} | {app for app, _ in store.orphans}

    def expire_apps(self) -> list[str]:
        """Delete (as DELETE_APP does, on this node only) the apps nobody renewed for the TTL; the node's
        janitor calls this every Leases.interval seconds."""
        store = self.storage.shuffles
        gone = self.leases.expired(self._held_apps())
        for app in gone:
            shuffles = [sh for (a, _), sh in store.shuffles.items() if a == app]
            nbytes = sum(p.bytes for sh in shuffles for p in sh.partitions.values())
            try:
                blocks = store.delete_app(app)
            except (StorageError, _pool.PoolError) as e:
                log.warning("app %s expired but could not be deleted: %s", display_app(app), e)
                continue
            self.leases.forget(app)
            self.counters["apps_expired"] += 1
            log.warning("app %s expired: nobody renewed its lease for %.0f s (--app-ttl); deleted %d shuffles %s, "
                        "%d bytes, %d blocks", display_app(app), self.leases.ttl, len(shuffles),
                        sorted(sh.shuffle for sh in shuffles)[:20], nbytes, blocks)
        return gone

    def _drain(self, flags: int, meta: memoryview) -> Reply:
        """DRAIN: take no new shuffles from now on (membership tells the others), serve what is held, and
        stop once nothing is held or `timeout_s` passed (0: no limit). A second DRAIN sets a new timeout."""
        timeout_s = wire.decode_drain(meta)
        self.membership.start_draining()
        log.info("draining: node %s takes no new shuffles and stops once it holds none%s", self.config.node_id,
                 f" or after {timeout_s} s" if timeout_s else "")
        self.on_drain(timeout_s)
        return Reply()

    def _forward_sum(self, op: int, meta: bytes, local: int) -> Awaitable[Reply]:
        async def run() -> Reply:
            results, _ = await self._forward(op, meta)  # failures are logged; a dead node's data waits
            total = local
            for m, _ in results:
                try:
                    total += wire.decode_u64(m)
                except ProtocolError as e:
                    log.warning("a peer's %s reply is malformed: %s", Op(op).name, e)
            return Reply(wire.encode_u64(min(total, U64_MAX)))  # a peer's absurd count must not overflow the reply
        return run()

    # ---- key-value and address API --------------------------------------------------------------
    def _put(self, flags: int, meta: memoryview, data_len: int) -> Sink:
        key = self._key(meta, "PUT")
        res = self.storage.values.reserve(key, data_len)

        @_mapped
        def done() -> Reply:
            self.storage.values.commit(res)
            self.counters["puts"] += 1
            return Reply()

        return Sink(res.view, data_len, on_done=done, on_abort=lambda: self.storage.values.abort(res))

    def _get(self, flags: int, meta: memoryview) -> Reply | Awaitable[Reply]:
        key = self._key(meta, "GET")
        block, view, checked = self.storage.values.get(key, VERIFY_INLINE_BYTES)
        if checked:
            self.counters["gets"] += 1
            return Reply(data=[view])

        async def verify() -> Reply:
            try:
                ok = await asyncio.get_running_loop().run_in_executor(None, self.storage.values.block_ok, block)
            except BaseException:
                view.release()
                raise
            return self._checked_value(key, block, view, ok)

        return verify()

    def _checked_value(self, key: bytes, block: int, view: memoryview, ok: bool) -> Reply:
        if not ok:
            view.release()
            raise _storage_error(self.storage.values.quarantine(key, block))
        self.counters["gets"] += 1
        return Reply(data=[view])

    def _delete(self, flags: int, meta: memoryview) -> Reply:
        self.storage.values.delete(self._key(meta, "DELETE"))
        return Reply()

    def _alloc(self, flags: int, meta: memoryview) -> Reply:
        size = wire.decode_alloc(meta)
        return Reply(wire.encode_u64(self.storage.addresses.alloc(size, _owner() or b"")))

    def _write(self, flags: int, meta: memoryview, data_len: int) -> Sink:
        address, offset = wire.decode_write(meta)
        res = self.storage.addresses.reserve(address, offset, data_len, _owner())

        @_mapped
        def done() -> Reply:
            self.storage.addresses.commit(res)
            return Reply()

        return Sink(res.view, data_len, on_done=done, on_abort=lambda: self.storage.addresses.abort(res))

    def _read(self, flags: int, meta: memoryview) -> Reply:
        address, offset, length = wire.decode_read(meta)
        block, view = self.storage.addresses.read(address, offset, length, _owner())
        if not self.storage.addresses.block_ok(block):  # at most MAX_ADDRESS_BLOCK bytes: a few ms
            view.release()
            raise _storage_error(self.storage.addresses.quarantine(block))
        return Reply(data=[view])

    def _free(self, flags: int, meta: memoryview) -> Reply:
        self.storage.addresses.free(wire.decode_free(meta), _owner())
        return Reply()


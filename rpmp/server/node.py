"""An RPMP node: storage + membership + controller + network, on one event loop (uvloop when installed)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rpmp import _wire as wire
from rpmp import tls
from rpmp._pool import PoolError, check_pool
from rpmp.auth import AuthFileError, load_secret_file
from rpmp.protocol import VERSION, Node, NodeState, Op
from rpmp.server import logs
from rpmp.server.auth import Authenticator
from rpmp.server.config import NodeConfig, parse_hostport, prepare_spill_dirs
from rpmp.server.controller import Controller
from rpmp.server.membership import Membership
from rpmp.server.metrics import MetricsServer
from rpmp.server.network import NetworkServer
from rpmp.server.peers import PeerPool
from rpmp.server.storage import Storage
from rpmp.server.storage.spiller import Spiller

log = logging.getLogger("rpmp.node")


class StartError(Exception):
    """The node cannot start (port in use, pool unusable, ...): one line saying why; nothing was created."""


class RpmpNode:
    def __init__(self, config: NodeConfig):
        self.config = config
        self.storage: Storage | None = None
        self.network: NetworkServer | None = None
        self.membership: Membership | None = None
        self.peers = PeerPool()
        self.port = config.port
        self._stopped = asyncio.Event()
        self._janitor: asyncio.Task[None] | None = None
        self._spiller: asyncio.Task[None] | None = None
        self._expirer: asyncio.Task[None] | None = None  # deletes apps whose lease ran out (--app-ttl)
        self._drainer: asyncio.Task[None] | None = None  # after DRAIN: stops the node once it holds nothing
        self._drain_deadline: float | None = None
        self.controller: Controller | None = None
        self.auth: Authenticator | None = None  # --auth-file: connections authenticate (SIGHUP re-reads the file)
        self.metrics: MetricsServer | None = None  # --metrics-port: Prometheus /metrics, on a thread of its own
        self.orphaned = False  # stopped because the parent's pipe (serve_forever's parent_fd) reached EOF
        self.stop_reason = "stopped"  # why it stops: a signal, the parent gone, drained (the shutdown line says)
        self.started_at = 0.0

    async def start(self) -> None:
        """Build the node in one pass: check everything that can be checked (settings, the pool file or its
        folder and medium), bind (a port in use fails before anything is created), create the spill directories
        and open or create storage, then membership, the controller and the network over them. StartError (one
        line) for what stops it; nothing is left behind then."""
        cfg = self.config
        self.started_at = time.monotonic()
        try:
            cfg.check()
            pool_action = check_pool(cfg.pool, cfg.pool_size)
            server_tls = tls.server_context(cfg.tls_cert, cfg.tls_key, cfg.tls_ca) if cfg.tls_cert else None
            if cfg.tls_cert:  # peers are reached with TLS too
                self.peers.tls = tls.peer_context(cfg.tls_cert, cfg.tls_key, cfg.tls_ca)
            if cfg.cluster_secret_file:  # peers are reached as @cluster
                self.peers.cluster_secret = load_secret_file(cfg.cluster_secret_file)
            if cfg.auth_file:
                self.auth = Authenticator(cfg.auth_file, self.peers.cluster_secret)
        except (ValueError, PoolError, AuthFileError) as e:
            raise StartError(str(e)) from None
        try:
            socket.getaddrinfo(cfg.host, cfg.port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise StartError(f"cannot listen on {cfg.host}:{cfg.port}: host {cfg.host!r} does not resolve "
                             f"({e.strerror})") from None
        try:
            sock = socket.create_server((cfg.host, cfg.port), backlog=1024)  # SO_REUSEADDR, as a restart needs
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else str(e)
            if e.errno == errno.EADDRINUSE:
                why += ": another process listens there (another RPMP node?); pick another --port"
            elif e.errno == errno.EADDRNOTAVAIL:
                why += f": {cfg.host} is not an address of this host"
            raise StartError(f"cannot listen on {cfg.host}:{cfg.port}: {why}") from None
        self.port = sock.getsockname()[1]
        if cfg.port == 0 or cfg.node_id == f"{cfg.host}:{cfg.port}":
            cfg.node_id = f"{cfg.host}:{self.port}"
        cfg.port = self.port
        if cfg.metrics_port:  # bound before the pool is touched; process metrics only until the node is built
            self.metrics = MetricsServer(self, cfg.host, cfg.metrics_port)
            try:
                self.metrics.start()
            except OSError as e:  # its strerror says which port and what to do
                sock.close()
                raise StartError(e.strerror or str(e)) from None
        made: list[str] = []
        try:
            made = prepare_spill_dirs(cfg.spill_dirs)
            with _creating(cfg.pool, cfg.pool_size, pool_action):
                self.storage = Storage(cfg.pool, cfg.pool_size, verify=cfg.verify_on_open, name=cfg.node_id,
                                       on_room=self._room_freed, spill_dirs=cfg.spill_dirs,
                                       spill_size=cfg.spill_size, app_quota=cfg.app_quota)
        except BaseException as e:
            sock.close()
            if self.metrics is not None:
                self.metrics.stop()
            for d in made:  # created above for this node: gone again, unless something is in them now
                try:
                    os.rmdir(d)
                except OSError:
                    pass
            if isinstance(e, (PoolError, ValueError)):
                raise StartError(str(e) + _half_created_hint(cfg.pool)) from None
            raise
        pool_bytes = os.path.getsize(cfg.pool)
        if pool_action != "open" and cfg.pool_mode != 0o600:  # created 0600: who else may map it is the operator's
            os.chmod(cfg.pool, cfg.pool_mode)
        if self.storage.disk is not None:
            self.storage.disk.file_mode = cfg.pool_mode
        if pool_action == "open" and pool_bytes != cfg.pool_size:
            log.info("pool %s exists with %d MiB, not the %d MiB of pool_size (which sizes a new pool only)",
                     cfg.pool, pool_bytes >> 20, cfg.pool_size >> 20)
        rec = self.storage.pool.recovery
        if any(rec.values()):
            log.info("pool %s recovered: %s", cfg.pool, rec)
        me = Node(cfg.node_id, cfg.host, self.port, NodeState.ALIVE)
        seeds = [parse_hostport(s) for s in cfg.seeds]
        self.membership = Membership(me, seeds, cfg.heartbeat_interval, cfg.dead_after, self._heartbeat,
                                     probe=self._probe)
        controller = self.controller = Controller(self.storage, self.membership, self.peers, cfg,
                                                  network_counters=self._network_counters, on_drain=self._drain)
        self.network = NetworkServer(controller, cfg.max_data, cfg.max_connections,
                                     sendfile=cfg.sendfile, send_timeout=cfg.send_timeout,
                                     staging_memory=cfg.staging_memory, frame_timeout=cfg.frame_timeout,
                                     idle_timeout=cfg.idle_timeout, tls=server_tls, auth=self.auth)
        await self.network.start(sock)
        self.membership.start()
        if self.auth is None:
            log.warning("node %s runs open: no --auth-file, so every client may read and delete every app's data",
                        cfg.node_id)
        else:
            log.info("authentication on: %d tenants from %s%s", len(self.auth.tenants), cfg.auth_file,
                     "" if self.auth.cluster_secret else " (no cluster secret: no node or operator tool can "
                     "authenticate as @cluster)")
        self._janitor = asyncio.ensure_future(self._retry_frees(self.storage))
        if cfg.app_ttl > 0:
            self._expirer = asyncio.ensure_future(self._expire_apps(controller))
        disk = self.storage.disk
        if disk is not None:
            spiller = Spiller(self.storage, cfg.spill_high, cfg.spill_low, cfg.full_wait)
            self._spiller = asyncio.ensure_future(spiller.run())
        log.info("RPMP node %s listening on %s:%d%s, pool %s (%d MiB), seeds %s%s", cfg.node_id, cfg.host, self.port,
                 "" if server_tls is None else " (TLS" + (", client certificates required)" if cfg.tls_ca else ")"),
                 cfg.pool, pool_bytes >> 20, cfg.seeds or "none",
                 "" if disk is None else f", spilling to {', '.join(disk.dirs)} above {cfg.spill_high:.0%} of the pool "
                 f"({len(disk.extents)} blocks, {disk.bytes >> 20} MiB there now)")

    # Storage and the controller are built before the network (it serves them), so they reach it through
    # these; both are called only once requests arrive, that is, once start() has built the network.
    def _room_freed(self) -> None:
        assert self.network is not None, "room is given back only by requests, which the network brought"
        self.network.room_freed()

    def _network_counters(self) -> dict[str, int]:
        assert self.network is not None, "STATS is asked for by a request, which the network brought"
        return {**self.network.counters, "auth_failures": 0 if self.auth is None else self.auth.failures}

    async def _heartbeat(self, host: str, port: int, me: Node, epoch: int) -> tuple[int, list[Node]]:
        meta, _ = await self.peers.request(host, port, Op.HEARTBEAT, wire.encode_heartbeat(me, epoch))
        return wire.decode_members(meta)

    async def _probe(self, host: str, port: int) -> str:
        """The node id whoever listens at host:port gives in its HELLO."""
        meta, _ = await self.peers.request(host, port, Op.HELLO, wire.encode_hello(VERSION, "rpmp-node"))
        return wire.decode_hello_resp(meta)[1]

    async def _retry_frees(self, storage: Storage) -> None:
        while True:
            await asyncio.sleep(0.5)
            if storage.pending_free:
                storage.retry_frees()
            if storage.disk is not None:
                storage.disk.unmap_idle()

    async def _expire_apps(self, controller: Controller) -> None:
        """Every min(ttl/4, 60 s): delete the apps nobody renewed for --app-ttl (the controller logs them)."""
        while True:
            await asyncio.sleep(controller.leases.interval)
            try:
                controller.expire_apps()
            except Exception:  # never let one bad app end the janitor
                log.exception("expiring apps failed")

    def _drain(self, timeout_s: int) -> None:
        """DRAIN was asked (again): watch for the moment this node holds no shuffles, or the timeout."""
        loop = asyncio.get_running_loop()
        self._drain_deadline = loop.time() + timeout_s if timeout_s else None
        if self._drainer is None:
            self._drainer = asyncio.ensure_future(self._drain_watch(loop.time()))

    async def _drain_watch(self, started: float) -> None:
        assert self.storage is not None
        store = self.storage.shuffles
        loop = asyncio.get_running_loop()
        # Not before the others can have learned the drain from the seeds' tables (a few heartbeats): until then
        # they may still forward registrations here, which must be refused, not meet a closed port.
        settle = started + 3 * self.config.heartbeat_interval
        while True:
            held = [*store.shuffles, *store.orphans]
            if not held and loop.time() >= settle:
                log.info("drained: node %s holds no shuffles %.1f s after DRAIN; stopping", self.config.node_id,
                         loop.time() - started)
                self.stop_reason = "drained"
                break
            if self._drain_deadline is not None and loop.time() >= self._drain_deadline:
                nbytes = sum(p.bytes for sh in store.shuffles.values() for p in sh.partitions.values())
                apps = sorted({app for app, _ in held})
                log.warning("drain timeout: node %s stops %.0f s after DRAIN still holding %d shuffles of %d apps "
                            "(%s), %d bytes", self.config.node_id, loop.time() - started, len(held), len(apps),
                            ", ".join(apps[:10]) + (" ..." if len(apps) > 10 else ""), nbytes)
                self.stop_reason = "drain timeout"
                break
            await asyncio.sleep(0.2)
        self._stopped.set()

    async def stop(self) -> None:
        if self.metrics is not None:  # its shutdown waits for the server thread's poll (0.5 s): not on the loop
            await asyncio.get_running_loop().run_in_executor(None, self.metrics.stop)
        if self._janitor is not None:
            self._janitor.cancel()
        for task in (self._expirer, self._drainer):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if self._spiller is not None:
            self._spiller.cancel()
            try:
                await self._spiller  # a batch being written finishes (its thread cannot be stopped)
            except asyncio.CancelledError:
                pass
        if self.membership is not None:
            await self.membership.stop()
        if self.network is not None:
            await self.network.stop()
        await self.peers.close()
        if self.storage is not None:
            await asyncio.sleep(0)  # let transports drop their views of pool memory
            self.storage.retry_frees()
            try:
                self.storage.close()
            except Exception as e:  # views still held: the OS unmaps at exit
                log.warning("pool not closed cleanly: %s", e)
        self._stopped.set()

    async def serve_forever(self, parent_fd: int | None = None) -> None:
        """Serve until SIGINT/SIGTERM or, with `parent_fd` (the read end of a pipe whose only writer is the
        parent), until that pipe reads EOF: the parent is gone, however it ended (SIGKILL included)."""
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._signalled, sig)
        loop.add_signal_handler(signal.SIGHUP, self._reload_auth)
        if parent_fd is not None:
            loop.add_reader(parent_fd, self._parent_readable, parent_fd)
        print(f"RPMP node listening on {self.config.host}:{self.port}", flush=True)
        await self._stopped.wait()
        self._stopped.clear()
        await self.stop()
        log.info("RPMP node %s stopped (%s) after %s; pool %s closed", self.config.node_id, self.stop_reason,
                 _duration(time.monotonic() - self.started_at), self.config.pool)

    def _reload_auth(self) -> None:
        """SIGHUP: re-read the auth file (a new tenant, a rotated secret) without a restart; a bad file is
        logged and the tenants stay as they were."""
        if self.auth is None:
            log.info("SIGHUP: no --auth-file to re-read (the node runs open)")
        else:
            self.auth.reload()

    def _signalled(self, sig: int) -> None:
        self.stop_reason = signal.Signals(sig).name
        self._stopped.set()

    def _parent_readable(self, fd: int) -> None:
        try:
            if os.read(fd, 4096):
                return  # the parent wrote something: it lives (it is not meant to write)
        except OSError:
            pass
        asyncio.get_running_loop().remove_reader(fd)
        log.warning("parent process gone (pipe fd %d closed): stopping", fd)
        self.stop_reason = "parent gone"
        self.orphaned = True
        self._stopped.set()


def _half_created_hint(path: str) -> str:
    """What to do with a pool file libpmemobj could not open whose mode is still 0000: libpmemobj gives a pool file
    its mode once the pool is made, so its creation was cut short after the header (check_pool recreates those cut
    short before it)."""
    try:
        if os.stat(path).st_mode & 0o777 == 0:
            return ("; its mode is 0000, which libpmemobj gives a pool file until the pool is made: its creation was "
                    "cut short. If it holds nothing you need, remove it and start again (a new pool is created)")
    except OSError:
        pass
    return ""


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@contextmanager
def _creating(path: str, size: int, action: str) -> Iterator[None]:
    """Around opening storage: when the pool is being created (seconds for GiBs: the medium is allocated and
    touched page by page), a line before, one every second with how much the file holds, and one after."""
    if action == "open":
        yield
        return
    began = time.monotonic()
    log.info("creating pool %s of %d MiB", path, size >> 20)
    done = threading.Event()

    def progress() -> None:
        while not done.wait(1.0):
            try:
                held = os.stat(path).st_blocks * 512
            except OSError:
                held = 0
            if held < size:
                log.info("creating pool %s: %d of %d MiB allocated (%.0f s)", path, held >> 20, size >> 20,
                         time.monotonic() - began)
            else:  # libpmemobj touches every page and lays out its heap: the file size says nothing more
                log.info("creating pool %s: %d MiB allocated, libpmemobj is preparing them (%.0f s)", path,
                         size >> 20, time.monotonic() - began)

    ticker = threading.Thread(target=progress, name="rpmp-pool-create", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
    log.info("pool %s created: %d MiB in %.1f s", path, size >> 20, time.monotonic() - began)


def run(config: NodeConfig, parent_fd: int | None = None, remove_pool_with_parent: bool = False) -> None:
    """Run a node until SIGINT/SIGTERM, or until the parent's pipe `parent_fd` closes; then, with
    `remove_pool_with_parent`, remove the pool file once it is closed (a pool only the parent knew of)."""
    logs.configure(config.log_level, config.log_format)  # text, or one JSON object a line
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop is not installed: falling back to asyncio's loop (slower, copies large replies)")
        node = RpmpNode(config)
        asyncio.run(node.serve_forever(parent_fd))
    else:
        node = RpmpNode(config)
        uvloop.run(node.serve_forever(parent_fd))
    if node.orphaned and remove_pool_with_parent:  # the pool and its spill files, which only it can read
        stem = os.path.basename(config.pool)
        spilled = [os.path.join(d, name) for d in config.spill_dirs if os.path.isdir(d) for name in os.listdir(d)
                   if name.startswith(stem + ".") and name.endswith(".spill")]
        for path in (config.pool, *spilled):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

"""Membership: which nodes are alive, as an epoch-numbered table.

Every node heartbeats to its seeds; a seed marks a node dead when it has not heard from it for
`dead_after` seconds. The epoch grows whenever the set of live nodes changes. A node adopts the table
of the seed that answers with the highest epoch, so all nodes converge on the seeds' view; a node with
no seeds (a single node, or a seed) is its own authority. The table only decides where new shuffles
go: a placement is computed once, at registration, and travels with the shuffle, so a later change of
the table never moves existing data.

States are the protocol's `NodeState` (what MEMBERS and HEARTBEAT carry); this table uses ALIVE, DRAINING
and DEAD (SUSPECT is part of the wire format, for a peer that would report it). A DRAINING node is up (it
serves what it holds, takes forwarded deletes and leases, heartbeats) but not placeable: the ring is built
over ALIVE nodes only. A node says it is draining in its own heartbeats; seeds pass that on in their tables.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from rpmp.protocol import ErrorCode, Node, NodeState, ProtocolError
from rpmp.ring import HashRing

log = logging.getLogger("rpmp.membership")
SEED_WARN_EVERY = 60.0  # seconds between WARNINGs about one seed that keeps failing

NAME_MAX = 255  # bytes of a node id or host name
MAX_MEMBERS = 1024  # the table (and so a MEMBERS reply) stays bounded whoever sends heartbeats
PRUNE_AFTER = 60.0  # seconds (at least; 10 x dead_after) a dead member stays in the table
MAX_PROBES = 16  # joining nodes being checked at once
PROBE_TIMEOUT = 2.0  # seconds a joining node's address has to answer HELLO
REFUSE_FOR = 5.0  # seconds heartbeats from an address that failed the check are ignored


def is_up(state: int) -> bool:
    """Alive or draining: it answers, holds data and takes forwarded deletes and leases."""
    return state == NodeState.ALIVE or state == NodeState.DRAINING


def _up_state(state: int) -> NodeState:
    """The state to record for a node that shows signs of life: DRAINING if it says so, else ALIVE."""
    return NodeState.DRAINING if state == NodeState.DRAINING else NodeState.ALIVE


@dataclass
class Member:
    node: Node
    last_seen: float
    direct: bool  # we hear from it ourselves (it heartbeats us, or it is a seed answering us)
    dead_since: float | None = None


def check_node(node: Node) -> None:
    """A heartbeat's node must be nameable and reachable: bounded id and host, a real port."""
    for what, value in (("node id", node.node_id), ("host", node.host)):
        if not value or len(value.encode()) > NAME_MAX or any(ord(ch) < 32 for ch in value):
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"HEARTBEAT: {what} {value[:40]!r} must be 1..{NAME_MAX} "
                                "bytes of printable text")
    if not 0 < node.port < 65536:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"HEARTBEAT: port {node.port} is not in 1..65535")


class Membership:
    def __init__(self, me: Node, seeds: list[tuple[str, int]], interval: float, dead_after: float,
                 heartbeat: Callable[[str, int, Node, int], Awaitable[tuple[int, list[Node]]]],
                 probe: Callable[[str, int], Awaitable[str]] | None = None):
        """`heartbeat(host, port, me, epoch)` sends one HEARTBEAT and returns the seed's (epoch, nodes);
        `probe(host, port)` asks whoever listens there for its node id (HELLO): a node that heartbeats is
        admitted only once its address answers with its id (without `probe`, at once)."""
        self.me = me
        self.seeds = [s for s in seeds if s != (me.host, me.port)]
        self.interval = interval
        self.dead_after = dead_after
        self._heartbeat = heartbeat
        self.members: dict[str, Member] = {me.node_id: Member(me, time.monotonic(), True)}
        self.epoch = 1
        self._ring: HashRing | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._probe = probe
        self._probing: set[tuple[str, int]] = set()
        self._refused: dict[tuple[str, int], float] = {}  # address -> until when its heartbeats are ignored
        # seed -> (when its failures were last logged, failures since, since when it fails): a seed that does not
        # answer is a WARNING at once, then at most every SEED_WARN_EVERY seconds while it stays silent
        self._seed_failing: dict[tuple[str, int], tuple[float, int, float]] = {}

    # ---- the table ------------------------------------------------------------------------------
    def live(self) -> list[Node]:
        """The nodes that are up (alive or draining): where deletes and leases are forwarded."""
        return sorted((m.node for m in self.members.values() if is_up(m.node.state)), key=lambda n: n.node_id)

    def placeable(self) -> list[Node]:
        """The nodes new shuffles may be placed on: alive, not draining (the ring is built over these)."""
        return sorted((m.node for m in self.members.values() if m.node.state == NodeState.ALIVE),
                      key=lambda n: n.node_id)

    @property
    def draining(self) -> bool:
        return self.me.state == NodeState.DRAINING

    def start_draining(self) -> None:
        """This node takes no new shuffles from now on; its heartbeats say so (one goes to the seeds at once)."""
        if self.draining:
            return
        self.me = Node(self.me.node_id, self.me.host, self.me.port, NodeState.DRAINING)
        self.members[self.me.node_id].node = self.me
        self._changed(f"{self.me.node_id} (this node) draining")
        if self.seeds and not self._stopping:
            asyncio.ensure_future(self.beat_once())

    def mark_draining(self, node_id: str) -> None:
        """A peer refused a forwarded registration because it drains: leave it out of placement now, before
        membership says so (its own heartbeats, or a seed's table, confirm it)."""
        m = self.members.get(node_id)
        if m is not None and m.node.state == NodeState.ALIVE:
            m.node = Node(m.node.node_id, m.node.host, m.node.port, NodeState.DRAINING)
            self._changed(f"{node_id} draining (it said so)")

    def nodes(self) -> list[Node]:
        return sorted((m.node for m in self.members.values()), key=lambda n: n.node_id)

    def ring(self) -> HashRing:
        if self._ring is None:
            self._ring = HashRing([n.node_id for n in self.placeable()])
        return self._ring

    def node(self, node_id: str) -> Node | None:
        m = self.members.get(node_id)
        return m.node if m else None

    def _set(self, node: Node, direct: bool) -> bool:
        """Record a node's state; True if the set of live nodes or of placeable ones changed."""
        m = self.members.get(node.node_id)
        was = m.node.state if m is not None else NodeState.DEAD
        now = time.monotonic()
        if m is None:
            m = self.members[node.node_id] = Member(node, now, direct)
        else:
            m.node, m.direct = node, direct or m.direct
            if direct:
                m.last_seen = now
        if is_up(node.state):
            m.dead_since = None
        elif m.dead_since is None:
            m.dead_since = now
        return is_up(was) != is_up(node.state) or (was == NodeState.ALIVE) != (node.state == NodeState.ALIVE)

    def _changed(self, why: str, epoch: int = 0) -> None:
        self.epoch = max(self.epoch + 1, epoch)
        self._ring = None
        draining = [n.node_id for n in self.live() if n.state == NodeState.DRAINING]
        log.info("membership epoch %d (%s): live %s%s", self.epoch, why, [n.node_id for n in self.live()],
                 f", draining {draining}" if draining else "")

    def on_heartbeat(self, node: Node, known_epoch: int = 0) -> None:
        """A peer says it is alive (this node acts as its seed).

        Refused: this node's own id (a stranger would take over its entry), an id that is alive at another
        address (it would redirect placements), an address a live node has under another id, and a new id
        when the table is full."""
        check_node(node)
        if node.node_id == self.me.node_id:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"HEARTBEAT: {node.node_id} is this node's own id")
        m = self.members.get(node.node_id)
        if m is not None and is_up(m.node.state) and (m.node.host, m.node.port) != (node.host, node.port):
            raise ProtocolError(ErrorCode.CONFLICT, f"HEARTBEAT: node {node.node_id} is alive at "
                                f"{m.node.host}:{m.node.port}, not {node.host}:{node.port}")
        for other in self.members.values():  # one live node per address: a second id there is an impostor
            if other.node.node_id != node.node_id and is_up(other.node.state) \
                    and (other.node.host, other.node.port) == (node.host, node.port):
                raise ProtocolError(ErrorCode.CONFLICT, f"HEARTBEAT: {node.host}:{node.port} is the address of "
                                    f"live node {other.node.node_id}, not of {node.node_id}")
        if m is None and len(self.members) >= MAX_MEMBERS:
            self.prune(force=True)
            if len(self.members) >= MAX_MEMBERS:
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"HEARTBEAT: the member table is full ({MAX_MEMBERS})")
        if m is not None and is_up(m.node.state) or self._probe is None:
            self._admit(node)
        else:
            self._check_then_admit(node)

    def _admit(self, node: Node) -> None:
        m = self.members.get(node.node_id)
        joined = m is None or not is_up(m.node.state)
        if self._set(Node(node.node_id, node.host, node.port, _up_state(node.state)), direct=True):
            self._changed(f"{node.node_id} " + ("joined" if joined else "draining" if node.state == NodeState.DRAINING
                                                 else "alive"))

    def _check_then_admit(self, node: Node) -> None:
        """Admit a joining (or returning) node once its address answers HELLO with its id: a heartbeat
        naming an address nobody serves, or another node's, would otherwise become a member that every
        registration waits for and fails on."""
        addr = (node.host, node.port)
        now = time.monotonic()
        if addr in self._probing or self._refused.get(addr, 0.0) > now:
            return
        if len(self._probing) >= MAX_PROBES:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "HEARTBEAT: too many joining nodes are being checked; retry")
        self._probing.add(addr)

        ask = self._probe
        assert ask is not None  # on_heartbeat admits at once without a probe

        async def probe() -> None:
            try:
                answered = await asyncio.wait_for(ask(*addr), PROBE_TIMEOUT)
            except Exception as e:
                answered = f"no answer ({type(e).__name__}: {e})"
            finally:
                self._probing.discard(addr)
            if answered == node.node_id and not self._stopping:
                self._admit(node)
                return
            self._refused[addr] = time.monotonic() + REFUSE_FOR
            if len(self._refused) > MAX_MEMBERS:
                self._refused = {a: t for a, t in self._refused.items() if t > time.monotonic()}
            log.warning("node %s at %s:%d not admitted: that address answers %s", node.node_id, *addr, answered)

        asyncio.ensure_future(probe())

    def adopt(self, epoch: int, nodes: list[Node]) -> None:
        """Take a seed's view of the nodes this node does not hear from itself."""
        changed = False
        for n in nodes:
            m = self.members.get(n.node_id)
            if n.node_id == self.me.node_id or (m is not None and m.direct):
                continue
            if m is None and len(self.members) >= MAX_MEMBERS:
                break
            changed |= self._set(n, direct=False)
        if changed:
            self._changed("from seed", epoch)
        elif epoch > self.epoch:
            self.epoch = epoch

    def expire(self) -> None:
        """Declare dead the peers we hear from directly but have not heard for dead_after seconds."""
        now = time.monotonic()
        dead = []
        for m in self.members.values():
            if m.direct and m.node.node_id != self.me.node_id and is_up(m.node.state) \
                    and now - m.last_seen > self.dead_after:
                m.node = Node(m.node.node_id, m.node.host, m.node.port, NodeState.DEAD)
                m.dead_since = now
                dead.append(m.node.node_id)
        if dead:
            log.warning("nodes %s missed heartbeats for %.1f s: declared dead", dead, self.dead_after)
            self._changed(f"{', '.join(dead)} dead")
        self.prune()

    def prune(self, force: bool = False) -> None:
        """Forget members dead for a while (all dead ones when `force`): placements keep their own node
        lists, so nothing refers to the table's old entries."""
        now = time.monotonic()
        keep_for = 0.0 if force else max(PRUNE_AFTER, 10 * self.dead_after)
        gone = [nid for nid, m in self.members.items()
                if m.dead_since is not None and now - m.dead_since >= keep_for and nid != self.me.node_id]
        for nid in gone:
            del self.members[nid]

    # ---- the loop -------------------------------------------------------------------------------
    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """End the heartbeat loop. The flag ends it even if the cancel is lost: Python 3.11's wait_for hands
        back the result of an inner task that has just finished instead of the cancel, and a heartbeat to a
        seed that refuses at once finishes at once (it was seen: a node ignored SIGTERM for an hour)."""
        self._stopping = True
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        grace = max(self.interval, 1.0) * 3
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            log.warning("heartbeat loop did not stop within %.1f s; leaving it", grace)
        elif not task.cancelled() and task.exception() is not None:
            log.warning("heartbeat loop had failed: %r", task.exception())

    async def _run(self) -> None:
        while not self._stopping:
            await self.beat_once()
            await asyncio.sleep(self.interval)

    def _seed_failed(self, host: str, port: int, e: BaseException) -> None:
        """A heartbeat to a seed failed: WARNING the first time, then once per SEED_WARN_EVERY s (with how many
        failed since); DEBUG in between."""
        now = time.monotonic()
        logged, since_logged, failing_since = self._seed_failing.get((host, port), (0.0, 0, now))
        why = str(e) or type(e).__name__
        if not logged or now - logged >= SEED_WARN_EVERY:
            log.warning("seed %s:%d does not answer heartbeats (%s)%s", host, port, why,
                        f"; {since_logged + 1} failed in the last {now - failing_since:.0f} s" if logged else
                        f"; retrying every {self.interval:g} s, logged again at most every {SEED_WARN_EVERY:.0f} s")
            self._seed_failing[(host, port)] = (now, 0, failing_since)
        else:
            log.debug("heartbeat to seed %s:%d failed: %s", host, port, why)
            self._seed_failing[(host, port)] = (logged, since_logged + 1, failing_since)

    async def beat_once(self) -> None:
        """One round: heartbeat every seed, adopt the newest answer, expire silent peers."""
        best: tuple[int, list[Node]] | None = None
        for host, port in self.seeds:
            try:
                epoch, nodes = await asyncio.wait_for(self._heartbeat(host, port, self.me, self.epoch),
                                                      timeout=max(self.interval, 1.0))
            except Exception as e:
                self._seed_failed(host, port, e)
                continue
            if self._seed_failing.pop((host, port), None) is not None:
                log.warning("seed %s:%d answers again", host, port)
            for n in nodes:  # a seed that answers is alive, and we heard it ourselves
                if (n.host, n.port) == (host, port) \
                        and self._set(Node(n.node_id, host, port, _up_state(n.state)), True):
                    self._changed(f"seed {n.node_id} answered")
            if best is None or epoch > best[0]:
                best = (epoch, nodes)
        if best is not None:
            self.adopt(*best)
        self.expire()

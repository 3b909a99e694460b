"""Restart soak: a node SIGKILLed and restarted on the same pool many times under concurrent pushes and puts.

One `rpmp server` process keeps its pool on /dev/shm and its port across restarts. Pusher threads (one
client each) push seeded, reproducible segments (0 bytes to 5 MiB, several shuffles and partitions, by
`push` and by `push_many`, replicas=1, SEQ_LAST on each attempt's last segment, now and then an empty final
segment or a deliberate re-push of an acknowledged one) and PUT values whose bytes say which version they
are. Every call that returned is recorded as acknowledged. The node is SIGKILLed at a random moment while
pushes are in flight; the pushers park, the node is restarted on the same pool and port, and, before the
pushers carry on (re-registering their shuffles, which must come back with the same placement, and
retrying some of their unacknowledged segments), everything is checked:

- FETCH of every partition (raw records, the node's own deduplication is what is tested): every
  acknowledged segment is there exactly once and byte-exact (XXH3-128 of what was pushed, and the
  record's own XXH3-64); no record that was never pushed; an unacknowledged segment may or may not be
  there, but if it is, it is whole. PARTITION_INFO agrees with the records.
- GET of every key: the last acknowledged value, or a version whose PUT was in flight at a kill, whole.
- STATS: pool counters consistent, no block leaked (blocks = partition blocks + values + a constant
  number per registered shuffle + pending frees), record counts equal what FETCH returned.
- Deleted (retired) shuffles stay deleted across restarts.
- The node's stderr of every incarnation holds no traceback and no ERROR line.

RPMP_SOAK_CYCLES (default 25) sets the number of kills, RPMP_SOAK_SEED the workload, RPMP_SOAK_MBPS the
pushers' combined rate (default 48 MB/s), RPMP_SOAK_SECONDS the wall-time budget of the cycles.
"""

from __future__ import annotations

import ast
import os
import random
import re
import socket
import struct
import threading
import time
import traceback
import uuid

import pytest
import xxhash
from conftest import NODE_ARGS

from rpmp import _wire as W
from rpmp.client import Client, NotFoundError, RpmpError
from rpmp.cluster import LocalNode
from rpmp.protocol import SEQ_LAST

SHM = "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"

CYCLES = int(os.environ.get("RPMP_SOAK_CYCLES", "25"))
SEED = int(os.environ.get("RPMP_SOAK_SEED", "0")) or int.from_bytes(os.urandom(4), "little")
RATE = float(os.environ.get("RPMP_SOAK_MBPS", "48")) * 1e6  # bytes/s, all pushers together
BUDGET = float(os.environ.get("RPMP_SOAK_SECONDS", str(60 + 10 * CYCLES)))
PUSHERS = 4
KEYS_PER_PUSHER = 6
ACTIVE_SHUFFLES = 4
RETIRE_BYTES = 24 << 20  # a shuffle with this much acknowledged is verified, deleted and replaced
POOL_SIZE = "1g"
START_TIMEOUT = 30.0  # a node that does not come back within this fails the test
PARK_TIMEOUT = 30.0  # pushers must all be parked within this after a kill
RUN_MIN, RUN_MAX = 0.15, 1.2  # seconds of pushing before a kill (after the first acknowledgement)
APP = "soak-app"

BASE = random.Random(20240611).randbytes(8 << 20)  # payloads are slices of this, prefixed by their identity
SEG_HDR = struct.Struct("<IIIQI")  # shuffle, partition, map_index, attempt, seq
VAL_HDR = struct.Struct("<QI16s")  # version, length, XXH3-128 of the key


def payload(sid: int, p: int, m: int, a: int, s: int, n: int) -> bytes:
    hdr = SEG_HDR.pack(sid, p, m, a, s)
    if n <= len(hdr):
        return hdr[:n]
    off = xxhash.xxh64_intdigest(hdr) % (len(BASE) - n)
    return hdr + BASE[off:off + n - len(hdr)]


def segment_size(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.05:
        return 0
    if r < 0.30:
        return rng.randrange(1, 256)
    if r < 0.55:
        return rng.randrange(256, 16 << 10)
    if r < 0.78:
        return rng.randrange(16 << 10, 256 << 10)
    if r < 0.92:
        return rng.randrange(256 << 10, 1 << 20)
    return rng.randrange(1 << 20, 5 << 20)  # past 4 MiB: a block of its own


def value_size(key: bytes, version: int) -> int:
    r = random.Random(xxhash.xxh64_intdigest(key + version.to_bytes(8, "little")))
    return r.choice((VAL_HDR.size, r.randrange(VAL_HDR.size, 4096), r.randrange(4096, 256 << 10),
                     r.randrange(256 << 10, 1 << 20), r.randrange(1 << 20, 4 << 20)))


def value(key: bytes, version: int) -> bytes:
    n = value_size(key, version)
    hdr = VAL_HDR.pack(version, n, xxhash.xxh3_128_digest(key))
    off = xxhash.xxh64_intdigest(hdr) % (len(BASE) - n)
    return hdr + BASE[off:off + n - len(hdr)]


def digest(data) -> int:
    return xxhash.xxh3_128_intdigest(data)


def free_port() -> int:
    """A free port below the ephemeral range, so no client connection can take it while the node is down."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000..32000")


class SoakNode(LocalNode):
    """The soak's node: a fixed pool and port (clients keep their address), restarted as often as needed."""

    def __init__(self, pool: str, port: int):
        super().__init__(pool, pool_size=POOL_SIZE, port=port, args=NODE_ARGS, timeout=START_TIMEOUT)
        self.incarnation = -1

    def start(self, timeout: float | None = None) -> SoakNode:
        self.incarnation += 1
        super().start(timeout)
        return self

    def timed_start(self) -> float:
        t0 = time.monotonic()
        self.start()
        return time.monotonic() - t0

    def stderr(self) -> str:
        """This incarnation's stderr."""
        return self.stderr_text(incarnation=True)


class Park(Exception):
    pass


class Control:
    """What the main thread and the pushers share. The registry is written by pushers (their own keys) and
    read by the main thread only while every pusher is parked."""

    def __init__(self, addr: str):
        self.addr = addr
        self.cond = threading.Condition()
        self.gen = 0  # bumped just before every kill
        self.open_gen = -1  # pushers run while open_gen == gen
        self.parked = 0
        self.dead = 0
        self.stop = False
        self.failures: list[str] = []
        self.active: list[tuple[int, int]] = []  # (shuffle, partitions)
        self.placements: dict = {}
        self.segs: dict[tuple[int, int], dict[tuple[int, int, int], list]] = {}  # (sid, p) -> ident -> [n, h, ack]
        self.vals: dict[bytes, list] = {}  # key -> [acked version or None, versions maybe stored]
        self.acks = 0
        self.ack_bytes = 0
        self.value_acks = 0
        self.repushes = 0
        self.map_ends = 0
        self.retries = 0
        self._rate_lock = threading.Lock()
        self._rate_t = time.monotonic()

    def fail(self, msg: str) -> None:
        with self.cond:
            self.failures.append(msg)

    def throttle(self, nbytes: int) -> None:
        with self._rate_lock:
            now = time.monotonic()
            self._rate_t = max(self._rate_t, now - 0.2) + nbytes / RATE
            delay = self._rate_t - now
        if delay > 0:
            time.sleep(min(delay, 2.0))

    def checkpoint(self) -> bool:
        """Park while the node is down; True if the pusher was parked (it must reconnect)."""
        with self.cond:
            if self.stop:
                raise Park
            if self.open_gen == self.gen:
                return False
            self.parked += 1
            self.cond.notify_all()
            try:
                if not self.cond.wait_for(lambda: self.stop or self.open_gen == self.gen, 120):
                    raise TimeoutError("parked for 120 s")
            finally:
                self.parked -= 1
            if self.stop:
                raise Park
            return True

    def wait_parked(self, n: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.parked + self.dead >= n, timeout)

    def open(self) -> None:
        with self.cond:
            self.open_gen = self.gen
            self.cond.notify_all()


class Pusher(threading.Thread):
    def __init__(self, ctl: Control, index: int, seed: int):
        super().__init__(name=f"soak-pusher-{index}", daemon=True)
        self.ctl, self.index = ctl, index
        self.rng = random.Random(seed)
        self.client: Client | None = None
        self.snapshot: list[tuple[int, int]] = []
        self.pending: list[tuple] = []  # unacknowledged (sid, p, m, a, s, n)
        self.recent: list[tuple] = []  # acknowledged, for deliberate re-pushes
        self.next_map = 0
        self.keys = [f"soak/{index}/{k}".encode() for k in range(KEYS_PER_PUSHER)]
        self.key_version = dict.fromkeys(self.keys, 0)
        self.in_call = ""  # what is in flight: "push", "put", ... ("" none)
        self.granted = -1  # the node generation this pusher was let run in

    # ---- plumbing -----------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while True:
                if self.ctl.checkpoint():
                    self.granted = self.ctl.open_gen
                    self.resume()
                self.step()
        except Park:
            pass
        except BaseException:
            self.ctl.fail(f"pusher {self.index} died:\n{traceback.format_exc()}")
        finally:
            if self.client is not None:
                self.client.close()
            with self.ctl.cond:
                self.ctl.dead += 1
                self.ctl.cond.notify_all()

    def call(self, what: str, fn, *args, **kw) -> bool:
        """Run one client call: True if acknowledged, False if the node went away (a kill)."""
        self.in_call = what.split(" ", 1)[0]
        try:
            fn(*args, **kw)
            return True
        except OSError as e:
            if self.ctl.gen == self.granted:  # no kill had started: the node dropped us on its own
                self.ctl.fail(f"pusher {self.index}: {what}: connection failed with no kill under way: {e!r}")
                time.sleep(0.5)
            return False
        except RpmpError as e:
            self.ctl.fail(f"pusher {self.index}: {what}: the node answered {e!r}")
            return False
        finally:
            self.in_call = ""

    def resume(self) -> None:
        """After a restart: a new client, the shuffles re-registered (same placement), pending retried."""
        if self.client is not None:
            self.client.close()
        self.client = Client(self.ctl.addr, timeout=20.0)
        self.snapshot = list(self.ctl.active)
        got: list = []
        for sid, nparts in self.snapshot:
            if not self.call(f"register {sid}", lambda s=sid, n=nparts: got.append(
                    self.client.register_shuffle(APP, s, n, replicas=1))):
                return
            if got[-1] != self.ctl.placements[sid]:
                self.ctl.fail(f"pusher {self.index}: shuffle {sid} re-registered with another placement: "
                              f"{got[-1]} != {self.ctl.placements[sid]}")
        live = {sid for sid, _ in self.snapshot}  # retired shuffles were deleted meanwhile
        self.recent = [seg for seg in self.recent if seg[0] in live]
        pending, self.pending = [seg for seg in self.pending if seg[0] in live], []
        for seg in pending:
            if self.rng.random() < 0.8:
                self.ctl.retries += 1
                if not self.push_one(seg):
                    self.pending.append(seg)
                    continue
            # else: abandoned, stays unacknowledged (may or may not be on the node)

    def note(self, seg: tuple) -> list:
        sid, p, m, a, s, n = seg
        table = self.ctl.segs.setdefault((sid, p), {})
        entry = table.get((m, a, s))
        if entry is None:
            entry = table[(m, a, s)] = [n, digest(payload(*seg)), False]
        return entry

    def acked(self, seg: tuple) -> None:
        entry = self.note(seg)
        if not entry[2]:
            entry[2] = True
            self.ctl.acks += 1
            self.ctl.ack_bytes += entry[0]
        self.recent.append(seg)
        if len(self.recent) > 64:
            del self.recent[:32]

    def push_one(self, seg: tuple) -> bool:
        sid, p, m, a, s, n = seg
        self.note(seg)
        data = payload(*seg)
        self.ctl.throttle(n)
        placement = self.ctl.placements[sid]
        if self.call(f"push {seg[:5]} ({n} B)", self.client.push, APP, sid, p, m, a, s, data, placement=placement):
            self.acked(seg)
            return True
        return False

    # ---- the workload -------------------------------------------------------------------------------
    def step(self) -> None:
        r = self.rng.random()
        if r < 0.2:
            self.put_value()
        elif r < 0.24 and self.recent:
            seg = self.rng.choice(self.recent)
            self.ctl.repushes += 1
            self.push_one(seg)  # acknowledged before: the node must keep one copy
        else:
            self.map_task()

    def put_value(self) -> None:
        key = self.rng.choice(self.keys)
        self.key_version[key] += 1
        version = self.key_version[key]
        entry = self.ctl.vals.setdefault(key, [None, set()])
        entry[1].add(version)
        data = value(key, version)
        self.ctl.throttle(len(data))
        if self.call(f"put {key!r} v{version}", self.client.put, key, data):
            entry[0], entry[1] = version, set()
            self.ctl.value_acks += 1

    def map_task(self) -> None:
        if not self.snapshot:
            return
        rng = self.rng
        sid, nparts = rng.choice(self.snapshot)
        if self.next_map and rng.random() < 0.1:
            m = self.index * 1_000_000 + rng.randrange(self.next_map)  # another attempt of an earlier map
        else:
            m = self.index * 1_000_000 + self.next_map
            self.next_map += 1
        a = rng.choice((rng.randrange(1, 1000), rng.randrange(1 << 32, 1 << 63)))
        segs = []
        for p in rng.sample(range(nparts), rng.randint(1, min(nparts, 6))):
            sizes = [segment_size(rng) for _ in range(rng.randint(1, 4))]
            if rng.random() < 0.2:
                sizes.append(0)  # "the data pushed last was not known to be last": an empty final segment
            for i, n in enumerate(sizes):
                segs.append((sid, p, m, a, i | (SEQ_LAST if i == len(sizes) - 1 else 0), n))
        rng.shuffle(segs)
        for seg in segs:
            self.note(seg)
        ok = True
        if rng.random() < 0.5:
            for k in range(0, len(segs), 8):
                batch = segs[k:k + 8]
                self.ctl.throttle(sum(seg[5] for seg in batch))
                items = [(seg[1], seg[2], seg[3], seg[4], payload(*seg)) for seg in batch]
                if self.call(f"push_many {len(batch)} of map {m} attempt {a}", self.client.push_many, APP, sid,
                             items, placement=self.ctl.placements[sid], window=4):
                    for seg in batch:
                        self.acked(seg)
                else:
                    self.pending.extend(segs[k:])
                    ok = False
                    break
        else:
            for k, seg in enumerate(segs):
                if not self.push_one(seg):
                    self.pending.extend(segs[k:])
                    ok = False
                    break
        if ok and rng.random() < 0.5:
            counts: dict[int, list[int]] = {}
            for _, p, _, _, _, n in segs:
                c = counts.setdefault(p, [0, 0])
                c[0] += 1
                c[1] += n
            if self.call(f"map_end map {m} attempt {a}", self.client.map_end, APP, sid, m, a,
                         [(p, c[0], c[1]) for p, c in counts.items()]):
                self.ctl.map_ends += 1


# ---- verification -------------------------------------------------------------------------------------
class Figures:
    def __init__(self):
        self.lost = self.duplicated = self.torn = self.phantom = 0
        self.unacked_present: set = set()  # unacknowledged segments found on the node (at any check)
        self.values_lost = self.values_torn = self.values_stale = self.values_inflight_new = 0
        self.problems: list[str] = []
        self.meta_per_shuffle: int | None = None
        self.verify_s: list[float] = []

    def problem(self, msg: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(msg)


def verify(client: Client, ctl: Control, deleted: list[int], fig: Figures, when: str) -> None:
    t0 = time.monotonic()
    before = len(fig.problems)
    records_total = blocks_total = 0
    shuffles = list(ctl.active)
    for sid, nparts in shuffles:
        pl = client.register_shuffle(APP, sid, nparts, replicas=1)
        if pl != ctl.placements[sid]:
            fig.problem(f"{when}: shuffle {sid} re-registered with another placement: {pl} != "
                        f"{ctl.placements[sid]}")
        for p in range(nparts):
            reg = ctl.segs.get((sid, p), {})
            seen: dict[tuple[int, int, int], int] = {}
            nbytes = 0
            for nrec, data in client.fetch_raw(APP, sid, p):
                if data is None:
                    continue
                view = memoryview(data)
                got = 0
                for m, a, s, start, n, checksum in W.iter_records(view):
                    got += 1
                    ident = (m, a, s)
                    seen[ident] = seen.get(ident, 0) + 1
                    nbytes += n
                    body = view[start:start + n]
                    entry = reg.get(ident)
                    if entry is None:
                        fig.phantom += 1
                        fig.problem(f"{when}: shuffle {sid} partition {p}: record {ident} ({n} B) was never pushed")
                    elif n != entry[0] or digest(body) != entry[1] or W.xxh3(body) != checksum:
                        fig.torn += 1
                        fig.problem(f"{when}: shuffle {sid} partition {p}: record {ident} is not what was pushed: "
                                    f"{n} B (pushed {entry[0]}), acknowledged {entry[2]}")
                if got != nrec:
                    fig.problem(f"{when}: shuffle {sid} partition {p}: a frame announces {nrec} records, "
                                f"carries {got}")
            for ident, c in seen.items():
                if c > 1:
                    fig.duplicated += c - 1
                    fig.problem(f"{when}: shuffle {sid} partition {p}: record {ident} is there {c} times")
            for ident, (n, _, ack) in reg.items():
                if ident in seen:
                    if not ack:
                        fig.unacked_present.add((sid, p, ident))
                elif ack:
                    fig.lost += 1
                    fig.problem(f"{when}: shuffle {sid} partition {p}: acknowledged record {ident} ({n} B) is lost")
            info = client.partition_info(APP, sid, p)
            if info["records"] != sum(seen.values()) or info["bytes"] != nbytes:
                fig.problem(f"{when}: shuffle {sid} partition {p}: PARTITION_INFO says {info['records']} records/"
                            f"{info['bytes']} B, FETCH gave {sum(seen.values())}/{nbytes}")
            records_total += sum(seen.values())
            blocks_total += len(info["blocks"])
    for sid in deleted:
        try:
            client.fetch_raw(APP, sid, 0)
            fig.problem(f"{when}: deleted shuffle {sid} is back")
        except NotFoundError:
            pass
    present = 0
    for key, (acked, maybe) in ctl.vals.items():
        try:
            got = client.get(key).to_pybytes()
        except NotFoundError:
            if acked is not None:
                fig.values_lost += 1
                fig.problem(f"{when}: value {key!r} v{acked} was acknowledged but is gone")
            continue
        present += 1
        version = VAL_HDR.unpack_from(got)[0] if len(got) >= VAL_HDR.size else -1
        if version != acked and version not in maybe:
            fig.values_stale += 1
            fig.problem(f"{when}: value {key!r} is v{version}; acknowledged v{acked}, in flight {sorted(maybe)}")
        elif got != value(key, version):
            fig.values_torn += 1
            fig.problem(f"{when}: value {key!r} v{version} is not the bytes put ({len(got)} B)")
        elif version != acked:
            fig.values_inflight_new += 1
    check_stats(client, ctl, fig, when, len(shuffles), records_total, blocks_total, present)
    fig.verify_s.append(time.monotonic() - t0)
    if len(fig.problems) > before:
        pytest.fail("\n".join(fig.problems[before:]))


def check_stats(client: Client, ctl: Control, fig: Figures, when: str, nshuffles: int, records: int, blocks: int,
                values: int) -> None:
    for _ in range(20):  # frees deferred behind readers are retried every 0.5 s
        st = client.stats()
        if not st.get("pending_free"):
            break
        time.sleep(0.25)
    pool = st["pool"]
    cap, alloc, used, nblocks = pool["capacity"], pool["allocated"], pool["used"], pool["blocks"]
    if not used <= alloc <= cap or pool["free"] != cap - alloc:
        fig.problem(f"{when}: pool counters out of order: {pool}")
    if "open_blocks" in pool and pool["open_blocks"] + pool["sealed_blocks"] != nblocks:
        fig.problem(f"{when}: open + sealed blocks != blocks: {pool}")
    app = st.get("apps", {}).get(APP, {"shuffles": 0, "records": 0})
    if app["shuffles"] != nshuffles or app["records"] != records:
        fig.problem(f"{when}: STATS says {app} for {APP}, expected {nshuffles} shuffles, {records} records")
    if st.get("values") != values:
        fig.problem(f"{when}: STATS says {st.get('values')} values, GET found {values}")
    extra = nblocks - st.get("pending_free", 0) - blocks - values  # registration blocks
    if nshuffles and (extra % nshuffles or extra <= 0):
        fig.problem(f"{when}: {nblocks} pool blocks: {blocks} of partitions, {values} values, "
                    f"{st.get('pending_free')} pending frees leave {extra} for {nshuffles} registrations")
    elif nshuffles:
        per = extra // nshuffles
        if fig.meta_per_shuffle is None:
            fig.meta_per_shuffle = per
        elif per != fig.meta_per_shuffle:
            fig.problem(f"{when}: {per} blocks per registration now, {fig.meta_per_shuffle} before: a leak")


def check_log(node: SoakNode, recovery: dict) -> None:
    text = node.stderr()
    for m in re.finditer(r"recovered: (\{.*\})", text):
        for k, v in ast.literal_eval(m.group(1)).items():
            if isinstance(v, int):
                recovery[k] = recovery.get(k, 0) + v
    bad = [ln for ln in text.splitlines() if "Traceback" in ln or " ERROR " in ln or " CRITICAL " in ln]
    if bad:
        pytest.fail(f"node incarnation {node.incarnation} logged errors:\n{text[-20000:]}")


# ---- the test ----------------------------------------------------------------------------------------------
@pytest.mark.timeout(int(BUDGET) + 300)
def test_restart_soak():
    t_start = time.monotonic()
    rng = random.Random(SEED)
    pool = os.path.join(SHM, f"rpmp-soak-{uuid.uuid4().hex[:12]}.pool")
    node = SoakNode(pool, free_port())
    ctl = Control(node.addr)
    fig = Figures()
    recovery: dict[str, int] = {}
    pushers: list[Pusher] = []
    restarts: list[float] = []
    in_flight_kills = put_kills = 0
    cycles = 0
    next_sid = 1
    deleted: list[int] = []
    retired = 0
    try:
        restarts.append(node.timed_start())
        with Client(node.addr, timeout=20.0) as c:
            for _ in range(ACTIVE_SHUFFLES):
                nparts = rng.choice((1, 3, 8, 16, 32))
                ctl.placements[next_sid] = c.register_shuffle(APP, next_sid, nparts, replicas=1)
                ctl.active.append((next_sid, nparts))
                next_sid += 1
        pushers = [Pusher(ctl, i, rng.randrange(1 << 62)) for i in range(PUSHERS)]
        for t in pushers:
            t.start()
        assert ctl.wait_parked(PUSHERS, PARK_TIMEOUT)
        deadline = t_start + BUDGET
        while cycles < CYCLES and time.monotonic() < deadline:
            acks0 = ctl.acks
            ctl.open()
            t_wait = time.monotonic() + 30
            while ctl.acks == acks0 and time.monotonic() < t_wait and not ctl.failures:
                time.sleep(0.01)
            assert not ctl.failures, "\n".join(ctl.failures)
            assert ctl.acks > acks0, "no push was acknowledged within 30 s of a restart"
            time.sleep(rng.uniform(RUN_MIN, RUN_MAX))
            # then the next moment a call is in flight (every 4th kill: a PUT, if one comes within 2 s)
            want = ("put",) if cycles % 4 == 3 else ("push", "push_many", "put", "map_end", "register")
            t_wait = time.monotonic() + (2.0 if cycles % 4 == 3 else 1.0)
            while not any(t.in_call in want for t in pushers) and time.monotonic() < t_wait:
                time.sleep(0.0005)
            assert node.running, f"node died on its own:\n{node.stderr()[-20000:]}"
            with ctl.cond:
                ctl.gen += 1
                in_flight = [t.in_call for t in pushers if t.in_call]
            node.kill()
            in_flight_kills += bool(in_flight)
            put_kills += "put" in in_flight
            cycles += 1
            if not ctl.wait_parked(PUSHERS, PARK_TIMEOUT):
                pytest.fail(f"pushers did not park within {PARK_TIMEOUT:.0f} s of kill {cycles}")
            assert not ctl.failures, "\n".join(ctl.failures)
            check_log(node, recovery)
            restarts.append(node.timed_start())
            with Client(node.addr, timeout=20.0) as c:
                verify(c, ctl, deleted, fig, f"after kill {cycles}")
                # retire full shuffles: delete them (pushers are parked) and register fresh ones
                for sid, nparts in list(ctl.active):
                    acked = sum(e[0] for p in range(nparts) for e in ctl.segs.get((sid, p), {}).values() if e[2])
                    if acked < RETIRE_BYTES:
                        continue
                    c.delete_shuffle(APP, sid)
                    ctl.active.remove((sid, nparts))
                    for p in range(nparts):
                        ctl.segs.pop((sid, p), None)
                    deleted.append(sid)
                    del deleted[:-16]
                    retired += 1
                    nparts = rng.choice((1, 3, 8, 16, 32))
                    ctl.placements[next_sid] = c.register_shuffle(APP, next_sid, nparts, replicas=1)
                    ctl.active.append((next_sid, nparts))
                    next_sid += 1
        # the end: pushers stop, a clean stop and restart must keep everything too
        with ctl.cond:
            ctl.stop = True
            ctl.cond.notify_all()
        for t in pushers:
            t.join(30)
            assert not t.is_alive(), f"{t.name} did not stop"
        assert not ctl.failures, "\n".join(ctl.failures)
        rc = node.stop(timeout=30)
        assert rc == 0, f"node exited with {rc} on SIGTERM:\n{node.stderr()[-20000:]}"
        check_log(node, recovery)
        restarts.append(node.timed_start())
        with Client(node.addr, timeout=20.0) as c:
            verify(c, ctl, deleted, fig, "after a clean restart")
        rc = node.stop(timeout=30)
        assert rc == 0, f"node exited with {rc} on SIGTERM:\n{node.stderr()[-20000:]}"
        check_log(node, recovery)
    finally:
        with ctl.cond:
            ctl.stop = True
            ctl.cond.notify_all()
        if node.running:
            node.kill()
        for t in pushers:
            t.join(10)
        if os.path.exists(pool):
            os.unlink(pool)
    wall = time.monotonic() - t_start
    segs = sum(1 for t in ctl.segs.values() for e in t.values() if e[2])
    unacked = sum(1 for t in ctl.segs.values() for e in t.values() if not e[2])
    print(f"\nsoak seed {SEED}: {cycles} kills ({in_flight_kills} with a client call in flight, {put_kills} with a "
          f"PUT in flight) in {wall:.0f} s; {ctl.acks} segments acknowledged ({ctl.ack_bytes / 1e6:.0f} MB; "
          f"{segs} of them in live shuffles at the end, {unacked} unacknowledged left there), "
          f"{ctl.value_acks} values acknowledged, {ctl.repushes} deliberate re-pushes, {ctl.retries} retries, "
          f"{ctl.map_ends} map ends, {retired} shuffles retired and deleted; lost {fig.lost}, duplicated "
          f"{fig.duplicated}, torn {fig.torn}, phantom {fig.phantom}, unacknowledged found stored "
          f"{len(fig.unacked_present)}; values lost {fig.values_lost}, torn {fig.values_torn}, stale "
          f"{fig.values_stale}, in-flight version found {fig.values_inflight_new}; restart s max "
          f"{max(restarts):.2f} mean {sum(restarts) / len(restarts):.2f}; verify s max {max(fig.verify_s):.2f}; "
          f"{len(fig.verify_s)} verifications; recovery {recovery}")
    assert cycles >= max(1, CYCLES // 2), f"only {cycles} of {CYCLES} cycles fit in {BUDGET:.0f} s"

"""Leases and drain on real node processes (PROTOCOL.md "LEASE", "DRAIN").

Leases: a node deletes an app nobody renewed for --app-ttl seconds (its shuffles NOT_FOUND, its bytes freed,
a WARN and the STATS counter apps_expired); a Client keeps the apps it registered alive; LEASE reaches every
node; a restarted node gives every app a full TTL. Drain: a draining node takes no new shuffles (it refuses
them, and placement by every node leaves it out, also before membership told the taking node), serves what
it holds byte-exact, and exits (status 0) once it holds nothing, or at its timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import NODE_ARGS

from rpmp.client import Client, NotFoundError, UnavailableError
from rpmp.cluster import LocalCluster
from rpmp.protocol import NodeState
from rpmp.server.config import NodeConfig, read_conf_file
from rpmp.server.leases import Leases

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TTL = ["--app-ttl", "2"]


def wait_for(pred, timeout: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(step)


def push_all(c: Client, app: str, sid: int, placement, payloads: dict[int, bytes], attempt: int = 1) -> None:
    for p, data in payloads.items():
        c.push(app, sid, p, 0, attempt, 0, data, placement=placement, last=True)


def fetched(c: Client, app: str, sid: int, p: int, placement=None, attempt: int = 1) -> bytes:
    segs = c.fetch(app, sid, p, attempts=[attempt], placement=placement)
    return b"".join(bytes(s.data) for s in segs)


# ---- leases -----------------------------------------------------------------------------------------------

def test_leases_unit_clock():
    now = [100.0]
    leases = Leases(2.0, ["found-at-open"], clock=lambda: now[0])
    assert leases.ttl_ms == 2000 and leases.interval == 0.5
    assert not leases.renew("never-held")  # LEASE of an app this node does not hold: nothing tracked
    assert "never-held" not in leases.renewed
    now[0] = 101.5
    leases.hold("registered")
    assert leases.expired({"found-at-open", "registered", "came-otherwise"}) == []
    now[0] = 102.5  # found-at-open: 2.5 s without renewal
    assert leases.expired({"found-at-open", "registered", "came-otherwise"}) == ["found-at-open"]
    assert leases.renew("registered")
    now[0] = 104.0
    assert leases.expired({"registered", "came-otherwise"}) == ["came-otherwise"]  # it started at 101.5
    assert leases.expired(set()) == [] and leases.renewed == {}  # deleted apps are forgotten
    assert Leases(0).expired({"a"}) == [] and Leases(0).interval == 60.0
    assert Leases(3600).interval == 60.0 and Leases(3600).ttl_ms == 3_600_000


def test_app_ttl_setting(tmp_path):
    assert NodeConfig().app_ttl == 3600.0
    assert NodeConfig(app_ttl=0).app_ttl == 0
    for bad in (-1.0, float("nan"), float("inf"), 5e6):
        with pytest.raises(ValueError, match="app_ttl"):
            NodeConfig(app_ttl=bad)
    conf = tmp_path / "node.conf"
    conf.write_text("app_ttl = 2.5\n")
    assert NodeConfig.load(str(conf), env={}).app_ttl == 2.5
    assert NodeConfig.load(None, env={"RPMP_APP_TTL": "7"}).app_ttl == 7.0
    shipped = read_conf_file(os.path.join(ROOT, "spark-conf", "rpmp-node.conf"))
    assert shipped == {}  # every line of the shipped file is a commented default
    with open(os.path.join(ROOT, "spark-conf", "rpmp-node.conf")) as f:
        assert "# app_ttl = 3600" in f.read()
    out = subprocess.run([sys.executable, "-m", "rpmp.cli", "server", "--app-ttl", "-3", "--pool",
                          str(tmp_path / "x.pool")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "app_ttl=-3" in out.stderr
    assert not (tmp_path / "x.pool").exists()


def test_default_ttl_is_an_hour(node):
    with Client(node.addr) as c:
        c.register_shuffle("app-default", 1, 2)
        assert c.lease("app-default") == 3_600_000
        assert c.lease("never-registered") == 3_600_000
        assert c.stats()["app_ttl"] == 3600.0


def test_unrenewed_app_expires_and_a_renewed_one_survives(node_factory):
    n = node_factory(extra=TTL)
    kept_data = {p: os.urandom(3000 + p) for p in range(4)}
    dead_data = {p: os.urandom(50_000) for p in range(4)}
    with Client(n.addr) as keeper, Client(n.addr) as driver, Client(n.addr) as observer:
        t0 = time.monotonic()
        pk = keeper.register_shuffle("kept", 1, 4)
        push_all(keeper, "kept", 1, pk, kept_data)
        pd = driver.register_shuffle("dead", 1, 4)
        push_all(driver, "dead", 1, pd, dead_data)
        driver.release("dead")  # the driver "dies": nobody renews "dead" any more
        assert not driver.holds_lease("dead") and keeper.holds_lease("kept")
        before = observer.stats()
        assert before["apps"]["dead"]["bytes"] == 200_000
        used_before = before["pool"]["used"]
        t_last = time.monotonic()  # the pushes were the last requests naming "dead" (they do not renew it)
        wait_for(lambda: "dead" not in observer.stats()["apps"], 8, "the unrenewed app to expire", step=0.1)
        took = time.monotonic() - t_last
        assert 1.9 <= took <= 3.5, took  # TTL 2 s, checked every 0.5 s
        with pytest.raises(NotFoundError):
            observer.fetch("dead", 1, 0)
        with pytest.raises(NotFoundError):
            observer.partition_info("dead", 1, 0)
        st = observer.stats()
        assert st["counters"]["apps_expired"] == 1
        assert st["pool"]["used"] < used_before - 150_000, (used_before, st["pool"]["used"])
        # The kept app survives three TTLs on its client's renewals alone (no other request names it).
        time.sleep(max(0.0, 3 * 2 + 0.5 - (time.monotonic() - t0)))
        assert "kept" in observer.stats()["apps"]
        assert keeper._leases.renewals >= 6 and keeper._leases.ttl == 2.0
        assert observer.stats()["counters"]["leases"] >= 6
        for p, data in kept_data.items():
            assert fetched(observer, "kept", 1, p) == data
        keeper.release("kept")
        wait_for(lambda: "kept" not in observer.stats()["apps"], 8, "the released app to expire", step=0.1)
    log = n.stderr_text()
    line = next(ln for ln in log.splitlines() if "app dead expired" in ln)
    assert "WARNING" in line and "1 shuffles [1]" in line and "200000 bytes" in line, line


def test_lease_reaches_every_node_and_a_restart_gives_a_full_ttl():
    with LocalCluster(2, node_args=[*NODE_ARGS, *TTL]) as cluster:
        cluster.wait_converged()
        a, b = cluster
        data = {p: os.urandom(1000) for p in range(8)}
        with Client(a.address) as c:  # renews through node a only; a forwards each LEASE to b
            pl = c.register_shuffle("spread", 1, 8)
            assert {n.node_id for n in pl.nodes} == {a.address, b.address}
            push_all(c, "spread", 1, pl, data)
            time.sleep(6.5)
            with Client(b.address) as cb:
                assert "spread" in cb.stats()["apps"]
            for p in data:
                assert fetched(c, "spread", 1, p, placement=pl) == data[p]
        # Nobody renews now. Restart b 1.5 s later: it gives the app a full TTL from its restart.
        time.sleep(1.5)
        b.stop()
        b.start()
        t_restart = time.monotonic()
        with Client(a.address) as ca, Client(b.address) as cb:
            wait_for(lambda: "spread" not in ca.stats()["apps"], 6, "the app to expire on a", step=0.1)
            assert "spread" in cb.stats()["apps"]
            wait_for(lambda: "spread" not in cb.stats()["apps"], 6, "the app to expire on b", step=0.1)
            assert time.monotonic() - t_restart >= 1.9


# ---- drain --------------------------------------------------------------------------------------------------

def states(addr: str) -> dict[str, NodeState]:
    with Client(addr) as c:
        return {n.node_id: n.state for n in c.members()[1]}


def test_drain_three_nodes():
    with LocalCluster(3, node_args=NODE_ARGS) as cluster:
        cluster.wait_converged()
        seed, d, other = cluster  # d is not a seed: the others learn its state through the seed's table
        app = "drain-app"
        data = {p: os.urandom(20_000 + p) for p in range(12)}
        with Client(seed.address) as c:
            pl = c.register_shuffle(app, 1, 12)
            assert d.address in {n.node_id for n in pl.nodes}
            on_d = [p for p in range(12) if pl.primary(p).node_id == d.address]
            assert on_d, "no partition on the node to drain"
            push_all(c, app, 1, pl, data)

            out = subprocess.run([sys.executable, "-m", "rpmp.cli", "drain", d.address], capture_output=True,
                                 text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert "draining" in out.stdout
            # The draining node refuses new shuffles itself...
            with pytest.raises(UnavailableError, match="is draining"):
                c.register_shuffle(app, 2, 4, node=d.address)
            # ...and every node learns its state through membership.
            for node in cluster:
                wait_for(lambda node=node: states(node.address).get(d.address) == NodeState.DRAINING, 10,
                         f"{node.address} to see {d.address} draining")
            stat = subprocess.run([sys.executable, "-m", "rpmp.cli", "stat", "--nodes", seed.address],
                                  capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
            assert stat.returncode == 0, stat.stderr
            row = next(ln for ln in stat.stdout.splitlines() if d.address in ln)
            assert "draining" in row, stat.stdout
            # New shuffles go to the other two, whichever node places them.
            for i, taker in enumerate((seed, other)):
                for sid in range(10 + 10 * i, 15 + 10 * i):
                    npl = c.register_shuffle(app, sid, 16, node=taker.address)
                    assert {n.node_id for n in npl.nodes} == {seed.address, other.address}, (taker, sid)
            # A client that lists the draining node first moves on to the next at its refusal.
            with Client([d.address, seed.address]) as c2:
                npl = c2.register_shuffle(app, 40, 4)
                assert d.address not in {n.node_id for n in npl.nodes}
            # What it holds is still served: FETCH byte-exact (from d too), PUSH to the registered shuffle.
            for p, want in data.items():
                assert fetched(c, app, 1, p, placement=pl) == want
            p = on_d[0]
            c.push(app, 1, p, 1, 7, 0, b"late map output", placement=pl, last=True)
            assert fetched(c, app, 1, p, placement=pl, attempt=7) == b"late map output"
            assert d.running
            with Client(d.address) as cd:
                st = cd.stats()
                assert st["state"] == "DRAINING" and set(st["apps"]) == {app}
                assert st["apps"][app]["shuffles"] == 1  # none of the new shuffles reached it
            # Deleting the shuffle it holds lets it go.
            c.delete_shuffle(app, 1)
            t0 = time.monotonic()
            assert d.reap(timeout=15) == 0
            assert time.monotonic() - t0 < 10
        log = d.stderr_text()
        assert "drained: node" in log and "holds no shuffles" in log
        assert "Traceback" not in log


def test_drain_refusal_reaches_a_taker_that_did_not_know():
    """The taking node has not heard of the drain yet (slow heartbeats): the draining node refuses the forwarded
    registration, and the taker places the shuffle again without it instead of failing the registration."""
    slow = ["--heartbeat-interval", "2", "--dead-after", "10"]
    with LocalCluster(3, node_args=slow) as cluster:
        cluster.wait_converged()
        seed, d, taker = cluster
        with Client(seed.address) as c:
            c.register_shuffle("hold", 1, 4)  # so the draining node does not exit at once
            c.drain(d.address, timeout=60)
            knew = states(taker.address).get(d.address) == NodeState.DRAINING
            for sid in range(1, 6):
                pl = c.register_shuffle("race", sid, 8, node=taker.address)
                assert d.address not in {n.node_id for n in pl.nodes}, sid
            with Client(d.address) as cd:
                assert set(cd.stats()["apps"]) == {"hold"}
            if not knew:
                assert "draining; placing it again without them" in taker.stderr_text()
            assert "Traceback" not in taker.stderr_text() + d.stderr_text()


def test_drain_timeout(node_factory):
    n = node_factory()
    data = {p: os.urandom(10_000) for p in range(3)}
    with Client(n.addr) as c:
        pl = c.register_shuffle("stays", 3, 3)
        push_all(c, "stays", 3, pl, data)
        t0 = time.monotonic()
        c.drain(n.addr, timeout=2)
        with pytest.raises(UnavailableError, match="is draining"):
            c.register_shuffle("stays", 4, 3)
        assert c.register_shuffle("stays", 3, 3) == pl  # a shuffle it holds: the same placement
        for p, want in data.items():
            assert fetched(c, "stays", 3, p) == want
    assert n.reap(timeout=15) == 0
    took = time.monotonic() - t0
    assert 1.9 <= took <= 6, took
    line = next(ln for ln in n.stderr_text().splitlines() if "drain timeout" in ln)
    assert "WARNING" in line and "1 shuffles of 1 apps (stays)" in line and "30000 bytes" in line, line

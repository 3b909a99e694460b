"""rpmp.cluster itself: LocalNode and LocalCluster start real nodes, report failures with the node's own words,
and leave no process and no pool file behind, whatever state the nodes are in."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import NODE_ARGS

from rpmp.client import Client
from rpmp.cluster import LocalCluster, LocalNode, NodeError
from rpmp.protocol import NodeState


def gone(pid: int) -> bool:
    """The process no longer exists (reaped, not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def dead(pid: int) -> bool:
    """The process is gone or a zombie (an orphan's reaper, PID 1 here, may be slow to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def start_driver(code: str) -> tuple[subprocess.Popen[str], int, str]:
    """A Python child (a stand-in for a PySpark driver) running `code`, which starts a node and prints its pid and
    pool, then sleeps; returns the child, the node's pid and its pool."""
    driver = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code) + "\nimport time; time.sleep(600)\n"],
                              stdout=subprocess.PIPE, text=True)
    assert driver.stdout is not None
    line = driver.stdout.readline()
    if not line:
        driver.kill()
        raise AssertionError(f"the driver exited ({driver.wait()}) before starting its node")
    pid, pool = line.split()
    return driver, int(pid), pool


def kill_driver_and_wait(driver: subprocess.Popen[str], node_pid: int, pool: str, *, pool_goes: bool,
                         within: float = 15.0) -> None:
    """SIGKILL the driver; the node must be gone within `within` s, its pool removed or kept as `pool_goes`."""
    assert not dead(node_pid) and os.path.exists(pool)
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + within
    while not (dead(node_pid) and os.path.exists(pool) != pool_goes) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert dead(node_pid), f"node {node_pid} outlived its parent by {within:g} s"
        assert os.path.exists(pool) != pool_goes, f"pool {pool} {'left behind' if pool_goes else 'removed'}"
    finally:
        if not dead(node_pid):
            os.kill(node_pid, signal.SIGKILL)
        if pool_goes and os.path.exists(pool):
            os.unlink(pool)


def test_start_serve_close_leaves_no_process_and_no_pool():
    with LocalNode(pool_size="64m") as node:
        pid, pool = node.pid, node.pool
        assert node.running and node.host == "127.0.0.1" and node.port > 0
        assert node.address == f"127.0.0.1:{node.port}" and os.path.exists(pool)
        with Client(node.address) as c:
            c.put("k", b"v")
            assert bytes(c.get("k")) == b"v"
    assert node.returncode == 0, node.stderr_text()   # SIGTERM: a clean shutdown
    assert gone(pid) and not os.path.exists(pool)


def test_a_named_pool_is_kept_and_a_restart_keeps_address_and_data(pool_path):
    node = LocalNode(pool_path, pool_size="64m").start()
    try:
        address = node.address
        with Client(address) as c:
            c.put("k", b"survives")
        assert node.kill() == -signal.SIGKILL
        first = node.pid
        node.restart()
        assert node.address == address and node.pid != first and gone(first)
        with Client(address) as c:
            assert bytes(c.get("k")) == b"survives"
    finally:
        node.close()
    assert not node.running and os.path.exists(pool_path)   # the caller's pool stays


def test_a_node_that_cannot_start_raises_with_its_stderr_quickly():
    node = LocalNode(pool_size="huge", timeout=30)
    t0 = time.monotonic()
    with pytest.raises(NodeError) as info:
        node.start()
    assert time.monotonic() - t0 < 30
    message = str(info.value)
    assert "exited with status 2" in message and "not a size" in message, message
    assert not node.running
    node.close()
    assert not os.path.exists(node.pool)


def test_a_node_that_never_listens_is_killed_at_the_timeout():
    # SIGSTOPped before it can print: start() must give up at its bound and leave nothing behind.
    node = LocalNode(pool_size="64m", timeout=1.5)
    spawn = node._spawn

    def stopped_spawn():
        proc = spawn()
        proc.send_signal(signal.SIGSTOP)
        return proc

    node._spawn = stopped_spawn
    t0 = time.monotonic()
    with pytest.raises(NodeError, match="did not listen within 1.5 s"):
        node.start()
    assert time.monotonic() - t0 < 10
    assert gone(node.pid)
    node.close()


def test_stop_kills_a_node_that_ignores_sigterm_within_the_timeout():
    with LocalNode(pool_size="64m") as node:
        node.signal(signal.SIGSTOP)
        pid = node.pid
        t0 = time.monotonic()
        # SIGTERM is followed by SIGCONT, so even a stopped node exits cleanly...
        assert node.stop() == 0
        assert time.monotonic() - t0 < 15 and gone(pid)
        node.restart()
        node.signal(signal.SIGSTOP)
        pid = node.pid
        # ... and a signal it cannot act on while stopped ends in SIGKILL at the timeout
        assert node.stop(signal.SIGSTOP, timeout=0.5) == -signal.SIGKILL
        assert gone(pid)


def test_stderr_is_captured_across_restarts_or_handed_over_as_a_pipe():
    with LocalNode(pool_size="64m") as node:
        node.restart()
        node.stop()
        log = node.stderr_text()
        assert node.proc.stderr is None and log.count(f"listening on {node.address}") == 2, log
    with LocalNode(pool_size="64m", stderr="pipe") as node:
        node.signal(signal.SIGTERM)
        assert f"listening on {node.address}" in node.proc.stderr.read()
        assert node.stop() == 0 and node.stderr_text() == ""


def test_cluster_of_three_converges_and_stops_after_a_kill():
    with LocalCluster(3, pool_size="64m", node_args=NODE_ARGS) as cluster:
        assert len(cluster) == 3 and cluster.seed is cluster[0]
        addresses = sorted(cluster.addresses)
        assert len(set(addresses)) == 3
        for node in cluster:
            with Client(node.address) as c:
                _, members = c.members()
                assert sorted(m.node_id for m in members if m.state == NodeState.ALIVE) == addresses
        pids, pools = [n.pid for n in cluster], [n.pool for n in cluster]
        assert all(os.path.exists(p) for p in pools)
        assert cluster[1].kill() == -signal.SIGKILL
    assert all(gone(pid) for pid in pids)
    assert not any(os.path.exists(p) for p in pools)
    assert [n.returncode for n in cluster] == [0, -signal.SIGKILL, 0]
    cluster.close()   # again: nothing left to do, nothing raised


def test_cluster_add_and_remove_a_node():
    with LocalCluster(2, pool_size="64m", node_args=NODE_ARGS) as cluster:
        third = cluster.add_node()
        with Client(cluster.seed.address) as c:
            assert sum(m.state == NodeState.ALIVE for m in c.members()[1]) == 3
        pool = third.pool
        cluster.remove_node(third)
        assert len(cluster) == 2 and not third.running and not os.path.exists(pool)
        cluster.wait_converged(15)   # the seed declares it dead after dead_after (1.5 s)


def test_cluster_with_fixed_pool_names_keeps_them(tmp_path):
    with LocalCluster(2, pool_size="64m", pool_dir=str(tmp_path), pool_prefix="n", node_args=NODE_ARGS):
        pass
    assert sorted(os.listdir(tmp_path)) == ["n0.pool", "n1.pool"]


def test_a_cluster_that_cannot_start_cleans_up(tmp_path):
    cluster = LocalCluster(2, pool_size="64m", pool_dir=str(tmp_path), node_args=["--max-connections", "many"])
    with pytest.raises(NodeError, match="max-connections"):
        cluster.start()
    assert all(not n.running for n in cluster) and os.listdir(tmp_path) == []


# The node is started from a thread that has exited by the kill: a parent-death signal (PR_SET_PDEATHSIG) would
# have stopped it with that thread; the pipe outlives it.
DRIVER = """
import threading
from rpmp.cluster import LocalNode
node = LocalNode({pool!r}, pool_size="64m", exit_with_parent=True)
t = threading.Thread(target=node.start)
t.start(); t.join()
print(node.pid, node.pool, flush=True)
"""


def test_a_node_that_exits_with_its_parent_dies_on_kill_9_and_removes_only_a_pool_it_made(pool_path):
    driver, pid, pool = start_driver(DRIVER.format(pool=None))
    time.sleep(0.5)   # the starting thread is long gone: the node must still run
    kill_driver_and_wait(driver, pid, pool, pool_goes=True)
    driver, pid, pool = start_driver(DRIVER.format(pool=pool_path))
    kill_driver_and_wait(driver, pid, pool, pool_goes=False)   # a named pool is the caller's: it stays


def test_a_node_that_exits_with_its_parent_keeps_its_data_across_restart_and_stop():
    with LocalNode(pool_size="64m", exit_with_parent=True) as node:
        with Client(node.address) as c:
            c.put("k", b"v")
        node.restart()
        with Client(node.address) as c:
            assert bytes(c.get("k")) == b"v"
        assert node.stop() == 0 and os.path.exists(node.pool), node.stderr_text()
        assert "parent process gone" not in node.stderr_text()
    assert not os.path.exists(node.pool)


# ---- the disk tier's directories ------------------------------------------------------------------------------

def flag_values(node: LocalNode, flag: str) -> list[str]:
    cmd = node.command()
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == flag]


def test_spill_settings_reach_the_node_and_a_spill_dir_it_created_goes_with_its_pool(tmp_path):
    spill = tmp_path / "spill"   # missing, parent exists: the node creates it
    node = LocalNode(pool_size="64m", spill_dir=str(spill), spill_size="1g", spill_high=0.9, spill_low=0.5,
                     full_wait=2, app_quota="100m")
    assert not spill.exists()   # nothing before start
    assert flag_values(node, "--spill-dir") == [str(spill)]
    assert [flag_values(node, f) for f in ("--spill-size", "--spill-high", "--spill-low", "--full-wait",
                                           "--app-quota")] == [[str(1 << 30)], ["0.9"], ["0.5"], ["2.0"],
                                                               [str(100 << 20)]]
    with node:
        assert node.running and spill.is_dir() and spill.stat().st_mode & 0o777 == 0o700
        (spill / "0.spill").write_bytes(b"spilled")   # what the node's disk tier would write
        (spill / "1.spill").write_bytes(b"spilled")
    assert not spill.exists() and not os.path.exists(node.pool)


def test_spill_cleanup_never_touches_what_it_did_not_create(tmp_path, pool_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "old.spill").write_bytes(b"the caller's")
    made = tmp_path / "made"
    with LocalNode(pool_size="64m", spill_dirs=[str(mine), str(made)]) as node:
        assert node.spill_dirs == [str(mine), str(made)]
        (mine / "new.spill").write_bytes(b"x")
        (made / "0.spill").write_bytes(b"x")
        (made / "notes.txt").write_text("someone else's")
        os.symlink(mine / "old.spill", made / "link.spill")
    assert sorted(os.listdir(mine)) == ["new.spill", "old.spill"]     # an existing directory is never emptied
    assert sorted(os.listdir(made)) == ["link.spill", "notes.txt"]     # the node's spill files (regular) only
    assert (mine / "old.spill").read_bytes() == b"the caller's"
    # a kept pool keeps its spill files, in a directory the node created too
    kept = tmp_path / "kept"
    with LocalNode(pool_path, pool_size="64m", spill_dir=f"{kept},{mine}"):
        (kept / "0.spill").write_bytes(b"x")
    assert os.listdir(kept) == ["0.spill"] and os.path.exists(pool_path)


@pytest.mark.parametrize(("kw", "message"), [
    ({"spill_high": 1.2}, r"spill_high=1\.2: must be a fraction"),
    ({"spill_low": 0.9}, None),   # alone it is fine: the node's spill_high may be higher
    ({"spill_low": 0.9, "spill_high": 0.8}, r"spill_low=0\.9 must be below spill_high=0\.8"),
    ({"full_wait": -1}, r"full_wait=-1\.0"),
    ({"spill_size": "-1"}, r"spill_size=-1: must be >= 0"),
    ({"app_quota": "lots"}, "not a size"),
    ({"spill_dir": "/no/such/dir"}, "spill dir '/no/such/dir': does not exist, nor does its parent"),
    ({"spill_dir": "a", "spill_dirs": ["b"]}, "spill_dir or spill_dirs, not both"),
    ({"spill_dirs": ["{tmp}/x", "{tmp}/x/"]}, "is given twice"),
])
def test_bad_spill_settings_are_a_value_error_before_anything_is_created(tmp_path, kw, message):
    kw = {k: [x.format(tmp=tmp_path) for x in v] if isinstance(v, list) else v for k, v in kw.items()}
    pool = str(tmp_path / "p.pool")
    if message is None:
        LocalNode(pool, **kw)
        return
    with pytest.raises(ValueError, match=message):
        LocalNode(pool, **kw)
    with pytest.raises(ValueError, match=message):
        LocalCluster(2, pool_dir=str(tmp_path), pool_prefix="n", **kw)
    assert os.listdir(tmp_path) == []


def test_cluster_nodes_spill_into_their_own_subdirectories_removed_with_their_pools(tmp_path):
    base = tmp_path / "spill"   # created by the cluster, removed when empty
    with LocalCluster(2, pool_size="64m", node_args=NODE_ARGS, spill_dir=str(base), spill_high=0.9) as cluster:
        dirs = [node.spill_dirs for node in cluster]
        assert [[os.path.dirname(d) for d in ds] for ds in dirs] == [[str(base)], [str(base)]]
        assert dirs[0] != dirs[1]
        assert [os.path.basename(ds[0]) for ds in dirs] == [os.path.basename(n.pool).removesuffix(".pool")
                                                             for n in cluster]
        assert all(os.path.isdir(ds[0]) for ds in dirs) and all(flag_values(n, "--spill-high") == ["0.9"]
                                                                 for n in cluster)
        third = cluster.add_node()
        assert os.path.dirname(third.spill_dirs[0]) == str(base)
        for ds in dirs:
            open(os.path.join(ds[0], "0.spill"), "wb").close()
    assert not base.exists()


def test_cluster_with_fixed_pool_names_keeps_spill_subdirectories_and_rejects_shared_ones(tmp_path):
    base = tmp_path / "spill"
    base.mkdir()
    with LocalCluster(2, pool_size="64m", pool_dir=str(tmp_path), pool_prefix="n", node_args=NODE_ARGS,
                      spill_dir=str(base)) as cluster:
        assert [n.spill_dirs for n in cluster] == [[str(base / "n0")], [str(base / "n1")]]
        (base / "n0" / "0.spill").write_bytes(b"x")
    assert sorted(os.listdir(base)) == ["n0", "n1"] and os.listdir(base / "n0") == ["0.spill"]
    with pytest.raises(ValueError, match="nodes 0 and 1 would share spill dir"):
        LocalCluster(2, pool_dir=str(tmp_path), pool_prefix="n", spill_dirs=[str(base), str(base / "n1")])

"""Authentication and tenants (docs/PROTOCOL.md "Authentication and tenants") on real node processes.

One node with two tenants serves most tests (module fixture); tests that need their own node (SIGHUP, the
cluster secret, permissions, back-off, failed handshakes) start one. The four that wait for time to pass
(back-off, leases, a 2-node cluster, the handshake deadline) are marked slow; the rest is in the quick subset
(15 s on the loaded 2-core machine, mostly node starts). Raw frames go through rpmp.client.Connection, so what
the node answers is checked byte for byte, not through the Client's own handshake.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpmp import _wire as W
from rpmp.auth import (
    CLUSTER,
    AuthFileError,
    client_proof,
    key_tag,
    load_auth_file,
    load_secret_file,
    new_nonce,
    node_proof,
    parse_auth_text,
    proofs_equal,
    qualify_app,
    write_private,
)
from rpmp.client import AuthFailedError, BadRequestError, Client, Connection, ForbiddenError, NotFoundError
from rpmp.cluster import LocalCluster, LocalNode, NodeError, new_pool_path
from rpmp.protocol import FLAG_FORWARDED, HEADER_SIZE, VERSION, ErrorCode, NodeState, Op, ProtocolError
from rpmp.server.config import NodeConfig

A_SECRET, B_SECRET = "alpha secret with spaces", "b3ta-s3cret"
TENANTS = {"acme": A_SECRET, "beta": B_SECRET}
NODE_ARGS = ["--heartbeat-interval", "0.2", "--dead-after", "1.5"]


def _node(tmp_path, tenants=TENANTS, cluster_secret: str | None = "cluster-one", seeds=None,
          extra=(), pool: str | None = None, pool_size: str = "64m") -> LocalNode:
    auth = tmp_path / f"auth-{os.urandom(3).hex()}"
    write_private(str(auth), "".join(f"{t} {s}\n" for t, s in tenants.items()))
    secret_file = None
    if cluster_secret is not None:
        secret_file = str(tmp_path / f"cluster-{os.urandom(3).hex()}")
        write_private(secret_file, cluster_secret + "\n")
    return LocalNode(pool or new_pool_path("rpmp-auth"), pool_size=pool_size, seeds=seeds, args=[*NODE_ARGS, *extra],
                     auth_file=str(auth), cluster_secret_file=secret_file, remove_pool=True)


@pytest.fixture(scope="module")
def anode(tmp_path_factory):
    """A node shared by the tests that make few failed handshakes (failures from 127.0.0.1 slow later ones)."""
    node = _node(tmp_path_factory.mktemp("auth"))
    try:
        yield node.start()
    finally:
        node.close()


@pytest.fixture
def fresh(tmp_path):
    """A node of the test's own, for tests that fail handshakes on purpose."""
    node = _node(tmp_path)
    try:
        yield node.start()
    finally:
        node.close()


def _stats(node: LocalNode) -> dict:
    with Client(node.address, timeout=10, **node.cluster_auth) as c:
        return c.stats()


def _raw(node: LocalNode) -> Connection:
    return Connection(node.host, node.port, 10.0)


def _handshake(conn: Connection, tenant: str, secret: bytes) -> tuple[bytes, bytes, bytes]:
    """AUTH and AUTH_PROOF by hand: -> (cn, nn, the proof sent)."""
    cn = new_nonce()
    nn, proof = W.decode_auth_resp(conn.call(Op.AUTH, W.encode_auth(tenant, cn))[0])
    assert proofs_equal(proof, node_proof(secret, tenant, cn, nn))
    mine = client_proof(secret, tenant, cn, nn)
    assert conn.call(Op.AUTH_PROOF, W.encode_auth_proof(mine)) == (b"", None)
    return cn, nn, mine


def _closed(conn: Connection) -> bool:
    """The node closed the connection (EOF within 5 s, nothing more sent)."""
    conn.sock.settimeout(5)
    try:
        return conn.sock.recv(1) == b""
    except (TimeoutError, ConnectionResetError):
        return False


def _expect_auth_failed(conn: Connection, op: int, meta: bytes = b"", data: bytes | None = None) -> str:
    with pytest.raises(AuthFailedError) as ei:
        conn.call(op, meta, data)
    assert ei.value.code == ErrorCode.AUTH_FAILED
    assert _closed(conn)
    return ei.value.message


# ---- the primitives and the files ----------------------------------------------------------------------

def test_proofs_differ_by_side_tenant_and_nonce():
    cn, nn = bytes(32), bytes(range(32))
    n = node_proof(b"s", "acme", cn, nn)
    assert len(n) == 32 and n != client_proof(b"s", "acme", cn, nn)
    assert n != node_proof(b"s", "acmf", cn, nn) != node_proof(b"s", "acme", nn, cn)
    assert key_tag("acme") != key_tag("beta") and len(key_tag("acme")) == 8
    assert qualify_app("acme", "app-1") == "acme\x1fapp-1" and qualify_app(None, "a") == "a"


def test_auth_file_checks(tmp_path):
    f = tmp_path / "auth"
    write_private(str(f), "# tenants\n\nacme  s1 with space \nbeta s2\n")
    assert load_auth_file(str(f)) == {"acme": b"s1 with space", "beta": b"s2"}
    os.chmod(f, 0o640)
    with pytest.raises(AuthFileError) as ei:
        load_auth_file(str(f))
    assert str(ei.value) == (f"auth file {f} has mode 0640: group or others may access it (it holds secrets): "
                             f"run chmod 600 {f}")
    os.chmod(f, 0o604)
    with pytest.raises(AuthFileError, match="mode 0604.*chmod 600"):
        load_auth_file(str(f))
    for text, why in [("acme a\nacme b\n", "line 2: tenant acme is defined twice"),
                      ("@cluster x\n", "line 1: tenant name '@cluster' is not 1..32 characters"),
                      ("a/b x\n", "line 1: tenant name 'a/b'"), ("x" * 33 + " s\n", "is not 1..32"),
                      ("acme\n", "line 1: expected 'tenant secret'")]:
        with pytest.raises(AuthFileError, match=why):
            parse_auth_text(text)
    s = tmp_path / "secret"
    write_private(str(s), "one line\n")
    assert load_secret_file(str(s)) == b"one line"
    write_private(str(s), "one\ntwo\n")
    with pytest.raises(AuthFileError, match="expected one line with the secret, found 2"):
        load_secret_file(str(s))


def test_config_refuses_bad_auth_settings(tmp_path):
    f = tmp_path / "auth"
    write_private(str(f), "acme s\n")
    with pytest.raises(ValueError, match="with seeds, peers must authenticate as @cluster"):
        NodeConfig.load(env={}, auth_file=str(f), seeds=["127.0.0.1:1"])
    os.chmod(f, 0o644)
    with pytest.raises(ValueError, match="mode 0644.*chmod 600"):
        NodeConfig.load(env={}, auth_file=str(f))
    with pytest.raises(ValueError, match="pool_mode = '999': not an octal file mode"):
        NodeConfig.load(env={"RPMP_POOL_MODE": "999"})
    assert NodeConfig.load(env={"RPMP_POOL_MODE": "0640"}).pool_mode == 0o640


def test_node_refuses_a_readable_auth_file(tmp_path):
    node = _node(tmp_path, cluster_secret=None)
    os.chmod(node.auth.auth_file, 0o644)
    try:
        with pytest.raises(NodeError, match="mode 0644.*chmod 600"):
            node.start(timeout=20)
        assert not os.path.exists(node.pool)  # refused before anything was created
    finally:
        node.close()


def test_spill_files_get_the_pool_mode(tmp_path):
    from rpmp.server.storage.disk import DiskTier

    tier = DiskTier([str(tmp_path)], 0, "pool")
    tier.file_mode = 0o640  # what the node sets from --pool-mode
    f = tier.target()
    assert os.stat(f.spill.path).st_mode & 0o777 == 0o640


def test_cli_stat_and_drain_authenticate(anode, tmp_path):
    secret = tmp_path / "beta.secret"
    write_private(str(secret), B_SECRET + "\n")
    with Client(anode.address, tenant="beta", secret=B_SECRET, timeout=10) as c:
        c.register_shuffle("cli-app", 0, 1)

    def rpmp(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rpmp.cli", *args], capture_output=True, text=True, timeout=60)

    r = rpmp("stat", "--nodes", anode.address, "--json")
    assert r.returncode == 1 and "the node requires authentication" in r.stderr
    r = rpmp("stat", "--nodes", anode.address, "--json", "--tenant", "beta", "--secret-file", str(secret))
    assert r.returncode == 0, r.stderr
    assert "beta/cli-app" in r.stdout and "acme/" not in r.stdout and json.loads(r.stdout)
    r = rpmp("stat", "--nodes", anode.address, "--json", "--cluster-secret-file", anode.auth.cluster_secret_file)
    assert r.returncode == 0 and "beta/cli-app" in r.stdout, r.stderr
    r = rpmp("drain", anode.address, "--tenant", "beta", "--secret-file", str(secret))
    assert r.returncode == 1
    assert r.stderr.strip().endswith("only nodes (@cluster) may send DRAIN (use --cluster-secret-file)"), r.stderr


def test_cli_drain_as_cluster_stops_the_node(fresh):
    r = subprocess.run([sys.executable, "-m", "rpmp.cli", "drain", fresh.address, "--cluster-secret-file",
                        fresh.auth.cluster_secret_file], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and f"{fresh.address} is draining" in r.stdout, r.stderr
    assert fresh.proc is not None and fresh.proc.wait(timeout=30) == 0  # it held nothing: it stops


# ---- the handshake -------------------------------------------------------------------------------------

def test_client_authenticates_and_pool_is_0600(anode):
    with Client(anode.address, tenant="acme", secret=A_SECRET, timeout=10) as c:
        c.put(b"hello", b"world")
        assert c.get(b"hello").to_pybytes() == b"world"
    assert os.stat(anode.pool).st_mode & 0o777 == 0o600


def test_wrong_secret_and_unknown_tenant(anode):
    before = _stats(anode)["counters"]["auth_failures"]
    for tenant, secret in [("acme", "wrong"), ("nobody", "x"), ("beta", A_SECRET)]:
        with pytest.raises(AuthFailedError) as ei:
            with Client(anode.address, tenant=tenant, secret=secret, timeout=10) as c:
                c.ping()
        # the node answers with a proof it cannot have made with the client's secret: the client says so
        assert str(ei.value) == (f"AUTH_FAILED: node {anode.address} could not prove it knows the secret of tenant "
                                 f"{tenant}: not the node you meant, or its auth file has another secret")
    conn = _raw(anode)  # the same, by hand: the node's answer to an unknown tenant is well-formed, then refused
    cn = new_nonce()
    nn, proof = W.decode_auth_resp(conn.call(Op.AUTH, W.encode_auth("nobody", cn))[0])
    assert len(nn) == len(proof) == 32
    assert _expect_auth_failed(conn, Op.AUTH_PROOF, W.encode_auth_proof(client_proof(b"x", "nobody", cn, nn))) \
        == "authentication failed"
    assert _stats(anode)["counters"]["auth_failures"] == before + 1  # the clients above closed before proving
    assert "authentication from 127.0.0.1 failed: unknown tenant 'nobody'" in anode.stderr_text()
    assert A_SECRET not in anode.stderr_text()


def test_requests_before_auth_are_refused(fresh):
    anode = fresh
    conn = _raw(anode)  # HELLO and PING are allowed first, then PUSH is not
    assert W.decode_hello_resp(conn.call(Op.HELLO, W.encode_hello(VERSION, "t"))[0])[1] == anode.address
    conn.call(Op.PING)
    msg = _expect_auth_failed(conn, Op.PUSH, W.encode_push("app", 0, 0, 0, 1, 0, W.xxh3(b"x")), b"x")
    assert msg == "authentication failed"
    for op, meta in [(Op.STATS, b""), (Op.GET, W.encode_key(b"k")), (Op.AUTH_PROOF, W.encode_auth_proof(bytes(32)))]:
        _expect_auth_failed(_raw(anode), op, meta)
    conn = _raw(anode)  # a second AUTH on an authenticated connection
    _handshake(conn, "acme", A_SECRET.encode())
    _expect_auth_failed(conn, Op.AUTH, W.encode_auth("acme", new_nonce()))


@pytest.mark.slow  # ~3 s
def test_connection_that_does_not_authenticate_is_closed(tmp_path):
    node = _node(tmp_path, extra=["--frame-timeout", "1"])
    try:
        node.start()
        conn = _raw(node)
        conn.call(Op.PING)  # allowed, but does not keep the connection
        began = time.monotonic()
        assert _closed(conn)
        assert 0.5 < time.monotonic() - began < 4
        assert "did not authenticate within 1 s (--frame-timeout)" in node.stderr_text()
        with Client(node.address, tenant="acme", secret=A_SECRET, timeout=10) as c:
            c.ping()
            time.sleep(2.2)  # an authenticated connection is not closed for that
            c.ping()
            assert _stats(node)["counters"]["dropped_connections"] == 1
    finally:
        node.close()


def test_bad_auth_meta_is_bad_request(anode):
    conn = _raw(anode)
    w = W.MetaWriter()
    w.str("acme")
    w.bytes(bytes(31))
    with pytest.raises(BadRequestError, match="AUTH.nonce is 31 bytes, it must be 32"):
        conn.call(Op.AUTH, w.getvalue())
    _handshake(conn, "acme", A_SECRET.encode())  # the connection stays open


def test_replayed_transcript_is_refused(fresh):
    anode = fresh
    conn = _raw(anode)
    cn, _, recorded = _handshake(conn, "acme", A_SECRET.encode())
    conn.close()
    replay = _raw(anode)  # same AUTH bytes, same proof: the node's fresh nonce makes the proof wrong
    nn, _ = W.decode_auth_resp(replay.call(Op.AUTH, W.encode_auth("acme", cn))[0])
    _expect_auth_failed(replay, Op.AUTH_PROOF, W.encode_auth_proof(recorded))


def test_proof_for_another_tenant_is_refused(fresh):
    anode = fresh
    conn = _raw(anode)  # claims beta, proves with acme's secret (over beta's transcript, then acme's)
    cn = new_nonce()
    nn, _ = W.decode_auth_resp(conn.call(Op.AUTH, W.encode_auth("beta", cn))[0])
    _expect_auth_failed(conn, Op.AUTH_PROOF, W.encode_auth_proof(client_proof(A_SECRET.encode(), "beta", cn, nn)))
    conn = _raw(anode)
    nn, _ = W.decode_auth_resp(conn.call(Op.AUTH, W.encode_auth("beta", cn))[0])
    _expect_auth_failed(conn, Op.AUTH_PROOF, W.encode_auth_proof(client_proof(A_SECRET.encode(), "acme", cn, nn)))


def test_open_node_refuses_auth(node):
    with pytest.raises(AuthFailedError, match=f"node {node.address} refused tenant acme: this node runs without "
                                              f"authentication"):
        with Client(node.address, tenant="acme", secret="s", timeout=10) as c:
            c.ping()
    assert "runs open: no --auth-file" in node.stderr_text()


# ---- tenants as namespaces ------------------------------------------------------------------------------

def test_tenant_cannot_touch_another_tenants_data(anode):
    app, payload, value = "shared-app-id", b"acme's segment", b"acme's value"
    a = Client(anode.address, tenant="acme", secret=A_SECRET, timeout=10)
    b = Client(anode.address, tenant="beta", secret=B_SECRET, timeout=10)
    try:
        a.register_shuffle(app, 3, 2)
        a.push(app, 3, 0, 0, 7, 0, payload, last=True)
        a.map_end(app, 3, 0, 7, [(0, 1, len(payload))])
        a.put(b"key", value)
        addr = a.alloc(64)
        a.write(addr, b"acme's bytes")
        refused = [
            lambda: b.push(app, 3, 0, 0, 8, 0, b"beta"),
            lambda: b.map_end(app, 3, 0, 7, [(0, 1, len(payload))]),
            lambda: b.fetch_raw(app, 3, 0),
            lambda: b.partition_info(app, 3, 0),
            lambda: b.get(b"key"),
            lambda: b.delete(b"key"),
            lambda: b.read(addr, 12),
            lambda: b.write(addr, b"beta's bytes"),
            lambda: b.free(addr),
        ]
        for call in refused:
            with pytest.raises(NotFoundError) as ei:
                call()
            assert "acme" not in ei.value.message
        with pytest.raises(NotFoundError) as ei:
            b.fetch_raw(app, 3, 0)
        assert ei.value.message == f"shuffle 3 of app 'beta/{app}' is not registered on this node"
        with pytest.raises(NotFoundError, match=r"^NOT_FOUND: no value under key b'key'$"):
            b.get(b"key")
        assert b.delete_shuffle(app, 3) == 0 and b.delete_app(app) == 0  # beta's own (empty) app
        b.register_shuffle(app, 3, 5)  # beta's own app: another partition count is no CONFLICT
        assert all(a.startswith("beta/") for a in b.stats()["apps"]) and "beta/" + app in b.stats()["apps"]
        assert {"acme/" + app, "beta/" + app} <= set(_stats(anode)["apps"])
        got = a.fetch(app, 3, 0)
        assert [bytes(s.data) for s in got] == [payload]
        assert a.get(b"key").to_pybytes() == value
        assert a.read(addr, 12).to_pybytes() == b"acme's bytes"
        assert a.partition_info(app, 3, 0)  # still registered for acme
    finally:
        a.close()
        b.close()


def test_owners_survive_a_restart_and_open_data_is_the_clusters(tmp_path):
    pool = new_pool_path("rpmp-auth")
    opened = LocalNode(pool, pool_size="64m", remove_pool=False)  # open: keys and apps as named
    node = _node(tmp_path, pool=pool)
    try:
        opened.start()
        with Client(opened.address, timeout=10) as c:
            c.put(b"old", b"from the open days")
        opened.stop()
        node.start()
        with Client(node.address, tenant="acme", secret=A_SECRET, timeout=10) as a:
            with pytest.raises(NotFoundError):
                a.get(b"old")  # a tenant's key "old" is another key
            addr = a.alloc(16)
            a.write(addr, b"acme" * 4)
        with Client(node.address, timeout=10, **node.cluster_auth) as c:
            assert c.get(b"old").to_pybytes() == b"from the open days"
        node.restart()
        with Client(node.address, tenant="beta", secret=B_SECRET, timeout=10) as b:
            with pytest.raises(NotFoundError):
                b.read(addr, 16)  # the owner is in the block's key: it survives the restart
        with Client(node.address, tenant="acme", secret=A_SECRET, timeout=10) as a:
            assert a.read(addr, 16).to_pybytes() == b"acme" * 4
            a.free(addr)
    finally:
        node.close()
        opened.close()


def test_quota_counts_each_tenants_app_apart(tmp_path):
    from rpmp.client import QuotaExceededError

    node = _node(tmp_path, extra=["--app-quota", "1k"])
    try:
        node.start()
        for tenant, secret in TENANTS.items():  # the same app id: two apps, each with its own quota
            with Client(node.address, tenant=tenant, secret=secret, timeout=10) as c:
                c.register_shuffle("q", 0, 1)
                c.push("q", 0, 0, 0, 1, 0, b"x" * 800)
                with pytest.raises(QuotaExceededError, match=f"app '{tenant}/q' holds 800 bytes"):
                    c.push("q", 0, 0, 0, 1, 1, b"y" * 800)
    finally:
        node.close()


def test_a_tenants_shuffle_spills_to_disk_and_reads_back(tmp_path):
    spill = tmp_path / "spill"
    node = _node(tmp_path, extra=["--spill-dir", str(spill), "--pool-mode", "0640"], pool_size="32m")
    try:
        node.start()
        sent = {}
        with Client(node.address, tenant="acme", secret=A_SECRET, timeout=30) as c:
            c.register_shuffle("big", 0, 4)
            for m in range(12):  # 48 MiB into a 32 MiB pool
                segs = []
                for p in range(4):
                    data = bytes([m, p]) * (512 << 10)
                    sent[(p, m)] = W.xxh3(data)
                    segs.append((p, m, 0, 0x80000000, data))
                c.push_many("big", 0, segs)
            st = c.stats()
            assert st["apps"]["acme/big"]["spilled_bytes"] > 0, st["apps"]
            got = {(p, s.map_index): W.xxh3(bytes(s.data)) for p in range(4) for s in c.fetch("big", 0, p)}
            assert got == sent
        files = list(spill.glob("*.spill"))
        assert files and all(f.stat().st_mode & 0o777 == 0o640 for f in files)
        with Client(node.address, tenant="beta", secret=B_SECRET, timeout=10) as b:
            with pytest.raises(NotFoundError):
                b.fetch_raw("big", 0, 0)
    finally:
        node.close()


def test_cluster_only_requests_are_forbidden_to_tenants(anode):
    conn = _raw(anode)
    _handshake(conn, "beta", B_SECRET.encode())
    cases = [(Op.HEARTBEAT, W.encode_heartbeat(("x:1", "127.0.0.1", 1, NodeState.ALIVE), 0), 0),
             (Op.DRAIN, W.encode_drain(0), 0), (Op.LEASE, W.encode_lease("acme\x1fapp"), FLAG_FORWARDED),
             (Op.DELETE_APP, W.encode_delete_app("acme\x1fshared-app-id"), FLAG_FORWARDED)]
    for op, meta, flags in cases:
        with pytest.raises(ForbiddenError) as ei:
            conn.call(op, meta, flags=flags)
        assert ei.value.code == ErrorCode.FORBIDDEN
    rid = conn.send(Op.PUSH, W.encode_push("acme\x1fa", 0, 0, 0, 1, 0, W.xxh3(b"xy")), b"xy", flags=FLAG_FORWARDED)
    with pytest.raises(ForbiddenError, match="only nodes"):
        conn.recv(Op.PUSH, rid)
    conn.call(Op.PING)  # FORBIDDEN leaves the connection open
    assert _stats(anode)["state"] != "DRAINING"


def test_client_app_names_are_at_most_120_bytes(anode, node):
    for target, kw in [(anode, {"tenant": "acme", "secret": A_SECRET}), (node, {})]:
        with Client(target.address, timeout=10, **kw) as c:
            c.register_shuffle("x" * 120, 0, 1)
            with pytest.raises(BadRequestError) as ei:
                c.register_shuffle("x" * 121, 0, 1)
            assert ei.value.message == "REGISTER_SHUFFLE.app: application name is 121 bytes, the limit is 120"
            # nothing a client names may look like a tenant's qualified name or key, not even on an open node
            with pytest.raises(BadRequestError, match=r"REGISTER_SHUFFLE.app: application name 'acme\\x1fa' "
                                                      r"contains U\+001F"):
                c.register_shuffle("acme\x1fa", 0, 1)
            with pytest.raises(BadRequestError, match="PUT.key: a key may not begin with byte 0x1f"):
                c.put(b"\x1f" + key_tag("acme") + b"k", b"forged")
            c.put(b"k\x1f", b"fine elsewhere in a key")


@pytest.mark.slow  # ~3 s
def test_lease_thread_renews_through_authenticated_connections(tmp_path):
    node = _node(tmp_path, extra=["--app-ttl", "0.9"])
    try:
        node.start()
        with Client(node.address, tenant="acme", secret=A_SECRET, timeout=10) as c:
            c.register_shuffle("leased", 0, 1)
            c.push("leased", 0, 0, 0, 1, 0, b"kept", last=True)
            time.sleep(2.5)  # almost three TTLs: only the lease thread keeps the app
            assert [bytes(s.data) for s in c.fetch("leased", 0, 0)] == [b"kept"]
        assert _stats(node)["counters"]["leases"] >= 3
    finally:
        node.close()


# ---- the auth file at run time ---------------------------------------------------------------------------

def test_sighup_adds_a_tenant_and_keeps_the_old_file_when_the_new_is_bad(tmp_path):
    node = _node(tmp_path, cluster_secret=None)
    try:
        node.start()
        with pytest.raises(AuthFailedError):
            Client(node.address, tenant="gamma", secret="g", timeout=10).ping()
        path = node.auth.auth_file
        write_private(path, "".join(f"{t} {s}\n" for t, s in TENANTS.items()) + "gamma g\n")
        os.kill(node.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "auth file" not in node.stderr_text() or "reloaded" not in node.stderr_text():
            assert time.monotonic() < deadline, node.stderr_text()
            time.sleep(0.05)
        with Client(node.address, tenant="gamma", secret="g", timeout=10) as c:
            c.put(b"k", b"v")
        os.chmod(path, 0o644)  # a bad file: the tenants stay
        os.kill(node.pid, signal.SIGHUP)
        while "auth file not reloaded" not in node.stderr_text():
            assert time.monotonic() < deadline, node.stderr_text()
            time.sleep(0.05)
        assert "keeping its 3 tenants" in node.stderr_text() and "chmod 600" in node.stderr_text()
        with Client(node.address, tenant="gamma", secret="g", timeout=10) as c:
            assert c.get(b"k").to_pybytes() == b"v"
    finally:
        node.close()


@pytest.mark.slow  # ~3 s
def test_failing_address_is_delayed_without_slowing_others(tmp_path):
    node = _node(tmp_path, cluster_secret=None, extra=["--pool-mode", "0640"])
    try:
        node.start()
        assert os.stat(node.pool).st_mode & 0o777 == 0o640
        times: list[float] = []

        # by hand: the Client would stop before AUTH_PROOF (the node's proof does not match a guessed secret)
        def raw_attacker() -> None:
            for _ in range(7):
                conn = _raw(node)
                cn = new_nonce()
                nn, _ = W.decode_auth_resp(conn.call(Op.AUTH, W.encode_auth("acme", cn))[0])
                t = time.monotonic()
                with pytest.raises(AuthFailedError):
                    conn.call(Op.AUTH_PROOF, W.encode_auth_proof(client_proof(b"guess", "acme", cn, nn)))
                times.append(time.monotonic() - t)
                conn.close()

        th = threading.Thread(target=raw_attacker)
        th.start()
        good = []
        while th.is_alive():
            t = time.monotonic()
            with Client(node.address, tenant="beta", secret=B_SECRET, timeout=10) as c:
                c.ping()
            good.append(time.monotonic() - t)
            time.sleep(0.02)
        th.join()
        # 0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6 s: exponential, the last ones near the 2 s cap
        assert times[0] < 0.2 and times[-1] >= 1.4, times
        assert all(b >= a * 0.9 for a, b in zip(times[2:], times[3:], strict=False)), times
        assert len(good) >= 20 and max(good) < 0.5, (len(good), max(good))
    finally:
        node.close()


# ---- nodes as @cluster --------------------------------------------------------------------------------

@pytest.mark.slow  # ~3 s
def test_nodes_with_the_cluster_secret_form_a_cluster_and_a_wrong_one_is_not_admitted(tmp_path):
    with LocalCluster(2, pool_size="64m", node_args=NODE_ARGS, auth_file=TENANTS) as cluster:
        cluster.start(timeout=30)
        with Client(cluster.addresses, tenant="acme", secret=A_SECRET, timeout=10) as c:
            placement = c.register_shuffle("two", 0, 4, replicas=2)
            assert len(placement.nodes) == 2
            c.push("two", 0, 0, 0, 1, 0, b"replicated", placement=placement, last=True)
            assert [bytes(s.data) for s in c.fetch("two", 0, 0, placement=placement)] == [b"replicated"]
        for n in cluster:  # both copies are under the qualified name
            assert "acme/two" in _stats(n)["apps"]
        with Client(cluster[1].address, tenant="acme", secret=A_SECRET, timeout=10) as c:
            assert c.delete_app("two") > 0  # forwarded under the qualified name: gone on both nodes
        for n in cluster:
            assert "acme/two" not in _stats(n)["apps"]
        seed = cluster[0]
        intruder = _node(tmp_path, seeds=seed.address, cluster_secret="not-the-cluster-secret")
        try:
            intruder.start()
            time.sleep(1.5)  # several heartbeats, all refused
            with Client(seed.address, timeout=10, **seed.cluster_auth) as c:
                _, members = c.members()
            assert intruder.address not in {f"{m.host}:{m.port}" for m in members}
            # the intruder finds out first: the seed cannot prove it knows the intruder's "cluster secret"
            assert f"peer {seed.address} could not prove it knows the cluster secret" in intruder.stderr_text(), \
                intruder.stderr_text()
            conn = _raw(seed)  # and a peer that goes on with a wrong proof is refused by the seed
            cn = new_nonce()
            nn, _ = W.decode_auth_resp(conn.call(Op.AUTH, W.encode_auth(CLUSTER, cn))[0])
            _expect_auth_failed(conn, Op.AUTH_PROOF, W.encode_auth_proof(client_proof(b"guess", CLUSTER, cn, nn)))
            assert "authentication from 127.0.0.1 failed: wrong proof for @cluster" in seed.stderr_text()
        finally:
            intruder.close()


# ---- the codec ----------------------------------------------------------------------------------------

_tenant = st.text(alphabet="abcXYZ019._-", min_size=1, max_size=32)
_b32 = st.binary(min_size=32, max_size=32)


@settings(max_examples=200, deadline=None)
@given(_tenant, _b32, _b32, _b32)
def test_auth_codec_round_trip_and_every_truncation_or_extension(tenant, cn, nn, proof):
    metas = [(W.encode_auth(tenant, cn), W.decode_auth, (tenant, cn)),
             (W.encode_auth_resp(nn, proof), W.decode_auth_resp, (nn, proof)),
             (W.encode_auth_proof(proof), W.decode_auth_proof, proof)]
    for meta, decode, want in metas:
        assert decode(meta) == want
        for cut in range(len(meta)):
            with pytest.raises(ProtocolError) as ei:
                decode(meta[:cut])
            assert ei.value.code in (ErrorCode.BAD_FRAME, ErrorCode.BAD_REQUEST)
        for extra in (b"\0", b"\xff" * 5):
            with pytest.raises(ProtocolError) as ei:
                decode(meta + extra)
            assert ei.value.code == ErrorCode.BAD_FRAME
    for n in (0, 31, 33):  # a nonce or proof of any other length: BAD_REQUEST
        w = W.MetaWriter()
        w.bytes(bytes(n))
        with pytest.raises(ProtocolError) as ei:
            W.decode_auth_proof(w.getvalue())
        assert ei.value.code == ErrorCode.BAD_REQUEST
        with pytest.raises(ProtocolError):
            W.encode_auth_proof(bytes(n))


def test_auth_frames_are_framed_like_any_other():
    frame = W.frame(Op.AUTH, 0, 5, W.encode_auth(CLUSTER, bytes(32)), 0)
    assert struct.unpack_from("<IBBHQIIQ", frame)[2] == Op.AUTH and len(frame) == HEADER_SIZE + 2 + 8 + 4 + 32

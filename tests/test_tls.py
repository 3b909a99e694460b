"""TLS on the node's port, between peers and in the Python client (docs/PROTOCOL.md "TLS"): real node processes,
certificates made here with the `openssl` command line (a CA and a node certificate for IP 127.0.0.1)."""

import os
import random
import socket
import ssl
import struct
import subprocess
import sys
import time

import pytest
import xxhash

from rpmp._wire import encode_fetch
from rpmp.client import Client, Connection, RpmpError
from rpmp.cluster import LocalCluster
from rpmp.protocol import END_MAP_ALL, SEQ_LAST, ErrorCode, Op
from rpmp.server.config import NodeConfig
from rpmp.tls import TlsError, client_context

APP = "app-20261202-tls"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE_ARGS = ["--heartbeat-interval", "0.2", "--dead-after", "1.5"]


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, str]:
    """ca.pem (a CA), node.pem/node.key (signed by it, IP SAN 127.0.0.1, usable as server and client certificate),
    other.key (a key that matches no certificate)."""
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=rpmp test CA",
             cwd=str(d))
    _openssl("req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=rpmp node", cwd=str(d))
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "node.pem", "-days", "2", "-extfile", "ext.cnf", cwd=str(d))
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", "other.key",
             cwd=str(d))
    return {name: str(d / name) for name in ("ca.pem", "node.pem", "node.key", "other.key")}


def tls_flags(certs: dict[str, str], ca: bool = False) -> list[str]:
    return ["--tls-cert", certs["node.pem"], "--tls-key", certs["node.key"], *(["--tls-ca", certs["ca.pem"]]
                                                                             if ca else [])]


def data_of(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def push_shuffle(c: Client, sid: int, partitions: int, maps: int, size: int) -> dict:
    """One segment of `size` bytes per (partition, map), SEQ_LAST; {(partition, map): xxh3}."""
    sent, segs = {}, []
    for p in range(partitions):
        for m in range(maps):
            data = data_of(sid * 100_000 + p * 1000 + m, size)
            sent[(p, m)] = xxhash.xxh3_64_intdigest(data)
            segs.append((p, m, 0, SEQ_LAST, data))
    c.push_many(APP, sid, segs)
    return sent


def fetched(c: Client, sid: int, partitions: int, **kw) -> dict:
    return {(p, s.map_index): xxhash.xxh3_64_intdigest(bytes(s.data))
            for p in range(partitions) for s in c.fetch(APP, sid, p, **kw)}


def test_every_op_family_round_trips_byte_exact_and_large_fetches_leave_through_tls(node_factory, certs, tmp_path):
    """--sendfile and a disk tier: FETCH of large partitions from the pool and from spill files comes back byte
    for byte through the TLS layer (no sendfile reply), as do KV values and addresses above the splice size."""
    node = node_factory(pool_size="32m", extra=[*tls_flags(certs), "--sendfile", "--spill-dir",
                                                str(tmp_path / "spill")])
    with Client(node.addr, tls=True, ca=certs["ca.pem"]) as c:
        assert c.hello()["node_id"] == node.addr
        value = data_of(1, 3 << 20)
        c.put("k", value)
        assert c.get("k").to_pybytes() == value
        addr = c.alloc(2 << 20)
        chunk = data_of(2, 1 << 20)
        c.write(addr, chunk, offset=512 << 10)
        assert c.read(addr, 1 << 20, offset=512 << 10).to_pybytes() == chunk
        c.free(addr)
        c.register_shuffle(APP, 1, 2)
        small = push_shuffle(c, 1, 2, 8, 1 << 20)  # 16 MiB: in the pool
        c.map_end(APP, 1, 0, 0, [(0, 1, 1 << 20), (1, 1, 1 << 20)])
        assert fetched(c, 1, 2) == small
        c.register_shuffle(APP, 2, 4)
        big = push_shuffle(c, 2, 4, 16, 1 << 20)  # 64 MiB more into a 32 MiB pool: most goes to disk
        st = c.stats()
        assert st["spill"]["spilled_bytes"] >= 32 << 20, st["spill"]
        assert fetched(c, 2, 4) == big
        assert fetched(c, 1, 2) == small
        assert c.stats()["counters"]["sendfile_replies"] == 0  # sendfile cannot carry TLS: the transport did


def test_a_tls_client_that_does_not_read_is_dropped_and_others_are_served(node_factory, certs):
    """Replies wait in slices (not in the TLS transport): they still count as unsent, so a client that takes none
    of them loses its connection after --send-timeout, and the node does not hold them meanwhile."""
    node = node_factory(extra=[*tls_flags(certs), "--send-timeout", "1"])
    with Client(node.addr, tls=True, ca=certs["ca.pem"]) as c:
        c.register_shuffle(APP, 3, 1)
        c.push_many(APP, 3, [(0, m, 0, SEQ_LAST, data_of(m, 1 << 20)) for m in range(16)])
        stuck = Connection(node.host, node.port, 10, tls=client_context(certs["ca.pem"]))
        stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        for _ in range(8):  # 128 MiB of replies asked for, none read
            stuck.send(Op.FETCH, encode_fetch(APP, 3, 0, 0, END_MAP_ALL, []))
        began = time.monotonic()
        while c.stats()["counters"]["dropped_connections"] == 0 and time.monotonic() - began < 10:
            assert len(c.fetch(APP, 3, 0)) == 16  # served meanwhile
        assert c.stats()["counters"]["dropped_connections"] == 1
        stuck.close()


def test_a_client_without_the_ca_fails_verification_with_a_clear_message(node_factory, certs):
    node = node_factory(extra=tls_flags(certs))
    with Client(node.addr, tls=True) as c, pytest.raises(TlsError, match=r"certificate is not trusted .*give the CA"):
        c.hello()
    with Client(node.addr, tls=True, ca=certs["ca.pem"], server_hostname="rpmp.example") as c, \
            pytest.raises(TlsError, match="not trusted"):  # a name the certificate does not hold
        c.hello()


def test_with_tls_ca_a_client_without_a_certificate_is_refused(node_factory, certs):
    node = node_factory(extra=tls_flags(certs, ca=True))
    with Client(node.addr, tls=True, ca=certs["ca.pem"], timeout=10) as c, \
            pytest.raises(TlsError, match="requires a client certificate"):
        c.hello()
    with Client(node.addr, tls=True, ca=certs["ca.pem"], cert=certs["node.pem"], key=certs["node.key"]) as c:
        c.put("k", b"v" * 1000)
        assert c.get("k").to_pybytes() == b"v" * 1000


def test_plaintext_and_tls_mismatches_get_clear_errors_and_one_log_line(node_factory, certs):
    tls_node = node_factory(extra=tls_flags(certs))
    plain = node_factory()
    for _ in range(2):
        with Client(tls_node.addr, timeout=10) as c, pytest.raises(ConnectionError, match="connect with tls=True"):
            c.hello()
    with Client(plain.addr, tls=True, ca=certs["ca.pem"]) as c, pytest.raises(TlsError, match="does not speak TLS"):
        c.hello()
    # the plaintext node answered the ClientHello with BAD_FRAME, then closed
    with socket.create_connection((plain.host, plain.port), timeout=10) as s:
        s.sendall(b"\x16\x03\x01\x02\x00\x01" + bytes(200))
        head = s.recv(32, socket.MSG_WAITALL)
        meta = s.recv(struct.unpack_from("<I", head, 16)[0], socket.MSG_WAITALL)
        code, n = struct.unpack_from("<HH", meta)
        assert (code, meta[4:4 + n].decode()) == (ErrorCode.BAD_FRAME, "this node speaks plaintext RPMP, not TLS")
        assert s.recv(1) == b""
    time.sleep(0.2)
    lines = [ln for ln in tls_node.stderr_text().splitlines() if "spoke plaintext" in ln]
    assert len(lines) == 1 and "WARNING" in lines[0], lines  # two attempts, one line (rate-limited)
    assert tls_node.running and plain.running


def test_a_stalled_handshake_neither_blocks_others_nor_stays_forever(node_factory, certs):
    node = node_factory(extra=[*tls_flags(certs), "--frame-timeout", "1"])
    silent = socket.create_connection((node.host, node.port), timeout=10)
    half = socket.create_connection((node.host, node.port), timeout=10)
    half.sendall(b"\x16\x03\x01\x02\x00\x01\x00")  # a ClientHello record's first bytes, then nothing
    began = time.monotonic()
    with Client(node.addr, tls=True, ca=certs["ca.pem"]) as c:  # served meanwhile
        c.put("k", b"x" * 100_000)
        assert c.get("k").to_pybytes() == b"x" * 100_000
    assert time.monotonic() - began < 1.0
    for s in (silent, half):  # closed by the handshake timeout (min(frame_timeout, 10 s))
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
        s.close()
    assert time.monotonic() - began < 5.0
    with Client(node.addr, tls=True, ca=certs["ca.pem"]) as c:
        assert c.get("k").to_pybytes() == b"x" * 100_000


def test_three_tls_nodes_with_client_certificates_replicate_and_serve(certs):
    with LocalCluster(3, pool_size="64m", node_args=NODE_ARGS, tls_cert=certs["node.pem"], tls_key=certs["node.key"],
                      tls_ca=certs["ca.pem"]) as cluster:
        with Client(cluster.addresses, **cluster[0].client_tls) as c:
            pl = c.register_shuffle(APP, 7, num_partitions=6, replicas=2)
            segs = [(p, m, 0, SEQ_LAST, data_of(p * 10 + m, 300_000)) for p in range(6) for m in range(3)]
            c.push_many(APP, 7, segs, placement=pl)
            for p in range(6):
                want = sorted(data_of(p * 10 + m, 300_000) for m in range(3))
                primary, replica = pl.nodes_for(p)[:2]
                for n in (primary, replica):  # each copy, from its own node
                    assert c.partition_info(APP, 7, p, node=n.node_id)["records"] == 3
                    assert sorted(bytes(s.data) for s in c.fetch(APP, 7, p, node=n.node_id)) == want


def test_authentication_runs_inside_tls_for_clients_and_peers(certs):
    with LocalCluster(2, pool_size="64m", node_args=NODE_ARGS, auth_file={"etl": "etl-secret"},
                      tls_cert=certs["node.pem"], tls_key=certs["node.key"], tls_ca=certs["ca.pem"]) as cluster:
        tls = cluster[0].client_tls
        with Client(cluster.addresses, tenant="etl", secret="etl-secret", **tls) as c:
            pl = c.register_shuffle(APP, 2, num_partitions=2, replicas=2)  # forwarded and replicated: peers AUTH too
            c.push(APP, 2, 1, 0, 1, 0, b"both", placement=pl, last=True)
            for n in pl.nodes_for(1):
                assert [bytes(s.data) for s in c.fetch(APP, 2, 1, node=n.node_id)] == [b"both"]
        with Client(cluster.addresses, tenant="etl", secret="not-it", **tls) as c, \
                pytest.raises(RpmpError, match="etl"):
            c.hello()


def test_cli_stat_over_tls(node_factory, certs):
    node = node_factory(extra=tls_flags(certs))
    run = [sys.executable, "-m", "rpmp.cli", "stat", "--nodes", node.addr, "--timeout", "5"]
    out = subprocess.run([*run, "--tls", "--tls-ca", certs["ca.pem"]], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0 and node.addr in out.stdout, out.stderr
    out = subprocess.run(run, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "--tls" in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr


def test_tls_settings_are_checked_before_anything_starts(certs, tmp_path):
    unreadable = tmp_path / "nope.pem"
    with pytest.raises(ValueError, match=r"^RPMP_TLS_CERT: tls_cert '.*nope.pem': does not exist$"):
        NodeConfig.load(env={"RPMP_TLS_CERT": str(unreadable), "RPMP_TLS_KEY": certs["node.key"]})
    with pytest.raises(ValueError, match=r"tls_key '.*other.key' does not match tls_cert '.*node.pem'"):
        NodeConfig.load(tls_cert=certs["node.pem"], tls_key=certs["other.key"])
    with pytest.raises(ValueError, match=r"tls_key \(--tls-key\) is not set"):
        NodeConfig.load(tls_cert=certs["node.pem"])
    with pytest.raises(ValueError, match="tls_cert '.*node.key' / tls_key .*: not a PEM certificate"):
        NodeConfig.load(tls_cert=certs["node.key"], tls_key=certs["node.key"])
    pool = tmp_path / "never.pool"
    out = subprocess.run([sys.executable, "-m", "rpmp.cli", "server", "--port", "0", "--pool", str(pool),
                          "--tls-cert", certs["node.pem"], "--tls-key", certs["other.key"]],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1 and "does not match" in out.stderr, out.stderr
    assert not pool.exists()
    assert ssl.HAS_TLSv1_2

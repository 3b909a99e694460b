"""`rpmp stat --json`, `rpmp admin ...` and `rpmp server --log-format json`, through the real CLI against real
nodes holding data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from rpmp import _wire as wire
from rpmp.client import Client, RpmpError
from rpmp.protocol import ErrorCode, Op, ProtocolError
from rpmp.server.config import NodeConfig, public_config

APP, OTHER = "app-admin-1", "app-admin-2"
SEG = 3000  # payload bytes of each pushed segment


def rpmp(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rpmp.cli", *args], capture_output=True, text=True, input=stdin,
                          env={**os.environ, "COLUMNS": "250"}, timeout=60)


@pytest.fixture
def two_nodes(node_factory):
    """Two nodes in one cluster; APP has shuffles 0 (4 partitions, 10 segments a partition) and 1 (2 partitions,
    replicas 2, 3 segments each), OTHER one shuffle of 1 partition and 1 segment."""
    n0 = node_factory()
    n1 = node_factory(seeds=n0.addr)
    nodes = f"{n0.addr},{n1.addr}"
    with Client(nodes, timeout=10) as c:
        deadline = time.monotonic() + 10
        while sum(1 for n in c.members()[1] if n.state.name == "ALIVE") < 2:
            assert time.monotonic() < deadline, "the nodes did not see each other in 10 s"
            time.sleep(0.05)
        pl = c.register_shuffle(APP, 0, 4)
        c.push_many(APP, 0, [(p, m, 0, 0, bytes([p + m]) * SEG) for p in range(4) for m in range(10)], placement=pl)
        pl = c.register_shuffle(APP, 1, 2, replicas=2)
        c.push_many(APP, 1, [(p, m, 0, 0, b"r" * SEG) for p in range(2) for m in range(3)], placement=pl)
        pl = c.register_shuffle(OTHER, 0, 1)
        c.push(OTHER, 0, 0, 0, 0, 0, b"o" * 100, placement=pl)
    yield n0, n1, nodes


def test_stat_json_has_the_tables_figures(two_nodes):
    n0, n1, nodes = two_nodes
    out = rpmp("stat", "--nodes", nodes, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == {"epoch", "nodes", "apps"}
    assert {n["node"] for n in doc["nodes"]} == {n0.addr, n1.addr}
    for n in doc["nodes"]:
        assert n["state"] == "alive" and n["address"] == n["node"]
        f = n["stats"]
        assert set(f) == {"pool", "disk", "apps", "shuffles", "pushed_bytes", "pushed_segments", "fetched_bytes",
                          "fetched_records", "checksum_errors", "uptime_s"}
        assert set(f["pool"]) == {"path", "capacity", "allocated", "used", "free", "blocks"} and f["disk"] is None
    apps = {a["app"]: a for a in doc["apps"]}
    # Segments: 40 + 6 of APP's (shuffle 1's twice: 2 replicas), 1 of OTHER's.
    assert apps[APP]["records"] == 40 + 2 * 6 and apps[OTHER]["records"] == 1
    assert apps[APP]["bytes"] == (40 + 12) * SEG and apps[OTHER]["bytes"] == 100
    assert sum(n["stats"]["pushed_bytes"] for n in doc["nodes"]) == (40 + 12) * SEG + 100
    assert sum(a["bytes"] for a in apps[APP]["nodes"].values()) == apps[APP]["bytes"]
    # The table shows the same figures.
    table = rpmp("stat", "--nodes", nodes)
    assert table.returncode == 0, table.stderr
    for n in doc["nodes"]:
        row = next(line for line in table.stdout.splitlines() if n["node"] in line)
        f = n["stats"]
        cells = [c.strip() for c in row.split("│") if c.strip()]
        assert cells[:3] == [n["node"], "alive", f["pool"]["path"]]
        assert cells[5] == str(f["pool"]["blocks"]) and cells[8:10] == [str(f["apps"]), str(f["shuffles"])]
    app_row = next(line for line in table.stdout.splitlines() if APP in line)
    assert [c.strip() for c in app_row.split("│") if c.strip()][:4] == [APP, str(apps[APP]["shuffles"]), "52",
                                                                         "152.3 KiB"]
    # A dead node is listed with its state and no figures.
    n1.stop()
    deadline = time.monotonic() + 15
    while True:
        doc = json.loads(rpmp("stat", "--nodes", n0.addr, "--json").stdout)
        gone = next(n for n in doc["nodes"] if n["node"] == n1.addr)
        if gone["state"] != "alive":
            break
        assert gone["stats"] is None and "connection refused" in gone["error"]  # alive to n0 yet, but gone
        assert time.monotonic() < deadline, doc
        time.sleep(0.3)
    assert gone["stats"] is None and gone["state"] in ("suspect", "dead")


def test_admin_apps_and_shuffles(two_nodes):
    n0, n1, nodes = two_nodes
    out = rpmp("admin", "apps", "--nodes", nodes, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    apps = {a["app"]: a for a in doc["apps"]}
    assert set(apps) == {APP, OTHER}
    assert apps[APP]["shuffles"] == 2 and apps[OTHER]["shuffles"] == 1
    assert apps[APP]["pool_bytes"] == 52 * SEG and apps[APP]["disk_bytes"] == 0 and apps[APP]["segments"] == 52
    assert sum(r["pool_bytes"] for r in apps[APP]["nodes"].values()) == 52 * SEG
    assert set(apps[APP]["nodes"]) <= {n0.addr, n1.addr}

    out = rpmp("admin", "shuffles", APP, "--nodes", nodes, "--json")
    assert out.returncode == 0, out.stderr
    sh = {s["shuffle"]: s for s in json.loads(out.stdout)["shuffles"]}
    assert set(sh) == {0, 1}
    assert (sh[0]["partitions"], sh[0]["replicas"], sh[0]["segments"], sh[0]["bytes"]) == (4, 1, 40, 40 * SEG)
    assert (sh[1]["partitions"], sh[1]["replicas"], sh[1]["segments"], sh[1]["bytes"]) == (2, 2, 12, 12 * SEG)
    assert set(sh[1]["nodes"]) == {n0.addr, n1.addr}  # 2 replicas on 2 nodes: each holds every partition
    assert all(v["partitions_held"] == 2 for v in sh[1]["nodes"].values())
    assert sum(v["partitions_held"] for v in sh[0]["nodes"].values()) == 4

    table = rpmp("admin", "shuffles", APP, "--nodes", nodes)
    assert table.returncode == 0 and f"shuffles of {APP}" in table.stdout
    assert APP in rpmp("admin", "apps", "--nodes", nodes).stdout
    missing = rpmp("admin", "shuffles", "no-such-app", "--nodes", nodes)
    assert missing.returncode == 1 and "holds no shuffles" in missing.stderr


def test_admin_delete_app_asks_then_frees(two_nodes):
    n0, n1, nodes = two_nodes
    refused = rpmp("admin", "delete-app", APP, "--nodes", nodes)  # not a terminal and no --yes: nothing happens
    assert refused.returncode == 1 and "pass --yes" in refused.stderr
    with Client(nodes, timeout=10) as c:
        assert c.stats(node=n0.addr)["apps"].get(APP) or c.stats(node=n1.addr)["apps"].get(APP)
    out = rpmp("admin", "delete-app", APP, "--nodes", nodes, "--yes", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["freed_bytes"] == 52 * SEG and doc["shuffles"] == 2 and doc["freed_blocks"] > 0
    with Client(nodes, timeout=10) as c:
        for n in (n0, n1):
            assert APP not in c.stats(node=n.addr)["apps"]
    apps = {a["app"] for a in json.loads(rpmp("admin", "apps", "--nodes", nodes, "--json").stdout)["apps"]}
    assert apps == {OTHER}
    again = rpmp("admin", "delete-app", APP, "--nodes", nodes, "--yes")
    assert again.returncode == 1 and "nothing to delete" in again.stderr


def test_admin_delete_app_on_a_terminal_asks(two_nodes):
    import pty

    n0, n1, nodes = two_nodes
    for answer, code in (("n", 1), ("y", 0)):
        master, slave = pty.openpty()  # stdin a terminal: the command asks
        try:
            os.write(master, f"{answer}\n".encode())
            out = subprocess.run([sys.executable, "-m", "rpmp.cli", "admin", "delete-app", OTHER, "--nodes", nodes],
                                 stdin=slave, capture_output=True, text=True, timeout=60)
        finally:
            os.close(slave)
            os.close(master)
        assert out.returncode == code, out.stderr
        assert f"delete app {OTHER!r}: 1 shuffles, 100 B" in out.stdout
        held = {a["app"] for a in json.loads(rpmp("admin", "apps", "--nodes", nodes, "--json").stdout)["apps"]}
        assert (OTHER in held) == (answer == "n")
    assert "deleted app" in out.stdout and "blocks freed" in out.stdout


def test_admin_config_shows_the_effective_settings(node_factory):
    n = node_factory(extra=["--app-ttl", "123", "--max-connections", "77"])
    out = rpmp("admin", "config", n.addr, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    cfg = doc["config"]
    assert doc["node"] == n.addr and cfg["app_ttl"] == 123 and cfg["max_connections"] == 77
    assert cfg["port"] == int(n.addr.rsplit(":", 1)[1]) and cfg["log_format"] == "text"
    assert set(cfg) == set(public_config(NodeConfig()))
    table = rpmp("admin", "config", n.addr)
    assert table.returncode == 0 and "max_connections" in table.stdout and "77" in table.stdout


def test_public_config_hides_secrets_but_not_their_files():
    from dataclasses import dataclass

    @dataclass
    class WithSecrets(NodeConfig):
        cluster_secret: str = ""
        auth_file: str = ""
        cluster_secret_file: str = ""

    cfg = WithSecrets(cluster_secret="hunter2", cluster_secret_file="/etc/rpmp/cluster.secret",
                      auth_file="/etc/rpmp/auth")
    shown = public_config(cfg)
    assert shown["cluster_secret"] == "(hidden)" and "hunter2" not in json.dumps(shown)
    assert shown["cluster_secret_file"] == "/etc/rpmp/cluster.secret" and shown["auth_file"] == "/etc/rpmp/auth"


def test_admin_against_a_closed_port_is_one_line():
    out = rpmp("admin", "apps", "--nodes", "127.0.0.1:9", "--timeout", "2")
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "connection refused" in out.stderr


# ---- log lines ----------------------------------------------------------------------------------------------

def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_log_names_app_shuffle_and_peer_of_failures(node_factory):
    n = node_factory(extra=["--log-format", "json"])
    with Client(n.addr, timeout=10) as c:
        with pytest.raises(RpmpError):  # PUSH to a shuffle never registered: NOT_FOUND
            c.push("app-ghost", 7, 0, 0, 0, 0, b"x" * 64)
        c.register_shuffle("app-bad", 3, 2)
        with c.connection(n.addr) as conn:  # a segment whose checksum does not match its payload
            meta = wire.encode_push("app-bad", 3, 1, 0, 0, 0, 0x1234)
            with pytest.raises(ProtocolError) as err:
                conn.call(Op.PUSH, meta, b"y" * 64)
            assert err.value.code == ErrorCode.CHECKSUM_MISMATCH
        c.ping()
    deadline = time.monotonic() + 5
    while True:
        lines = _json_lines(n.stderr_text())
        failures = [ln for ln in lines if ln.get("op") == "PUSH"]
        if len(failures) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    every = [ln for ln in n.stderr_text().splitlines() if ln.strip()]
    assert every and all(ln.startswith("{") for ln in every), every[:3]  # every line is JSON
    for ln in lines:
        assert {"ts", "level", "logger", "msg"} <= set(ln)
    ghost = next(ln for ln in failures if ln["code"] == "NOT_FOUND")
    assert (ghost["app"], ghost["shuffle"], ghost["level"]) == ("app-ghost", 7, "INFO")
    bad = next(ln for ln in failures if ln["code"] == "CHECKSUM_MISMATCH")
    assert (bad["app"], bad["shuffle"], bad["level"], bad["logger"]) == ("app-bad", 3, "WARNING", "rpmp.network")
    for ln in (ghost, bad):
        assert ln["peer"].startswith("127.0.0.1:") and ln["peer"][10:].isdigit() and "PUSH failed" in ln["msg"]
    assert any("listening on" in ln["msg"] for ln in lines)


def test_a_data_frames_late_failure_is_tagged_with_its_app_and_shuffle():
    """A PUSH's commit runs after the network let go of the frame's meta: the controller's wrapper names the app
    and shuffle on what it raises (a storage error, a protocol error, or the failure of the coroutine it returns),
    so the failure's log line can; a tag already set (the replication's own) is kept."""
    import asyncio

    from rpmp.server.controller import _mapped
    from rpmp.server.logs import subject_fields
    from rpmp.server.storage import StorageError

    def refuse() -> None:
        raise StorageError("not_found", "the shuffle was deleted")

    with pytest.raises(ProtocolError) as err:
        _mapped(refuse, "t\x1fapp-late", 5)()
    assert err.value.code == ErrorCode.NOT_FOUND
    assert subject_fields(err.value, "127.0.0.1:9") == {"app": "t/app-late", "shuffle": 5, "peer": "127.0.0.1:9"}

    async def replicate() -> None:
        raise ProtocolError(ErrorCode.UNAVAILABLE, "replicas unreachable")

    with pytest.raises(ProtocolError) as err:
        asyncio.run(_mapped(replicate, "app-r", 9)())  # type: ignore[arg-type]
    assert subject_fields(err.value, "p") == {"app": "app-r", "shuffle": 9, "peer": "p"}


def test_text_log_appends_the_fields(node_factory):
    n = node_factory()
    with Client(n.addr, timeout=10) as c, pytest.raises(RpmpError):
        c.fetch_raw("app-none", 2, 0)
    deadline = time.monotonic() + 5
    while "FETCH failed" not in n.stderr_text():
        assert time.monotonic() < deadline, n.stderr_text()
        time.sleep(0.05)
    line = next(ln for ln in n.stderr_text().splitlines() if "FETCH failed" in ln)
    assert " app=app-none shuffle=2 peer=127.0.0.1:" in line and " code=NOT_FOUND" in line


def test_log_format_is_checked_like_the_other_settings(tmp_path):
    out = rpmp("server", "--log-format", "yaml")
    assert out.returncode == 2 and "invalid choice: 'yaml'" in out.stderr
    conf = tmp_path / "node.conf"
    conf.write_text("log_format = xml\n")
    out = rpmp("server", "--config", str(conf))
    assert out.returncode == 2
    assert out.stderr.strip() == f"rpmp server: {conf}:1: log_format='xml': must be text or json"
    assert NodeConfig.load(None, env={"RPMP_LOG_FORMAT": "json"}).log_format == "json"


# ---- with authentication --------------------------------------------------------------------------------------

def test_admin_with_tenants_and_the_cluster_secret(tmp_path):
    from rpmp.auth import write_private
    from rpmp.cluster import LocalNode, new_pool_path

    secret_file = str(tmp_path / "acme.secret")
    write_private(secret_file, "acme-secret\n")
    node = LocalNode(new_pool_path("rpmp-admin-auth"), pool_size="64m", remove_pool=True,
                     auth_file={"acme": "acme-secret", "beta": "beta-secret"},
                     cluster_secret_file=str(tmp_path / "cluster.secret"))
    write_private(str(tmp_path / "cluster.secret"), "the-cluster-secret\n")
    node.start()
    try:
        for tenant, secret, n in (("acme", "acme-secret", 1), ("beta", "beta-secret", 3)):
            with Client(node.addr, timeout=10, tenant=tenant, secret=secret) as c:
                pl = c.register_shuffle("x", 0, 2)
                c.push_many("x", 0, [(0, m, 0, 0, b"z" * 500) for m in range(n)], placement=pl)
        as_acme = ("--tenant", "acme", "--secret-file", secret_file)
        as_cluster = ("--cluster-secret-file", str(tmp_path / "cluster.secret"))

        mine = json.loads(rpmp("admin", "apps", "--nodes", node.addr, *as_acme, "--json").stdout)["apps"]
        assert [(a["app"], a["pool_bytes"]) for a in mine] == [("acme/x", 500)]  # its own app only
        every = json.loads(rpmp("admin", "apps", "--nodes", node.addr, *as_cluster, "--json").stdout)["apps"]
        assert {(a["app"], a["pool_bytes"]) for a in every} == {("acme/x", 500), ("beta/x", 1500)}
        sh = json.loads(rpmp("admin", "shuffles", "x", "--nodes", node.addr, *as_acme, "--json").stdout)
        assert [(s["shuffle"], s["segments"]) for s in sh["shuffles"]] == [(0, 1)]

        out = rpmp("admin", "delete-app", "x", "--nodes", node.addr, *as_acme, "--yes", "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["freed_bytes"] == 500
        every = json.loads(rpmp("admin", "apps", "--nodes", node.addr, *as_cluster, "--json").stdout)["apps"]
        assert [a["app"] for a in every] == ["beta/x"]  # the other tenant's app of the same name stays
        out = rpmp("admin", "delete-app", "beta/x", "--nodes", node.addr, *as_cluster, "--yes", "--json")
        assert out.returncode == 0 and json.loads(out.stdout)["freed_bytes"] == 1500, out.stderr
        assert json.loads(rpmp("admin", "apps", "--nodes", node.addr, *as_cluster, "--json").stdout)["apps"] == []

        cfg = rpmp("admin", "config", node.addr, *as_cluster, "--json")
        assert cfg.returncode == 0, cfg.stderr
        shown = json.loads(cfg.stdout)["config"]
        assert shown["auth_file"] == node.auth.auth_file
        assert shown["cluster_secret_file"] == str(tmp_path / "cluster.secret")
        assert not any(s in cfg.stdout for s in ("acme-secret", "beta-secret", "the-cluster-secret"))
        unauthenticated = rpmp("admin", "apps", "--nodes", node.addr)
        assert unauthenticated.returncode == 1 and unauthenticated.stderr.count("\n") == 1
        with Client(node.addr, timeout=10, tenant="acme", secret="acme-secret") as c, pytest.raises(RpmpError):
            c.fetch_raw("nope", 9, 0)  # a tenant's failure names the app as STATS does: tenant/app
        deadline = time.monotonic() + 5
        while "app=acme/nope shuffle=9 peer=" not in node.stderr_text():
            assert time.monotonic() < deadline, node.stderr_text()[-2000:]
            time.sleep(0.05)
    finally:
        node.close()


def test_failure_lines_are_bounded_per_second():
    import logging

    from rpmp.server.logs import MAX_LINES_PER_SECOND, FailureLog

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("rpmp.test-failure-log")
    logger.setLevel(logging.INFO)
    logger.addHandler(Keep())
    logger.propagate = False
    failures = FailureLog(logger)
    err = ProtocolError(ErrorCode.NOT_FOUND, "no such shuffle")
    began = time.monotonic()
    for _ in range(10 * MAX_LINES_PER_SECOND):
        failures("127.0.0.1:1", Op.FETCH, err)
    seconds = int(time.monotonic()) - int(began) + 1  # the loop may straddle a second boundary
    lines = [r for r in records if r.getMessage().startswith("FETCH failed")]
    assert MAX_LINES_PER_SECOND <= len(lines) <= seconds * MAX_LINES_PER_SECOND
    assert all((r.peer, r.code, r.levelname) == ("127.0.0.1:1", "NOT_FOUND", "INFO") for r in lines)
    time.sleep(1.05)
    failures("127.0.0.1:1", Op.GET, err)  # the next second: first the count of what was left out
    summary = [r.getMessage() for r in records if "not logged" in r.getMessage()]
    assert summary and summary[-1].endswith(f"more failed requests not logged (over {MAX_LINES_PER_SECOND} lines a "
                                            f"second)")
    assert not any(r.getMessage().startswith("GET failed") for r in records)  # a missing key is DEBUG: not shown


@pytest.mark.parametrize("command", ["apps", "shuffles", "delete-app", "config"])
def test_admin_help_explains_every_option(command):
    from rpmp.cli import build_parser

    admin = build_parser()._subparsers._group_actions[0].choices["admin"]
    sub = admin._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        assert action.help, f"rpmp admin {command}: {action.option_strings or action.dest} has no help text"
    assert {"--json", "--timeout", "--tls", "--cluster-secret-file", "--tenant"} <= set(sub._option_string_actions)

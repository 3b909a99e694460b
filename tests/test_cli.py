"""The `rpmp` command line and the node configuration."""

import os
import subprocess
import sys

import pytest

from rpmp.cli import build_parser
from rpmp.server.config import NodeConfig, parse_hostport, parse_size

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rpmp(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rpmp.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=60, **kw)


@pytest.mark.parametrize("sub", ["server", "cluster", "stat"])
def test_help_explains_every_option(sub):
    parser = build_parser()
    subparser = parser._subparsers._group_actions[0].choices[sub]
    for action in subparser._actions:
        assert action.help, f"rpmp {sub}: option {action.option_strings or action.dest} has no help text"
    out = rpmp(sub, "--help")
    assert out.returncode == 0 and out.stdout.startswith(f"usage: rpmp {sub}")


def test_sizes_and_addresses():
    assert [parse_size(s) for s in ("4096", "512m", "4g", "1.5k", "2GiB")] == [4096, 512 << 20, 4 << 30, 1536, 2 << 30]
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")
    assert parse_hostport("10.0.0.1:7077") == ("10.0.0.1", 7077)
    with pytest.raises(ValueError, match="not a host:port"):
        parse_hostport("nohost")


def test_config_precedence(tmp_path):
    conf = tmp_path / "node.conf"
    conf.write_text("# comment\nport = 9000\npool_size = 2g\nseeds = a:1, b:2\nverify_push = false\n")
    cfg = NodeConfig.load(str(conf), env={"RPMP_PORT": "9100", "RPMP_LOG_LEVEL": "DEBUG"}, host="127.0.0.2")
    assert (cfg.port, cfg.pool_size, cfg.seeds, cfg.verify_push) == (9100, 2 << 30, ["a:1", "b:2"], False)
    assert (cfg.host, cfg.log_level, cfg.node_id) == ("127.0.0.2", "DEBUG", "127.0.0.2:9100")
    conf.write_text("colour = blue\n")
    with pytest.raises(ValueError, match="unknown setting 'colour'"):
        NodeConfig.load(str(conf), env={})


def test_shipped_node_conf_parses():
    cfg = NodeConfig.load(os.path.join(ROOT, "spark-conf", "rpmp-node.conf"), env={})
    assert cfg == NodeConfig()


def test_server_rejects_bad_settings():
    out = rpmp("server", "--pool-size", "huge")
    assert out.returncode == 2 and "not a size" in out.stderr


def test_stat_prints_nodes_and_apps(node):
    from rpmp.client import Client

    with Client(node.addr) as c:
        c.register_shuffle("stat-app", 1, 2)
        c.push("stat-app", 1, 0, 0, 1, 0, b"x" * 5000)
    out = rpmp("stat", "--nodes", node.addr)
    assert out.returncode == 0, out.stderr
    assert node.addr in out.stdout and "alive" in out.stdout and node.pool in out.stdout
    assert "stat-app" in out.stdout and "4.9 KiB" in out.stdout

"""The `rpmp` command line and the node configuration."""

import os
import subprocess
import sys
import time

import pytest

from rpmp.cli import build_parser
from rpmp.server.config import NodeConfig, parse_hostport, parse_size

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rpmp(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    """`rpmp args...` with the environment plus `env`."""
    return subprocess.run([sys.executable, "-m", "rpmp.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=60, **kw)


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


# ---- the disk tier's settings: each bad value is one line on stderr, exit 2, and nothing is created ------------

BAD_SPILL = [
    # (flags, environment, config file text, what stderr must say)
    (["--spill-high", "1.5"], {}, "", "spill_high=1.5: must be a fraction of the pool's capacity in (0, 1]"),
    (["--spill-high", "0"], {}, "", "spill_high=0.0: must be a fraction"),
    (["--spill-high", "nan"], {}, "", "spill_high=nan: must be a fraction"),
    (["--spill-low", "0"], {}, "", "spill_low=0.0: must be a fraction"),
    (["--spill-low", "-0.1"], {}, "", "spill_low=-0.1: must be a fraction"),
    (["--spill-low", "0.9"], {}, "", "spill_low=0.9 must be below spill_high=0.85"),
    (["--spill-high", "0.5", "--spill-low", "0.5"], {}, "", "spill_low=0.5 must be below spill_high=0.5"),
    (["--full-wait", "-1"], {}, "", "full_wait=-1.0: must be a number of seconds >= 0"),
    (["--full-wait", "inf"], {}, "", "full_wait=inf: must be a number of seconds >= 0"),
    (["--spill-size", "-1"], {}, "", "spill_size=-1: must be >= 0 bytes"),
    (["--app-quota=-1m"], {}, "", "app_quota=-1048576: must be >= 0 bytes"),
    (["--spill-dir", "{tmp}/no/such"], {}, "", "spill dir '{tmp}/no/such': does not exist, nor does its parent "
                                               "'{tmp}/no'"),
    (["--spill-dir", "{tmp}/file"], {}, "", "spill dir '{tmp}/file': exists and is not a directory"),
    (["--spill-dir", "{tmp}/d,{tmp}/d"], {}, "", "spill dir '{tmp}/d' is given twice"),
    (["--spill-dir", "{tmp}/d", "--spill-dir", "{tmp}/link"], {}, "", "spill dir '{tmp}/link' is given twice "
                                                                      "(as '{tmp}/d' too)"),
    (["--spill-dir", ","], {}, "", "--spill-dir: names no directory"),
    # a valid directory that does not exist yet is not created when another value is bad
    (["--spill-dir", "{tmp}/new", "--spill-high", "2"], {}, "", "spill_high=2.0: must be a fraction"),
    ([], {"RPMP_SPILL_HIGH": "0.5", "RPMP_SPILL_LOW": "0.7"}, "", "spill_low=0.7 must be below spill_high=0.5"),
    ([], {"RPMP_FULL_WAIT": "-3"}, "", "full_wait=-3.0: must be"),
    ([], {"RPMP_SPILL_DIR": "{tmp}/no/such"}, "", "spill dir '{tmp}/no/such': does not exist"),
    ([], {}, "spill-dir = {tmp}/file\n", "spill dir '{tmp}/file': exists and is not a directory"),
    ([], {}, "spill_dirs = {tmp}/no/such\n", "spill dir '{tmp}/no/such': does not exist"),
    ([], {}, "rpmp.node.app-quota = -5\n", "app_quota=-5: must be >= 0 bytes (0: no quota)"),
]


@pytest.mark.parametrize(("flags", "env", "conf", "message"), BAD_SPILL,
                         ids=[" ".join(f) or next(iter(e), "") or c.strip() for f, e, c, _ in BAD_SPILL])
def test_server_rejects_bad_spill_settings_before_creating_anything(tmp_path, flags, env, conf, message):
    tmp = str(tmp_path)
    (tmp_path / "file").write_text("not a directory")
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "d")
    pool = tmp_path / "node.pool"
    args = ["server", "--port", "0", "--pool", str(pool), "--pool-size", "64m", *(f.format(tmp=tmp) for f in flags)]
    if conf:
        (tmp_path / "node.conf").write_text(conf.format(tmp=tmp))
        args += ["--config", str(tmp_path / "node.conf")]
    before = sorted(os.listdir(tmp))
    out = rpmp(*args, env={k: v.format(tmp=tmp) for k, v in env.items()})
    assert out.returncode == 2, out
    assert message.format(tmp=tmp) in out.stderr and out.stderr.startswith("rpmp server: ")
    assert out.stderr.count("\n") == 1, out.stderr      # one line
    assert sorted(os.listdir(tmp)) == before            # no pool file, no spill directory
    assert not os.path.exists(tmp_path / "new")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_server_rejects_a_spill_dir_it_cannot_write(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    out = rpmp("server", "--port", "0", "--pool", str(tmp_path / "p.pool"), "--spill-dir", str(ro))
    assert out.returncode == 2 and f"spill dir '{ro}': not writable" in out.stderr
    out = rpmp("server", "--port", "0", "--pool", str(tmp_path / "p.pool"), "--spill-dir", str(ro / "sub"))
    assert out.returncode == 2 and "its parent" in out.stderr and "is not writable" in out.stderr
    assert not (tmp_path / "p.pool").exists()


def test_spill_settings_from_flags_file_and_environment(tmp_path):
    conf = tmp_path / "node.conf"
    conf.write_text(f"spill-dir = {tmp_path}/a, {tmp_path}/b\nspill_size = 10g\nspill_high = 0.9\n"
                    f"full_wait = 5\napp-quota = 1g\n")
    cfg = NodeConfig.load(str(conf), env={"RPMP_SPILL_LOW": "0.5"})
    assert cfg.spill_dirs == [f"{tmp_path}/a", f"{tmp_path}/b"]
    assert (cfg.spill_size, cfg.spill_high, cfg.spill_low, cfg.full_wait, cfg.app_quota) == (
        10 << 30, 0.9, 0.5, 5.0, 1 << 30)
    # load() checks and creates nothing (the node creates them once its port and pool checks passed); validate()
    # creates them, private
    assert not (tmp_path / "a").exists()
    cfg.validate()
    for d in ("a", "b"):
        assert (tmp_path / d).is_dir() and (tmp_path / d).stat().st_mode & 0o777 == 0o700
    # the field's own name wins over its alias, in the environment as in a file
    cfg = NodeConfig.load(None, env={"RPMP_SPILL_DIR": f"{tmp_path}/a", "RPMP_SPILL_DIRS": f"{tmp_path}/b"})
    assert cfg.spill_dirs == [f"{tmp_path}/b"]
    args = build_parser().parse_args(["server", "--spill-dir", f"{tmp_path}/a,{tmp_path}/b", "--spill-dir",
                                      f"{tmp_path}/c", "--spill-size", "2g", "--spill-high", "0.8", "--spill-low",
                                      "0.6", "--full-wait", "0", "--app-quota", "512m"])
    from rpmp.cli import _config

    cfg = _config(args)
    assert cfg.spill_dirs == [f"{tmp_path}/{d}" for d in "abc"]
    assert (cfg.spill_size, cfg.spill_high, cfg.spill_low, cfg.full_wait, cfg.app_quota) == (
        2 << 30, 0.8, 0.6, 0.0, 512 << 20)
    assert NodeConfig().spill_dirs == [] and NodeConfig.load(None, env={}).spill_dirs == []


BAD_CLUSTER_SPILL = [
    (["--spill-high", "2"], "spill_high=2.0: must be a fraction"),
    (["--spill-low", "0.9", "--spill-high", "0.8"], "spill_low=0.9 must be below spill_high=0.8"),
    (["--app-quota", "-1"], "app_quota=-1: must be >= 0"),
    (["--spill-dir", "{tmp}/no/such"], "spill dir '{tmp}/no/such': does not exist, nor does its parent"),
    (["--spill-dir", "{tmp}/s,{tmp}/s"], "spill dir '{tmp}/s' is given twice"),
    # node 0 would spill into s/rpmp-node1/rpmp-node0, inside node 1's s/rpmp-node1
    (["--spill-dir", "{tmp}/s,{tmp}/s/rpmp-node1"], "nodes 0 and 1 would share spill dir"),
]


@pytest.mark.parametrize(("flags", "message"), BAD_CLUSTER_SPILL, ids=[" ".join(f) for f, _ in BAD_CLUSTER_SPILL])
def test_cluster_rejects_bad_spill_settings_before_starting_a_node(tmp_path, flags, message):
    tmp = str(tmp_path)
    (tmp_path / "s").mkdir()
    out = rpmp("cluster", "--nodes", "2", "--name", "rpmp", "--pool-dir", tmp, "--pool-size", "64m",
               *(f.format(tmp=tmp) for f in flags))
    assert out.returncode == 2, out
    assert out.stderr.startswith("rpmp cluster: ") and message.format(tmp=tmp) in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and out.stdout == ""
    assert sorted(os.listdir(tmp)) == ["s"] and os.listdir(tmp_path / "s") == []


def test_cluster_gives_each_node_its_own_spill_subdirectory_and_keeps_it(tmp_path):
    import signal

    spill = tmp_path / "spill"   # missing: created, its parent exists
    proc = subprocess.Popen([sys.executable, "-m", "rpmp.cli", "cluster", "--nodes", "2", "--name", "rpmp",
                             "--pool-dir", str(tmp_path), "--pool-size", "64m", "--spill-dir", str(spill),
                             "--spill-high", "0.9", "--app-quota", "1g"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[-1].startswith("RPMP cluster ready: "), (lines, proc.stderr.read() if proc.poll() else "")
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            children = f.read().split()
        cmdlines = []
        for pid in children:
            with open(f"/proc/{pid}/cmdline") as f:
                cmdlines.append(f.read().split("\0"))
        dirs = sorted(c[c.index("--spill-dir") + 1] for c in cmdlines)
        assert dirs == [str(spill / "rpmp-node0"), str(spill / "rpmp-node1")]
        assert all("--spill-high" in c and "--app-quota" in c for c in cmdlines)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    # kept with the pools: a later `rpmp cluster` on the same directories finds its spilled blocks
    assert sorted(os.listdir(spill)) == ["rpmp-node0", "rpmp-node1"]
    assert spill.stat().st_mode & 0o777 == 0o700


def test_stat_shows_the_disk_tier_and_what_each_app_holds_on_disk(spill_node):
    from rpmp.client import Client

    n = spill_node("32m")
    with Client(n.addr) as c:
        c.register_shuffle("spilling-app", 1, 4)
        for m in range(48):
            c.push("spilling-app", 1, m % 4, m, 0, 0, bytes([m]) * (1 << 20))
        st, deadline = c.stats(), time.monotonic() + 10
        while time.monotonic() < deadline:  # the spiller may still be moving blocks: wait until it rests
            time.sleep(0.6)
            st, before = c.stats(), st
            if st["spill"] == before["spill"]:
                break
    out = rpmp("stat", "--nodes", n.addr, env={"COLUMNS": "250"})
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if n.addr in line)
    assert f"{st['spill']['used'] / (1 << 20):.1f} MiB" in row, row
    app = next(line for line in out.stdout.splitlines() if "spilling-app" in line)
    assert "48.0 MiB" in app and f"{st['apps']['spilling-app']['spilled_bytes'] / (1 << 20):.1f} MiB" in app, app

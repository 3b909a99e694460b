"""Spark on nodes that authenticate (--auth-file) and speak TLS (--tls-cert), end to end (issue 15, JVM side).

Each scenario is one real Spark application on real nodes; the job (a groupByKey of N values over KEYS keys: count,
sum and an order-free checksum per key) must give exactly what Python computes here:

- auth through Spark's own secret (spark.authenticate=true + spark.authenticate.secret, nothing spark.rpmp.auth.*),
  local-cluster: the executors get the secret the way Spark hands it to them, and push and fetch as the tenant;
- TLS and an explicit spark.rpmp.auth.tenant/secret, local-cluster with spark.rpmp.fetch.local=false, so every
  byte (pushes and FETCHes) crosses TLS;
- a wrong secret: the job fails with the plugin's message (node, tenant, what to check), no fallback;
- rpmp_session(secret=..., tls=True): the embedded node runs with an auth file and a self-signed certificate.

In the spark-submit scenarios the secret must be absent from the driver's output (its log) and from every file of
the executors' work directory (their logs), and the UI's REST environment
(/api/v1/applications/<id>/environment) shows the secret's key redacted and the secret nowhere.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
import textwrap
from functools import reduce
from operator import xor
from pathlib import Path

import pytest

pytest.importorskip("pyspark")

from conftest import SHM  # noqa: E402
from sparkutil import forget_jvm_settings, forget_lingering_rpmp_settings, plugin_jar  # noqa: E402

from rpmp.cluster import LocalNode, new_pool_path  # noqa: E402

N, KEYS, HASH = 40_000, 101, 2654435761
REDACTED = "*********(redacted)"

JOB = textwrap.dedent('''
    import json, sys, urllib.request
    from functools import reduce
    from operator import xor
    from pyspark.sql import SparkSession

    N, KEYS, HASH = %d, %d, %d
    spark = SparkSession.builder.getOrCreate()
    sc = spark.sparkContext
    sc.setLogLevel("INFO")
    res = {"app": sc.applicationId}
    try:
        per_key = (sc.parallelize(range(N), 6).map(lambda i: (i %% KEYS, i)).groupByKey(4)
                   .mapValues(lambda vs: [len(vs), sum(vs), reduce(xor, (v * HASH %% 2**32 for v in vs), 0)]))
        res["result"] = sorted([k, v] for k, v in per_key.collect())
        res["metrics"] = json.loads(sc._jvm.org.rpmp.shuffle.RpmpMetrics.snapshotJson())
    except Exception as e:
        res["error"] = str(e)
    base = sc.uiWebUrl.replace("localhost", "127.0.0.1").rstrip("/")
    with urllib.request.urlopen(f"{base}/api/v1/applications/{sc.applicationId}/environment", timeout=10) as r:
        res["environment"] = json.load(r)
    spark.stop()
    with open(sys.argv[1], "w") as f:
        json.dump(res, f)
''') % (N, KEYS, HASH)


def expected() -> list[list]:
    return [[k, [len(range(k, N, KEYS)), sum(range(k, N, KEYS)),
                 reduce(xor, (v * HASH % 2**32 for v in range(k, N, KEYS)), 0)]] for k in range(KEYS)]


def spark_user() -> str:
    return os.environ.get("SPARK_USER") or getpass.getuser()


def auth_node(auth: dict[str, str], **kw) -> LocalNode:
    return LocalNode(new_pool_path("rpmp-auth", SHM), pool_size="64m", remove_pool=True, auth_file=auth, **kw).start()


def submit(tmp: Path, master: str, node: LocalNode, props: dict[str, str]) -> tuple[dict, str]:
    """Runs JOB with spark-submit (settings in a properties file, not on a command line); returns its JSON result
    and everything the driver printed."""
    from shuffle_plugin import jar as plugin_jar_module
    from shuffle_plugin.session import jar_conf

    script = tmp / "job.py"
    script.write_text(JOB, encoding="utf-8")
    conf = {**jar_conf(plugin_jar()), "spark.shuffle.manager": "org.rpmp.shuffle.RpmpShuffleManager",
            "spark.shuffle.sort.io.plugin.class": "org.rpmp.shuffle.RpmpShuffleDataIO",
            "spark.rpmp.nodes": node.addr, "spark.rpmp.push.size": "16k", "spark.ui.enabled": "true",
            "spark.ui.port": "0", "spark.ui.showConsoleProgress": "false", "spark.executor.memory": "512m",
            "spark.rpmp.register.timeout": "5s", **props}
    props_file = tmp / "spark.properties"
    props_file.write_text("".join(f"{k} {v}\n" for k, v in conf.items()), encoding="utf-8")
    os.chmod(props_file, 0o600)
    spark_home = plugin_jar_module.spark_jars_dir().parent
    env = {**os.environ, "SPARK_HOME": str(spark_home), "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable}
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    out = tmp / "result.json"
    proc = subprocess.run([str(spark_home / "bin" / "spark-submit"), "--master", master, "--properties-file",
                           str(props_file), str(script), str(out)],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=240)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and out.exists(), log[-6000:]
    return json.loads(out.read_text(encoding="utf-8")), log


def executor_logs(app: str) -> str:
    """Every file the executors of `app` wrote into their work directory (local-cluster: $SPARK_HOME/work/<app>:
    stdout, stderr), concatenated; the directory is removed afterwards."""
    from shuffle_plugin import jar as plugin_jar_module

    work = plugin_jar_module.spark_jars_dir().parent / "work" / app
    assert work.is_dir(), f"no executor work directory {work}"
    files = [p for p in work.rglob("*") if p.is_file() and p.suffix not in (".jar", ".py", ".zip")]
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    shutil.rmtree(work, ignore_errors=True)
    return text


def check_secret_kept(secret: str, secret_key: str, res: dict, driver_log: str) -> None:
    """The secret is in no log (the driver's, the executors') and nowhere in the UI's environment, where its key
    shows as redacted."""
    assert secret not in driver_log
    logs = executor_logs(res["app"])
    assert "CoarseGrainedExecutorBackend" in logs, "no executor logs found"
    assert secret not in logs
    env = res["environment"]
    assert secret not in json.dumps(env)
    props = dict(env["sparkProperties"])
    assert props[secret_key] == REDACTED, props.get(secret_key)


@pytest.fixture(scope="module", autouse=True)
def no_settings_left_behind():
    yield
    forget_lingering_rpmp_settings({})
    forget_jvm_settings(["spark.shuffle.sort.io.plugin.class"])


def test_tls_and_sparks_own_secret_local_cluster_every_byte_over_tls(tmp_path):
    """spark.authenticate=true + spark.authenticate.secret and nothing spark.rpmp.auth.*: the executors take Spark's
    secret as Spark hands it to them; spark.rpmp.fetch.local=false: pushes and FETCHes all cross TLS."""
    from shuffle_plugin.session import self_signed_cert

    secret = "spark-shared-" + os.urandom(8).hex()
    user = spark_user()
    cert, key = self_signed_cert(str(tmp_path))
    with auth_node({user: secret}, tls_cert=cert, tls_key=key) as node:
        res, log = submit(tmp_path, "local-cluster[2,1,1024]", node,
                          {"spark.authenticate": "true", "spark.authenticate.secret": secret,
                           "spark.rpmp.tls.enabled": "true", "spark.rpmp.tls.caPem": cert,
                           "spark.rpmp.fetch.local": "false"})
        assert "error" not in res, res.get("error", "")[-3000:]
        assert res["result"] == expected()
        totals = res["metrics"]["totals"]
        assert totals["bytesPushed"] > 0 and totals["bytesFetched"] > 0, totals
        assert totals["recordsRead"] == totals["recordsWritten"] > 0, totals
        assert f"authenticated as tenant {user}, TLS" in log
        assert node_counters(node, user, secret, cert)["auth_failures"] == 0
    check_secret_kept(secret, "spark.authenticate.secret", res, log)


def test_a_wrong_secret_fails_the_job_with_what_to_check(tmp_path):
    right, wrong = "right-" + os.urandom(8).hex(), "wrong-" + os.urandom(8).hex()
    user = spark_user()
    with auth_node({user: right}) as node:
        res, log = submit(tmp_path, "local[2]", node, {"spark.rpmp.auth.secret": wrong})
    err = res.get("error")
    assert err, "the job succeeded with a wrong secret"
    # The client finds out first: the node's proof, made with the right secret, does not match the wrong one.
    assert f"RPMP node {node.addr} refused this application: AUTH_FAILED from {node.addr}: the node's proof does " \
           f"not match the secret given for tenant '{user}'" in err, err[-3000:]
    assert "spark.rpmp.auth.secret" in err and "auth file" in err, err[-3000:]
    assert "result" not in res and "sort shuffle" not in log   # no fallback to Spark's sort shuffle
    for s in (wrong, right):
        assert s not in log and s not in err
    assert dict(res["environment"]["sparkProperties"])["spark.rpmp.auth.secret"] == REDACTED


def node_counters(node: LocalNode, tenant: str, secret: str, ca: str | None = None) -> dict:
    """The node's STATS counters (auth_failures among them), asked as the tenant."""
    from rpmp.client import Client

    with Client(node.addr, tenant=tenant, secret=secret, timeout=10, tls=ca is not None, ca=ca) as c:
        return c.stats()["counters"]


def run_session_job(spark) -> list:
    sc = spark.sparkContext
    per_key = (sc.parallelize(range(N), 4).map(lambda i: (i % KEYS, i)).groupByKey(3)
               .mapValues(lambda vs: [len(vs), sum(vs), reduce(xor, (v * HASH % 2**32 for v in vs), 0)]))
    return sorted([k, v] for k, v in per_key.collect())


@pytest.mark.parametrize("tls", [False, True], ids=["auth", "auth+tls"])
def test_rpmp_session_with_a_secret_starts_an_authenticating_node(tls, capfd):
    """rpmp_session(secret=, tenant=, tls=): the embedded node runs with an auth file (and a self-signed
    certificate), the JVMs read the secret from a 0600 file, the job is exact, a client without the secret is
    refused, and stop() removes the files; the secret is printed nowhere."""
    from rpmp.client import Client
    from rpmp.protocol import ProtocolError
    from shuffle_plugin import rpmp_session

    secret = "session-" + os.urandom(8).hex()
    spark = rpmp_session("rpmp-auth-session", master="local[2]", secret=secret, tenant="etl", tls=tls,
                         conf={"spark.ui.enabled": "false", "spark.rpmp.fetch.local": "false"})
    try:
        node = spark._rpmp_node
        cmd = node.command()
        assert "--auth-file" in cmd and ("--tls-cert" in cmd) == tls, cmd
        assert secret not in " ".join(cmd)
        auth_file = cmd[cmd.index("--auth-file") + 1]
        conf = dict(spark.sparkContext.getConf().getAll())
        assert "spark.rpmp.auth.secret" not in conf and conf["spark.rpmp.auth.tenant"] == "etl"
        assert conf.get("spark.rpmp.tls.enabled") == ("true" if tls else None)
        secret_file = conf["spark.rpmp.auth.secretFile"]
        for f in (auth_file, secret_file):
            assert os.stat(f).st_mode & 0o777 == 0o600, f
        assert run_session_job(spark) == expected()
        assert spark.sparkContext._jvm.org.rpmp.shuffle.RpmpMetrics.snapshotJson().count('"bytesPushed"') >= 1
        tls_kw = {"tls": True, "ca": conf["spark.rpmp.tls.caPem"]} if tls else {}
        with Client(node.addr, timeout=10, **tls_kw) as c, pytest.raises(ProtocolError):
            c.register_shuffle("intruder", 1, 1)   # no secret: refused
        with Client(node.addr, tenant="etl", secret=secret, timeout=10, **tls_kw) as c:
            assert c.stats()["counters"]["auth_failures"] >= 1
    finally:
        spark.stop()
    assert not os.path.exists(secret_file) and not os.path.exists(auth_file), "the session's secret files stay"
    out, err = capfd.readouterr()
    assert secret not in out and secret not in err


def test_session_checks_replicas_against_an_authenticating_cluster():
    """configure()/rpmp_session() count a cluster's alive nodes for `replicas` with the session's tenant and
    secret: against nodes that authenticate, the count works (no 'did not answer' warning) and too many
    replicas is the usual ValueError; bad security arguments are ValueErrors that never show the secret."""
    import warnings

    from rpmp.cluster import LocalCluster
    from shuffle_plugin.session import _check_security, _client_kw, check_settings

    secret = "cluster-" + os.urandom(8).hex()
    with LocalCluster(2, pool_size="32m", pool_dir=SHM, name="rpmp-auth-replicas", auth_file={"etl": secret}) as c:
        nodes = ",".join(c.addresses)
        kw = _client_kw("etl", secret, False)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert check_settings(nodes, 2, {}, (), kw) == {}
            with pytest.raises(ValueError, match="has 2 alive nodes"):
                check_settings(nodes, 3, {}, (), kw)
    for args, match in (((None, " ", False), "non-empty"), (("etl", None, False), "without secret="),
                        (("a b", "x", False), "not a tenant name"), ((None, "x", "/nonexistent/ca.pem"), "no such CA")):
        with pytest.raises(ValueError, match=match) as e:
            _check_security(*args)
        assert secret not in str(e.value)

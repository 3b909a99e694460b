"""The deployment recipes in deploy/: the systemd unit runs a node whose pool survives a restart, and the Helm
chart renders manifests whose seeds, ports, probes, volumes and secrets wire together.

Helm is not a Python package: `./dev setup` (scripts/setup-machine.sh) builds it once into ~/.cache/rpmp/bin;
without it the chart tests fail, saying so (CI installs it), rather than skip.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from rpmp.cli import build_parser
from rpmp.client import Client
from rpmp.server.config import NodeConfig, parse_size, read_conf_file

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "rpmp"
SYSTEMD = ROOT / "deploy" / "systemd"
# where scripts/setup-machine.sh puts the helm it builds
HELM_CACHE = Path(os.environ.get("RPMP_HELM_BIN") or Path.home() / ".cache" / "rpmp" / "bin") / "helm"
NAMESPACE = "shuffle"
MiB = 1 << 20
# Flags of issue 15 (authentication, TLS) that the chart passes; accepted once `rpmp server` knows them.
PENDING_FLAGS = {"--auth-file", "--cluster-secret-file", "--tls-cert", "--tls-key", "--tls-ca"}


# ---------------------------------------------------------------------------------------------------- systemd


def unit_settings(path: Path) -> dict[str, list[str]]:
    """A unit file's `Key=value` lines, every value of a repeated key kept."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_systemd_unit_keeps_the_pool_and_limits_the_node():
    unit = unit_settings(SYSTEMD / "rpmp.service")
    conf = NodeConfig.load(str(SYSTEMD / "rpmp-node.conf"), env={}, spill_dirs=[])  # every value in it parses
    assert unit["ExecStart"] == ["/opt/rpmp/bin/rpmp server --config /etc/rpmp/rpmp-node.conf"]
    assert unit["Restart"] == ["on-failure"] and unit["RestartPreventExitStatus"] == ["2"]
    assert unit["RemoveIPC"] == ["no"]  # yes would delete the rpmp user's /dev/shm files at stop: the pool
    for key in ("ExecStop", "ExecStopPost", "ExecStartPre", "ExecStartPost", "ExecReload"):
        assert key not in unit, f"{key}: nothing may run around the node (the pool must stay)"
    assert unit["ProtectSystem"] == ["strict"] and unit["NoNewPrivileges"] == ["yes"]
    writable = " ".join(unit["ReadWritePaths"]).split() + ["/var/lib/" + d for d in unit["StateDirectory"]]
    assert any(conf.pool.startswith(d + "/") for d in writable), (conf.pool, writable)
    spill = read_conf_file(str(SYSTEMD / "rpmp-node.conf"))["spill_dir"].split(",")
    assert spill and all(any(s.startswith(d + "/") for d in writable) for s in spill), (spill, writable)
    assert int(unit["LimitNOFILE"][0]) > 4 * conf.max_connections
    assert int(unit["TimeoutStopSec"][0]) == 30
    assert unit["User"] == ["rpmp"] and (SYSTEMD / "rpmp.sysusers").read_text().count("\nu rpmp ") == 1
    assert set(env_file(SYSTEMD / "rpmp.env")) <= {"RPMP_" + f.upper() for f in NodeConfig.__dataclass_fields__}


def test_systemd_unit_verifies(tmp_path):
    """`systemd-analyze verify` on the unit, its ExecStart pointed at this machine's rpmp (the real one is in
    /opt/rpmp, which the unit's install notes create)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (Debian: apt-get install systemd)")
    exe = shutil.which("rpmp") or sys.executable
    unit = tmp_path / "rpmp.service"
    unit.write_text((SYSTEMD / "rpmp.service").read_text().replace("/opt/rpmp/bin/rpmp", exe))
    got = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert got.returncode == 0 and "rpmp.service" not in got.stderr, got.stderr


def test_systemd_execstart_serves_and_the_pool_survives_a_restart(tmp_path):
    """The unit's ExecStart arguments with its config file and env file, as systemd would run them; only what a
    test cannot use here is overridden through the environment (the mechanism rpmp.env uses): address, ports,
    pool path and size, spill dir, seeds. The node answers PING, stops on SIGTERM within TimeoutStopSec, and a
    second start on the same pool returns what the first one held."""
    unit = unit_settings(SYSTEMD / "rpmp.service")
    argv = unit["ExecStart"][0].split()
    conf = argv[argv.index("--config") + 1]
    assert conf == "/etc/rpmp/rpmp-node.conf"
    args = [a if a != conf else str(SYSTEMD / "rpmp-node.conf") for a in argv[1:]]
    port = free_port()
    pool = f"/dev/shm/rpmp-deploy-{uuid.uuid4().hex[:12]}.pool"
    env = {**os.environ, **env_file(SYSTEMD / "rpmp.env"),
           "RPMP_HOST": "127.0.0.1", "RPMP_PORT": str(port), "RPMP_METRICS_PORT": str(free_port()),
           "RPMP_POOL": pool, "RPMP_POOL_SIZE": "64m", "RPMP_SPILL_DIRS": str(tmp_path / "spill"),
           "RPMP_SEEDS": f"127.0.0.1:{port}"}  # itself: a node drops its own address from its seeds
    stop_limit = float(unit["TimeoutStopSec"][0])

    def run_once(action) -> tuple[float, str]:
        proc = subprocess.Popen([sys.executable, "-m", "rpmp.cli", *args], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.communicate()[1]
                try:
                    with Client(f"127.0.0.1:{port}", timeout=5) as c:
                        c.ping()
                        action(c)
                    break
                except ConnectionRefusedError:
                    assert time.monotonic() < deadline, "the node did not answer PING within 60 s"
                    time.sleep(0.1)
            began = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=stop_limit)
            return time.monotonic() - began, err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    try:
        took, err = run_once(lambda c: c.put("deploy-key", b"kept across restarts"))
        assert took < stop_limit / 3, f"stopped in {took:.1f} s: TimeoutStopSec={stop_limit:g} is too tight"
        assert "stopped (SIGTERM)" in err, err
        assert os.path.exists(pool)
        got: list[bytes] = []
        run_once(lambda c: got.append(c.get("deploy-key").to_pybytes()))
        assert got == [b"kept across restarts"]
    finally:
        if os.path.exists(pool):
            os.unlink(pool)


# ---------------------------------------------------------------------------------------------------- helm


def helm() -> str:
    found = shutil.which("helm") or (str(HELM_CACHE) if os.access(HELM_CACHE, os.X_OK) else None)
    if found is None:
        pytest.fail(f"helm is not installed: run ./dev setup (it builds helm v3.22.0 into {HELM_CACHE.parent}; "
                    f"CI does)", pytrace=False)
    return found


def render(*sets: str) -> list[dict[str, Any]]:
    cmd = [helm(), "template", "rpmp", str(CHART), "--namespace", NAMESPACE]
    for s in sets:
        cmd += ["--set", s]
    got = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    return [d for d in yaml.safe_load_all(got.stdout) if d]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}"
    return found[0]


def flags(args: list[str]) -> dict[str, str]:
    out = {}
    for a in args[1:]:
        assert a.startswith("--") and "=" in a, a
        k, _, v = a.partition("=")
        assert k not in out, f"{k} given twice"
        out[k] = v
    return out


def under(path: str, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """The mount `path` is inside of (the deepest one)."""
    inside = [m for m in mounts if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert inside, f"{path} is in no mounted volume ({[m['mountPath'] for m in mounts]})"
    return max(inside, key=lambda m: len(m["mountPath"]))


def quantity(text: str) -> int:
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", str(text))
    assert m, text
    return int(m.group(1)) << {None: 0, "Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40}[m.group(2)]


CASES = {
    "defaults": [],
    "auth": ["auth.enabled=true"],
    "tls": ["tls.enabled=true"],
    "tls-no-client-certs": ["tls.enabled=true", "tls.verifyClients=false"],
    "monitors": ["metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true"],
    "hostpath-pvc": ["pool.medium=hostPath", "spill.type=pvc", "spill.size=50g", "pool.hostPath.prepare=true"],
    "hostpath-tmpfs": ["pool.medium=hostPath", "pool.hostPath.path=/dev/shm/rpmp", "pool.hostPath.memoryBacked=true"],
    "five-replicas": ["replicas=5", "spill.type=emptyDir", "pool.sizeMi=4096", "port=7200", "metrics.port=9500"],
    "everything": ["replicas=4", "auth.enabled=true", "tls.enabled=true", "metrics.serviceMonitor.enabled=true",
                   "metrics.podMonitor.enabled=true", "spill.type=pvc", "pool.medium=hostPath"],
    "no-metrics": ["metrics.enabled=false", "metrics.serviceMonitor.enabled=true"],
}


def test_helm_lint():
    for sets in (CASES["defaults"], CASES["everything"]):
        cmd = [helm(), "lint", "--strict", str(CHART)] + [x for s in sets for x in ("--set", s)]
        got = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert got.returncode == 0 and "0 chart(s) failed" in got.stdout, got.stdout + got.stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_helm_manifests_wire_together(case):
    docs = render(*CASES[case])
    values = dict(s.split("=", 1) for s in CASES[case])
    replicas = int(values.get("replicas", 3))
    sts = only(docs, "StatefulSet")
    name = sts["metadata"]["name"]
    pod = sts["spec"]["template"]["spec"]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    (node,) = pod["containers"]
    inits = pod.get("initContainers", [])
    a = flags(node["args"])
    assert node["args"][0] == "server" and sts["spec"]["replicas"] == replicas
    assert node["command"][:2] == ["sh", "-c"] and node["command"][2].endswith('; exec rpmp "$@"')
    assert node["command"][3:] == ["rpmp"]  # $0 of the script: the args are its "$@"
    assert sts["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    # Names: each pod listens on and announces <pod>.<headless>.<ns>.svc.cluster.local; seeds are every pod.
    headless = [s for s in docs if s["kind"] == "Service" and s["spec"].get("clusterIP") == "None"]
    assert len(headless) == 1 and headless[0]["metadata"]["name"] == sts["spec"]["serviceName"]
    svc = headless[0]
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    env = {e["name"]: e for e in node["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert list(env).index("POD_NAME") < list(env).index("RPMP_HOST")  # $(POD_NAME) must be defined before
    assert a["--host"] == "$(RPMP_HOST)"
    domain = f"{svc['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    assert env["RPMP_HOST"]["value"] == f"$(POD_NAME).{domain}"
    ports = {p["name"]: p["containerPort"] for p in node["ports"]}
    port = int(a["--port"])
    assert ports["rpmp"] == port == int(env["RPMP_PORT"]["value"]) == int(values.get("port", 7177))
    seeds = a["--seeds"].split(",")
    pods = [f"{name}-{i}" for i in range(replicas)]
    assert seeds == [f"{p}.{domain}:{port}" for p in pods]
    for p in pods:  # the node drops its own address (rpmp/server/membership.py): the others remain, once each
        own = f"{env['RPMP_HOST']['value'].replace('$(POD_NAME)', p)}:{port}"
        others = [s for s in seeds if s != own]
        assert len(others) == replicas - 1 and own in seeds

    # Ports: the Service, probes and monitors use what the container exposes.
    for sp in svc["spec"]["ports"]:
        assert ports[sp["targetPort"]] == sp["port"] and sp["name"] == sp["targetPort"]
    assert ports[node["livenessProbe"]["tcpSocket"]["port"]] == ports[node["startupProbe"]["tcpSocket"]["port"]] == port
    startup = node["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # a large pool's creation fits
    probe = node["readinessProbe"]["exec"]["command"]
    assert probe[:2] == ["rpmp", "ping"]  # its default node is $RPMP_HOST:$RPMP_PORT: the pod's (checked above)
    if values.get("metrics.enabled") == "false":
        assert "--metrics-port" not in a and "metrics" not in ports
        assert not [d for d in docs if d["kind"] in ("ServiceMonitor", "PodMonitor")]
    else:
        assert ports["metrics"] == int(a["--metrics-port"]) == int(values.get("metrics.port", 9464))
    for kind, key in (("ServiceMonitor", "endpoints"), ("PodMonitor", "podMetricsEndpoints")):
        monitors = [d for d in docs if d["kind"] == kind]
        assert len(monitors) == (values.get(f"metrics.{kind[0].lower()}{kind[1:]}.enabled") == "true"
                                 and values.get("metrics.enabled") != "false")
        for m in monitors:
            (ep,) = m["spec"][key]
            target = svc["metadata"]["labels"] if kind == "ServiceMonitor" else pod_labels
            assert m["spec"]["selector"]["matchLabels"].items() <= target.items()
            assert m["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
            assert ep["path"] == "/metrics" and ports[ep["port"]] == int(a["--metrics-port"])
            if kind == "ServiceMonitor":
                assert ep["port"] in {sp["name"] for sp in svc["spec"]["ports"]}

    # Volumes: every mount names a volume (or a claim template); every volume is mounted; files are in mounts.
    volumes = {v["name"]: v for v in pod["volumes"]}
    claims = {c["metadata"]["name"]: c for c in sts["spec"].get("volumeClaimTemplates", [])}
    assert not volumes.keys() & claims.keys()
    mounted = set()
    for c in [node, *inits]:
        for m in c["volumeMounts"]:
            assert m["name"] in volumes or m["name"] in claims, f"{c['name']} mounts unknown volume {m['name']}"
            mounted.add(m["name"])
    assert mounted == volumes.keys() | claims.keys()
    mounts = node["volumeMounts"]

    def volume_of(path: str) -> dict[str, Any]:
        m = under(path, mounts)
        return volumes.get(m["name"]) or claims[m["name"]]

    cm = only(docs, "ConfigMap")
    v = volume_of(a["--config"])
    assert v["configMap"]["name"] == cm["metadata"]["name"] and a["--config"].rsplit("/", 1)[1] in cm["data"]

    pool_size = parse_size(a["--pool-size"])
    assert pool_size == int(values.get("pool.sizeMi", 1024)) * MiB
    assert a["--pool"].endswith("/$(POD_NAME).pool")  # one pool per pod, on a shared hostPath too
    pool_volume = volume_of(a["--pool"])
    medium = values.get("pool.medium", "memory")
    if medium == "memory":
        assert pool_volume["emptyDir"]["medium"] == "Memory"
        assert quantity(pool_volume["emptyDir"]["sizeLimit"]) >= pool_size
    else:
        assert pool_volume["hostPath"]["path"] == values.get("pool.hostPath.path", "/mnt/pmem0/rpmp")
    in_memory = medium == "memory" or values.get("pool.hostPath.memoryBacked") == "true"
    res = node["resources"]
    assert quantity(res["requests"]["memory"]) == quantity(res["limits"]["memory"])
    assert quantity(res["requests"]["memory"]) >= (pool_size if in_memory else 0) + 200 * MiB

    spill = values.get("spill.type", "none")
    if spill == "none":
        assert "--spill-dir" not in a
    else:
        v = volume_of(a["--spill-dir"] + "/x")
        assert ("emptyDir" in v) == (spill == "emptyDir") and (v in claims.values()) == (spill == "pvc")
        if "spill.size" in values:
            assert parse_size(a["--spill-size"]) == parse_size(values["spill.size"])

    # Authentication: the node's files are copies (mode 0400) the init container makes from the Secret.
    auth = values.get("auth.enabled") == "true"
    init_names = {c["name"] for c in inits}
    assert ("--auth-file" in a) == ("--cluster-secret-file" in a) == auth == ("auth-files" in init_names)
    if auth:
        init = next(c for c in inits if c["name"] == "auth-files")
        script = " ".join(init["command"])
        secret_mount = next(m for m in init["volumeMounts"] if "secret" in volumes[m["name"]])
        assert volumes[secret_mount["name"]]["secret"]["secretName"] == "rpmp-auth"
        for flag, key in (("--auth-file", "auth"), ("--cluster-secret-file", "cluster-secret")):
            target = a[flag]
            assert under(target, init["volumeMounts"])["name"] == under(target, mounts)["name"]
            assert f"install -m 0400 {secret_mount['mountPath']}/{key} {target}" in script
            assert volumes[under(target, mounts)["name"]]["emptyDir"]["medium"] == "Memory"

    # A hostPath pool's directory is given to the node's user by a root init container, when asked.
    prepare = medium == "hostPath" and values.get("pool.hostPath.prepare") == "true"
    assert ("pool-dir" in init_names) == prepare and init_names <= {"pool-dir", "auth-files"}
    if prepare:
        init = next(c for c in inits if c["name"] == "pool-dir")
        (m,) = init["volumeMounts"]
        assert m == under(a["--pool"], mounts) and init["securityContext"]["runAsUser"] == 0
        ctx = pod["securityContext"]
        assert f"chown {ctx['runAsUser']}:{ctx['runAsGroup']} {m['mountPath']} " in init["command"][2]
        assert "runAsUser" not in node["securityContext"] and ctx["runAsNonRoot"] is True

    # TLS: certificate, key and CA come from the TLS Secret's volume, and the probe speaks TLS with them.
    tls = values.get("tls.enabled") == "true"
    verify = tls and values.get("tls.verifyClients") != "false"
    assert ("--tls-cert" in a) == tls and ("--tls-key" in a) == tls and ("--tls" in probe) == tls
    assert ("--tls-ca" in a) == verify
    for flag, key in (("--tls-cert", "tls.crt"), ("--tls-key", "tls.key"), ("--tls-ca", "ca.crt")):
        if flag in a:
            v = volume_of(a[flag])
            assert v["secret"]["secretName"] == "rpmp-tls" and a[flag].endswith("/" + key)
    if verify:
        assert f"--tls-cert={a['--tls-cert']}" in probe and f"--tls-key={a['--tls-key']}" in probe
        assert f"--tls-ca={a['--tls-ca']}" in probe

    # The node's flags are ones `rpmp server` takes, and the config file's keys are settings.
    server = build_parser()._subparsers._group_actions[0].choices["server"]  # type: ignore[union-attr]
    known = {o for act in server._actions for o in act.option_strings}
    assert set(a) <= known | PENDING_FLAGS, set(a) - known - PENDING_FLAGS
    pdb = only(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1 and pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert 10 <= pod["terminationGracePeriodSeconds"] <= 120
    assert sts["spec"]["podManagementPolicy"] == "Parallel"


def test_helm_node_config_and_probe_work_against_a_real_node(node, tmp_path):
    """The ConfigMap's rpmp-node.conf loads as node settings, and the readiness probe's command (`rpmp ping`, its
    node from $RPMP_HOST and $RPMP_PORT as in the pod) exits 0 for a node, 1 with one line for a closed port and
    for a port where something else answers."""
    docs = render("nodeConfig.full_wait=12", "nodeConfig.verify_push=false")
    cm = only(docs, "ConfigMap")["data"]
    conf = tmp_path / "rpmp-node.conf"
    conf.write_text(cm["rpmp-node.conf"])
    loaded = NodeConfig.load(str(conf), env={})
    assert (loaded.full_wait, loaded.verify_push, loaded.app_ttl, loaded.log_level) == (12.0, False, 3600.0, "INFO")
    probe_cmd = only(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]
    assert probe_cmd["command"] == ["rpmp", "ping"]

    def probe(port: int) -> subprocess.Popen[str]:
        env = {**os.environ, "RPMP_HOST": "127.0.0.1", "RPMP_PORT": str(port)}
        return subprocess.Popen([sys.executable, "-m", "rpmp.cli", "ping"], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    got = probe(node.port)
    out, err = got.communicate(timeout=30)
    assert (got.returncode, out, err) == (0, "", "")
    closed = free_port()
    got = probe(closed)
    _, err = got.communicate(timeout=30)
    assert got.returncode == 1 and err.startswith(f"rpmp ping: 127.0.0.1:{closed}: ") and "refused" in err
    with socket.socket() as other:  # a port that answers with something else
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        proc = probe(other.getsockname()[1])
        conn, _ = other.accept()
        conn.recv(64)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" + b"\0" * 16)
        conn.close()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and err.count("\n") == 1 and "not as an RPMP node" in err, err


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of args and env values (undefined references stay as they are)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), text)


def test_helm_pod_runs_as_rendered_with_auth_tls_and_peers_not_resolvable_yet(tmp_path):
    """The pod spec of the chart with auth, TLS, a disk tier and metrics, run here: every volume becomes a
    directory (the Secrets' files written 0440, as Kubernetes leaves them when the pod has an fsGroup), the init
    container's command copies the auth files, and the node starts from the rendered args; only its address is
    127.0.0.1 (it cannot bind the pod's DNS name here). Its seeds are the other pods' names, which do not
    resolve: as in a StatefulSet starting its pods in parallel, the node starts anyway. The rendered readiness
    probe then passes, an authenticated TLS client is served, and SIGTERM stops it."""
    port, metrics_port = free_port(), free_port()
    docs = render("auth.enabled=true", "tls.enabled=true", "spill.type=emptyDir", f"port={port}",
                  f"metrics.port={metrics_port}")
    sts = only(docs, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    (node,), (init,) = pod["containers"], pod["initContainers"]
    assert init["name"] == "auth-files"
    volumes = {v["name"]: v for v in pod["volumes"]}
    shm = Path(f"/dev/shm/rpmp-deploy-{uuid.uuid4().hex[:12]}")
    where = {}  # container path -> a directory here
    for c in (node, init):
        for m in c["volumeMounts"]:
            v = volumes[m["name"]]
            d = shm if v.get("emptyDir", {}).get("medium") == "Memory" and m["name"] == "pool" else tmp_path / m["name"]
            d.mkdir(mode=0o700, exist_ok=True)
            where[m["mountPath"]] = d

    def local(text: str) -> str:
        for mount, d in sorted(where.items(), key=lambda kv: -len(kv[0])):
            text = re.sub(re.escape(mount) + r"(?=/|$)", str(d), text, flags=re.M)
        return text

    cm = only(docs, "ConfigMap")["data"]
    for name, text in cm.items():
        (where[next(m["mountPath"] for m in node["volumeMounts"] if m["name"] == "conf")] / name).write_text(text)
    auth_secret = tmp_path / "auth-secret"
    (auth_secret / "auth").write_text("etl s3cret-etl\n")
    (auth_secret / "cluster-secret").write_text("cluster-s3cret\n")
    tls_dir = tmp_path / "tls"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for cmd in (["req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=rpmp CA"],
                ["req", *ec, "-keyout", "tls.key", "-out", "node.csr", "-subj", "/CN=rpmp node"],
                ["x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", "tls.crt", "-days", "2", "-extfile", "ext.cnf"]):
        (tls_dir / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
        subprocess.run(["openssl", *cmd], cwd=tls_dir, check=True, capture_output=True, timeout=30)
    for f in [*auth_secret.iterdir(), *tls_dir.iterdir()]:
        f.chmod(0o440)

    env = {"POD_NAME": f"{sts['metadata']['name']}-0"}
    for e in node["env"]:
        if "value" in e:
            env[e["name"]] = expand(e["value"], env)
    env["RPMP_HOST"] = "127.0.0.1"
    args = [local(expand(a, env)) for a in node["args"]]
    a = flags(args)
    assert not any(os.path.exists(a[f]) for f in ("--auth-file", "--cluster-secret-file"))
    # The container's command as rendered (it waits for the pod's name to resolve, then runs `rpmp`), with
    # `rpmp` being this checkout's CLI, whether or not the package is installed.
    shim = tmp_path / "bin" / "rpmp"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m rpmp.cli "$@"\n')
    shim.chmod(0o755)
    run_env = {**os.environ, **env, "PATH": f"{shim.parent}:{os.environ['PATH']}"}
    init_cmd = [local(c) for c in init["command"]]
    subprocess.run(init_cmd, check=True, timeout=30)
    for f in ("--auth-file", "--cluster-secret-file"):
        assert os.stat(a[f]).st_mode & 0o777 == 0o400
    try:
        # What the init container is for: the Secret's own files (0440) are refused.
        as_mounted = [f"--auth-file={auth_secret}/auth" if x.startswith("--auth-file=") else x for x in args]
        refused = subprocess.run([*node["command"], *as_mounted], cwd=ROOT, env=run_env, capture_output=True,
                                 text=True, timeout=60)
        assert refused.returncode != 0 and "group or others" in refused.stderr, refused.stderr
        proc = subprocess.Popen([*node["command"], *args], cwd=ROOT, env=run_env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            probe = [local(c) for c in node["readinessProbe"]["exec"]["command"]]
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, proc.communicate()[1]
                got = subprocess.run(probe, env=run_env, capture_output=True, text=True, timeout=30)
                if got.returncode == 0:
                    break
                assert time.monotonic() < deadline, f"the readiness probe did not pass within 60 s: {got.stderr}"
                time.sleep(0.2)
            with Client(f"127.0.0.1:{port}", timeout=10, tls=True, ca=a["--tls-ca"], cert=a["--tls-cert"],
                        key=a["--tls-key"], tenant="etl", secret="s3cret-etl") as c:
                c.put("k", b"v")
                assert c.get("k").to_pybytes() == b"v"
            assert os.path.exists(a["--pool"]) and a["--pool"].startswith(f"{shm}/")
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=pod["terminationGracePeriodSeconds"])
            assert proc.returncode == 0 and "stopped (SIGTERM)" in err, err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(shm, ignore_errors=True)

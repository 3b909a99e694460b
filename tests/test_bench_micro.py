"""bench/micro.py end to end at a tiny size: every figure the issue names is there and sane (not a timing)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ["push_gbps", "fetch_gbps", "raw_gbps", "push_ratio", "fetch_ratio", "get4k_ops", "get4k_ops_16",
        "redis_get4k_ops_16", "redis_ratio"]


def test_micro_writes_every_figure(tmp_path):
    out = tmp_path / "micro.json"
    proc = subprocess.run([sys.executable, "bench/micro.py", "--rounds", "1", "--mib", "32", "--seconds", "0.3",
                           "--json", str(out), "--tls"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    d = json.loads(out.read_text())
    assert set(KEYS) <= set(d), set(KEYS) - set(d)
    for k in ("push_gbps", "fetch_gbps", "raw_gbps", "get4k_ops", "get4k_ops_16"):
        assert d[k] > 0, (k, d[k])
    assert abs(d["push_ratio"] - d["push_gbps"] / d["raw_gbps"]) < 0.01
    assert abs(d["fetch_ratio"] - d["fetch_gbps"] / d["raw_gbps"]) < 0.01
    if d["redis_get4k_ops_16"] is not None:   # redis-server is installed by the set-up script
        assert abs(d["redis_ratio"] - d["get4k_ops_16"] / d["redis_get4k_ops_16"]) < 0.01
    for what, sides in d["cpu_s_per_gb"].items():
        assert len(sides) == 2 and all(v >= 0 for v in sides.values()), (what, sides)
    assert d["cpu_s_per_gb"]["push"]["node"] > 0   # the node received and hashed 32 MiB
    for k in ("tls_push_gbps", "tls_fetch_gbps"):  # --tls: the same rounds through a TLS node
        assert d[k] > 0, (k, d[k])
    assert abs(d["tls_fetch_vs_plain"] - d["tls_fetch_gbps"] / d["fetch_gbps"]) < 0.01
    assert d["cpu_s_per_gb"]["tls_push"]["node"] > 0

"""CI run of the protocol fuzzer (tests/fuzz.py) against one real node process.

RPMP_FUZZ_SECONDS (default 60) sets the length, RPMP_FUZZ_SEED (default 1) the seed, RPMP_FUZZ_CONNECTIONS
(default 6) the number of attack connections. A failure prints the fuzzer's figures and the node's distinct
stderr tracebacks; `python tests/fuzz.py --seconds N --seed S` reproduces a run outside pytest.

What must hold while the node is attacked:
- the node never dies (no segfault, no exit);
- the honest client sees no error at all and no single operation slower than HONEST_MAX_LATENCY_S;
- the node's anonymous memory (RssAnon: its heap, not the pool, which is shared memory on /dev/shm) stays
  under ANON_BOUND_MIB;
- no error frame carries INTERNAL (a bug on the node reached a client), and the node logs no traceback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess

from fuzz import StderrWatch, run_fuzz

SECONDS = float(os.environ.get("RPMP_FUZZ_SECONDS", "60"))
SEED = int(os.environ.get("RPMP_FUZZ_SEED", "1"))
CONNECTIONS = int(os.environ.get("RPMP_FUZZ_CONNECTIONS", "6"))

# A healthy node's RssAnon measured under this fuzzer: ~26 MiB at start, peaks of 62-76 MiB in 20-120 s runs
# (per-connection staging buffers of up to 1 MiB + 32 bytes, 1 MiB metas held while decoded, FETCH frame lists,
# the membership and shuffle tables the attackers fill and delete). 256 MiB is over three times that peak, and
# a leak of one staging buffer or one reservation per attacked connection (tens of thousands per minute)
# crosses it within the default minute.
ANON_BOUND_MIB = 256
# Every honest operation is one small request (values and segments up to 1 MiB) on loopback; a healthy node
# answers in milliseconds even on 2 busy cores. A few seconds means the node stopped serving other clients
# (its event loop blocked by one attacker, or a flood starving everybody else).
HONEST_MAX_LATENCY_S = 5.0


def test_fuzz_node_survives_and_serves(node_factory, monkeypatch):
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")  # a segfault dumps the node's Python stacks to stderr
    # 1 GiB: the node admits at most half its pool as reservations for data still arriving and one frame at most
    # max(64 MiB, pool/16) of it (a larger claim is refused at once); honest frames that find the half taken
    # wait for room instead of failing. With 1 GiB an honest POOL_FULL means reservations leaked, not that the
    # attackers held what the node grants anybody.
    node = node_factory(pool_size="1g", stderr="pipe")
    watch = StderrWatch(node.proc.stderr)  # drained: a full stderr pipe would block the node's logging
    watch.start()
    res = run_fuzz(node.addr, node.proc.pid, SECONDS, SEED, CONNECTIONS)
    returncode = node.proc.poll()
    if returncode is None:
        node.proc.send_signal(signal.SIGTERM)
        try:
            node.proc.wait(20)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()
    watch.join(10)
    tracebacks = watch.distinct()
    report = json.dumps({**res, "node_returncode": returncode, "stderr_tracebacks": tracebacks,
                         "stderr_tail": watch.tail[-20:]}, indent=2, default=str)
    print(report)

    failures = []
    if returncode is not None or not res["node_alive"] or res["node_crashes"]:
        sig = f" (signal {-returncode}: {signal.Signals(-returncode).name})" if returncode and returncode < 0 else ""
        failures.append(f"the node died during the fuzz: returncode {returncode}{sig}, after "
                        f"{res['node_died_at_s']} s")
    if res["honest_errors"]:
        failures.append(f"the honest client saw {res['honest_errors']} errors: {res['honest_error_samples'][:5]}")
    if not res["honest_ops"]:
        failures.append("the honest client completed no operation")
    if res["honest_worst_latency_s"] > HONEST_MAX_LATENCY_S:
        failures.append(f"an honest operation took {res['honest_worst_latency_s']:.2f} s (> {HONEST_MAX_LATENCY_S} s): "
                        f"{res['honest_slow_ops'][:5]}")
    if res["node_peak_anon_mib"] > ANON_BOUND_MIB:
        failures.append(f"node anonymous memory peaked at {res['node_peak_anon_mib']} MiB (> {ANON_BOUND_MIB} MiB)")
    if res["internal_errors"]:
        failures.append(f"{res['internal_errors']} error frames carried INTERNAL: "
                        f"{[s['message'] for s in res['internal_samples'][:5]]}")
    if res["bad_replies"]:
        failures.append(f"the node broke or stalled (> 5 s) a reply stream: {res['bad_replies'][:3]}")
    if tracebacks:
        failures.append(f"the node logged {len(tracebacks)} distinct tracebacks; first:\n{tracebacks[0]['text']}")
    if res["attacker_exceptions"]:  # the fuzzer's own code failed on something the node sent or did
        failures.append(f"attack scenarios raised: {res['attacker_exceptions']}")
    assert res["frames_sent"] > 1000, f"the fuzzer hardly sent anything: {res['frames_by_kind']}"
    assert not failures, "\n".join(failures)

"""Crash consistency: a writer SIGKILLed at random points, 20 times, on the same pool.

After every kill the pool is reopened (running the recovery scan) and must show every record the child
reported as written, byte for byte, contiguous, with no torn record and no unsealed put; `pmempool
check` must agree. The next child continues on the recovered pool, so recovery is tested on top of
recovery.
"""

import os
import random
import signal
import subprocess
import sys
import threading
import time

import xxhash
from crash_child import MAGIC, REC, payload, put_value

from rpmp._pool import Pool

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crash_child.py")
KILLS = 20


def run_child_and_kill(path: str, rng: random.Random, mid_put: bool) -> tuple[list[int], list[int]]:
    env = dict(os.environ)
    if mid_put:
        env["RPMP_CRASH_MID_PUT"] = str(rng.randrange(3))
    child = subprocess.Popen([sys.executable, CHILD, path],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    appended, puts, ready = [], [], threading.Event()

    def reader():
        for line in child.stdout:
            kind, _, value = line.partition(" ")
            if kind == "READY\n":
                ready.set()
            elif kind == "A" and value.endswith("\n"):
                appended.append(int(value))
            elif kind == "P" and value.endswith("\n"):
                puts.append(int(value))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    assert ready.wait(30), f"child did not start: {child.stderr.read() if child.poll() is not None else ''}"
    if mid_put:
        assert child.wait(30) == -signal.SIGKILL
    else:
        time.sleep(rng.uniform(0.02, 0.6))
        assert child.poll() is None, f"child died on its own: {child.stderr.read()}"
        child.send_signal(signal.SIGKILL)
        child.wait()
    t.join(10)
    child.stdout.close()
    child.stderr.close()
    return appended, puts


def check_pool(path: str, appended: list[int], puts: list[int]) -> tuple[int, dict]:
    with Pool.open(path) as pool:
        recovery = dict(pool.recovery)
        infos = list(pool)
        logs = sorted((i for i in infos if i.key.startswith(b"log/")), key=lambda i: int(i.key[4:]))
        indices = []
        for info in logs:
            data = pool.read(info.id)
            pos = 0
            while pos < len(data):
                assert len(data) - pos >= REC.size, f"torn record header in {info.key!r}"
                magic, idx, length, digest = REC.unpack_from(data, pos)
                assert magic == MAGIC, f"bad record magic in {info.key!r} at {pos}"
                body = data[pos + REC.size: pos + REC.size + length]
                assert len(body) == length, f"torn record {idx} in {info.key!r}"
                assert xxhash.xxh64_intdigest(body) == digest and body == payload(idx, length)
                indices.append(idx)
                pos += REC.size + length
        assert indices == list(range(indices[0], indices[0] + len(indices))) if indices else True
        if appended:
            assert indices, "records were reported written but none survived"
            assert indices[-1] >= appended[-1], f"record {appended[-1]} was acknowledged but is lost"
            # everything reported and not legitimately freed (older than the oldest kept block) is there
            assert set(i for i in appended if i >= indices[0]) <= set(indices)
        put_blocks = [i for i in infos if i.key.startswith(b"put/")]
        for info in put_blocks:
            assert info.sealed, f"unsealed put {info.key!r} is visible after recovery"
            assert pool.read(info.id) == put_value(int(info.key[4:]))
        kept_puts = {int(i.key[4:]) for i in put_blocks}
        if puts and kept_puts:
            assert {n for n in puts if n >= min(kept_puts)} <= kept_puts
        if puts:
            assert puts[-1] in kept_puts, f"put {puts[-1]} was acknowledged but is lost"
    check = subprocess.run(["pmempool", "check", "-v", path], capture_output=True, text=True)
    assert check.returncode == 0 and "consistent" in check.stdout, check.stdout + check.stderr
    return len(indices), recovery


def test_sigkill_twenty_times(pool_path):
    rng = random.Random(int.from_bytes(os.urandom(4), "little"))
    Pool.create(pool_path, 256 << 20).close()
    total_acked = 0
    freed = {"freed_damaged": 0, "freed_unsealed": 0}
    for n in range(KILLS):
        appended, puts = run_child_and_kill(pool_path, rng, mid_put=n % 4 == 3)
        total_acked += len(appended)
        records, recovery = check_pool(pool_path, appended, puts)
        for k in freed:
            freed[k] += recovery[k]
    assert total_acked > KILLS * 10, "the children wrote too little for the test to mean anything"
    assert freed["freed_unsealed"] >= KILLS // 4, "the half-written puts were not freed by recovery"
    print(f"\n{KILLS} kills, {total_acked} acknowledged appends, recovery freed {freed}")

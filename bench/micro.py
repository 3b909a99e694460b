"""Micro benchmarks of an RPMP node, as ratios against baselines measured in the same run.

- raw:   a plain socket sender -> receiver (blocking sendall / recv_into of 4 MiB buffers), two processes;
         the same 4 MiB on both ends, so both copies run in cache (what iperf3 measures too);
- raw_distinct: the same, but the bytes come from and go to distinct (pre-faulted) memory, as a node's pool
         and a reader's buffers do: the memory-matched baseline, reported alongside (not used by the ratios);
- push:  4 MiB PUSH segments from the Python client to a node process (pipelined, checksummed by the
         client, verified by the node, persisted in its pool) -> push_ratio = push / raw;
- fetch: FETCH of the same data back (the client receives the frames into Arrow buffers) -> fetch / raw;
- tls (with --tls): the same push and fetch rounds against a second node that speaks TLS (a self-signed certificate
         made with the `openssl` command line), in the same rounds as the plaintext ones -> tls_push_gbps,
         tls_fetch_gbps and their ratios to the plaintext figures (what TLS costs);
- get4k: 4 KiB GETs per second with 1 and 16 connections, driven by bench/loadgen.c; if redis-server is
         installed, the same program drives the same load against Redis -> redis_ratio (16 connections).
Rounds alternate raw / push / fetch; each figure is the median over rounds. Next to the throughput, each
round records the CPU seconds per GB moved of both ends (this process via getrusage, the receiver or node
via /proc): on two cores a throughput figure moves with whatever else runs, the CPU cost per GB much less,
and it says which end is the limit (`cpu_s_per_gb` in the JSON).

    python bench/micro.py [--rounds 3] [--mib 1024] [--seconds 3] [--json out.json] [--node-args '...']
                          [--segment-kib 4096] [--tls]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

from rpmp.client import Client
from rpmp.cluster import LocalNode, NodeError
from rpmp.protocol import VERSION
from rpmp.tls import self_signed_cert

HERE = os.path.dirname(os.path.abspath(__file__))

SEG = 4 << 20
APP = "bench-micro"

RECEIVER = textwrap.dedent("""
    import socket, sys
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
    print(srv.getsockname()[1], flush=True)
    big = None
    while True:
        conn, _ = srv.accept()
        total = int.from_bytes(conn.recv(8, socket.MSG_WAITALL), "little")
        if total == 0:
            break
        distinct = conn.recv(1, socket.MSG_WAITALL) == b"d"
        if distinct and (big is None or len(big) < total):
            big = memoryview(bytearray(b"\x01" * total))  # written once: no page faults while timed
        conn.sendall(b"r")  # ready: the sender starts its clock now
        buf = memoryview(bytearray(4 << 20)); got = 0
        while got < total:
            dst = big[got:] if distinct else buf
            n = conn.recv_into(dst, min(len(buf), total - got))
            if not n:
                break
            got += n
        conn.sendall(b"k"); conn.close()
""")


class CpuMeter:
    """CPU seconds of this process and of one other process (by pid) over a timed region."""

    def __init__(self, peer_pid: int):
        self.peer_pid = peer_pid
        self.tick = os.sysconf("SC_CLK_TCK")
        self.last = (0.0, 0.0)  # (this process, the peer) CPU s per GB of the last timed region

    def now(self) -> tuple[float, float]:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime, self._peer()

    def _peer(self) -> float:
        """Nanosecond run time of the peer's threads (/proc/PID/task/*/schedstat), else clock ticks."""
        base = f"/proc/{self.peer_pid}/task"
        if os.path.exists(f"/proc/{self.peer_pid}/schedstat"):
            total = 0
            for tid in os.listdir(base):
                try:
                    with open(f"{base}/{tid}/schedstat") as f:
                        total += int(f.read().split()[0])
                except OSError:  # the thread ended meanwhile
                    continue
            return total / 1e9
        with open(f"/proc/{self.peer_pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick


def per_gb(before: tuple[float, float], after: tuple[float, float], nbytes: int) -> tuple[float, float]:
    """(this process, the peer) CPU seconds per GB."""
    gb = nbytes / 1e9
    return (after[0] - before[0]) / gb, (after[1] - before[1]) / gb


def raw_round(port: int, total: int, distinct: bytes | None = None, meter: CpuMeter | None = None) -> float:
    data = memoryview(os.urandom(SEG))
    src = memoryview(distinct) if distinct is not None else None
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(total.to_bytes(8, "little") + (b"d" if src is not None else b"s"))
    assert s.recv(1) == b"r"
    c0 = meter.now() if meter else None
    t = time.perf_counter()
    for i in range(total // SEG):
        s.sendall(src[i * SEG:(i + 1) * SEG] if src is not None else data)
    assert s.recv(1) == b"k"
    dt = time.perf_counter() - t
    if meter:
        meter.last = per_gb(c0, meter.now(), total)
    s.close()
    return total / dt / 1e9


def push_round(c: Client, shuffle: int, total: int, parts: int = 8, meter: CpuMeter | None = None,
               seg: int = SEG) -> float:
    data = memoryview(os.urandom(seg))
    pl = c.register_shuffle(APP, shuffle, parts)
    n = total // seg
    segs = [(i % parts, i, i, 0, data) for i in range(n)]
    c0 = meter.now() if meter else None
    t = time.perf_counter()
    c.push_many(APP, shuffle, segs, placement=pl, window=4)
    dt = time.perf_counter() - t
    if meter:
        meter.last = per_gb(c0, meter.now(), total)
    return total / dt / 1e9


def fetch_round(c: Client, shuffle: int, total: int, parts: int = 8, meter: CpuMeter | None = None) -> float:
    c0 = meter.now() if meter else None
    t = time.perf_counter()
    got = 0
    for p in range(parts):  # frame by frame, each dropped once counted, as the raw receiver does
        for _, buf in c.iter_fetch_raw(APP, shuffle, p):
            got += buf.size if buf is not None else 0
            del buf
    dt = time.perf_counter() - t
    if meter:
        meter.last = per_gb(c0, meter.now(), got)
    assert got >= total, (got, total)
    return got / dt / 1e9


def loadgen_binary() -> str:
    out = os.path.join(tempfile.gettempdir(), f"rpmp-loadgen-v{VERSION}")
    src = os.path.join(HERE, "loadgen.c")
    header = os.path.join(HERE, "rpmp_protocol.h")  # generated from rpmp/protocol.py by tests/gen_protocol.py
    if not os.path.exists(out) or os.path.getmtime(out) < max(os.path.getmtime(src), os.path.getmtime(header)):
        subprocess.run(["gcc", "-O2", "-pthread", "-o", out, src], check=True)
    return out


def loadgen(proto: str, port: int, conns: int, seconds: float, key: str) -> float:
    out = subprocess.run([loadgen_binary(), proto, "127.0.0.1", str(port), str(conns), str(seconds), key, "4096"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"loadgen failed: {out.stdout} {out.stderr}")
    return float(out.stdout.split("ops_per_s=")[1].split()[0])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_get(seconds: float, conns: int) -> float | None:
    server = shutil.which("redis-server")
    if server is None:
        return None
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                s = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.05)
        value = os.urandom(4096)
        s.sendall(b"*3\r\n$3\r\nSET\r\n$8\r\nbench-4k\r\n$4096\r\n" + value + b"\r\n")
        assert s.recv(5) == b"+OK\r\n"
        s.close()
        return loadgen("redis", port, conns, seconds, "bench-4k")
    finally:
        proc.terminate()
        proc.wait()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (median reported)")
    ap.add_argument("--mib", type=int, default=1024, help="MiB moved per round by raw, push and fetch")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each GET load")
    ap.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    ap.add_argument("--segment-kib", type=int, default=SEG >> 10,
                    help="PUSH segment size (4096; small segments show the node's per-push cost)")
    ap.add_argument("--node-args", default="", help="extra `rpmp server` flags, e.g. '--no-verify-fetch'")
    ap.add_argument("--tls", action="store_true", help="also push and fetch through a TLS node in the same rounds")
    args = ap.parse_args(argv)
    total = args.mib << 20

    # The node's pool is a fresh file on /dev/shm, removed by close(); its warnings go to our stderr.
    node = LocalNode(pool_size=f"{args.mib * 2 + 256}m", args=["--log-level", "WARNING", *args.node_args.split()],
                     stderr="inherit")
    try:
        node.start()
    except NodeError as e:
        raise SystemExit(f"node did not start: {e}") from None
    addr, port = node.address, node.port
    runs: dict[str, list[float]] = {"raw": [], "raw_distinct": [], "push": [], "fetch": []}
    cpu: dict[str, list[tuple[float, float]]] = {"raw": [], "push": [], "fetch": []}
    receiver: subprocess.Popen | None = None
    rport = 0
    tls_node: LocalNode | None = None
    certs = tempfile.mkdtemp(prefix="rpmp-bench-tls-") if args.tls else None
    try:  # from here on, whatever fails, neither the node nor the receiver is left behind
        if certs is not None:
            cert, key = self_signed_cert(certs)
            tls_node = LocalNode(pool_size=f"{args.mib * 2 + 256}m", stderr="inherit", tls_cert=cert, tls_key=key,
                                 args=["--log-level", "WARNING", *args.node_args.split()]).start()
            for k in ("tls_push", "tls_fetch"):
                runs[k], cpu[k] = [], []
        receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
        rport = int(receiver.stdout.readline())
        to_receiver, to_node = CpuMeter(receiver.pid), CpuMeter(node.pid)
        distinct = os.urandom(SEG) * (total // SEG)  # distinct pages with the same bytes as `data` would have
        with Client(addr) as c:
            for r in range(args.rounds):
                runs["raw"].append(raw_round(rport, total, meter=to_receiver))
                cpu["raw"].append(to_receiver.last)
                runs["raw_distinct"].append(raw_round(rport, total, distinct))
                runs["push"].append(push_round(c, r, total, meter=to_node, seg=args.segment_kib << 10))
                cpu["push"].append(to_node.last)
                runs["fetch"].append(fetch_round(c, r, total, meter=to_node))
                cpu["fetch"].append(to_node.last)
                c.delete_shuffle(APP, r)
                if tls_node is not None:
                    to_tls = CpuMeter(tls_node.pid)
                    with Client(tls_node.address, **tls_node.client_tls) as tc:
                        runs["tls_push"].append(push_round(tc, r, total, meter=to_tls, seg=args.segment_kib << 10))
                        cpu["tls_push"].append(to_tls.last)
                        runs["tls_fetch"].append(fetch_round(tc, r, total, meter=to_tls))
                        cpu["tls_fetch"].append(to_tls.last)
                        tc.delete_shuffle(APP, r)
                print(f"round {r + 1}: raw {runs['raw'][-1]:.2f}  raw_distinct {runs['raw_distinct'][-1]:.2f}  "
                      f"push {runs['push'][-1]:.2f}  fetch {runs['fetch'][-1]:.2f} GB/s"
                      + (f"  TLS push {runs['tls_push'][-1]:.2f}  TLS fetch {runs['tls_fetch'][-1]:.2f} GB/s"
                         if tls_node is not None else ""), flush=True)
            c.put("bench-4k", os.urandom(4096))
        get1 = loadgen("rpmp", port, 1, args.seconds, "bench-4k")
        get16 = loadgen("rpmp", port, 16, args.seconds, "bench-4k")
        redis16 = redis_get(args.seconds, 16)
    finally:
        if receiver is not None:
            try:
                if rport:
                    with socket.create_connection(("127.0.0.1", rport), timeout=5) as s:
                        s.sendall((0).to_bytes(8, "little"))
                receiver.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                receiver.kill()
                receiver.wait()
        node.close()
        if tls_node is not None:
            tls_node.close()
        if certs is not None:
            shutil.rmtree(certs, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in runs.items()}
    mine = {k: statistics.median(x[0] for x in v) for k, v in cpu.items()}
    peer = {k: statistics.median(x[1] for x in v) for k, v in cpu.items()}
    cpu_per_gb = {"raw": {"sender": round(mine["raw"], 3), "receiver": round(peer["raw"], 3)},
                  "push": {"client": round(mine["push"], 3), "node": round(peer["push"], 3)},
                  "fetch": {"node": round(peer["fetch"], 3), "client": round(mine["fetch"], 3)}}
    result = {
        "push_gbps": round(med["push"], 3),
        "fetch_gbps": round(med["fetch"], 3),
        "raw_gbps": round(med["raw"], 3),
        "push_ratio": round(med["push"] / med["raw"], 3),
        "fetch_ratio": round(med["fetch"] / med["raw"], 3),
        "raw_distinct_gbps": round(med["raw_distinct"], 3),
        "push_ratio_distinct": round(med["push"] / med["raw_distinct"], 3),
        "fetch_ratio_distinct": round(med["fetch"] / med["raw_distinct"], 3),
        "get4k_ops": round(get1),
        "get4k_ops_16": round(get16),
        "redis_get4k_ops_16": round(redis16) if redis16 else None,
        "redis_ratio": round(get16 / redis16, 3) if redis16 else None,
        "cpu_s_per_gb": cpu_per_gb,
        "segment_bytes": args.segment_kib << 10,
        "node_us_per_push": round(peer["push"] * (args.segment_kib << 10) / 1e3, 1),
        "mib_per_round": args.mib,
        "node_args": args.node_args,
        "rounds": args.rounds,
    }
    if args.tls:  # what TLS costs: the same rounds through a TLS node, and the ratio to the plaintext node's
        result.update({
            "tls_push_gbps": round(med["tls_push"], 3),
            "tls_fetch_gbps": round(med["tls_fetch"], 3),
            "tls_push_vs_plain": round(med["tls_push"] / med["push"], 3),
            "tls_fetch_vs_plain": round(med["tls_fetch"] / med["fetch"], 3),
        })
        cpu_per_gb["tls_push"] = {"client": round(mine["tls_push"], 3), "node": round(peer["tls_push"], 3)}
        cpu_per_gb["tls_fetch"] = {"node": round(peer["tls_fetch"], 3), "client": round(mine["tls_fetch"], 3)}
    print(f"raw socket   {result['raw_gbps']:6.2f} GB/s  (distinct memory: {result['raw_distinct_gbps']:.2f} GB/s; "
          f"push {result['push_ratio_distinct']:.2f}, fetch {result['fetch_ratio_distinct']:.2f} of it)")
    print(f"push {result['segment_bytes'] >> 10:>4} KiB {result['push_gbps']:6.2f} GB/s  "
          f"ratio {result['push_ratio']:.2f} (target >= 0.85)")
    print(f"fetch        {result['fetch_gbps']:6.2f} GB/s  ratio {result['fetch_ratio']:.2f} (target >= 0.90)")
    if args.tls:
        print(f"TLS push     {result['tls_push_gbps']:6.2f} GB/s  {result['tls_push_vs_plain']:.2f} of plaintext push; "
              f"TLS fetch {result['tls_fetch_gbps']:.2f} GB/s  {result['tls_fetch_vs_plain']:.2f} of plaintext fetch")
    print(f"node CPU per push {result['node_us_per_push']:.1f} us ({result['segment_bytes']} B segments)")
    print("CPU s per GB  " + "  ".join(f"{k}: " + ", ".join(f"{side} {v:.3f}" for side, v in sides.items())
                                       for k, sides in cpu_per_gb.items()))
    print(f"GET 4 KiB    {get1:8.0f} ops/s (1 conn)  {get16:8.0f} ops/s (16 conns)")
    if redis16:
        print(f"Redis GET    {redis16:8.0f} ops/s (16 conns)  ratio {result['redis_ratio']:.2f} (target >= 0.5)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

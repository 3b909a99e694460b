"""Shared fixtures: pool files on /dev/shm (the PMem stand-in), removed after each test."""

import os
import uuid

import pytest

SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Markers by module, in one place: `./dev test -m "not slow"` is the quick subset; CI runs everything.
MODULE_MARKERS = {
    "spark": ("test_spark_", "test_session", "test_terasort"),
    "java": ("test_java_client",),
    "crash": ("test_crash", "test_soak"),
    "slow": ("test_spark_", "test_session", "test_terasort", "test_java_client", "test_crash", "test_soak",
             "test_fuzz", "test_bench_micro", "test_pool_views"),
}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        module = item.module.__name__.rpartition(".")[2]
        for marker, prefixes in MODULE_MARKERS.items():
            if module.startswith(prefixes):
                item.add_marker(marker)


@pytest.fixture
def pool_path(tmp_path):
    """A fresh pool path on /dev/shm (or tmp_path); the file is removed afterwards."""
    base = SHM or str(tmp_path)
    path = os.path.join(base, f"rpmp-test-{uuid.uuid4().hex[:12]}.pool")
    yield path
    if os.path.exists(path):
        os.unlink(path)


class NodeProcess:
    """A real `rpmp server` process on loopback, with its pool on /dev/shm."""

    def __init__(self, pool: str, pool_size: str = "256m", seeds: str | None = None, port: int = 0,
                 extra: list[str] | None = None):
        import subprocess
        import sys

        self.pool = pool
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        cmd = [sys.executable, "-m", "rpmp.cli", "server", "--host", "127.0.0.1", "--port", str(port),
               "--pool", pool, "--pool-size", pool_size, "--heartbeat-interval", "0.2", "--dead-after", "1.5",
               *(extra or [])]
        if seeds:
            cmd += ["--seeds", seeds]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root,
                                     env={**os.environ, "PYTHONPATH": root})
        line = self.proc.stdout.readline()
        if not line.startswith("RPMP node listening on"):
            self.proc.kill()
            raise RuntimeError(f"node did not start: {line!r} {self.proc.stderr.read()}")
        self.addr = line.rsplit(" ", 1)[1].strip()
        self.host, port_s = self.addr.rsplit(":", 1)
        self.port = int(port_s)

    def stop(self, sig=None) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
            try:
                self.proc.wait(20)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode


@pytest.fixture
def node_factory():
    """Start nodes on demand; all are stopped and their pools removed after the test."""
    started: list[NodeProcess] = []
    pools: set[str] = set()

    def start(pool: str | None = None, **kw) -> NodeProcess:
        pool = pool or os.path.join(SHM or "/tmp", f"rpmp-node-{uuid.uuid4().hex[:12]}.pool")
        pools.add(pool)
        n = NodeProcess(pool, **kw)
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop()
    for p in pools:
        if os.path.exists(p):
            os.unlink(p)


@pytest.fixture
def node(node_factory):
    return node_factory()

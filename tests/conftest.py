"""Shared fixtures: pool files on /dev/shm (the PMem stand-in), removed after each test."""

import os
import uuid

import pytest

from rpmp.cluster import LocalNode, StderrMode, new_pool_path

SHM = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Markers by module, in one place: `./dev test -m "not slow"` is the quick subset; CI runs everything.
MODULE_MARKERS = {
    "spark": ("test_spark_", "test_session", "test_terasort"),
    "java": ("test_java_client",),
    "smoke": ("test_spark_smoke",),   # what scripts/spark_lines.py runs on the Spark lines that get no full run
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


# Nodes of the tests notice a dead peer in 1.5 s (the default is 3 s): tests that kill nodes wait less.
NODE_ARGS = ["--heartbeat-interval", "0.2", "--dead-after", "1.5"]


def make_node(pool: str | None = None, *, pool_size: str = "256m", seeds: str | None = None, port: int = 0,
              extra: list[str] | None = None, stderr: StderrMode = "capture") -> LocalNode:
    """An `rpmp server` on loopback with the tests' heartbeat settings, not started yet; close() removes its
    pool, named or not (a test's pools are all scratch)."""
    return LocalNode(pool or new_pool_path("rpmp-node", SHM), pool_size=pool_size, seeds=seeds, port=port,
                     args=[*NODE_ARGS, *(extra or [])], stderr=stderr, remove_pool=True)


@pytest.fixture
def node_factory():
    """Start nodes on demand (make_node's arguments); all are stopped and their pools removed after the test."""
    made: list[LocalNode] = []

    def start(pool: str | None = None, **kw) -> LocalNode:
        node = make_node(pool, **kw)
        made.append(node)  # before start(): a node that failed to start still has its pool removed
        return node.start()

    yield start
    for node in made:  # all stopped before any pool goes: a restarted node may share its predecessor's pool
        node.stop()
    for node in made:
        node.close()


@pytest.fixture
def node(node_factory):
    return node_factory()


@pytest.fixture
def spill_node(node_factory, tmp_path):
    """Start a node with a disk tier in tmp_path/spill (a real directory on disk); keyword arguments named
    like the node's flags (spill_size, spill_high, spill_low, full_wait, app_quota) become those flags."""
    def start(pool_size: str = "32m", **kw) -> LocalNode:
        extra = ["--spill-dir", str(tmp_path / "spill")]
        for flag in ("spill_size", "spill_high", "spill_low", "full_wait", "app_quota"):
            if flag in kw:
                extra += ["--" + flag.replace("_", "-"), str(kw.pop(flag))]
        return node_factory(pool_size=pool_size, extra=extra, **kw)
    return start

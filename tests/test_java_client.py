"""The JVM side: the plugin jar builds with Maven (shaded, relocated, no test classes in it), and its JUnit 5
suite passes under Surefire against real nodes.

The JUnit tests (shuffle_plugin/jvm/src/test/java) check the codec against the byte-exact protocol vectors
(one test per vector), the writer's segment buffers, the reader's completeness rule, the client against
fake nodes that misbehave, and, given live nodes, the client end to end (LiveNodeTest), the integrity rules
(final segments, lost tails, holes, a payload byte flipped in a node's pool file: IntegrityTest), replicas
on two nodes (NodePairTest) and lease renewal against a node with a 2 s app TTL (LeaseExpiryTest). Here
`mvn test` runs them all with nodes started by the fixtures (RPMP_NODE, RPMP_PAIR, RPMP_TTL_NODE), and
Surefire's counts must say every test ran and none failed or was skipped.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from shuffle_plugin import jar as plugin_jar

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTORS = os.path.join(ROOT, "tests", "vectors")
TEST_DIR = plugin_jar.JVM_DIR / "src" / "test" / "java" / "org" / "rpmp"  # client/ and shuffle/

pytestmark = pytest.mark.skipif(shutil.which("java") is None or shutil.which("mvn") is None,
                                reason="no java or mvn on PATH")


@pytest.fixture(scope="module")
def built() -> Path:
    return plugin_jar.build_jar(quiet=True)


def test_jar_is_rebuilt_only_when_sources_change(built, tmp_path):
    jar = plugin_jar.build_jar(tmp_path, quiet=True)
    line = plugin_jar.spark_line()   # the installed pyspark's: scripts/spark_lines.py runs this module on 3.5 too
    assert jar.name == f"rpmp-spark-{line}_{plugin_jar.SPARK_LINES[line]}-{plugin_jar.version()}.jar" \
        == plugin_jar.jar_name(line)
    mtime = jar.stat().st_mtime_ns
    assert plugin_jar.build_jar(tmp_path, quiet=True).stat().st_mtime_ns == mtime
    older = plugin_jar.sources()[0].stat().st_mtime_ns - 10**9
    os.utime(jar, ns=(older, older))
    assert plugin_jar.build_jar(tmp_path, quiet=True).stat().st_mtime_ns > older


def test_jar_builder_never_fails_an_install_without_javac(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path), "JAVA_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, os.path.join(ROOT, "shuffle_plugin", "jar.py"), "--quiet",
                          "--out-dir", str(tmp_path)], env=env, capture_output=True, text=True)
    assert out.returncode == 0
    assert "javac not found" in out.stderr
    assert not list(tmp_path.glob("*.jar"))


def test_jar_is_shaded_relocated_and_free_of_test_code(built):
    with zipfile.ZipFile(built) as zf:
        names = zf.namelist()
        checksums = zf.read("org/rpmp/client/Checksums.class")
        manifest = zf.read("META-INF/MANIFEST.MF").decode()
    assert "org/rpmp/shuffle/RpmpShuffleManager.class" in names
    assert any(n.startswith("org/rpmp/shaded/hashing/") and n.endswith(".class") for n in names)
    assert not [n for n in names if n.startswith("net/openhft/")], "hashing classes not relocated"
    assert b"org/rpmp/shaded/hashing/LongHashFunction" in checksums and b"net/openhft" not in checksums
    assert not [n for n in names if re.search(r"(Test|TestSupport|Check)(\$.*)?\.class$", n)], "test classes shipped"
    assert not [n for n in names if n.startswith(("org/junit/", "scala/", "org/apache/spark/", "com/fasterxml/"))]
    assert f"Spark-Version: {plugin_jar.spark_line()}." in manifest
    assert f"Implementation-Version: {plugin_jar.version()}" in manifest


def expected_test_count() -> int:
    """What the JUnit sources declare: each @Test, each boolean-parameterized test twice, one per vector."""
    n = 0
    for src in TEST_DIR.rglob("*Test.java"):
        text = src.read_text(encoding="utf-8")
        n += len(re.findall(r"^\s*@Test\s*$", text, re.M))
        n += 2 * text.count("@ValueSource(booleans = {true, false})")
    with open(os.path.join(VECTORS, "vectors.json"), encoding="utf-8") as f:
        return n + len(json.load(f)["vectors"])


def test_junit_suite_passes_against_live_nodes(built, node_factory, capsys):
    from rpmp.client import Client

    single = node_factory()
    short_ttl = node_factory(extra=["--app-ttl", "2"])  # LeaseExpiryTest
    first = node_factory()
    second = node_factory(seeds=first.addr)
    for n in (first, second):
        with Client(n.addr) as c:
            deadline = time.time() + 30
            while sum(m.state == 1 for m in c.members()[1]) < 2:
                assert time.time() < deadline, f"{n.addr} does not see both nodes"
                time.sleep(0.1)
    env = {**os.environ, "RPMP_NODE": single.addr, "RPMP_PAIR": f"{first.addr},{second.addr}",
           "RPMP_TTL_NODE": short_ttl.addr}
    t0 = time.monotonic()
    with plugin_jar.build_lock():
        out = plugin_jar.run_maven(["test"], quiet=False, timeout=900, env=env)
    took = time.monotonic() - t0
    log = out.stdout
    counts = re.findall(r"^\[\w+\] Tests run: (\d+), Failures: (\d+), Errors: (\d+), Skipped: (\d+)(.*)$", log, re.M)
    summary = [c for c in counts if not c[4].strip()]
    with capsys.disabled():   # Surefire's counts in the test run's output, passed or not
        print()
        for line in re.findall(r"^\[\w+\] (Tests run: .*)$", log, re.M):
            print(f"surefire: {line}")
        print(f"surefire: mvn test took {took:.1f} s")
    assert out.returncode == 0, log[-20000:]
    assert summary, log[-5000:]
    run, failures, errors, skipped, _ = summary[-1]
    assert (int(failures), int(errors), int(skipped)) == (0, 0, 0), log[-20000:]
    assert int(run) == expected_test_count(), (run, expected_test_count())
    per_class = {m.group(2): int(m.group(1))
                 for m in re.finditer(r"Tests run: (\d+), .* -- in org\.rpmp\.(?:client|shuffle)\.(\w+)", log)}
    for cls in ("LiveNodeTest", "IntegrityTest", "NodePairTest", "ProtocolVectorsTest", "MisbehavingNodeTest",
                "LeaseExpiryTest"):
        assert per_class.get(cls, 0) > 0, (cls, per_class)

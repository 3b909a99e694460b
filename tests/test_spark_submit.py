"""The spark-submit user's path: spark-conf/spark-defaults.conf and the plugin jar, nothing else.

- The file cannot drift from the plugin: every spark.rpmp.* key in it is one RpmpConf reads, every key
  RpmpConf reads is in it, and each value shown is the plugin's default.
- A JVM-only job (a small Java program compiled here against pyspark's jars, no Python in it) run by
  pyspark's bin/spark-submit in local-cluster mode with a copy of the file in which only spark.jars and
  spark.rpmp.nodes were edited: its printed result must be exact, and its shuffles must have gone through
  the RPMP node (the node counted the pushes, the driver logged the registrations).
"""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

DEFAULTS = ROOT / "spark-conf" / "spark-defaults.conf"
JAVA_SRC = ROOT / "shuffle_plugin" / "jvm" / "src" / "main" / "java" / "org" / "rpmp" / "shuffle"
RPMP_CONF_JAVA = JAVA_SRC / "RpmpConf.java"
MANAGER_JAVA = JAVA_SRC / "RpmpShuffleManager.java"


def parse_properties(text: str) -> list[tuple[int, str, str]]:
    """(line index, key, value) of a Spark properties file: `key value` lines, '#' comments, blank lines."""
    out = []
    for i, line in enumerate(text.splitlines()):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        m = re.match(r"(\S+)\s+(\S.*)$", s)
        assert m, f"line {i + 1} of spark-defaults.conf is not 'key value': {line!r}"
        out.append((i, m.group(1), m.group(2).strip()))
    return out


def plugin_keys_and_defaults() -> tuple[set[str], dict[str, str]]:
    """The spark.rpmp.* keys RpmpConf.java declares, and the default it reads each with (as written)."""
    src = RPMP_CONF_JAVA.read_text(encoding="utf-8")
    names = dict(re.findall(r'static final String (\w+) = "(spark\.rpmp\.[^"]+)";', src))
    defaults = {}
    for const, value in re.findall(r'conf\.get\w*\((\w+), ([^)]+)\)', src):
        if const in names:
            defaults[names[const]] = value.strip().strip('"')
    return set(names.values()), defaults


def test_spark_defaults_conf_matches_what_the_plugin_reads():
    entries = parse_properties(DEFAULTS.read_text(encoding="utf-8"))
    keys = [k for _, k, _ in entries]
    assert len(keys) == len(set(keys)), f"a key is set twice: {keys}"
    conf = {k: v for _, k, v in entries}
    # The two lines a spark-submit user needs.
    assert conf["spark.shuffle.manager"] == "org.rpmp.shuffle.RpmpShuffleManager"
    assert "public class RpmpShuffleManager" in MANAGER_JAVA.read_text(encoding="utf-8")
    assert conf["spark.jars"].endswith(".jar")

    plugin_keys, defaults = plugin_keys_and_defaults()
    assert len(plugin_keys) >= 12 and "spark.rpmp.nodes" in plugin_keys   # the grep found RpmpConf's keys
    shown = {k for k in conf if k.startswith("spark.rpmp.")}
    # The security keys (no default a file could show: a tenant, a secret, certificate paths) are commented examples.
    examples = set(re.findall(r"^# (spark\.rpmp\.\S+) ", DEFAULTS.read_text(encoding="utf-8"), re.M))
    assert examples == {k for k in plugin_keys if k.startswith(("spark.rpmp.auth.", "spark.rpmp.tls."))}
    assert shown - plugin_keys == set(), "spark-defaults.conf sets keys the plugin never reads"
    assert plugin_keys - shown - examples == set(), "keys the plugin reads are missing from spark-defaults.conf"
    assert set(conf) - shown == {"spark.jars", "spark.shuffle.manager", "spark.shuffle.sort.io.plugin.class"}, \
        "other settings crept in"
    assert conf["spark.shuffle.sort.io.plugin.class"] == "org.rpmp.shuffle.RpmpShuffleDataIO"
    # Every value shown (except the example node list) is the plugin's default.
    assert defaults.keys() == plugin_keys
    differ = {k: (conf[k], defaults[k]) for k in shown - {"spark.rpmp.nodes"} if conf[k] != defaults[k]}
    assert differ == {}, f"spark-defaults.conf shows values that are not the defaults (file, code): {differ}"


def edited_defaults(jar: str, nodes: str) -> str:
    """spark-defaults.conf with the values of spark.jars and spark.rpmp.nodes replaced (on Spark 3.5 also its
    commented spark.executor.extraClassPath line taken in), nothing else."""
    lines = DEFAULTS.read_text(encoding="utf-8").splitlines()
    edited = 0
    for i, key, _ in parse_properties("\n".join(lines)):
        if key in ("spark.jars", "spark.rpmp.nodes"):
            lines[i] = f"{key:<30} {jar if key == 'spark.jars' else nodes}"
            edited += 1
    assert edited == 2
    from shuffle_plugin.session import EXECUTOR_CLASSPATH, jar_conf

    if EXECUTOR_CLASSPATH in jar_conf(jar):  # Spark 3.5: the commented line the file shows for it, taken in
        at = [i for i, line in enumerate(lines) if line.startswith(f"# {EXECUTOR_CLASSPATH} ")]
        assert len(at) == 1, f"spark-defaults.conf shows no {EXECUTOR_CLASSPATH} line for Spark 3.5"
        lines[at[0]] = f"{EXECUTOR_CLASSPATH}  {jar}"
    return "\n".join(lines) + "\n"


# ---- the JVM-only job --------------------------------------------------------------------------------------

N = 300_000
MOD = 97

JOB_JAVA = textwrap.dedent("""\
    import java.util.Arrays;
    import java.util.List;
    import java.util.TreeMap;

    import org.apache.spark.api.java.JavaSparkContext;
    import org.apache.spark.sql.SparkSession;
    import scala.Tuple2;

    /** Rows 0..n-1 made on the executors, keyed by i % mod, reduced to (count, sum) per key through a shuffle. */
    public final class RpmpSubmitJob {
        public static void main(String[] args) {
            long n = Long.parseLong(args[0]);
            int mod = Integer.parseInt(args[1]);
            SparkSession spark = SparkSession.builder().appName("rpmp-submit-job").getOrCreate();
            JavaSparkContext jsc = JavaSparkContext.fromSparkContext(spark.sparkContext());
            List<Tuple2<Long, long[]>> out = jsc.parallelize(Arrays.asList(0, 1, 2, 3), 4)
                .flatMapToPair(slice -> {
                    List<Tuple2<Long, long[]>> rows = new java.util.ArrayList<>();
                    for (long i = slice; i < n; i += 4) rows.add(new Tuple2<>(i % mod, new long[] {1, i}));
                    return rows.iterator();
                })
                .reduceByKey((a, b) -> new long[] {a[0] + b[0], a[1] + b[1]}, 5)
                .collect();
            TreeMap<Long, String> result = new TreeMap<>();
            for (Tuple2<Long, long[]> t : out) result.put(t._1(), t._2()[0] + ":" + t._2()[1]);
            StringBuilder line = new StringBuilder("RPMP-JOB");
            result.forEach((k, v) -> line.append(' ').append(k).append('=').append(v));
            System.out.println(line);
            spark.stop();
        }
    }
    """)


def build_job_jar(tmp: Path) -> Path:
    import zipfile

    from shuffle_plugin import jar as plugin_jar

    src = tmp / "RpmpSubmitJob.java"
    src.write_text(JOB_JAVA, encoding="utf-8")
    classes = tmp / "classes"
    classes.mkdir()
    classpath = os.pathsep.join(str(p) for p in sorted(plugin_jar.spark_jars_dir().glob("*.jar")))
    proc = subprocess.run([plugin_jar.find_javac(), "--release", "17", "-nowarn", "-cp", classpath, "-d", str(classes),
                           str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jar = tmp / "rpmp-submit-job.jar"
    with zipfile.ZipFile(jar, "w") as zf:
        zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n\n")
        for path in sorted(classes.rglob("*.class")):
            zf.write(path, path.relative_to(classes).as_posix())
    return jar


def test_jvm_only_job_through_spark_submit_with_only_the_jar_and_spark_defaults(tmp_path, node):
    pytest.importorskip("pyspark")
    from rpmp.client import Client
    from shuffle_plugin import jar as plugin_jar

    job = build_job_jar(tmp_path)
    props = tmp_path / "spark-defaults.conf"
    props.write_text(edited_defaults(str(plugin_jar.build_jar(quiet=True)), node.addr), encoding="utf-8")
    spark_home = plugin_jar.spark_jars_dir().parent
    env = {**os.environ, "SPARK_HOME": str(spark_home), "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    proc = subprocess.run([str(spark_home / "bin" / "spark-submit"), "--master", "local-cluster[2,1,1024]",
                           "--properties-file", str(props), "--class", "RpmpSubmitJob", str(job),
                           str(N), str(MOD)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("RPMP-JOB ")]
    result = {int(k): tuple(map(int, v.split(":"))) for k, v in (kv.split("=") for kv in line.split()[1:])}
    assert result == {k: (len(range(k, N, MOD)), sum(range(k, N, MOD))) for k in range(MOD)}

    # Through RPMP: the driver's manager was ours with the node from the file, it registered the shuffle
    # with that node, which received the pushes and held blocks of the application until it ended.
    assert f"RPMP shuffle manager on the driver: nodes [{node.addr}]" in proc.stderr, proc.stderr[-5000:]
    registered = re.findall(r"RPMP registered shuffle \d+ of (\S+): (\d+) partitions on 1 nodes", proc.stderr)
    assert len(registered) == 1 and registered[0][1] == "5", proc.stderr[-5000:]
    app = registered[0][0]
    assert re.search(rf"RPMP removed application {re.escape(app)}: [1-9]\d* blocks freed", proc.stderr), \
        proc.stderr[-3000:]
    with Client(node.addr) as c:
        counters = c.stats()["counters"]
    assert counters["pushes"] >= 4 and counters["push_bytes"] > 0, counters   # at least one per map task

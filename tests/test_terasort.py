"""bench/terasort.py: a small TeraSort through RPMP and through Spark's sort shuffle must validate, and
teravalidate must catch a wrong sort (unsorted partition, partitions out of order, lost or altered record).

The benchmark itself runs as a child process (it starts and stops its own SparkSessions and RPMP node);
the teravalidate checks use one local SparkSession in this process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("pyspark")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "terasort.py")
ROWS = 200_000


def _load_terasort():
    spec = importlib.util.spec_from_file_location("bench_terasort", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


terasort = _load_terasort()


def test_parse_size_is_decimal_like_teragen():
    assert terasort.parse_size("1g") // terasort.ROW_BYTES == 10_000_000
    assert terasort.parse_size("100m") == 100_000_000
    assert terasort.parse_size("2.5G") == 2_500_000_000
    with pytest.raises(Exception, match="not a size"):
        terasort.parse_size("lots")


def test_session_plan_warms_up_both_then_alternates():
    args = terasort.parse_args(["--repeat", "3"])
    plan = terasort.session_plan(terasort.settings_from(args))
    assert plan == [("rpmp", -1), ("sort", -1), ("rpmp", 0), ("sort", 0), ("sort", 1), ("rpmp", 1), ("rpmp", 2),
                    ("sort", 2)]
    args = terasort.parse_args(["--shuffle", "sort", "--warmup-sessions", "0"])
    assert terasort.session_plan(terasort.settings_from(args)) == [("sort", 0), ("sort", 1)]


def test_spill_dir_option_and_the_nodes_spill_figures(tmp_path, capsys):
    args = terasort.parse_args(["--pool-size", "512m", "--spill-dir", str(tmp_path)])
    settings = terasort.settings_from(args)
    assert (settings.pool_size, settings.spill_dir) == ("512m", str(tmp_path))
    assert terasort.settings_from(terasort.parse_args([])).spill_dir is None
    for bad, message in ((["--spill-dir", "/no/such/dir"], "does not exist"),
                         (["--spill-dir", str(tmp_path), "--nodes", "h:1"], "not with --nodes")):
        with pytest.raises(SystemExit):
            terasort.parse_args(bad)
        assert message in capsys.readouterr().err
    # STATS "spill" (added by the node's disk tier) summed over nodes; nodes without one give None
    assert terasort.spill_totals([{"counters": {}}]) is None and terasort.spill_totals(None) is None
    one = {"dirs": ["/a"], "files": 1, "capacity": 100, "used": 10, "blocks": 2, "bytes": 10, "spilled_bytes": 30,
           "spilled_blocks": 3, "spill_seconds": 0.5}
    total = terasort.spill_totals([{"spill": one}, {"spill": {**one, "dirs": ["/b"]}}, {}])
    assert total["dirs"] == ["/a", "/b"] and total["spilled_bytes"] == 60 and total["spill_seconds"] == 1.0
    assert terasort.spill_delta(total, {**total, "spilled_bytes": 50, "spilled_blocks": 4}) == {
        "spilled_bytes": 10, "spilled_blocks": 2, "spill_seconds": 0.0}
    assert terasort.spill_delta(None, None) is None
    runs = [terasort.Run("rpmp", i, 1.0, 0.5, 0.5, 10, "app", spill={"spilled_bytes": 2_000_000 * (i + 1),
                                                                     "spilled_blocks": i + 1, "spill_seconds": 0.25})
            for i in range(2)] + [terasort.Run("sort", 0, 1.0, 0.5, 0.5, 10, "app")]
    summary = terasort.summarize_runs(runs, ["rpmp", "sort"], 10)
    assert (summary["rpmp"]["spilled_bytes"], summary["rpmp"]["spilled_blocks"]) == (6_000_000, 3)
    assert "spilled_bytes" not in summary["sort"]
    from rich.console import Console

    terasort.print_report(Console(width=200), settings, runs, summary, 1.0)
    assert "rpmp: the RPMP nodes spilled 6.0 MB in 3 block(s) to disk over the timed runs (0.50 s spilling)" \
        in capsys.readouterr().out


def test_small_terasort_both_shuffles_validates(tmp_path):
    out, png = tmp_path / "ts.json", tmp_path / "ts.png"
    # local[2] keeps start-up short; tests/test_spark_e2e.py covers separate executor JVMs.
    cmd = [sys.executable, SCRIPT, "--rows", str(ROWS), "--shuffle", "both", "--repeat", "1", "--master", "local[2]",
           "--partitions", "16", "--validate", "all", "--json", str(out), "--plot", str(png)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.loads(out.read_text())

    assert res["rows"] == ROWS and isinstance(res["rows"], int)
    for key in ("rpmp_s", "sort_s", "ratio"):
        assert isinstance(res[key], float) and res[key] > 0, key
    assert res["ratio"] == pytest.approx(res["rpmp_s"] / res["sort_s"])
    assert res["valid"] is True and res["kill_executor"] is False
    assert "terasort phase" in res["timed"]
    for shuffle in ("rpmp", "sort"):
        s = res["summary"][shuffle]
        assert s["valid"] is True and s["validated_runs"] == 1 and s["reasons"] == [], s
        assert s["map_tasks_recomputed"] == 0
    assert len(res["runs"]) == 2, "the untimed warm-up sessions are not runs"
    assert res["settings"]["warmup_sessions"] == 1
    assert "rpmp warm-up session: untimed" in proc.stdout and "sort warm-up session: untimed" in proc.stdout
    runs = {r["shuffle"]: r for r in res["runs"]}
    assert set(runs) == {"rpmp", "sort"}
    for r in runs.values():
        assert r["rows_out"] == ROWS
        assert r["validation"]["valid"] and r["validation"]["count"] == ROWS
        assert r["validation"]["checksum"] == res["input"]["checksum"]
        assert any(s["kind"] == "map" for s in r["stages"]) and any(s["kind"] == "reduce" for s in r["stages"])
    assert res["settings_effective"]["rpmp"]["spark.shuffle.manager"] == "org.rpmp.shuffle.RpmpShuffleManager"
    assert res["settings_effective"]["sort"]["spark.shuffle.manager"] == "sort"

    m = res["rpmp_metrics"]
    assert m["bytesPushed"] > 0 and m["bytesFetched"] == m["bytesPushed"] and m["recordsWritten"] == ROWS
    assert runs["rpmp"]["node"]["push_bytes"] == m["bytesPushed"]
    assert runs["sort"]["rpmp"] is None
    assert png.stat().st_size > 0


# ---- teravalidate on deliberately wrong output ---------------------------------------------------------------

@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    from shuffle_plugin import jar as plugin_jar

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if SparkSession.getActiveSession() is not None:
        pytest.skip("another SparkSession is active in this process")
    # The plugin jar on spark.jars keeps this process's JVM usable by later RPMP sessions if it starts here.
    session = (SparkSession.builder.master("local[2]").appName("teravalidate-test")
               .config("spark.shuffle.manager", "sort").config("spark.jars", str(plugin_jar.locate_jar()))
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "4").config("spark.log.level", "ERROR")
               .config("spark.sql.adaptive.coalescePartitions.enabled", "false")   # keep 4 output partitions
               .getOrCreate())
    assert session.sparkContext.getConf().get("spark.shuffle.manager") == "sort"
    yield session
    session.stop()


@pytest.fixture(scope="module")
def records(spark):
    df = terasort.teragen_frame(spark, 5_000, 3, seed=7)
    return df, terasort.summarize(df)


def test_teragen_is_deterministic_and_100_byte_records(spark, records):
    from pyspark.sql import functions as F

    df, expected = records
    again = terasort.summarize(terasort.teragen_frame(spark, 5_000, 5, seed=7))   # other partitioning, same rows
    assert again == expected and expected["count"] == 5_000
    assert terasort.summarize(terasort.teragen_frame(spark, 5_000, 3, seed=8)) != expected
    lengths = df.select(F.length("key").alias("k"), F.length("value").alias("v")).distinct().collect()
    assert [(r.k, r.v) for r in lengths] == [(10, 90)]


def test_correct_sort_is_valid(records):
    df, expected = records
    v = terasort.teravalidate(df.orderBy("key"), expected["count"], expected["checksum"])
    assert v["valid"] and v["reasons"] == [] and v["count"] == 5_000 and v["partitions"] > 1


def test_unsorted_output_is_invalid(records):
    df, expected = records
    v = terasort.teravalidate(df, expected["count"], expected["checksum"])   # teragen order: random keys
    assert not v["valid"] and v["inversions"] > 0
    assert any("is not sorted" in r for r in v["reasons"]), v["reasons"]


def test_partitions_out_of_order_are_invalid(records):
    from pyspark.sql import functions as F

    df, expected = records
    backwards = df.repartitionByRange(4, F.col("key").desc()).sortWithinPartitions("key")
    v = terasort.teravalidate(backwards, expected["count"], expected["checksum"])
    assert not v["valid"] and v["inversions"] == 0 and v["boundary_violations"] == 3
    assert all("partitions out of order" in r for r in v["reasons"]), v["reasons"]


def test_lost_or_altered_record_is_invalid(records):
    from pyspark.sql import functions as F

    df, expected = records
    sorted_df = df.orderBy("key")
    lost = terasort.teravalidate(sorted_df.where(F.col("key") != sorted_df.first()["key"]), expected["count"],
                                 expected["checksum"])
    assert not lost["valid"] and lost["count"] == 4_999
    assert any("4999 records" in r for r in lost["reasons"]) and any("checksum" in r for r in lost["reasons"])
    altered = sorted_df.withColumn("value", F.when(F.col("key") == sorted_df.first()["key"],
                                                   F.lit(b"x" * 90)).otherwise(F.col("value")))
    v = terasort.teravalidate(altered, expected["count"], expected["checksum"])
    assert not v["valid"] and v["count"] == 5_000 and v["reasons"] == [
        f"checksum of the output {v['checksum']} != input's {expected['checksum']}"]

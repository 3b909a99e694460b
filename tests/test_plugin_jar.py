"""Which plugin jar a Python user gets: the one for the installed pyspark's Spark line, or a clear error."""

import os

import pytest
from pyspark import SparkContext

from rpmp.cluster import default_pool_dir
from shuffle_plugin import jar as plugin_jar
from shuffle_plugin import session


def test_the_jar_is_the_installed_sparks_line():
    line = plugin_jar.spark_line()
    assert plugin_jar.pyspark_version().startswith(line + ".")
    assert plugin_jar.locate_jar().name == f"rpmp-spark-{line}_{plugin_jar.SPARK_LINES[line]}-" \
                                           f"{plugin_jar.version()}.jar"


@pytest.mark.parametrize("version", ["3.4.1", "3.3.0", "5.0.0"])
def test_an_unsupported_spark_is_one_clear_error(monkeypatch, version):
    # pyspark's own version is what we cannot install side by side here: stand in for its version.py
    monkeypatch.setattr(plugin_jar, "pyspark_version", lambda: version)
    supported = ", ".join(sorted(plugin_jar.SPARK_LINES))
    line = ".".join(version.split(".")[:2])
    message = f"pyspark {version} is Spark {line}; the plugin builds for Spark {supported} only"
    with pytest.raises(plugin_jar.JarBuildError, match=message.replace(".", r"\.")):
        plugin_jar.locate_jar()
    with pytest.raises(plugin_jar.JarBuildError, match=message.replace(".", r"\.")):
        session.rpmp_conf("127.0.0.1:7077")
    pools = set(os.listdir(default_pool_dir()))
    context = SparkContext._active_spark_context
    with pytest.raises(plugin_jar.JarBuildError, match=message.replace(".", r"\.")):
        session.rpmp_session("unsupported", master="local[1]")  # refused before a node or Spark starts
    assert set(os.listdir(default_pool_dir())) == pools and SparkContext._active_spark_context is context


@pytest.mark.parametrize("line", sorted(plugin_jar.SPARK_LINES))
def test_every_line_has_its_own_jar(line):
    """One jar per Spark line, named for it, compiled for Java 17, with that line's shims and the hashing
    library relocated (a second copy of net.openhft on a cluster's classpath must not clash)."""
    import zipfile

    if line in plugin_jar.SEEDED_LINES and plugin_jar.spark_line() != line:
        pytest.skip(f"Spark {line} is not on Maven Central: its jar builds where pyspark {line} is installed")
    jar = plugin_jar.build_jar(line=line, quiet=True)
    assert jar.name == f"rpmp-spark-{line}_{plugin_jar.SPARK_LINES[line]}-{plugin_jar.version()}.jar"
    with zipfile.ZipFile(jar) as z:
        names = set(z.namelist())
        manifest = z.read("META-INF/MANIFEST.MF").decode()
        shim = z.read("org/rpmp/shuffle/MapOutputShim.class")
    assert f"Implementation-Title: rpmp-spark-{line}_{plugin_jar.SPARK_LINES[line]}" in manifest
    assert f"Spark-Version: {line}." in manifest
    assert int.from_bytes(shim[6:8], "big") == 61  # class file major version 61: Java 17
    assert "org/rpmp/shuffle/RpmpShuffleManager.class" in names and "org/rpmp/shuffle/SparkEnvShim.class" in names
    assert any(n.startswith("org/rpmp/shaded/hashing/") for n in names)
    assert not any(n.startswith("net/openhft/") for n in names)
    # the row-checksum API exists from Spark 4.1 on: only those lines' shim refers to it
    assert (b"org/apache/spark/shuffle/checksum/RowBasedChecksum" in shim) == (line >= "4.1")

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

"""The Spark side of RPMP: the JVM plugin's jar (built from jvm/) and the PySpark session option."""

from shuffle_plugin.session import EmbeddedNode, configure, metrics, rpmp_conf, rpmp_session

__all__ = ["EmbeddedNode", "configure", "metrics", "rpmp_conf", "rpmp_session"]

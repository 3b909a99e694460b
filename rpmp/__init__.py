"""RPMP: a remote persistent-memory shuffle service for Apache Spark."""

__version__ = "0.1.0"
